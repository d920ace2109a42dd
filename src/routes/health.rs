//! Seed section "Health": `GET /health` (public).

use palaver_actors::cluster::{ClusterState, ClusterStatus};
use sea_orm::ConnectionTrait;
use serde::Serialize;
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
    cluster: Option<ClusterView>,
}

/// The `cluster` section (the actors crate's `ClusterStatus`, described for the API document).
#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct ClusterView {
    /// `joining`, `settled`, `degraded` or `detached`.
    state: &'static str,
    node_id: String,
    /// Live nodes, this one included.
    nodes: usize,
    shards_owned: usize,
    /// Shards this node should take or give up but has not yet.
    moving: usize,
}

impl From<ClusterStatus> for ClusterView {
    fn from(status: ClusterStatus) -> Self {
        Self {
            state: match status.state {
                ClusterState::Joining => "joining",
                ClusterState::Settled => "settled",
                ClusterState::Degraded => "degraded",
                ClusterState::Detached => "detached",
            },
            node_id: status.node_id,
            nodes: status.nodes,
            shards_owned: status.shards_owned,
            moving: status.moving,
        }
    }
}

/// GET /api/health — 503 `draining` once a graceful shutdown began (see `drain.rs`), so a load
/// balancer takes this instance out of rotation while it still finishes what it accepted.
pub(crate) async fn health(state: AppState) -> ApiResult<warp::reply::Response> {
    let draining = state.drain.is_draining();
    let db_healthy = state.db.execute_unprepared("SELECT 1").await.is_ok();
    let cluster = state.cluster.as_ref().map(|c| c.status());
    // A detached cluster node sends load balancers elsewhere, as a draining one does.
    let detached = cluster.as_ref().is_some_and(|c| c.state == ClusterState::Detached);
    let cluster = cluster.map(ClusterView::from);
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
