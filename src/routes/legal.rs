//! Mirror-only section "Health and legal": `GET /legal/privacy`, `GET /legal/terms` (public).
//! `{title, body}` with a Markdown body: the operator's `privacy.md` / `terms.md` from the
//! data directory when present, else a built-in default text.

use serde::Serialize;

use crate::error::ApiResult;
use crate::http::ok_json;
use crate::state::AppState;

/// One legal document: its title, the operator's file name, and the built-in text.
#[derive(Clone, Copy)]
pub(crate) struct Document {
    title: &'static str,
    file: &'static str,
    default_body: &'static str,
}

pub(crate) const PRIVACY: Document =
    Document { title: "Privacy Policy", file: "privacy.md", default_body: include_str!("legal/privacy.md") };

pub(crate) const TERMS: Document =
    Document { title: "Terms of Service", file: "terms.md", default_body: include_str!("legal/terms.md") };

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct LegalText {
    title: &'static str,
    body: String,
}

/// GET /api/legal/privacy and GET /api/legal/terms
pub(crate) async fn legal_document(state: AppState, doc: Document) -> ApiResult<warp::reply::Response> {
    let path = state.config.data_dir.join(doc.file);
    let body = match tokio::fs::read_to_string(&path).await {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => doc.default_body.to_string(),
        Err(err) => {
            // An unreadable operator file should be fixed, but users still get a text.
            tracing::warn!(path = %path.display(), error = %err, "cannot read legal text; serving the default");
            doc.default_body.to_string()
        }
    };
    ok_json(&LegalText { title: doc.title, body })
}
