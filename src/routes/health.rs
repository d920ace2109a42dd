//! Seed section "Health": `GET /health` (public).

use sea_orm::ConnectionTrait;
use serde::Serialize;

use crate::error::ApiResult;
use crate::http::ok_json;
use crate::state::AppState;

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct Health {
    status: &'static str,
    version: &'static str,
    uptime_secs: u64,
    db_healthy: bool,
}

/// GET /api/health
pub(crate) async fn health(state: AppState) -> ApiResult<warp::reply::Response> {
    let db_healthy = state.db.execute_unprepared("SELECT 1").await.is_ok();
    ok_json(&Health {
        status: if db_healthy { "ok" } else { "degraded" },
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: state.started.elapsed().as_secs(),
        db_healthy,
    })
}
