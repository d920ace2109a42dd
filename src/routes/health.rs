//! Seed section "Health": `GET /health` (public).

use sea_orm::ConnectionTrait;
use serde::Serialize;
use warp::http::StatusCode;

use crate::error::ApiResult;
use crate::http::ok_json;
use crate::state::AppState;

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    uptime_secs: u64,
    db_healthy: bool,
}

/// GET /api/health — 503 `draining` once a graceful shutdown began (see `drain.rs`), so a load
/// balancer takes this instance out of rotation while it still finishes what it accepted.
pub(crate) async fn health(state: AppState) -> ApiResult<warp::reply::Response> {
    let draining = state.drain.is_draining();
    let db_healthy = state.db.execute_unprepared("SELECT 1").await.is_ok();
    let status = match (draining, db_healthy) {
        (true, _) => "draining",
        (false, true) => "ok",
        (false, false) => "degraded",
    };
    let mut response = ok_json(&Health {
        status,
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: state.started.elapsed().as_secs(),
        db_healthy,
    })?;
    if draining {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    Ok(response)
}
