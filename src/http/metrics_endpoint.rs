//! `GET /metrics`: the server's metrics (the live side's and `crate::metrics`) in the
//! Prometheus text format.
//!
//! Where it is served: on its own listener when `metrics_bind` (`PALAVER_METRICS_BIND`) is
//! set, and then nowhere else; otherwise on the main listener, to loopback clients only (the
//! client address as resolved through trusted proxies, so a proxied public client is refused
//! with the 404 any unknown path gets).

use std::convert::Infallible;
use std::net::IpAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use palaver_actors::metrics::{Exposition, WS_BUCKETS};
use sea_orm::{DatabaseConnection, DatabaseConnectionType};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use warp::http::{HeaderValue, Method, Request, StatusCode, header};
use warp::reply::Response;

use crate::error::ApiError;
use crate::state::AppState;

/// The exposition format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The whole exposition of one server.
pub fn render(state: &AppState) -> String {
    let mut out = Exposition::default();
    state.hub.write_metrics(&mut out);
    state.metrics.write(&mut out);
    let hub = &state.hub.shared.metrics;

    let limited = "palaver_rate_limited_total";
    out.header(limited, "Requests and frames refused by a rate limit, by bucket", "counter");
    for (bucket, count) in state.metrics.rate_limited.iter().filter(|(b, _)| *b != "other") {
        out.sample(limited, &[("bucket", bucket)], count);
    }
    for bucket in WS_BUCKETS {
        out.sample(limited, &[("bucket", bucket)], hub.rate_limited.get(bucket));
    }

    let unavailable = "palaver_unavailable_total";
    out.header(unavailable, "Answers with the error code unavailable, by transport", "counter");
    out.sample(unavailable, &[("transport", "http")], state.metrics.unavailable.get());
    out.sample(unavailable, &[("transport", "ws")], hub.unavailable.get());

    if let Some((size, idle)) = pool_connections(&state.db) {
        let pool = "palaver_db_pool_connections";
        out.header(pool, "Database pool connections, in use or idle", "gauge");
        out.sample(pool, &[("state", "in_use")], size.saturating_sub(idle));
        out.sample(pool, &[("state", "idle")], idle);
    }

    let (running, waiting) = state.hashing.load();
    out.gauge("palaver_argon2_queue_length", "Password hashes waiting for a worker", waiting);
    out.gauge("palaver_argon2_running", "Password hashes being computed", running);
    if let Some(router) = state.cluster.as_ref().and_then(|cluster| cluster.router()) {
        let gaps = "palaver_cluster_gaps_total";
        out.header(gaps, "Messages from channel owners lost on the way, by outcome", "counter");
        let repaired = router.gaps_repaired.load(std::sync::atomic::Ordering::Relaxed);
        out.sample(gaps, &[("outcome", "repaired")], repaired);
        let told = router.gaps.load(std::sync::atomic::Ordering::Relaxed);
        out.sample(gaps, &[("outcome", "sessions_closed")], told);
    }
    out.into_string()
}

/// (open, idle) connections of the pool.
fn pool_connections(db: &DatabaseConnection) -> Option<(usize, usize)> {
    match &db.inner {
        DatabaseConnectionType::SqlxPostgresPoolConnection(_) => {
            let pool = db.get_postgres_connection_pool();
            Some((pool.size() as usize, pool.num_idle()))
        }
        DatabaseConnectionType::SqlxSqlitePoolConnection(_) => {
            let pool = db.get_sqlite_connection_pool();
            Some((pool.size() as usize, pool.num_idle()))
        }
        _ => None,
    }
}

/// The exposition as a response with `body` made from its text.
fn exposition<B: From<bytes::Bytes>>(state: &AppState) -> warp::http::Response<B> {
    let mut response = warp::http::Response::new(B::from(bytes::Bytes::from(render(state))));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// `GET /metrics` on the main listener: loopback clients only, and only while no separate
/// metrics listener is configured; anyone else gets the 404 of an unknown path.
pub fn answer_on_main(state: &AppState, method: &Method, client_ip: IpAddr) -> Response {
    let allowed = state.config.metrics_bind.is_none() && client_ip.to_canonical().is_loopback();
    if !allowed || method != Method::GET {
        return ApiError::not_found("route").into_response();
    }
    exposition(state)
}

/// The separate metrics listener (`metrics_bind`): `GET /metrics` and nothing else, until
/// `shutdown` fires.
pub async fn serve_separate(listener: TcpListener, state: AppState, mut shutdown: broadcast::Receiver<()>) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!(error = %err, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.recv() => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let response = if req.method() == Method::GET && req.uri().path() == "/metrics" {
                    exposition::<Full<bytes::Bytes>>(&state)
                } else {
                    let mut response = warp::http::Response::new(Full::default());
                    *response.status_mut() = StatusCode::NOT_FOUND;
                    response
                };
                async move { Ok::<_, Infallible>(response) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(err) = builder.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(error = %err, "metrics connection ended with an error");
            }
        });
    }
}
