//! The front door: one hyper server that answers `/ws` upgrades itself (tokio-tungstenite
//! with small buffers) and hands every other request to the warp routes.
//!
//! Why not warp's own `ws()`: it cannot shrink tungstenite's 128 KiB read buffer, which
//! would cost ~150 KB per idle socket. Cross-cutting concerns that must also cover `/ws`
//! (client IP, per-IP rate limits, body size cap, CORS, request tracing) live here too.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tower_service::Service;
use warp::http::{HeaderValue, Method, Request, StatusCode, header};
use warp::reply::Response;

use crate::error::ApiError;
use crate::http::{ClientAddr, Route, limit_key, resolve_client_ip};
use crate::metrics::FrontBucket;
use crate::state::AppState;

/// Any request body larger than this is refused before it is read (seed: 110 MB).
pub const MAX_BODY_BYTES: u64 = 110 * 1024 * 1024;

/// Accepts connections until `shutdown` fires, then stops accepting; open requests finish.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    routes: Route,
    mut shutdown: broadcast::Receiver<()>,
) {
    let warp_service = warp::service(routes);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.recv() => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let warp_service = warp_service.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                let mut warp_service = warp_service.clone();
                async move {
                    Ok::<_, Infallible>(front(state, peer, req, move |req| warp_service.call(req)).await)
                }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http1().keep_alive(true);
            if let Err(err) = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
}

async fn front<F, Fut>(
    state: AppState,
    peer: SocketAddr,
    mut req: Request<Incoming>,
    warp_call: F,
) -> Response
where
    F: FnOnce(Request<Incoming>) -> Fut,
    Fut: Future<Output = Result<Response, Infallible>>,
{
    let started = Instant::now();
    let client_ip = resolve_client_ip(
        peer,
        req.headers(),
        &state.config.trusted_proxies,
        state.config.client_ip_header.as_deref(),
    );
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let origin = req.headers().get(header::ORIGIN).cloned();
    let allowed_origin = origin.filter(|o| origin_allowed(&state, o));

    let response = if method == Method::OPTIONS && allowed_origin.is_some() {
        preflight()
    } else if path == "/metrics" {
        // Before the per-IP buckets: a scraper on loopback must not spend the budget of the
        // clients a local reverse proxy forwards (anyone else is answered 404 at once).
        crate::http::metrics_endpoint::answer_on_main(&state, &method, client_ip)
    } else if let Some(refusal) = rate_limit(&state, client_ip, &path) {
        refusal
    } else if content_length(&req).is_some_and(|n| n > MAX_BODY_BYTES) {
        ApiError::PayloadTooLarge.into_response()
    } else if path == "/ws" {
        crate::ws::upgrade(state.clone(), req, client_ip)
    } else {
        req.extensions_mut().insert(ClientAddr(client_ip));
        match warp_call(req).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    };

    let mut response = response;
    if let Some(origin) = allowed_origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        // Response headers a browser client may read besides the CORS-safelisted ones.
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Retry-After, X-Search-Truncated, X-Search-Scanned"),
        );
    }
    super::access_log::request(&method, &path, response.status(), started.elapsed(), client_ip);
    state.metrics.record(&path, &response, started.elapsed());
    response
}

fn content_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The general bucket for every request, and the stricter one for `/api/auth/*`.
fn rate_limit(state: &AppState, ip: std::net::IpAddr, path: &str) -> Option<Response> {
    let limits = &state.limits;
    let ip = limit_key(ip);
    if let Some(general) = &limits.general
        && general.check_key(&ip).is_err()
    {
        state.metrics.refused_by(FrontBucket::General);
        return Some(ApiError::RateLimited { retry_after: limits.general_retry_after }.into_response());
    }
    if path.starts_with("/api/auth/")
        && let Some(auth) = &limits.auth
        && auth.check_key(&ip).is_err()
    {
        state.metrics.refused_by(FrontBucket::Auth);
        return Some(ApiError::RateLimited { retry_after: limits.auth_retry_after }.into_response());
    }
    None
}

fn origin_allowed(state: &AppState, origin: &HeaderValue) -> bool {
    let Ok(origin) = origin.to_str() else { return false };
    let origins = &state.config.cors_origins;
    origins.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
        || state
            .config
            .public_url
            .as_deref()
            .is_some_and(|u| u.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

fn preflight() -> Response {
    let mut response = super::status_only(StatusCode::NO_CONTENT);
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, Authorization"),
    );
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("3600"));
    response
}
