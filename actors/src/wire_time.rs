//! How the wire writes a time: RFC 3339 with microseconds when non-zero (`…+00:00`).
//!
//! Depends on chrono only, so the server's domain types format times the way frames do
//! without importing the frame protocol.

use chrono::{DateTime, SecondsFormat, Utc};

/// Timestamps as chrono's RFC 3339 with microseconds when non-zero (`…+00:00`).
pub fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}
