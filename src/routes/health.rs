//! Seed section "Health": `GET /health` (public).

use sea_orm::ConnectionTrait;
use serde::Serialize;

use palaver_actors::cluster::ClusterState;
use warp::Reply;
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
    /// Only on a cluster node: its state, the live nodes and the shards it owns.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<palaver_actors::cluster::ClusterStatus>,
}

/// GET /api/health
pub(crate) async fn health(state: AppState) -> ApiResult<warp::reply::Response> {
    let db_healthy = state.db.execute_unprepared("SELECT 1").await.is_ok();
    let cluster = state.cluster.as_ref().map(|c| c.status());
    let detached = cluster.as_ref().is_some_and(|c| c.state == ClusterState::Detached);
    let health = Health {
        status: if db_healthy && !detached { "ok" } else { "degraded" },
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: state.started.elapsed().as_secs(),
        db_healthy,
        cluster,
    };
    if detached {
        // A detached node sends load balancers elsewhere.
        return Ok(warp::reply::with_status(warp::reply::json(&health), StatusCode::SERVICE_UNAVAILABLE)
            .into_response());
    }
    ok_json(&health)
}
