//! Seed section "Health": `GET /health` (public).

use sea_orm::ConnectionTrait;
use serde::Serialize;
use palaver_actors::cluster::ClusterState;
use warp::http::StatusCode;

use crate::error::ApiResult;
use crate::http::ok_json;
use crate::state::AppState;

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct Health {
    status: &'static str,
    version: &'static str,
    uptime_secs: u64,
    db_healthy: bool,
    /// Only on a cluster node: its state, the live nodes and the shards it owns.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<palaver_actors::cluster::ClusterStatus>,
}

/// GET /api/health — 503 `draining` once a graceful shutdown began (see `drain.rs`), so a load
/// balancer takes this instance out of rotation while it still finishes what it accepted.
pub(crate) async fn health(state: AppState) -> ApiResult<warp::reply::Response> {
    let draining = state.drain.is_draining();
    let db_healthy = state.db.execute_unprepared("SELECT 1").await.is_ok();
    let cluster = state.cluster.as_ref().map(|c| c.status());
    // A detached cluster node sends load balancers elsewhere, as a draining one does.
    let detached = cluster.as_ref().is_some_and(|c| c.state == ClusterState::Detached);
    let status = match (draining, db_healthy && !detached) {
        (true, _) => "draining",
        (false, true) => "ok",
        (false, false) => "degraded",
    };
    let mut response = ok_json(&Health {
        status,
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: state.started.elapsed().as_secs(),
        db_healthy,
        cluster,
    })?;
    if draining || detached {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    Ok(response)
}
