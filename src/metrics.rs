//! `GET /metrics`: the server's metrics in the Prometheus text format, and the HTTP side's
//! own counters (requests by route template and status, their latency, rate-limit refusals,
//! `unavailable` answers).
//!
//! Like the live side's (`palaver_actors::metrics`), these are per server, not a global
//! recorder: tests run many servers in one process and assert exact deltas. Labels are route
//! templates (`/api/channels/{id}/messages`), status codes and fixed names, never an id.
//!
//! Where it is served: on its own listener when `metrics_bind` (`PALAVER_METRICS_BIND`) is
//! set, and then nowhere else; otherwise on the main listener, to loopback clients only (the
//! client address as resolved through trusted proxies, so a proxied public client is refused
//! with the 404 any unknown path gets).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use palaver_actors::error_code::ErrorCode;
use palaver_actors::metrics::{Counter, CounterFamily, Exposition, Histogram, WS_BUCKETS};
use sea_orm::{DatabaseConnection, DatabaseConnectionType};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use warp::http::{HeaderValue, Method, Request, StatusCode, header};
use warp::reply::Response;

use crate::error::ApiError;
use crate::http::router::{MatchedRoute, RouteInfo};
use crate::state::AppState;

/// The exposition format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Statuses counted by their code; any other counts as `other`.
const STATUSES: &[&str] = &[
    "101", "200", "201", "204", "206", "301", "302", "304", "400", "401", "403", "404", "405", "409", "410",
    "413", "415", "422", "429", "500", "502", "503", "504",
];

/// The per-IP buckets of the front door, and `route` for limits a route keeps itself
/// (webhook executions, searches, uploads, channel creation; their route is in
/// `palaver_http_requests_total{status="429"}`).
const HTTP_BUCKETS: &[&str] = &["http_general", "http_auth", "route"];

/// Which per-IP bucket refused a request.
#[derive(Clone, Copy, Debug)]
pub enum FrontBucket {
    General,
    Auth,
}

/// One route template's counters.
struct RouteStats {
    method: &'static str,
    /// `/api/…` for table routes; `/ws`, `/metrics`, `unrouted` for the rest.
    route: String,
    statuses: CounterFamily,
    latency: Histogram,
}

impl RouteStats {
    fn new(method: &'static str, route: String) -> Self {
        Self { method, route, statuses: CounterFamily::new(STATUSES), latency: Histogram::seconds() }
    }
}

/// The HTTP side's counters, one per server.
pub struct HttpMetrics {
    /// (method, path template) → its slot in `routes`.
    index: HashMap<(&'static str, &'static str), usize>,
    /// One per table route, then `/ws`, `/metrics` and `unrouted` (answered before or
    /// without a route: rate limits, oversized bodies, preflights, unknown paths, web files).
    routes: Box<[RouteStats]>,
    rate_limited: CounterFamily,
    /// Answers with the error code `unavailable` (database down, hashing pool full).
    unavailable: Counter,
}

impl HttpMetrics {
    pub fn new(table: &'static [RouteInfo]) -> Self {
        let mut routes: Vec<RouteStats> =
            table.iter().map(|r| RouteStats::new(r.method, format!("/api{}", r.path))).collect();
        let index = table.iter().enumerate().map(|(i, r)| ((r.method, r.path), i)).collect();
        routes.push(RouteStats::new("GET", "/ws".into()));
        routes.push(RouteStats::new("GET", "/metrics".into()));
        routes.push(RouteStats::new("other", "unrouted".into()));
        Self {
            index,
            routes: routes.into_boxed_slice(),
            rate_limited: CounterFamily::new(HTTP_BUCKETS),
            unavailable: Counter::default(),
        }
    }

    /// A per-IP bucket of the front door refused a request.
    pub fn refused_by(&self, bucket: FrontBucket) {
        self.rate_limited.inc(match bucket {
            FrontBucket::General => "http_general",
            FrontBucket::Auth => "http_auth",
        });
    }

    /// Counts one answered request: `path` is the request's path (for the routes outside
    /// the table), the response tells the matched route and the error code.
    pub fn record(&self, path: &str, response: &Response, elapsed: Duration) {
        let matched = response.extensions().get::<MatchedRoute>().map(|m| m.0);
        let slot = match matched {
            Some(route) => self.index.get(&(route.method, route.path)).copied(),
            None => None,
        };
        let pseudo = self.routes.len() - 3;
        let slot = slot.unwrap_or(match path {
            "/ws" => pseudo,
            "/metrics" => pseudo + 1,
            _ => pseudo + 2,
        });
        let stats = &self.routes[slot];
        let status = response.status();
        stats.statuses.inc(status.as_str());
        stats.latency.observe_duration(elapsed);
        if status == StatusCode::TOO_MANY_REQUESTS && matched.is_some() {
            self.rate_limited.inc("route");
        }
        if response.extensions().get::<ErrorCode>() == Some(&ErrorCode::Unavailable) {
            self.unavailable.inc();
        }
    }

    fn write(&self, out: &mut Exposition) {
        let requests = "palaver_http_requests_total";
        out.header(requests, "HTTP requests answered, by route template and status", "counter");
        for stats in self.routes.iter() {
            for (status, count) in stats.statuses.iter().filter(|(_, count)| *count > 0) {
                let labels = [("method", stats.method), ("route", stats.route.as_str()), ("status", status)];
                out.sample(requests, &labels, count);
            }
        }
        let duration = "palaver_http_request_duration_seconds";
        out.header(duration, "Time to answer an HTTP request (until the response head)", "histogram");
        for stats in self.routes.iter().filter(|s| s.latency.count() > 0) {
            let labels = [("method", stats.method), ("route", stats.route.as_str())];
            out.histogram_samples(duration, &labels, &stats.latency);
        }
    }
}

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
