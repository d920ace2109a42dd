//! The HTTP side's own counters (requests by route template and status, their latency,
//! rate-limit refusals, `unavailable` answers); `GET /metrics` itself is served by
//! `http::metrics_endpoint`.
//!
//! Like the live side's (`palaver_actors::metrics`), these are per server, not a global
//! recorder: tests run many servers in one process and assert exact deltas. Labels are route
//! templates (`/api/channels/{id}/messages`), status codes and fixed names, never an id.

use std::collections::HashMap;
use std::time::Duration;

use palaver_actors::error_code::ErrorCode;
use palaver_actors::metrics::{Counter, CounterFamily, Exposition, Histogram};
use warp::http::StatusCode;
use warp::reply::Response;

use crate::http::router::{MatchedRoute, RouteInfo};

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
    pub(crate) rate_limited: CounterFamily,
    /// Answers with the error code `unavailable` (database down, hashing pool full).
    pub(crate) unavailable: Counter,
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

    pub(crate) fn write(&self, out: &mut Exposition) {
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
