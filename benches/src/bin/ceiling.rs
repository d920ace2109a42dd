//! The ceiling: the thinnest broadcast server that speaks Palaver's WebSocket protocol
//! on the same transport crates (tokio multi-threaded runtime, tokio-tungstenite with
//! small buffers). No database, no authentication, no membership or rate checks:
//! whatever Palaver achieves is measured against what this achieves on the same box.
//!
//! It only takes shortcuts Palaver can't (persistence, checks); the delivery path is the
//! one Palaver can use too: a frame is serialized once and the same bytes (`Utf8Bytes`,
//! a cheap refcounted clone) are queued to every subscriber's bounded queue, which a
//! per-connection writer task drains into the socket, flushing once per batch.
//!
//! Answers only `/ws`: the load generator skips REST setup with `--ceiling`.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{WebSocketStream, accept_async_with_config};
use uuid::Uuid;

#[derive(Parser)]
#[command(name = "ceiling", version, about = "Minimal broadcast server used as a benchmark yardstick")]
struct Args {
    /// Address to listen on (loopback). Port 0 picks a free port; the bound address is
    /// printed as the first stdout line: `listening on http://ADDR`.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,

    /// Frames queued per connection before it counts as lagging (and is unsubscribed
    /// from the channel, like Palaver's `out_of_sync`).
    #[arg(long, default_value_t = 1024)]
    queue: usize,

    /// Listen backlog. `TcpListener::bind` uses 128, which overflows (dropped SYNs, 1 s
    /// retransmit) when a couple of hundred clients connect at once; the kernel caps it
    /// at net.core.somaxconn.
    #[arg(long, default_value_t = 4096)]
    backlog: u32,

    /// Bytes gathered per socket before tungstenite writes them out (besides the flush after
    /// each drained batch). Larger than Palaver's 8 KiB on purpose: the yardstick should be
    /// the best this transport does on the machine, not Palaver's own choice.
    #[arg(long, default_value_t = 64 * 1024)]
    write_buffer: usize,

    /// Write and flush every frame on its own (one syscall per frame) instead of gathering
    /// each drained batch into one write: the naive broadcast server, for comparison.
    #[arg(long)]
    per_frame: bool,
}

/// How each connection writes (from the command line).
#[derive(Clone, Copy)]
struct WriteMode {
    buffer: usize,
    per_frame: bool,
}

/// Time a client has to send `authenticate` (as in Palaver).
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Unsolicited heartbeat `pong` period (as in Palaver).
const HEARTBEAT: Duration = Duration::from_secs(15);

/// A small read buffer, as the real server uses to hold tens of thousands of sockets; the
/// write buffer from `--write-buffer`; the frame limit matches the protocol's 1 MiB.
fn ws_config(mode: WriteMode) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(mode.buffer)
        .max_write_buffer_size(mode.buffer.max(4 << 20))
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientFrame {
    Authenticate {
        #[allow(dead_code)]
        token: String,
    },
    Subscribe {
        channel_ids: Vec<Uuid>,
    },
    Unsubscribe {
        channel_ids: Vec<Uuid>,
    },
    SendMessage {
        channel_id: Uuid,
        ciphertext: Vec<u8>,
        nonce: Vec<u8>,
        message_type: String,
        #[serde(default)]
        reply_to: Option<Uuid>,
        #[serde(default)]
        sender_key_id: Option<Uuid>,
        #[serde(default)]
        thread_id: Option<Uuid>,
    },
    Ping {
        timestamp: i64,
    },
    /// Every other client frame is accepted and ignored.
    #[serde(other)]
    Other,
}

#[derive(Serialize)]
struct NewMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: Uuid,
    channel_id: Uuid,
    sender_id: Uuid,
    ciphertext: &'a [u8],
    nonce: &'a [u8],
    message_type: &'a str,
    reply_to: Option<Uuid>,
    sender_key_id: Option<Uuid>,
    created_at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    thread_id: Option<Uuid>,
}

#[derive(Serialize)]
struct MessageSent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: Uuid,
    channel_id: Uuid,
    created_at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    thread_id: Option<Uuid>,
}

fn error_frame(code: &str, message: &str) -> Utf8Bytes {
    serde_json::json!({ "type": "error", "code": code, "message": message }).to_string().into()
}

fn pong(timestamp: i64) -> Utf8Bytes {
    format!(r#"{{"type":"pong","timestamp":{timestamp}}}"#).into()
}

/// Channel subscriptions: channel → connection id → that connection's queue.
#[derive(Default)]
struct Hub {
    channels: RwLock<HashMap<Uuid, HashMap<u64, mpsc::Sender<Utf8Bytes>>>>,
    next_conn: AtomicU64,
    connections: AtomicU64,
    messages: AtomicU64,
    deliveries: AtomicU64,
    lagged: AtomicU64,
}

impl Hub {
    fn subscribe(&self, conn: u64, tx: &mpsc::Sender<Utf8Bytes>, channels: &[Uuid]) {
        let mut map = self.channels.write().unwrap_or_else(|p| p.into_inner());
        for ch in channels {
            map.entry(*ch).or_default().insert(conn, tx.clone());
        }
    }

    fn unsubscribe<'a>(&self, conn: u64, channels: impl IntoIterator<Item = &'a Uuid>) {
        let mut map = self.channels.write().unwrap_or_else(|p| p.into_inner());
        for ch in channels {
            if let Some(subs) = map.get_mut(ch) {
                subs.remove(&conn);
                if subs.is_empty() {
                    map.remove(ch);
                }
            }
        }
    }

    /// Queues the same frame bytes to every subscriber except `except`. A subscriber
    /// whose queue is full is dropped from the channel (it lags too far behind).
    fn broadcast(&self, channel: Uuid, except: u64, frame: &Utf8Bytes) {
        let mut lagging = Vec::new();
        let mut delivered = 0;
        {
            let map = self.channels.read().unwrap_or_else(|p| p.into_inner());
            let Some(subs) = map.get(&channel) else { return };
            for (&conn, tx) in subs {
                if conn == except {
                    continue;
                }
                match tx.try_send(frame.clone()) {
                    Ok(()) => delivered += 1,
                    Err(mpsc::error::TrySendError::Full(_)) => lagging.push(conn),
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
        }
        self.deliveries.fetch_add(delivered, Ordering::Relaxed);
        if !lagging.is_empty() {
            self.lagged.fetch_add(lagging.len() as u64, Ordering::Relaxed);
            let mut map = self.channels.write().unwrap_or_else(|p| p.into_inner());
            if let Some(subs) = map.get_mut(&channel) {
                for conn in lagging {
                    subs.remove(&conn);
                }
            }
        }
    }
}

type WsSink = SplitSink<WebSocketStream<TcpStream>, Message>;

/// Drains a connection's queue into its socket: everything already queued is fed and
/// then flushed once, so a burst of frames costs one write (`--per-frame`: one each).
async fn writer(mut sink: WsSink, mut rx: mpsc::Receiver<Utf8Bytes>, per_frame: bool) {
    if per_frame {
        while let Some(frame) = rx.recv().await {
            if sink.send(Message::Text(frame)).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
        return;
    }
    while let Some(first) = rx.recv().await {
        if sink.feed(Message::Text(first)).await.is_err() {
            return;
        }
        while let Ok(next) = rx.try_recv() {
            if sink.feed(Message::Text(next)).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

async fn connection(hub: Arc<Hub>, stream: TcpStream, queue: usize, mode: WriteMode) {
    // Small frames must not wait for Nagle / delayed ACK (Palaver can do the same).
    let _ = stream.set_nodelay(true);
    let Ok(ws) = accept_async_with_config(stream, Some(ws_config(mode))).await else {
        return;
    };
    let (sink, mut incoming) = ws.split();
    let (tx, rx) = mpsc::channel::<Utf8Bytes>(queue);
    tokio::spawn(writer(sink, rx, mode.per_frame));

    // Handshake: the first frame must be `authenticate`; any token is accepted.
    let first = tokio::time::timeout(AUTH_TIMEOUT, incoming.next()).await;
    let authenticated = match first {
        Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str::<ClientFrame>(&t) {
            Ok(ClientFrame::Authenticate { .. }) => true,
            _ => {
                let _ = tx.send(error_frame("auth_required", "authenticate first")).await;
                false
            }
        },
        _ => {
            let _ = tx.send(error_frame("auth_timeout", "authentication took too long")).await;
            false
        }
    };
    if !authenticated {
        return;
    }
    hub.connections.fetch_add(1, Ordering::Relaxed);
    let user_id = Uuid::new_v4();
    let conn = hub.next_conn.fetch_add(1, Ordering::Relaxed);
    let hello = format!(r#"{{"type":"authenticated","user_id":"{user_id}","server_version":"unknown"}}"#);
    if tx.send(hello.into()).await.is_err() {
        return;
    }

    let mut subscribed: HashSet<Uuid> = HashSet::new();
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    loop {
        let msg = tokio::select! {
            msg = incoming.next() => msg,
            _ = heartbeat.tick() => {
                let now = chrono::Utc::now().timestamp();
                let _ = tx.try_send(pong(now));
                continue;
            }
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => continue,
        };
        let reply = match serde_json::from_str::<ClientFrame>(&text) {
            Ok(ClientFrame::Subscribe { channel_ids }) => {
                if channel_ids.len() > 200 {
                    Some(error_frame("validation_error", "at most 200 channel ids per subscribe"))
                } else {
                    hub.subscribe(conn, &tx, &channel_ids);
                    subscribed.extend(channel_ids);
                    None
                }
            }
            Ok(ClientFrame::Unsubscribe { channel_ids }) => {
                if channel_ids.is_empty() {
                    hub.unsubscribe(conn, &subscribed);
                    subscribed.clear();
                } else {
                    hub.unsubscribe(conn, &channel_ids);
                    for ch in &channel_ids {
                        subscribed.remove(ch);
                    }
                }
                None
            }
            Ok(ClientFrame::SendMessage {
                channel_id,
                ciphertext,
                nonce,
                message_type,
                reply_to,
                sender_key_id,
                thread_id,
            }) => {
                if !(1..=65_536).contains(&ciphertext.len())
                    || !(1..=256).contains(&nonce.len())
                    || !matches!(message_type.as_str(), "text" | "file")
                {
                    Some(error_frame("validation_error", "invalid message payload"))
                } else {
                    let id = Uuid::now_v7();
                    let created_at = chrono::Utc::now().to_rfc3339();
                    let ack = MessageSent {
                        kind: "message_sent",
                        id,
                        channel_id,
                        created_at: &created_at,
                        thread_id,
                    };
                    let frame = NewMessage {
                        kind: "new_message",
                        id,
                        channel_id,
                        sender_id: user_id,
                        ciphertext: &ciphertext,
                        nonce: &nonce,
                        message_type: &message_type,
                        reply_to,
                        sender_key_id,
                        created_at: &created_at,
                        thread_id,
                    };
                    // The ack goes first (Palaver's documented order: self, then channel).
                    let ack: Utf8Bytes = serde_json::to_string(&ack).expect("serializable").into();
                    if tx.send(ack).await.is_err() {
                        break;
                    }
                    // Serialized once; every subscriber gets a clone of the same bytes.
                    let bytes: Utf8Bytes = serde_json::to_string(&frame).expect("serializable").into();
                    hub.messages.fetch_add(1, Ordering::Relaxed);
                    hub.broadcast(channel_id, conn, &bytes);
                    None
                }
            }
            Ok(ClientFrame::Ping { timestamp }) => Some(pong(timestamp)),
            Ok(ClientFrame::Authenticate { .. } | ClientFrame::Other) => None,
            Err(_) => Some(error_frame("invalid_message", "unparsable frame")),
        };
        if let Some(reply) = reply
            && tx.send(reply).await.is_err()
        {
            break;
        }
    }
    hub.unsubscribe(conn, &subscribed);
    hub.connections.fetch_sub(1, Ordering::Relaxed);
}

fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let listener = listen(args.bind, args.backlog).with_context(|| format!("binding {}", args.bind))?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    std::io::stdout().flush()?;

    let hub = Arc::new(Hub::default());
    let mode = WriteMode { buffer: args.write_buffer.max(1024), per_frame: args.per_frame };
    eprintln!(
        "ceiling: {} per socket, {}",
        args.write_buffer,
        if mode.per_frame { "one write per frame" } else { "one write per drained batch" }
    );
    let accept = {
        let hub = hub.clone();
        async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(connection(hub.clone(), stream, args.queue, mode));
                    }
                    Err(e) => {
                        // E.g. out of file descriptors: back off instead of spinning.
                        eprintln!("ceiling: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = shutdown_signal() => {}
    }
    eprintln!(
        "ceiling: exiting; open connections {}, messages {}, deliveries {}, lagging drops {}",
        hub.connections.load(Ordering::Relaxed),
        hub.messages.load(Ordering::Relaxed),
        hub.deliveries.load(Ordering::Relaxed),
        hub.lagged.load(Ordering::Relaxed),
    );
    Ok(())
}
