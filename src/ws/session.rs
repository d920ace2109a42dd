//! A WebSocket session (filled in with the real-time core).

use std::net::IpAddr;

use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;

use crate::state::AppState;

pub type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

pub async fn run(_state: AppState, socket: Socket, _ip: IpAddr) {
    drop(socket);
}
