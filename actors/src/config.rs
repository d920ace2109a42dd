//! The live side's tunables (`HubConfig`), shared by every actor through `Shared`.
//!
//! Its own module so that actors can read their settings without importing the hub.

use std::time::Duration;

/// How long a channel actor with no subscribers lingers before stopping (default of
/// `HubConfig::channel_idle_stop`).
pub const IDLE_STOP: Duration = Duration::from_secs(300);

/// Tunables of the live side (the server fills them from its configuration).
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Per-socket frame bucket: burst.
    pub ws_rate_burst: u32,
    /// Per-socket frame bucket: refill per second.
    pub ws_rate_per_second: u32,
    /// Frames queued per socket before a slow reader is disconnected.
    pub outbound_queue: usize,
    /// Bytes queued per socket before a slow reader is disconnected.
    pub outbound_queue_bytes: usize,
    /// Signalling relay frames (`rtc_*`) per socket: their own bucket, so a call's setup
    /// burst is not starved by other traffic and cannot starve it.
    pub signal_rate_burst: u32,
    pub signal_rate_per_second: u32,
    /// A channel actor with no subscribers stops after this long without activity.
    pub channel_idle_stop: Duration,
    /// Sockets per user; one more evicts the oldest.
    pub max_sessions_per_user: usize,
    /// Channel actors keep the newest history pages in memory (off: every read queries).
    pub history_cache: bool,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            ws_rate_burst: 30,
            ws_rate_per_second: 10,
            outbound_queue: 1024,
            outbound_queue_bytes: crate::outbox::DEFAULT_QUEUE_BYTES,
            signal_rate_burst: SIGNAL_RATE_BURST,
            signal_rate_per_second: SIGNAL_RATE_PER_SECOND,
            channel_idle_stop: IDLE_STOP,
            max_sessions_per_user: 8,
            history_cache: true,
        }
    }
}

/// The signalling bucket: a call setup is an offer (or answer) and ~15 ICE candidates per
/// peer, sent at once; 64 covers four peers, and the refill lets renegotiation through.
pub const SIGNAL_RATE_BURST: u32 = 64;
pub const SIGNAL_RATE_PER_SECOND: u32 = 16;
