//! A session's outbound side: a bounded queue drained by the socket's writer task.
//!
//! Producers (channel actors, the hub) never wait: `push` is a non-blocking `try_send`.
//! When the queue is full the session is marked for closing with `CLOSE_SLOW_CONSUMER`,
//! so a slow reader costs bounded memory and never slows anyone else down.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

use crate::protocol::Frame;

/// Close code: the client fell too far behind; reconnect and refetch history.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
/// Close code: this user opened a newer session beyond the per-user cap; this one was the oldest.
pub const CLOSE_EVICTED: u16 = 4009;
/// Close code: authentication failed or the account was suspended / deleted.
pub const CLOSE_UNAUTHORIZED: u16 = 4001;
/// Close code: the server is shutting down (standard "going away").
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// Why a session was told to close, with the text the client sees.
pub fn close_reason(code: u16) -> &'static str {
    match code {
        CLOSE_SLOW_CONSUMER => "too slow: reconnect and resync",
        CLOSE_EVICTED => "too many sessions: the oldest was closed",
        CLOSE_UNAUTHORIZED => "unauthorized",
        CLOSE_GOING_AWAY => "server shutting down",
        _ => "closed",
    }
}

/// The handle producers hold for one socket.
#[derive(Debug)]
pub struct Outbox {
    pub session_id: Uuid,
    pub user_id: Uuid,
    /// The login (refresh-token family) whose access token opened this socket; `None` for
    /// tokens minted before access tokens named their login. Revoking a login closes its sockets.
    pub login: Option<Uuid>,
    queue: mpsc::Sender<Frame>,
    /// Non-zero once the session must close; the value is the close code.
    close_code: AtomicU16,
    /// Wakes the writer task when `close_code` is set.
    close_signal: Notify,
}

/// The writer task's side of the queue.
pub struct OutboxReceiver {
    pub frames: mpsc::Receiver<Frame>,
    pub outbox: Arc<Outbox>,
}

impl Outbox {
    pub fn new(session_id: Uuid, user_id: Uuid, capacity: usize) -> (Arc<Self>, OutboxReceiver) {
        Self::for_login(session_id, user_id, None, capacity)
    }

    /// A socket opened with an access token of `login`.
    pub fn for_login(
        session_id: Uuid,
        user_id: Uuid,
        login: Option<Uuid>,
        capacity: usize,
    ) -> (Arc<Self>, OutboxReceiver) {
        let (queue, frames) = mpsc::channel(capacity.max(1));
        let outbox = Arc::new(Self {
            session_id,
            user_id,
            login,
            queue,
            close_code: AtomicU16::new(0),
            close_signal: Notify::new(),
        });
        (outbox.clone(), OutboxReceiver { frames, outbox })
    }

    /// Queues a frame without waiting. A full queue closes the session (slow consumer).
    /// Returns false if the frame was not queued.
    pub fn push(&self, frame: Frame) -> bool {
        match self.queue.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(CLOSE_SLOW_CONSUMER);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Asks the writer to send a close frame with `code` and end the session.
    pub fn close(&self, code: u16) {
        if self.close_code.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            tracing::debug!(session = %self.session_id, code, "closing session");
            // Every waiter: the socket's reader and writer both wait on `closed()` (with
            // `notify_one` only one of them woke, and a close with nothing queued left the
            // writer asleep, so the socket stayed open). `closed()` creates its `Notified`
            // before reading the code, so no wake-up is lost.
            self.close_signal.notify_waiters();
        }
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
        self.close_requested() != 0 || self.queue.is_closed()
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
        assert_eq!(rx.frames.recv().await.unwrap().as_str(), "a");
        // A later close does not overwrite the first reason.
        outbox.close(CLOSE_EVICTED);
        assert_eq!(outbox.close_requested(), CLOSE_SLOW_CONSUMER);
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
