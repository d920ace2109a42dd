//! `GET /openapi.json` (public): this server's OpenAPI 3.1 document (see `crate::openapi`).

use std::sync::OnceLock;

use bytes::Bytes;

use crate::http::{Reply, ok_json_bytes};
use crate::state::AppState;

/// GET /api/openapi.json
pub(crate) async fn document(_state: AppState) -> Reply {
    // The document depends only on the route table and the types, so it is built once.
    static DOCUMENT: OnceLock<Bytes> = OnceLock::new();
    let body = DOCUMENT.get_or_init(|| {
        let document = crate::openapi::document(super::ROUTES);
        Bytes::from(serde_json::to_vec(&document).unwrap_or_default())
    });
    ok_json_bytes(body.clone())
}
