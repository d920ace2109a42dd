//! Graceful shutdown (SIGTERM / SIGINT): the order that lets a restart lose no acknowledged
//! message and leave no send unanswered (`Server::shutdown` runs it):
//!
//! 1. `/api/health` answers 503 `draining`, for `drain_delay` (so a load balancer stops
//!    routing new clients here while everything still works);
//! 2. the listener stops accepting; the scheduler and housekeeping stop;
//! 3. every channel actor commits and answers the sends it accepted (ack if committed, error
//!    otherwise), handles what is already in its mailbox and stops; a send arriving later is
//!    answered `unavailable` ("the server is shutting down"), never acked;
//! 4. every socket is closed with 1012 ("service restart") after the frames queued for it, so
//!    clients reconnect and resume;
//! 5. the database pool closes. `main.rs` exits within `SHUTDOWN_LIMIT` whatever happens.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::task::TaskTracker;

/// The whole shutdown, signal to exit, fits in this (the operator's contract: 10 s).
pub const SHUTDOWN_LIMIT: Duration = Duration::from_millis(9_500);
/// Step 3's budget. A commit takes milliseconds; only a database outage makes it wait longer,
/// and then the senders whose commit is still open get no answer (connection closed without
/// ack), which is allowed: what matters is that nothing is acked and lost.
pub const CHANNEL_FLUSH_LIMIT: Duration = Duration::from_millis(2_500);
/// Step 4's budget: writers send what is queued and the close frame (a peer that stopped
/// reading is not waited for beyond this).
pub const SOCKET_CLOSE_LIMIT: Duration = Duration::from_millis(1_500);

/// The drain state shared by the health route, the gateway and `Server::shutdown`.
#[derive(Default)]
pub struct Drain {
    draining: AtomicBool,
    /// Every WebSocket connection's task, so shutdown can wait for their close frames.
    sockets: TaskTracker,
}

impl Drain {
    /// Step 1: health says `draining` from now on.
    pub fn begin(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Runs one WebSocket connection as a task shutdown waits for.
    pub fn spawn_socket<F>(&self, connection: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.sockets.spawn(connection);
    }

    /// Waits until every socket task has ended (sent its close frame), at most `limit`.
    /// Returns false when some were still running.
    pub async fn sockets_closed(&self, limit: Duration) -> bool {
        self.sockets.close();
        tokio::time::timeout(limit, self.sockets.wait()).await.is_ok()
    }
}
