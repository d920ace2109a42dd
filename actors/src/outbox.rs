//! A session's outbound side: a bounded queue drained by the socket's writer task.
//!
//! Producers (channel actors, the hub) never wait: `push` is a non-blocking `try_send`.
//! The queue is bounded in frames and in bytes (a few large frames must not pin megabytes
//! per stalled socket). When it is full the session is marked for closing with
//! `CLOSE_SLOW_CONSUMER`, so a slow reader costs bounded memory and never slows anyone else
//! down. Ephemeral frames (typing, read receipts, presence: resume.md's droppable class) go
//! through `push_ephemeral` and are dropped, not queued, once the queue is over half full, so
//! a reader falling behind keeps receiving what matters for longer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

use crate::metrics::{HubMetrics, Tally};
use crate::protocol::{Epoch, Frame};

/// Most DM channels whose first live position one socket remembers (see `Outbox::dm_seen`).
const MAX_DM_POSITIONS: usize = 1024;

/// Default byte bound of one socket's queue (`PALAVER_WS_QUEUE_BYTES`).
pub const DEFAULT_QUEUE_BYTES: usize = 4 * 1024 * 1024;

/// Close code: the client fell too far behind; reconnect and refetch history.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
/// Close code: this user opened a newer session beyond the per-user cap; this one was the oldest.
pub const CLOSE_EVICTED: u16 = 4009;
/// Close code: authentication failed or the account was suspended / deleted.
pub const CLOSE_UNAUTHORIZED: u16 = 4001;
/// Close code: the server is shutting down (standard "going away").
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: the server is restarting after a graceful drain (standard "service restart"):
/// everything this socket sent was answered first; reconnect and resume.
pub const CLOSE_SERVICE_RESTART: u16 = 1012;

/// Why a session was told to close, with the text the client sees.
pub fn close_reason(code: u16) -> &'static str {
    match code {
        CLOSE_SLOW_CONSUMER => "too slow: reconnect and resync",
        CLOSE_EVICTED => "too many sessions: the oldest was closed",
        CLOSE_UNAUTHORIZED => "unauthorized",
        CLOSE_GOING_AWAY => "server shutting down",
        CLOSE_SERVICE_RESTART => "service restart",
        _ => "closed",
    }
}

/// Where a stand-in's frames go instead of a queue: the one ordered link from a channel
/// owner to the node of the session it stands in for (`cluster::link`). Producers push
/// into it exactly as into a socket's queue, but no task per session wakes to drain it.
pub trait Relay: Send + Sync + std::fmt::Debug {
    /// Queues `frame` for the session; false if the link cannot take it (closed or full).
    fn push(&self, user_id: Uuid, session_id: Uuid, frame: Frame) -> bool;
    /// The session is to be closed with `code` after what was pushed before.
    fn close(&self, user_id: Uuid, session_id: Uuid, code: u16);
    /// The session's subscription to `channel_id` moved to another owner, whose stream goes
    /// on after `at` (after what was pushed before); `released`: nothing else of the session
    /// is held here.
    fn moved(&self, user_id: Uuid, session_id: Uuid, channel_id: Uuid, at: (Epoch, u64), released: bool);
    /// The session is now subscribed to `channel_id` here (after what was pushed before):
    /// the link's node delivers the channel's broadcasts to it.
    fn join(&self, user_id: Uuid, session_id: Uuid, channel_id: Uuid);
    /// The session no longer is.
    fn leave(&self, user_id: Uuid, session_id: Uuid, channel_id: Uuid);
    /// Queues `frame` once for every session of the link's node subscribed to `channel_id`
    /// here, except `except`; false if the link cannot take it (closed or full).
    fn broadcast(&self, channel_id: Uuid, frame: Frame, except: Option<Uuid>, ephemeral: bool) -> bool;
    /// Whether the link is over half full (ephemeral frames are dropped then).
    fn congested(&self) -> bool;
    /// The link is gone (its node died or NATS failed): nothing pushed reaches the session.
    fn is_closed(&self) -> bool;
}

/// What an outbox hands its frames to.
#[derive(Debug)]
enum Sink {
    /// A socket's queue, drained by its writer task.
    Queue(mpsc::Sender<Frame>),
    /// A stand-in's link to its session's node; `room` is what a replay may send at once
    /// (the real queue's bounds apply on the session's node).
    Relay { relay: Arc<dyn Relay>, room: (usize, usize) },
}

/// The handle producers hold for one socket.
#[derive(Debug)]
pub struct Outbox {
    pub session_id: Uuid,
    pub user_id: Uuid,
    /// The login (refresh-token family) whose access token opened this socket; `None` for
    /// tokens minted before access tokens named their login. Revoking a login closes its sockets.
    pub login: Option<Uuid>,
    sink: Sink,
    /// Bytes of the frames queued and not yet taken by the writer.
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    /// Ephemeral frames not queued because the queue was over half full.
    dropped: AtomicU64,
    /// Non-zero once the session must close; the value is the close code.
    close_code: AtomicU16,
    /// Wakes the writer task when `close_code` is set.
    close_signal: Notify,
    /// Set by the first `subscribe` with `since`: this client understands stream positions
    /// and is told `resync_required` instead of being closed when frames may be missing.
    resume_capable: AtomicBool,
    /// DM channel → (epoch, first position) of the first durable frame this socket got live.
    /// DM frames reach both participants' sockets whether subscribed or not, so a later
    /// `subscribe` with `since` must not replay what this socket already received.
    dm_first: Mutex<HashMap<uuid::Uuid, (Epoch, u64)>>,
    /// The server's counters (drops, closes, frames out).
    pub(crate) metrics: Arc<HubMetrics>,
}

/// The writer task's side of the queue.
pub struct OutboxReceiver {
    frames: mpsc::Receiver<Frame>,
    pub outbox: Arc<Outbox>,
    /// Frames taken and not yet added to the shared counters (published per batch).
    tally: Tally,
}

impl OutboxReceiver {
    /// The next queued frame (`None` once every producer is gone). What the previous batch
    /// took is counted first: the writer calls this after each flush, before it waits.
    pub async fn recv(&mut self) -> Option<Frame> {
        self.tally.publish(&self.outbox.metrics);
        let frame = self.frames.recv().await?;
        self.taken(&frame);
        Some(frame)
    }

    /// A queued frame if one is ready, without waiting.
    pub fn try_recv(&mut self) -> Option<Frame> {
        let frame = self.frames.try_recv().ok()?;
        self.taken(&frame);
        Some(frame)
    }

    fn taken(&mut self, frame: &Frame) {
        self.outbox.taken(frame);
        self.tally.add(&self.outbox.metrics, frame.as_str());
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        self.tally.publish(&self.outbox.metrics);
    }
}

impl Outbox {
    /// A queue of `capacity` frames and the default byte bound.
    pub fn new(session_id: Uuid, user_id: Uuid, capacity: usize) -> (Arc<Self>, OutboxReceiver) {
        Self::for_login(session_id, user_id, None, capacity, DEFAULT_QUEUE_BYTES)
    }

    /// A socket opened with an access token of `login`: a queue of at most `capacity` frames
    /// and `max_bytes` bytes (one frame is always accepted into an empty queue, whatever its size).
    /// It counts into a registry of its own (tests, benches); servers use `for_session`.
    pub fn for_login(
        session_id: Uuid,
        user_id: Uuid,
        login: Option<Uuid>,
        capacity: usize,
        max_bytes: usize,
    ) -> (Arc<Self>, OutboxReceiver) {
        Self::for_session(session_id, user_id, login, capacity, max_bytes, Arc::default())
    }

    /// `for_login`, counting into the server's `metrics`.
    pub fn for_session(
        session_id: Uuid,
        user_id: Uuid,
        login: Option<Uuid>,
        capacity: usize,
        max_bytes: usize,
        metrics: Arc<HubMetrics>,
    ) -> (Arc<Self>, OutboxReceiver) {
        let (queue, frames) = mpsc::channel(capacity.max(1));
        let outbox =
            Arc::new(Self::with_sink(session_id, user_id, login, Sink::Queue(queue), max_bytes, metrics));
        (outbox.clone(), OutboxReceiver { frames, outbox, tally: Tally::default() })
    }

    /// A stand-in on a channel's owner for a session of another node: what is pushed goes
    /// onto `relay` in order; `room` (frames, bytes) bounds a replay.
    pub fn relayed(
        session_id: Uuid,
        user_id: Uuid,
        login: Option<Uuid>,
        relay: Arc<dyn Relay>,
        room: (usize, usize),
        metrics: Arc<HubMetrics>,
    ) -> Arc<Self> {
        Arc::new(Self::with_sink(session_id, user_id, login, Sink::Relay { relay, room }, room.1, metrics))
    }

    fn with_sink(
        session_id: Uuid,
        user_id: Uuid,
        login: Option<Uuid>,
        sink: Sink,
        max_bytes: usize,
        metrics: Arc<HubMetrics>,
    ) -> Self {
        Self {
            session_id,
            user_id,
            login,
            sink,
            queued_bytes: AtomicUsize::new(0),
            max_bytes: max_bytes.max(1),
            dropped: AtomicU64::new(0),
            close_code: AtomicU16::new(0),
            close_signal: Notify::new(),
            resume_capable: AtomicBool::new(false),
            dm_first: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Queues a frame without waiting. A full queue (frames or bytes) closes the session
    /// (slow consumer). Returns false if the frame was not queued.
    pub fn push(&self, frame: Frame) -> bool {
        let queue = match &self.sink {
            Sink::Queue(queue) => queue,
            Sink::Relay { relay, .. } => {
                // Nothing after a close: the session's node closes it after what came before.
                if self.close_requested() != 0 {
                    return false;
                }
                if relay.push(self.user_id, self.session_id, frame) {
                    return true;
                }
                self.close(CLOSE_SLOW_CONSUMER);
                return false;
            }
        };
        let len = frame.len();
        let before = self.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before > 0 && before + len > self.max_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.close(CLOSE_SLOW_CONSUMER);
            return false;
        }
        match queue.try_send(frame) {
            Ok(()) => true,
            Err(err) => {
                self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                if matches!(err, mpsc::error::TrySendError::Full(_)) {
                    self.close(CLOSE_SLOW_CONSUMER);
                }
                false
            }
        }
    }

    /// Queues a frame of the droppable class (typing, read receipts, presence) unless the
    /// queue is over half full in frames or bytes; then it is dropped (and counted), so the
    /// room left goes to frames that must not be lost.
    pub fn push_ephemeral(&self, frame: Frame) -> bool {
        let over_half = match &self.sink {
            Sink::Queue(queue) => {
                queue.max_capacity() - queue.capacity() > queue.max_capacity() / 2
                    || self.queued_bytes.load(Ordering::Acquire) > self.max_bytes / 2
            }
            Sink::Relay { relay, .. } => relay.congested(),
        };
        if over_half {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.metrics.ephemeral_dropped.inc();
            return false;
        }
        self.push(frame)
    }

    /// Frames and bytes the queue can still take now.
    pub fn room(&self) -> (usize, usize) {
        match &self.sink {
            Sink::Queue(queue) => {
                (queue.capacity(), self.max_bytes.saturating_sub(self.queued_bytes.load(Ordering::Acquire)))
            }
            Sink::Relay { room, .. } => *room,
        }
    }

    /// A stand-in's subscription to `channel_id` moved to another owner (a planned shard
    /// move): its node is told, after every frame pushed before, and re-attaches the session
    /// there. False for a socket's own outbox (its node re-attaches it directly) and for a
    /// closed stand-in.
    pub fn relay_moved(&self, channel_id: Uuid, at: (Epoch, u64), released: bool) -> bool {
        match &self.sink {
            Sink::Relay { relay, .. } if !self.is_closed() => {
                relay.moved(self.user_id, self.session_id, channel_id, at, released);
                true
            }
            _ => false,
        }
    }

    /// Whether this is a stand-in's outbox (its session lives on another node).
    /// A stand-in's link to its session's node (None: a socket's own outbox).
    pub fn relay(&self) -> Option<&Arc<dyn Relay>> {
        match &self.sink {
            Sink::Relay { relay, .. } => Some(relay),
            Sink::Queue(_) => None,
        }
    }

    pub fn is_relayed(&self) -> bool {
        matches!(self.sink, Sink::Relay { .. })
    }

    /// The client subscribed with `since` once: it reads stream positions.
    pub fn mark_resume_capable(&self) {
        self.resume_capable.store(true, Ordering::Relaxed);
    }

    pub fn is_resume_capable(&self) -> bool {
        self.resume_capable.load(Ordering::Relaxed)
    }

    /// Records that this socket got a DM channel's durable frame at `cseq` live.
    pub fn dm_seen(&self, channel_id: Uuid, epoch: Epoch, cseq: u64) {
        let mut first = self.dm_first.lock().unwrap_or_else(|p| p.into_inner());
        let room = first.len() < MAX_DM_POSITIONS;
        match first.get_mut(&channel_id) {
            Some(held) if held.0 == epoch => {}
            Some(held) => *held = (epoch, cseq),
            None if room => {
                first.insert(channel_id, (epoch, cseq));
            }
            None => {}
        }
    }

    /// The first position of `epoch` this socket got live in a DM channel, if any.
    pub fn dm_first(&self, channel_id: Uuid, epoch: Epoch) -> Option<u64> {
        let first = self.dm_first.lock().unwrap_or_else(|p| p.into_inner());
        first.get(&channel_id).filter(|held| held.0 == epoch).map(|held| held.1)
    }

    /// Whether this socket got durable frames of a DM channel in an epoch other than `epoch`.
    pub fn dm_saw_other_epoch(&self, channel_id: Uuid, epoch: Epoch) -> bool {
        let first = self.dm_first.lock().unwrap_or_else(|p| p.into_inner());
        first.get(&channel_id).is_some_and(|held| held.0 != epoch)
    }

    /// Ephemeral frames dropped so far because the queue was over half full.
    pub fn ephemeral_dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The writer took `frame` off the queue.
    fn taken(&self, frame: &Frame) {
        self.queued_bytes.fetch_sub(frame.len(), Ordering::AcqRel);
    }

    /// Asks the writer to send a close frame with `code` and end the session.
    pub fn close(&self, code: u16) {
        if self.close_code.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            tracing::debug!(session = %self.session_id, code, "closing session");
            self.metrics.closed(code);
            if let Sink::Relay { relay, .. } = &self.sink {
                relay.close(self.user_id, self.session_id, code);
            }
            // Every waiter: the socket's reader and writer both wait on `closed()` (with
            // `notify_one` only one of them woke, and a close with nothing queued left the
            // writer asleep, so the socket stayed open). `closed()` creates its `Notified`
            // before reading the code, so no wake-up is lost.
            self.close_signal.notify_waiters();
        }
    }

    /// This socket may have missed frames and cannot be told where (a legacy client, or a
    /// loss nobody can repair): `out_of_sync` (the `ServerFrame::out_of_sync` bytes, encoded
    /// once by the caller for all its sockets), then a 4008 close, counted as a resync close.
    pub fn close_out_of_sync(&self, out_of_sync: &Frame) {
        self.metrics.resync_closes.inc();
        self.push(out_of_sync.clone());
        self.close(CLOSE_SLOW_CONSUMER);
    }

    /// The close code requested so far (0 = none).
    pub fn close_requested(&self) -> u16 {
        self.close_code.load(Ordering::Acquire)
    }

    /// Resolves once `close` has been called.
    pub async fn closed(&self) -> u16 {
        loop {
            let notified = self.close_signal.notified();
            let code = self.close_requested();
            if code != 0 {
                return code;
            }
            notified.await;
        }
    }

    pub fn is_closed(&self) -> bool {
        self.close_requested() != 0
            || match &self.sink {
                Sink::Queue(queue) => queue.is_closed(),
                Sink::Relay { relay, .. } => relay.is_closed(),
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_queue_closes_as_slow_consumer_and_never_blocks() {
        let (outbox, mut rx) = Outbox::new(Uuid::nil(), Uuid::nil(), 2);
        assert!(outbox.push(Frame::from("a")));
        assert!(outbox.push(Frame::from("b")));
        assert!(!outbox.push(Frame::from("c")));
        assert_eq!(outbox.closed().await, CLOSE_SLOW_CONSUMER);
        assert_eq!(rx.recv().await.unwrap().as_str(), "a");
        // A later close does not overwrite the first reason.
        outbox.close(CLOSE_EVICTED);
        assert_eq!(outbox.close_requested(), CLOSE_SLOW_CONSUMER);
    }

    #[tokio::test]
    async fn byte_bound_closes_a_queue_of_few_large_frames() {
        let (outbox, mut rx) = Outbox::for_login(Uuid::nil(), Uuid::nil(), None, 100, 10);
        // One frame always fits an empty queue, whatever its size.
        assert!(outbox.push(Frame::from("0123456789ab")));
        assert_eq!(rx.recv().await.unwrap().as_str(), "0123456789ab");
        assert!(outbox.push(Frame::from("012345")));
        assert!(!outbox.push(Frame::from("012345")));
        assert_eq!(outbox.close_requested(), CLOSE_SLOW_CONSUMER);
    }

    #[tokio::test]
    async fn ephemeral_frames_are_dropped_over_half_full_and_others_still_queue() {
        let (outbox, mut rx) = Outbox::for_login(Uuid::nil(), Uuid::nil(), None, 4, 1000);
        assert!(outbox.push_ephemeral(Frame::from("t1")));
        assert!(outbox.push(Frame::from("m1")));
        assert!(outbox.push(Frame::from("m2")));
        assert!(!outbox.push_ephemeral(Frame::from("t2")));
        assert_eq!(outbox.ephemeral_dropped(), 1);
        assert!(outbox.push(Frame::from("m3")));
        assert_eq!(outbox.close_requested(), 0);
        assert_eq!(rx.recv().await.unwrap().as_str(), "t1");
        assert_eq!(rx.try_recv().unwrap().as_str(), "m1");
        // Byte half: two frames of 300 bytes in a 1000-byte queue.
        let (outbox, _rx) = Outbox::for_login(Uuid::nil(), Uuid::nil(), None, 100, 1000);
        assert!(outbox.push(Frame::from("x".repeat(300))));
        assert!(outbox.push(Frame::from("x".repeat(300))));
        assert!(!outbox.push_ephemeral(Frame::from("t")));
    }

    #[tokio::test]
    async fn close_wakes_every_waiter() {
        let (outbox, _rx) = Outbox::new(Uuid::nil(), Uuid::nil(), 2);
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let outbox = outbox.clone();
                tokio::spawn(async move { outbox.closed().await })
            })
            .collect();
        tokio::task::yield_now().await;
        outbox.close(CLOSE_UNAUTHORIZED);
        for waiter in waiters {
            let code = tokio::time::timeout(std::time::Duration::from_secs(2), waiter).await;
            assert_eq!(code.expect("woken").unwrap(), CLOSE_UNAUTHORIZED);
        }
    }
}
