//! The access log: one line per HTTP request (`server.rs`) and per WebSocket session
//! (`ws/session.rs`), at `info` under the target `palaver::access`, so operators can keep or
//! filter them (`RUST_LOG=palaver::access=off`). With `PALAVER_LOG_FORMAT=json` each is one
//! JSON object whose fields are these names.
//!
//! The path is logged as its route template (`/api/channels/{id}/messages`), not as sent:
//! ids in paths would make every line unique to aggregate and would put message and user ids
//! into the logs.

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use warp::http::{Method, StatusCode};

use super::router::RouteInfo;

/// The template of a path outside every route (an unknown `/api/…` path, a bad method).
pub const UNMATCHED: &str = "unmatched";
/// Any path the web client (SPA) serves.
pub const WEB_CLIENT: &str = "web";

/// Logs one finished HTTP request.
pub fn request(method: &Method, path: &str, status: StatusCode, elapsed: Duration, client_ip: IpAddr) {
    tracing::info!(
        target: "palaver::access",
        method = %method,
        route = route_template(method, path),
        status = status.as_u16(),
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        client_ip = %client_ip,
        "request"
    );
}

/// One route of the table, its template split into segments once.
struct Template {
    method: &'static str,
    /// `None` for a `{id}` or `{name}` segment (matches any one segment).
    segments: Vec<Option<&'static str>>,
    /// `/api` + the table's template.
    full: String,
}

fn templates() -> &'static [Template] {
    static TEMPLATES: OnceLock<Vec<Template>> = OnceLock::new();
    TEMPLATES.get_or_init(|| templates_of(crate::routes::ROUTES))
}

fn templates_of(routes: &'static [RouteInfo]) -> Vec<Template> {
    routes
        .iter()
        .map(|route| Template {
            method: route.method,
            segments: route
                .path
                .split('/')
                .skip(1)
                .map(|segment| (!segment.starts_with('{')).then_some(segment))
                .collect(),
            full: format!("/api{}", route.path),
        })
        .collect()
}

/// The route template a request matched: the first table line with its method whose literal
/// segments equal the path's (the table's own order, so `/channels/unread` wins over
/// `/channels/{id}` as it does in the router); `/ws` for the socket; `web` or `unmatched` for
/// anything else (a bounded set of values, whatever clients send).
pub fn route_template(method: &Method, path: &str) -> &'static str {
    if path == "/ws" {
        return "/ws";
    }
    let Some(rest) = path.strip_prefix("/api/") else {
        return if path == "/api" { UNMATCHED } else { WEB_CLIENT };
    };
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    templates()
        .iter()
        .find(|t| {
            t.method == method.as_str()
                && t.segments.len() == segments.len()
                && t.segments.iter().zip(&segments).all(|(want, got)| want.is_none_or(|w| w == *got))
        })
        .map_or(UNMATCHED, |t| t.full.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_their_table_template() {
        let id = "0191c0a4-0000-7000-8000-000000000000";
        assert_eq!(route_template(&Method::GET, "/api/health"), "/api/health");
        assert_eq!(
            route_template(&Method::DELETE, &format!("/api/account/sessions/{id}")),
            "/api/account/sessions/{id}"
        );
        assert_eq!(
            route_template(&Method::POST, "/api/webhooks/execute/tok3n"),
            "/api/webhooks/execute/{name}"
        );
        assert_eq!(route_template(&Method::GET, "/ws"), "/ws");
        assert_eq!(route_template(&Method::GET, "/api/no/such/route"), UNMATCHED);
        assert_eq!(route_template(&Method::PATCH, "/api/health"), UNMATCHED);
        assert_eq!(route_template(&Method::GET, "/assets/app.js"), WEB_CLIENT);
    }
}
