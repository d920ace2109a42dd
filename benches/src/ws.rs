//! WebSocket client side: connect (optionally from a chosen loopback source address),
//! authenticate, subscribe.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};
use uuid::Uuid;

use crate::frame::{self, ServerFrame};
use crate::target::Target;

pub type WsStream = WebSocketStream<TcpStream>;

/// How long the handshake steps may take. Generous: during a connect storm a busy
/// server can be slow, and a slow answer is a measurement, not a failure.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// Small buffers: the load generator may hold ~20k sockets (tungstenite's default read
/// buffer is 128 KiB per socket).
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(16 << 20))
}

/// Opens a TCP connection (bound to the next `--source-ips` address, if any) and
/// upgrades it to a WebSocket at `/ws`. Returns the node's index too (0 for one server).
pub async fn connect(target: &Target) -> Result<(WsStream, usize)> {
    let (node, ws_url, addr) = target.next_node();
    Ok((connect_to(target, ws_url, addr).await?, node))
}

/// Like [`connect`], to one chosen node.
pub async fn connect_to(target: &Target, ws_url: &str, addr: SocketAddr) -> Result<WsStream> {
    let socket = TcpSocket::new_v4().context("creating socket")?;
    if let Some(ip) = target.next_source_ip() {
        socket.bind(SocketAddr::new(ip, 0)).with_context(|| format!("binding client socket to {ip}"))?;
    }
    let stream = socket.connect(addr).await.with_context(|| format!("TCP connect to {addr}"))?;
    // Small frames must not wait for Nagle / delayed ACK.
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let request = ws_url.into_client_request().context("building WS request")?;
    let (ws, _response) = client_async_with_config(request, stream, Some(client_config()))
        .await
        .with_context(|| format!("WebSocket upgrade at {ws_url}"))?;
    Ok(ws)
}

/// The next text frame; `Ok(None)` once the server closed the socket.
pub async fn next_text(ws: &mut WsStream) -> Result<Option<Utf8Bytes>> {
    loop {
        match ws.next().await {
            None | Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Ok(Message::Text(t))) => return Ok(Some(t)),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e).context("reading WebSocket"),
        }
    }
}

pub async fn send_text(ws: &mut WsStream, text: String) -> Result<()> {
    ws.send(Message::text(text)).await.context("writing WebSocket")
}

/// Reads frames until one satisfies `want` (returns its parsed form); `error` frames
/// abort. Other frames (heartbeat `pong`, presence, ...) are skipped.
pub async fn wait_for(
    ws: &mut WsStream,
    what: &str,
    mut want: impl FnMut(&ServerFrame) -> bool,
) -> Result<ServerFrame> {
    let fut = async {
        loop {
            let Some(text) = next_text(ws).await? else {
                bail!("server closed the socket while waiting for {what}");
            };
            let f = ServerFrame::parse(&text)?;
            if f.kind == "error" {
                bail!("error frame while waiting for {what}: {}", f.error_text());
            }
            if want(&f) {
                return Ok(f);
            }
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, fut)
        .await
        .with_context(|| format!("timed out waiting for {what}"))?
}

/// Sends `authenticate` and waits for `authenticated`; returns the user id.
pub async fn authenticate(ws: &mut WsStream, token: &str) -> Result<Uuid> {
    send_text(ws, frame::authenticate(token)).await?;
    let f = wait_for(ws, "authenticated", |f| f.kind == "authenticated").await?;
    f.user_id.context("authenticated frame without user_id")
}

/// Sends `subscribe`, then a `ping` with a unique marker and waits for its `pong`.
/// `subscribe` has no ack; frames of one socket are handled in order, so the echo means
/// the subscription has been processed.
pub async fn subscribe_synced(ws: &mut WsStream, channel_ids: &[Uuid]) -> Result<()> {
    send_text(ws, frame::subscribe(channel_ids)).await?;
    // Negative: can never be confused with a heartbeat pong (Unix seconds).
    let marker = -(rand::random::<u32>() as i64) - 1;
    send_text(ws, frame::ping(marker)).await?;
    wait_for(ws, "pong after subscribe", |f| f.kind == "pong" && f.timestamp == Some(marker)).await?;
    Ok(())
}

/// A socket that is connected, authenticated and (if `channels` is not empty)
/// subscribed.
pub struct Ready {
    pub ws: WsStream,
    pub user_id: Uuid,
    /// TCP connect start → `authenticated` received.
    pub connect_time: Duration,
    /// Which node of a cluster it is connected to (0 for one server).
    pub node: usize,
}

pub async fn open(target: &Target, token: &str, channels: &[Uuid]) -> Result<Ready> {
    let t0 = Instant::now();
    let (mut ws, node) =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, connect(target)).await.context("timed out connecting")??;
    let user_id = authenticate(&mut ws, token).await?;
    let connect_time = t0.elapsed();
    if !channels.is_empty() {
        subscribe_synced(&mut ws, channels).await?;
    }
    Ok(Ready { ws, user_id, connect_time, node })
}
