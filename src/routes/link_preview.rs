//! Seed section "Miscellaneous" (link preview): `GET /link-preview?url=…` (web client) and
//! `POST /link-preview` with `{"url": …}` (seed). Both Bearer, one handler. The fetch is
//! SSRF-safe (src/linkpreview/); every refusal and fetch failure is a 400.

use std::collections::HashMap;

use serde::Deserialize;
use warp::Filter;

use crate::auth::Caller;
use crate::domain::link_preview::{LinkPreviewView, PreviewUrl};
use crate::error::{ApiError, ApiResult};
use crate::http::{Route, caller, json, ok_json, respond, with_state};
use crate::state::AppState;

pub fn routes(state: &AppState) -> Route {
    let get = warp::path!("link-preview")
        .and(warp::get())
        .and(with_state(state))
        .and(caller(state))
        .and(warp::query::<HashMap<String, String>>())
        .then(preview_get)
        .map(respond)
        .boxed();
    let post = warp::path!("link-preview")
        .and(warp::post())
        .and(with_state(state))
        .and(caller(state))
        .and(json())
        .then(preview_post)
        .map(respond)
        .boxed();
    get.or(post).unify().boxed()
}

/// GET /api/link-preview?url=
async fn preview_get(
    state: AppState,
    caller: ApiResult<Caller>,
    query: HashMap<String, String>,
) -> ApiResult<warp::reply::Response> {
    caller?;
    preview(&state, query.get("url").map(String::as_str)).await
}

#[derive(Deserialize)]
struct PreviewBody {
    url: Option<String>,
}

/// POST /api/link-preview
async fn preview_post(
    state: AppState,
    caller: ApiResult<Caller>,
    body: ApiResult<PreviewBody>,
) -> ApiResult<warp::reply::Response> {
    caller?;
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
