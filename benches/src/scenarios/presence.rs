//! `presence`: C sockets of users who all share ONE community connect as fast as the server
//! allows (`--connect-concurrency` handshakes in flight). Every presence frame
//! (`presence_update`, `presence_bulk`) each socket receives is counted, from the moment it
//! is authenticated until the run ends.
//!
//! Reports the connect time, how long after the last connect presence went quiet (no
//! presence frame for [`QUIET`]; measured up to the last frame), and the presence frames per
//! socket. Target: 5,000 sockets quiet within 5 s, ≤ 10 presence frames per socket.
//!
//! A few sampled sockets also parse every presence frame and check that they end up seeing
//! every connected mate online; the others only count (cheap: the generator shares the
//! machine with the server). With `--sockets-per-user 1` every connect is a presence
//! change; with more sockets per user only each user's first one is.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Result, ensure};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::{Ctx, account_for, warn_if_few_files};
use crate::clock;
use crate::procfs::PhaseMeter;
use crate::setup::users_for;
use crate::stats::{ErrorCounts, Latency, round3};
use crate::target::Target;
use crate::ws;

/// Presence is quiet once no presence frame arrived for this long.
const QUIET: Duration = Duration::from_secs(1);
/// After the last connect, stop waiting for quiet after this long (reported as not quiet).
const GIVE_UP: Duration = Duration::from_secs(120);
/// After quiet, how long each socket keeps reading for late presence frames.
const LATE_WAIT: Duration = Duration::from_millis(500);

pub async fn run(ctx: &Ctx) -> Result<Value> {
    let a = &ctx.args;
    ensure!(!a.ceiling, "presence needs communities: it runs against Palaver only");
    let (n, per_user) = (a.connections, a.sockets_per_user);
    ensure!(n > 0, "--connections must be > 0");
    eprintln!("presence: {n} sockets, {per_user} per user, concurrency {}", a.connect_concurrency);
    warn_if_few_files("presence", n);
    // The creator registers first: on a fresh server that makes it the instance owner, who
    // may create communities.
    let mut users = ctx.setup.users("p", 1).await?;
    users.extend(ctx.setup.users("p", users_for(n, per_user) - 1).await?);
    ctx.setup.shared_community("bench-presence", &users).await?;
    // Let the server finish the setup's work before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let timeline = Arc::new(Timeline::default());
    let gate = Arc::new(Semaphore::new(a.connect_concurrency));
    let (stop_tx, stop_rx) = watch::channel(false);
    let sampled = [0, n / 2, n - 1];
    let meter = PhaseMeter::start(a.server_pid)?;
    let start_ns = clock::now_ns();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let token = account_for(&users, per_user, i).token.clone();
            let sample = sampled.contains(&i);
            let (target, gate, timeline, stop) =
                (ctx.target.clone(), gate.clone(), timeline.clone(), stop_rx.clone());
            tokio::spawn(socket(target, token, gate, timeline, stop, sample))
        })
        .collect();

    let mut reported = 0;
    while timeline.handshakes_done.load(Ordering::Relaxed) < n {
        let done = timeline.handshakes_done.load(Ordering::Relaxed);
        if done >= reported + 1000 {
            reported = done - done % 1000;
            eprintln!("  presence: {reported}/{n} handshakes done");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last_connect_ns = timeline.last_connect_ns.load(Ordering::Relaxed).max(start_ns);
    eprintln!(
        "  presence: all handshakes done in {:.1}s; waiting for quiet",
        (last_connect_ns - start_ns) as f64 / 1e9
    );
    let quiet = wait_for_quiet(&timeline, last_connect_ns).await;
    let usage = meter.finish().await?;
    let _ = stop_tx.send(true);

    let mut reports = Vec::with_capacity(n);
    for t in tasks {
        reports.push(t.await?);
    }
    let connected_users: HashSet<Uuid> = reports.iter().filter_map(|r| r.user_id).collect();
    let mut connect_latency = Latency::default();
    let mut failures = ErrorCounts::default();
    let mut failure_samples = Vec::new();
    let mut frames: Vec<u64> = Vec::with_capacity(n);
    let (mut bytes, mut late, mut closed_early, mut sampled_sockets, mut sampled_missing) = (0, 0, 0, 0, 0);
    for r in &reports {
        match (&r.failure, r.user_id) {
            (Some(e), _) => {
                failures.add(&e.kind);
                if failure_samples.len() < 3 {
                    failure_samples.push(e.detail.clone());
                }
            }
            (None, Some(me)) => {
                connect_latency.record_us(r.connect_us);
                frames.push(r.presence_frames);
                bytes += r.presence_bytes;
                late += r.late_frames;
                closed_early += r.closed_early as u64;
                if let Some(seen) = &r.seen {
                    sampled_sockets += 1;
                    sampled_missing += connected_users
                        .iter()
                        .filter(|u| **u != me && seen.get(*u).is_none_or(|s| s != "online"))
                        .count();
                }
            }
            (None, None) => {}
        }
    }
    let connected = frames.len();
    let total_frames: u64 = frames.iter().sum();
    frames.sort_unstable();
    let quantile = |q: f64| frames.get(((connected as f64 - 1.0) * q).round() as usize).copied();
    let last_presence_ns = timeline.last_presence_ns.load(Ordering::Relaxed);
    let connect_s = (last_connect_ns - start_ns) as f64 / 1e9;
    Ok(json!({
        "connections": n,
        "sockets_per_user": per_user,
        "users": users.len(),
        "connected": connected,
        "failures": failures.total(),
        "failure_kinds": failures,
        "failure_samples": failure_samples,
        "connect_concurrency": a.connect_concurrency,
        "connect_total_s": round3(connect_s),
        "connects_per_s": round3(connected as f64 / connect_s.max(1e-9)),
        "connect_ms": connect_latency.summary_ms(),
        "quiet": quiet,
        "quiet_window_s": QUIET.as_secs_f64(),
        // From the last connect to the last presence frame (0 if none came after it).
        "quiet_after_s": quiet.then(|| round3(last_presence_ns.saturating_sub(last_connect_ns) as f64 / 1e9)),
        "presence_frames": total_frames,
        "presence_frames_per_socket": {
            "max": frames.last(),
            "p99": quantile(0.99),
            "p50": quantile(0.5),
            "min": frames.first(),
            "mean": round3(total_frames as f64 / connected.max(1) as f64),
        },
        "presence_mb": round3(bytes as f64 / 1e6),
        // Presence frames that came after quiet was declared (not in the counts above).
        "late_presence_frames": late,
        "sampled_sockets": sampled_sockets,
        // Connected mates a sampled socket did not end up seeing online (must be 0).
        "sampled_missing_online": sampled_missing,
        "closed_early": closed_early,
        "server_cpu_s": usage.server_cpu_s.map(round3),
        "server_rss_kb": usage.server_rss_kb,
        "loadgen_cpu_s": round3(usage.loadgen_cpu_s),
    }))
}

/// When things happened, shared by every socket task (nanoseconds on [`clock`]).
#[derive(Default)]
struct Timeline {
    /// Sockets whose handshake ended (authenticated or failed).
    handshakes_done: AtomicUsize,
    last_connect_ns: AtomicU64,
    last_presence_ns: AtomicU64,
}

/// Waits until no presence frame has arrived for [`QUIET`] (true), or gives up.
async fn wait_for_quiet(timeline: &Timeline, last_connect_ns: u64) -> bool {
    let (quiet_ns, give_up_ns) = (QUIET.as_nanos() as u64, GIVE_UP.as_nanos() as u64);
    loop {
        let now = clock::now_ns();
        let last = timeline.last_presence_ns.load(Ordering::Relaxed).max(last_connect_ns);
        if now.saturating_sub(last) >= quiet_ns {
            return true;
        }
        if now.saturating_sub(last_connect_ns) >= give_up_ns {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Failure {
    /// The root cause (e.g. "Too many open files"): the most useful key.
    kind: String,
    detail: String,
}

#[derive(Default)]
struct SocketReport {
    /// Set once authenticated.
    user_id: Option<Uuid>,
    failure: Option<Failure>,
    connect_us: u64,
    presence_frames: u64,
    /// Presence frames that came after quiet was declared (should be 0).
    late_frames: u64,
    presence_bytes: u64,
    closed_early: bool,
    /// Sampled sockets only: the last status heard per user.
    seen: Option<HashMap<Uuid, String>>,
}

/// One socket: connect and authenticate (holding a handshake slot), then count presence
/// frames until told to stop.
async fn socket(
    target: Arc<Target>,
    token: String,
    gate: Arc<Semaphore>,
    timeline: Arc<Timeline>,
    mut stop: watch::Receiver<bool>,
    sample: bool,
) -> SocketReport {
    let mut rep = SocketReport { seen: sample.then(HashMap::new), ..SocketReport::default() };
    let opened = match gate.acquire().await {
        // `authenticated` is the server's first frame, so nothing of interest is skipped.
        Ok(_slot) => ws::open(&target, &token, &[]).await,
        Err(_) => Err(anyhow::anyhow!("handshake gate closed")),
    };
    let mut ws = match opened {
        Ok(ready) => {
            rep.user_id = Some(ready.user_id);
            rep.connect_us = ready.connect_time.as_micros() as u64;
            timeline.last_connect_ns.fetch_max(clock::now_ns(), Ordering::Relaxed);
            timeline.handshakes_done.fetch_add(1, Ordering::Relaxed);
            ready.ws
        }
        Err(e) => {
            rep.failure = Some(Failure { kind: e.root_cause().to_string(), detail: format!("{e:#}") });
            timeline.handshakes_done.fetch_add(1, Ordering::Relaxed);
            return rep;
        }
    };
    let mut stopped = false;
    loop {
        let msg = if stopped {
            // After quiet was declared: only what is already on its way, counted as late.
            match tokio::time::timeout(LATE_WAIT, ws.next()).await {
                Ok(msg) => msg,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                msg = ws.next() => msg,
                _ = stop.changed() => { stopped = true; continue; }
            }
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                rep.closed_early = true;
                break;
            }
            Some(Ok(_)) => continue,
        };
        if !matches!(crate::frame::frame_type(&text), Some("presence_update" | "presence_bulk")) {
            continue;
        }
        if stopped {
            rep.late_frames += 1;
        } else {
            rep.presence_frames += 1;
            timeline.last_presence_ns.fetch_max(clock::now_ns(), Ordering::Relaxed);
        }
        rep.presence_bytes += text.len() as u64;
        if let Some(seen) = &mut rep.seen {
            record_statuses(seen, &text);
        }
    }
    rep
}

/// Applies a presence frame's statuses (`presence_update` or `presence_bulk`) to `seen`.
fn record_statuses(seen: &mut HashMap<Uuid, String>, text: &str) {
    let Ok(frame) = serde_json::from_str::<Value>(text) else { return };
    let mut note = |user: &Value, status: &Value| {
        if let (Some(user), Some(status)) = (user.as_str().and_then(|u| u.parse().ok()), status.as_str()) {
            seen.insert(user, status.to_owned());
        }
    };
    if let Some(statuses) = frame["statuses"].as_array() {
        for pair in statuses {
            note(&pair[0], &pair[1]);
        }
    } else {
        note(&frame["user_id"], &frame["status"]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_from_both_frame_kinds() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut seen = HashMap::new();
        record_statuses(
            &mut seen,
            &format!(r#"{{"type":"presence_bulk","statuses":[["{a}","online"],["{b}","online"]]}}"#),
        );
        record_statuses(
            &mut seen,
            &format!(r#"{{"type":"presence_update","user_id":"{b}","status":"dnd"}}"#),
        );
        assert_eq!(seen.get(&a).map(String::as_str), Some("online"));
        assert_eq!(seen.get(&b).map(String::as_str), Some("dnd"));
        record_statuses(&mut seen, "not json");
        assert_eq!(seen.len(), 2);
    }
}
