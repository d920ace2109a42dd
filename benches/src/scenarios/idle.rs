//! `idle`: C sockets connected, authenticated and subscribed to one channel, then held
//! open. Measures connect time and the server's memory per socket.

use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::{Ctx, open_many, warn_if_few_files};
use crate::procfs::{PhaseMeter, Proc, RssMonitor};
use crate::setup::users_for;
use crate::stats::{ErrorCounts, Latency, round3};

/// Time for the server to settle (allocator, per-session tasks) before RSS is read.
const SETTLE: Duration = Duration::from_secs(2);

pub async fn run(ctx: &Ctx) -> Result<Value> {
    let a = &ctx.args;
    let n = a.connections;
    eprintln!("idle: {n} sockets, {} per user, concurrency {}", a.sockets_per_user, a.connect_concurrency);
    warn_if_few_files("idle", n);
    let users = ctx.setup.users("i", users_for(n, a.sockets_per_user)).await?;
    let channel = ctx.setup.shared_channel("bench-idle", &users).await?;

    let server = a.server_pid.map(|p| Proc(Some(p)));
    let rss_before = server.map(|p| p.rss_kb()).transpose()?;
    let connect_meter = PhaseMeter::start(a.server_pid)?;
    let t0 = Instant::now();
    let results = open_many(ctx, "idle", &users, n, |_| vec![channel]).await;
    let connect_total = t0.elapsed();
    let connect_usage = connect_meter.finish().await?;

    let mut connect_latency = Latency::default();
    let mut failures = ErrorCounts::default();
    let mut failure_samples = Vec::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut holders = Vec::with_capacity(n);
    for r in results {
        match r {
            Ok(ready) => {
                connect_latency.record_us(ready.connect_time.as_micros() as u64);
                holders.push(tokio::spawn(hold(ready.ws, stop_rx.clone())));
            }
            Err(e) => {
                // The root cause (e.g. "Too many open files") is the most useful key.
                failures.add(&e.root_cause().to_string());
                if failure_samples.len() < 3 {
                    failure_samples.push(format!("{e:#}"));
                }
            }
        }
    }
    let connected = holders.len();

    tokio::time::sleep(SETTLE).await;
    let rss_after = server.map(|p| p.rss_kb()).transpose()?;
    let monitor = server.map(|p| RssMonitor::start(p, Duration::from_millis(500)));
    eprintln!("idle: holding {connected} sockets for {}s", a.hold);
    tokio::time::sleep(Duration::from_secs(a.hold)).await;
    let rss_peak = match monitor {
        Some(m) => Some(m.finish().await),
        None => None,
    };
    let _ = stop_tx.send(true);
    let mut closed_during_hold = 0;
    for h in holders {
        closed_during_hold += h.await? as u64;
    }

    let per_socket_kb = match (rss_before, rss_after) {
        (Some(b), Some(af)) if connected > 0 => Some(round3((af as f64 - b as f64) / connected as f64)),
        _ => None,
    };
    Ok(json!({
        "connections": n,
        "connected": connected,
        "failures": failures.total(),
        "failure_kinds": failures,
        "failure_samples": failure_samples,
        "source_ips": a.source_ips,
        "connect_concurrency": a.connect_concurrency,
        "connect_total_s": round3(connect_total.as_secs_f64()),
        "connects_per_s": round3(connected as f64 / connect_total.as_secs_f64()),
        "connect_ms": connect_latency.summary_ms(),
        "server_cpu_connect_s": connect_usage.server_cpu_s.map(round3),
        "server_rss_kb": {
            "before": rss_before,
            "after": rss_after,
            "peak_during_hold": rss_peak,
        },
        "rss_per_socket_kb": per_socket_kb,
        "closed_during_hold": closed_during_hold,
        "hold_s": a.hold,
        "loadgen_cpu_connect_s": round3(connect_usage.loadgen_cpu_s),
    }))
}

/// Keeps one socket open, reading (and discarding) heartbeats, until told to stop.
/// Returns whether the server closed it first.
async fn hold(mut ws: crate::ws::WsStream, mut stop: watch::Receiver<bool>) -> bool {
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return true,
                Some(Ok(_)) => {}
            },
            _ = stop.changed() => return false,
        }
    }
}
