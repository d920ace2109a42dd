//! Seed section "Miscellaneous" (link preview): `GET /link-preview?url=…` (web client) and
//! `POST /link-preview` with `{"url": …}` (seed). Both Bearer, one handler. The fetch is
//! SSRF-safe (src/linkpreview/); every refusal and fetch failure is a 400.

use serde::Deserialize;

use crate::auth::Caller;
use crate::domain::link_preview::{LinkPreviewView, PreviewUrl};
use crate::error::{ApiError, ApiResult};
use crate::http::ok_json;
use crate::http::query::QueryParams;
use crate::state::AppState;

/// GET /api/link-preview?url=
pub(crate) async fn preview_get(
    state: AppState,
    _caller: Caller,
    query: QueryParams,
) -> ApiResult<warp::reply::Response> {
    preview(&state, query.raw("url")).await
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct PreviewBody {
    url: Option<String>,
}

/// POST /api/link-preview
pub(crate) async fn preview_post(
    state: AppState,
    _caller: Caller,
    body: ApiResult<PreviewBody>,
) -> ApiResult<warp::reply::Response> {
    let body = body?;
    preview(&state, body.url.as_deref()).await
}

async fn preview(state: &AppState, raw: Option<&str>) -> ApiResult<warp::reply::Response> {
    let target = PreviewUrl::parse(raw)?;
    let meta = state.link_previews.preview(target.url.clone()).await.map_err(|e| {
        tracing::debug!(url = %target.url, error = %e, "link preview refused or failed");
        ApiError::validation(e.to_string())
    })?;
    ok_json(&LinkPreviewView::new(target.requested, &meta))
}
