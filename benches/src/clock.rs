//! A process-wide monotonic clock. Senders and receivers live in the same process, so a
//! send timestamp embedded in the ciphertext can be compared with the receive time
//! without any cross-host clock sync.

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the first call in this process (monotonic).
pub fn now_ns() -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    epoch.elapsed().as_nanos() as u64
}

/// Microseconds elapsed since a `now_ns()` reading (saturating at 0).
pub fn us_since(t_ns: u64) -> u64 {
    now_ns().saturating_sub(t_ns) / 1_000
}
