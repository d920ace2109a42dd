//! The live side's metrics, one registry per hub, and the Prometheus text format they are
//! written in.
//!
//! Why a registry of our own rather than the `metrics` facade: tests run many servers in one
//! process, and each must count only its own traffic (a test asserts exact deltas), which a
//! process-wide recorder cannot give. Fixed families of relaxed atomics also keep the hot path
//! (a frame handed to a socket) at one uncontended add: no key lookup, no lock, no allocation.
//! Every label set is a fixed list (frame types, close codes): labels never carry user or
//! channel ids.
//!
//! At the bottom of the crate: it names no actor, so every module may count through it.

use std::fmt::{Display, Write};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// A monotonic count.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (open sockets).
#[derive(Default, Debug)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counts per value of one label, the values fixed up front; anything else counts as `other`.
#[derive(Debug)]
pub struct CounterFamily {
    labels: &'static [&'static str],
    /// One per label, then `other`.
    counts: Box<[Counter]>,
}

impl CounterFamily {
    pub fn new(labels: &'static [&'static str]) -> Self {
        Self { labels, counts: (0..=labels.len()).map(|_| Counter::default()).collect() }
    }

    /// The slot of `label` (`other` when it is not in the list).
    pub fn slot(&self, label: &str) -> usize {
        self.labels.iter().position(|l| *l == label).unwrap_or(self.labels.len())
    }

    pub fn inc(&self, label: &str) {
        self.add_at(self.slot(label), 1);
    }

    pub fn add_at(&self, slot: usize, n: u64) {
        if let Some(counter) = self.counts.get(slot) {
            counter.add(n);
        }
    }

    pub fn get(&self, label: &str) -> u64 {
        self.counts[self.slot(label)].get()
    }

    /// (label, count) for every label, `other` last.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.labels.iter().copied().chain(["other"]).zip(self.counts.iter().map(Counter::get))
    }
}

/// Observations in fixed buckets. Values are integers in a base unit (microseconds, rows);
/// `scale` turns them into the exposed unit (seconds = micros / 1e6).
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds (inclusive, base unit), ascending.
    bounds: &'static [u64],
    /// One per bound, then the overflow (`+Inf`); not cumulative (the writer sums).
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
    scale: f64,
}

/// Latency buckets in microseconds: 0.5 ms … 5 s.
pub const LATENCY_MICROS: &[u64] = &[
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000,
];

/// Group-commit batch sizes: powers of two up to the batch cap (256).
pub const BATCH_ROWS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256];

impl Histogram {
    pub fn new(bounds: &'static [u64], scale: f64) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            scale,
        }
    }

    /// A latency histogram exposed in seconds.
    pub fn seconds() -> Self {
        Self::new(LATENCY_MICROS, 1e6)
    }

    pub fn observe(&self, value: u64) {
        let slot = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, elapsed: std::time::Duration) {
        self.observe(elapsed.as_micros().min(u64::MAX as u128) as u64);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }
}

/// Client frame types counted on the way in (`ClientFrame::type_name`), plus frames that
/// were no frame: undecodable, or over the size limit.
pub const CLIENT_FRAME_TYPES: &[&str] = &[
    "send_message",
    "ping",
    "typing",
    "stop_typing",
    "mark_read",
    "subscribe",
    "unsubscribe",
    "edit_message",
    "delete_message",
    "add_reaction",
    "remove_reaction",
    "update_presence",
    "rtc_offer",
    "rtc_answer",
    "rtc_ice_candidate",
    "join_voice",
    "leave_voice",
    "kick_from_voice",
    "mark_all_read",
    "authenticate",
    "invalid",
    "too_large",
];

/// Server frame types counted on the way out, the most frequent first (the writer finds a
/// frame's slot by a scan of this list). A type missing here counts as `other`.
pub const SERVER_FRAME_TYPES: &[&str] = &[
    "new_message",
    "message_sent",
    "user_typing",
    "user_stopped_typing",
    "read_receipt",
    "presence_update",
    "presence_bulk",
    "pong",
    "error",
    "message_edited",
    "message_deleted",
    "reaction_added",
    "reaction_removed",
    "authenticated",
    "subscribed",
    "subscribe_refused",
    "resync_required",
    "rtc_offer",
    "rtc_answer",
    "rtc_ice_candidate",
    "voice_state_update",
    "user_joined_voice",
    "user_left_voice",
    "kicked_from_voice",
    "member_kicked",
    "member_banned",
    "member_role_updated",
    "message_pinned",
    "message_unpinned",
    "new_dm_channel",
    "sender_key_updated",
    "sender_key_rotation_required",
    "poll_created",
    "poll_voted",
    "poll_vote_removed",
    "poll_closed",
    "user_timed_out",
    "user_warned",
    "user_profile_updated",
    "channel_updated",
    "group_updated",
    "community_updated",
    "channel_deleted",
    "group_deleted",
    "announcement",
    "keys_low",
];

/// Close codes a session ends with (numbers, not `outbox`'s names: this module is below it):
/// normal, going away, policy, server error, service restart, unauthorized, slow consumer
/// (resync), evicted. Any other code counts as `other`.
pub const CLOSE_CODES: &[&str] = &["1000", "1001", "1008", "1011", "1012", "4001", "4008", "4009"];

/// The slot of a serialized server frame in `SERVER_FRAME_TYPES`: every frame starts
/// `{"type":"<name>"` (serde writes the tag first), so the name is read without parsing.
pub fn server_frame_slot(frame: &str) -> usize {
    let name = frame.strip_prefix(r#"{"type":""#).and_then(|rest| rest.split_once('"')).map(|(name, _)| name);
    match name {
        Some(name) => SERVER_FRAME_TYPES.iter().position(|t| *t == name).unwrap_or(SERVER_FRAME_TYPES.len()),
        None => SERVER_FRAME_TYPES.len(),
    }
}

/// Everything the live side counts. One per hub (so one per server), shared by `Arc`.
#[derive(Debug)]
pub struct HubMetrics {
    /// Upgraded WebSocket connections, authenticated or not yet.
    pub sockets_open: Gauge,
    /// Client frames received, by type.
    pub frames_in: CounterFamily,
    /// Server frames handed to sockets, by type.
    pub frames_out: CounterFamily,
    /// Bytes of the frames handed to sockets (JSON text, without WebSocket framing).
    pub bytes_out: Counter,
    /// Sessions ended, by the close code they were told.
    pub closes: CounterFamily,
    /// Ephemeral frames (typing, receipts, presence) dropped from queues over half full.
    pub ephemeral_dropped: Counter,
    /// `resync_required` frames sent after a channel actor restarted.
    pub resync_required: Counter,
    /// Sockets closed with 4008 because a channel's frames may have been lost to them.
    pub resync_closes: Counter,
    /// Channel actors spawned (first starts and restarts).
    pub channel_actors_started: Counter,
    /// Channel actors restarted by the supervisor after a panic.
    pub channel_actors_restarted: Counter,
    /// Rows per group commit.
    pub commit_batch_rows: Histogram,
    /// Time of one group commit's transaction.
    pub commit_seconds: Histogram,
    /// `send_message` received by the session → its `message_sent` queued.
    pub ack_seconds: Histogram,
    /// Frames refused by the per-socket buckets: `ws_frames`, `ws_signalling`.
    pub rate_limited: CounterFamily,
    /// `error` frames with code `unavailable` (database down, shutting down).
    pub unavailable: Counter,
}

/// The socket buckets a frame can be refused by.
pub const WS_BUCKETS: &[&str] = &["ws_frames", "ws_signalling"];

impl Default for HubMetrics {
    fn default() -> Self {
        Self {
            sockets_open: Gauge::default(),
            frames_in: CounterFamily::new(CLIENT_FRAME_TYPES),
            frames_out: CounterFamily::new(SERVER_FRAME_TYPES),
            bytes_out: Counter::default(),
            closes: CounterFamily::new(CLOSE_CODES),
            ephemeral_dropped: Counter::default(),
            resync_required: Counter::default(),
            resync_closes: Counter::default(),
            channel_actors_started: Counter::default(),
            channel_actors_restarted: Counter::default(),
            commit_batch_rows: Histogram::new(BATCH_ROWS, 1.0),
            commit_seconds: Histogram::seconds(),
            ack_seconds: Histogram::seconds(),
            rate_limited: CounterFamily::new(WS_BUCKETS),
            unavailable: Counter::default(),
        }
    }
}

impl HubMetrics {
    /// A session was told to close with `code`.
    pub fn closed(&self, code: u16) {
        let mut text = [0u8; 5];
        let label = code_label(code, &mut text);
        self.closes.inc(label);
    }

    /// Writes every family this registry holds.
    pub fn write(&self, out: &mut Exposition) {
        out.gauge(
            "palaver_ws_sockets_open",
            "Upgraded WebSocket connections (authenticated or not)",
            self.sockets_open.get(),
        );
        out.family_by(
            "palaver_ws_frames_in_total",
            "Client frames received, by type",
            "counter",
            "type",
            &self.frames_in,
        );
        out.family_by(
            "palaver_ws_frames_out_total",
            "Server frames handed to sockets, by type",
            "counter",
            "type",
            &self.frames_out,
        );
        out.counter(
            "palaver_ws_bytes_out_total",
            "Bytes of frames handed to sockets (JSON text)",
            self.bytes_out.get(),
        );
        out.family_by(
            "palaver_ws_closes_total",
            "WebSocket sessions ended, by close code",
            "counter",
            "code",
            &self.closes,
        );
        out.counter(
            "palaver_ws_ephemeral_dropped_total",
            "Typing, read receipt and presence frames dropped from queues over half full",
            self.ephemeral_dropped.get(),
        );
        out.header("palaver_channel_resync_total", "Sockets told about a channel actor restart", "counter");
        out.sample(
            "palaver_channel_resync_total",
            &[("action", "resync_required")],
            self.resync_required.get(),
        );
        out.sample("palaver_channel_resync_total", &[("action", "closed")], self.resync_closes.get());
        out.counter(
            "palaver_channel_actors_started_total",
            "Channel actors spawned (first starts and restarts)",
            self.channel_actors_started.get(),
        );
        out.counter(
            "palaver_channel_actors_restarted_total",
            "Channel actors restarted after a panic",
            self.channel_actors_restarted.get(),
        );
        out.histogram("palaver_commit_batch_rows", "Messages per group commit", &self.commit_batch_rows);
        out.histogram(
            "palaver_commit_duration_seconds",
            "Duration of one group commit",
            &self.commit_seconds,
        );
        out.histogram(
            "palaver_ack_latency_seconds",
            "send_message received to message_sent queued",
            &self.ack_seconds,
        );
    }
}

/// `code` as text in `buf` when it is one of `CLOSE_CODES`'s shapes (no allocation).
fn code_label(code: u16, buf: &mut [u8; 5]) -> &str {
    let mut n = code;
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || at == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[at..]).unwrap_or("other")
}

/// A per-receiver tally of frames handed out, published to the shared counters once per run
/// of frames of one type (a writer's batch is mostly one type): a busy socket costs the
/// shared counters a few adds per batch, not two per frame.
#[derive(Debug, Default)]
pub struct Tally {
    slot: usize,
    frames: u64,
    bytes: u64,
}

impl Tally {
    /// One frame of `frame`'s type and size.
    pub fn add(&mut self, metrics: &HubMetrics, frame: &str) {
        let slot = server_frame_slot(frame);
        if self.frames > 0 && slot != self.slot {
            self.publish(metrics);
        }
        self.slot = slot;
        self.frames += 1;
        self.bytes += frame.len() as u64;
    }

    /// Adds what was tallied to the shared counters.
    pub fn publish(&mut self, metrics: &HubMetrics) {
        if self.frames > 0 {
            metrics.frames_out.add_at(self.slot, self.frames);
            metrics.bytes_out.add(self.bytes);
            self.frames = 0;
            self.bytes = 0;
        }
    }
}

/// A Prometheus text-format (0.0.4) document being written.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn into_string(self) -> String {
        self.out
    }

    /// `# HELP` and `# TYPE` lines.
    pub fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample line; label values are escaped as the format requires.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(key);
                self.out.push_str("=\"");
                for c in value.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, help, "counter");
        self.sample(name, &[], value);
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: impl Display) {
        self.header(name, help, "gauge");
        self.sample(name, &[], value);
    }

    /// A family with one label, one sample per value (`other` only when non-zero).
    pub fn family_by(&mut self, name: &str, help: &str, kind: &str, label: &str, family: &CounterFamily) {
        self.header(name, help, kind);
        for (value, count) in family.iter() {
            if value != "other" || count > 0 {
                self.sample(name, &[(label, value)], count);
            }
        }
    }

    /// A histogram with its header.
    pub fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        self.header(name, help, "histogram");
        self.histogram_samples(name, &[], histogram);
    }

    /// The `_bucket`, `_sum` and `_count` lines of one histogram (header written by the caller).
    pub fn histogram_samples(&mut self, name: &str, labels: &[(&str, &str)], histogram: &Histogram) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, count) in histogram.buckets.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = match histogram.bounds.get(i) {
                Some(bound) => format_number(*bound as f64 / histogram.scale),
                None => "+Inf".to_string(),
            };
            let mut with_le: Vec<(&str, &str)> = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, cumulative);
        }
        let sum = histogram.sum.load(Ordering::Relaxed) as f64 / histogram.scale;
        self.sample(&format!("{name}_sum"), labels, format_number(sum));
        self.sample(&format!("{name}_count"), labels, cumulative);
    }
}

/// A float as Prometheus reads it (`0.0005`, `1`, `2.5`).
fn format_number(value: f64) -> String {
    let text = format!("{value}");
    if text.contains('e') { format!("{value:.9}") } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_classified_by_their_leading_type() {
        assert_eq!(SERVER_FRAME_TYPES[server_frame_slot(r#"{"type":"new_message","id":1}"#)], "new_message");
        assert_eq!(SERVER_FRAME_TYPES[server_frame_slot(r#"{"type":"keys_low"}"#)], "keys_low");
        assert_eq!(server_frame_slot(r#"{"type":"nope"}"#), SERVER_FRAME_TYPES.len());
        assert_eq!(server_frame_slot("garbage"), SERVER_FRAME_TYPES.len());
    }

    #[test]
    fn close_codes_are_labelled_without_allocating() {
        let metrics = HubMetrics::default();
        metrics.closed(4008);
        metrics.closed(1000);
        metrics.closed(3000);
        assert_eq!((metrics.closes.get("4008"), metrics.closes.get("1000")), (1, 1));
        assert_eq!(metrics.closes.get("other"), 1);
    }

    #[test]
    fn tally_publishes_per_run_of_one_type() {
        let metrics = HubMetrics::default();
        let mut tally = Tally::default();
        tally.add(&metrics, r#"{"type":"new_message"}"#);
        tally.add(&metrics, r#"{"type":"new_message"}"#);
        assert_eq!(metrics.frames_out.get("new_message"), 0, "still tallied");
        tally.add(&metrics, r#"{"type":"pong"}"#);
        assert_eq!(metrics.frames_out.get("new_message"), 2);
        tally.publish(&metrics);
        assert_eq!(metrics.frames_out.get("pong"), 1);
        assert_eq!(metrics.bytes_out.get(), 22 * 2 + 15);
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let histogram = Histogram::seconds();
        histogram.observe(400);
        histogram.observe(3_000);
        histogram.observe(10_000_000);
        let mut out = Exposition::default();
        out.histogram("h", "help", &histogram);
        let text = out.into_string();
        assert!(text.contains("h_bucket{le=\"0.0005\"} 1\n"), "{text}");
        assert!(text.contains("h_bucket{le=\"0.005\"} 2\n"), "{text}");
        assert!(text.contains("h_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("h_sum 10.0034\n"), "{text}");
        assert!(text.contains("h_count 3\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = Exposition::default();
        out.sample("m", &[("a", "x\"y\\z\n")], 1);
        assert_eq!(out.into_string(), "m{a=\"x\\\"y\\\\z\\n\"} 1\n");
    }
}
