//! The WebSocket gateway at `/ws`: the upgrade handshake, then a session (see `session.rs`).

pub mod session;

use std::net::IpAddr;

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use palaver_actors::session::MAX_FRAME_BYTES;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use warp::http::{HeaderValue, Request, StatusCode, header};
use warp::reply::Response;

use crate::error::ApiError;
use crate::state::AppState;

/// Socket buffers kept small: most frames are well under 4 KiB and idle sockets dominate
/// memory. Larger frames still work (the buffer grows for them). Writes are buffered up to
/// 8 KiB so that a burst of queued frames goes out in one write at the flush, not one
/// system call per frame (fan-out cost is dominated by those calls).
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(4 * 1024 * 1024)
        // Slightly above the frame limit so an oversized frame is read, then answered with
        // a readable error frame instead of a torn-down socket.
        .max_message_size(Some(MAX_FRAME_BYTES * 2))
        .max_frame_size(Some(MAX_FRAME_BYTES * 2))
}

/// One upgraded connection in `palaver_ws_sockets_open`, for as long as it lives (a guard,
/// so a session that ends any way at all is uncounted).
struct OpenSocket(std::sync::Arc<palaver_actors::metrics::HubMetrics>);

impl OpenSocket {
    fn count(state: &AppState) -> Self {
        let metrics = state.hub.shared.metrics.clone();
        metrics.sockets_open.inc();
        Self(metrics)
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0.sockets_open.dec();
    }
}

/// Answers the upgrade (101) and starts the session once hyper hands over the socket.
pub fn upgrade(state: AppState, mut req: Request<Incoming>, client_ip: IpAddr) -> Response {
    let headers = req.headers();
    let is_upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = headers.get("sec-websocket-key").cloned();
    let version_ok = headers.get("sec-websocket-version").is_some_and(|v| v == "13");
    let (true, Some(key), true) = (is_upgrade, key, version_ok) else {
        return ApiError::validation("expected a WebSocket upgrade request").into_response();
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    // Tracked, so a graceful shutdown waits for the socket's close frame (`drain.rs`).
    let drain = state.drain.clone();
    drain.spawn_socket(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let _open = OpenSocket::count(&state);
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(socket_config()),
                )
                .await;
                session::run(state, socket, client_ip).await;
            }
            Err(err) => tracing::debug!(error = %err, "websocket upgrade failed"),
        }
    });
    // Built here rather than with `http::status_only`: the HTTP layer calls into the gateway,
    // so the gateway does not call back into it.
    let mut response = Response::new(Default::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert("sec-websocket-accept", value);
    }
    response
}
