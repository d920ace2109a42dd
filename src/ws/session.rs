//! One WebSocket connection: the authentication handshake, then three parts —
//! a reader (this task) that hands text frames to the session actor, the session actor
//! (logic, in `palaver-actors`), and a writer task that drains the session's bounded
//! outbox into the socket.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use palaver_actors::error_code::ErrorCode;
use palaver_actors::outbox::{
    CLOSE_SERVICE_RESTART, CLOSE_UNAUTHORIZED, Outbox, OutboxReceiver, close_reason,
};
use palaver_actors::protocol::{ClientFrame, ServerFrame, decode};
use palaver_actors::session::{FrameGate, MAX_FRAME_BYTES, SessionActor, SessionArgs, SessionMsg};
use ractor::Actor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use uuid::Uuid;

use crate::auth::{Caller, caller_from_token};
use crate::state::AppState;

pub type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// The first frame must arrive within this long.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(state: AppState, mut socket: Socket, ip: IpAddr) {
    let started = Instant::now();
    let caller = match handshake(&state, &mut socket).await {
        Ok(caller) => caller,
        Err((code, message)) => {
            // A timeout read no text frame; the other refusals read one.
            let frames_in = u64::from(code != ErrorCode::AuthTimeout);
            let end = SessionEnd { frames_in, frames_out: 1, close_code: CLOSE_UNAUTHORIZED, by: "server" };
            end.log(None, ip, started);
            state.hub.shared.metrics.closed(CLOSE_UNAUTHORIZED);
            let frame = ServerFrame::error(code, message).encode();
            let _ = socket.send(Message::Text(frame)).await;
            let _ = socket
                .send(Message::Close(Some(CloseFrame {
                    code: CloseCode::from(CLOSE_UNAUTHORIZED),
                    reason: close_reason(CLOSE_UNAUTHORIZED).into(),
                })))
                .await;
            return;
        }
    };
    let user_id = caller.user_id;
    let end = serve(state, socket, caller).await;
    end.log(Some(user_id), ip, started);
}

/// How a session ended: one access-log line per WebSocket (`PALAVER_LOG_FORMAT`).
struct SessionEnd {
    /// Text frames read from the client (the `authenticate` frame included).
    frames_in: u64,
    /// Text frames written to the client.
    frames_out: u64,
    /// The close code: the one the server sent, else the client's (1005 when its close frame
    /// had none, 1006 when the connection dropped without one).
    close_code: u16,
    /// `server` or `client`: who ended it.
    by: &'static str,
}

impl SessionEnd {
    fn log(&self, user: Option<Uuid>, ip: IpAddr, started: Instant) {
        tracing::info!(
            target: "palaver::access",
            user = user.map(tracing::field::display),
            client_ip = %ip,
            duration_ms = started.elapsed().as_millis() as u64,
            frames_in = self.frames_in,
            frames_out = self.frames_out,
            close_code = self.close_code,
            closed_by = self.by,
            "websocket session ended"
        );
    }
}

/// Reads the first frame: it must be `authenticate` with a valid token, within 10 s.
async fn handshake(state: &AppState, socket: &mut Socket) -> Result<Caller, (ErrorCode, &'static str)> {
    const TIMEOUT: (ErrorCode, &str) = (ErrorCode::AuthTimeout, "authentication took too long");
    let first = tokio::time::timeout(AUTH_TIMEOUT, socket.next()).await.map_err(|_| TIMEOUT)?;
    let text = match first {
        Some(Ok(Message::Text(text))) => text,
        _ => return Err(TIMEOUT),
    };
    // The first frame never reaches a session actor: counted here.
    let frame = decode(text.as_str());
    state.hub.shared.metrics.frames_in.inc(frame.as_ref().map_or("invalid", ClientFrame::type_name));
    match frame {
        Ok(ClientFrame::Authenticate { token }) => caller_from_token(&state.tokens, &state.hub, &token)
            .ok()
            .filter(|caller| !login_revoked(state, caller))
            .ok_or((ErrorCode::Unauthorized, "the token was rejected")),
        _ => Err((ErrorCode::AuthRequired, "authenticate must be the first frame")),
    }
}

/// The token's login was revoked (its sockets were closed): it opens no new ones either.
fn login_revoked(state: &AppState, caller: &Caller) -> bool {
    caller.login.is_some_and(|login| state.hub.revoked_logins.is_revoked(login))
}

async fn serve(state: AppState, socket: Socket, caller: Caller) -> SessionEnd {
    let hub = state.hub.clone();
    // Time-ordered: the per-user session cap keeps the newest, counted across nodes.
    let session_id = Uuid::now_v7();
    let (outbox, receiver) = Outbox::for_session(
        session_id,
        caller.user_id,
        caller.login,
        hub.config.outbound_queue,
        hub.config.outbound_queue_bytes,
        hub.shared.metrics.clone(),
    );

    // `authenticated` first, then registration (which may evict the user's oldest session).
    outbox.push(
        ServerFrame::Authenticated {
            user_id: caller.user_id,
            server_version: state.config.client_version.clone(),
        }
        .encode(),
    );
    let registered = hub.sessions().register(outbox.clone(), hub.config.max_sessions_per_user);
    // Revoked between the handshake and now: the revocation did not see this socket yet.
    if login_revoked(&state, &caller) {
        outbox.close(CLOSE_UNAUTHORIZED);
    }
    // Authenticated after shutdown began: the registry's sockets were (or are being) closed
    // for the restart, and this one may have been registered too late to be among them.
    if hub.is_stopping() {
        outbox.close(CLOSE_SERVICE_RESTART);
    }
    let args = SessionArgs { hub: hub.clone(), outbox: outbox.clone() };
    let actor = match Actor::spawn(None, SessionActor, args).await {
        Ok((actor, _)) => actor,
        Err(err) => {
            tracing::error!(error = %err, "could not start session actor");
            hub.sessions().unregister(caller.user_id, session_id);
            return SessionEnd { frames_in: 1, frames_out: 0, close_code: 1011, by: "server" };
        }
    };
    if registered.first_session {
        hub.presence.online(caller.user_id);
    }
    let bulk = hub.presence.bulk_for(caller.user_id);
    if !bulk.is_empty() {
        outbox.push(ServerFrame::PresenceBulk { statuses: bulk }.encode());
    }
    outbox.push(ServerFrame::Pong { timestamp: chrono::Utc::now().timestamp() }.encode());

    let (sink, mut stream) = socket.split();
    let frames_out = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn(write_loop(sink, receiver, frames_out.clone()));
    // The `authenticate` frame was the first one in.
    let mut frames_in: u64 = 1;
    let mut client_close = None;

    // Reader: hand text frames to the actor until the socket or the session closes. Each
    // frame needs a permit first: when the session is behind, the reader stops reading and
    // the flood waits in the client's TCP connection, not in server memory.
    let gate = FrameGate::new(hub.clone());
    let closed = outbox.closed();
    tokio::pin!(closed);
    loop {
        let permit = tokio::select! {
            permit = gate.admit() => permit,
            _ = &mut closed => break,
        };
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    frames_in += 1;
                    let msg = if text.len() > MAX_FRAME_BYTES {
                        SessionMsg::TooLarge(permit)
                    } else {
                        SessionMsg::Text(text.as_str().to_owned(), permit)
                    };
                    if actor.send_message(msg).is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    client_close = Some(frame.map_or(1005, |f| u16::from(f.code)));
                    break;
                }
                None | Some(Err(_)) => break,
                // Binary frames are ignored; pings are answered by tungstenite.
                Some(Ok(_)) => {}
            },
            _ = &mut closed => break,
        }
    }
    let _ = actor.send_message(SessionMsg::Closed);
    let (close_code, by) = match (outbox.close_requested(), client_close) {
        (0, Some(code)) => (code, "client"),
        (0, None) => (1006, "client"),
        (code, _) => (code, "server"),
    };
    // The writer sends the close frame (if a close was requested) and ends; don't wait long.
    if outbox.close_requested() == 0 {
        outbox.close(1000);
    }
    let abort = writer.abort_handle();
    if tokio::time::timeout(Duration::from_secs(5), writer).await.is_err() {
        abort.abort();
    }
    SessionEnd { frames_in, frames_out: frames_out.load(Ordering::Relaxed), close_code, by }
}

/// Drains the outbox into the socket, batching whatever is queued into one flush.
/// A close request interrupts even a write blocked on a peer that stopped reading.
async fn write_loop<S>(mut sink: S, mut receiver: OutboxReceiver, frames_out: Arc<AtomicU64>)
where
    S: futures_util::Sink<Message> + Unpin,
{
    let outbox = receiver.outbox.clone();
    // One close watcher for the whole loop: re-creating it per frame would register and
    // unregister a waiter on every wake-up (measurable at 100k deliveries/s).
    let closed = outbox.closed();
    tokio::pin!(closed);
    let code = loop {
        let frame = tokio::select! {
            biased;
            code = &mut closed => break code,
            frame = receiver.recv() => match frame {
                Some(frame) => frame,
                None => break outbox.close_requested().max(1000),
            },
        };
        let write = async {
            sink.feed(Message::Text(frame)).await?;
            frames_out.fetch_add(1, Ordering::Relaxed);
            while let Some(more) = receiver.try_recv() {
                sink.feed(Message::Text(more)).await?;
                frames_out.fetch_add(1, Ordering::Relaxed);
            }
            sink.flush().await
        };
        // Writing wins when it can finish; a close request only cuts in while the write is
        // stuck on a peer that stopped reading.
        tokio::select! {
            biased;
            written = write => if written.is_err() {
                // The peer is gone or its write buffer is full (a reader that stopped reading):
                // end the session so the reader half and the registry let go of it too.
                outbox.close(palaver_actors::outbox::CLOSE_SLOW_CONSUMER);
                return;
            },
            code = &mut closed => break code,
        }
        if outbox.close_requested() != 0 {
            break outbox.close_requested();
        }
    };
    // Best effort: deliver what was queued before the close (e.g. the eviction notice), then
    // the close frame. A peer that stopped reading may never take them, hence the timeout.
    let frame = CloseFrame { code: CloseCode::from(code), reason: close_reason(code).into() };
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        if code != palaver_actors::outbox::CLOSE_SLOW_CONSUMER {
            while let Some(more) = receiver.try_recv() {
                if sink.feed(Message::Text(more)).await.is_ok() {
                    frames_out.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let _ = sink.send(Message::Close(Some(frame))).await;
        let _ = sink.close().await;
    })
    .await;
}
