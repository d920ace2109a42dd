//! `history`: N keep-alive HTTP clients repeatedly read the newest page of a channel
//! that was seeded with messages over WebSocket.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::sender::{Progress, SendPlan, run_sender};
use super::{Ctx, open_all};
use crate::frame::SendTemplate;
use crate::procfs::PhaseMeter;
use crate::setup::{Setup, http_client, users_for};
use crate::stats::{ErrorCounts, Latency, round3};

/// Page size the web client uses when opening a channel.
const PAGE: usize = 50;

pub async fn run(ctx: &Ctx) -> Result<Value> {
    ensure!(!ctx.setup.is_ceiling(), "history needs Palaver's REST API; the ceiling has none");
    let a = &ctx.args;
    eprintln!(
        "history: {} clients for {}s after seeding {} messages",
        a.clients, a.duration, a.seed_messages
    );
    let readers = ctx.setup.users("h", users_for(a.clients, a.sockets_per_user).max(1)).await?;
    let channel = ctx.setup.shared_channel("bench-history", &readers).await?;
    let seeded = seed(ctx, &readers[0].token, channel).await?;

    let meter = PhaseMeter::start(a.server_pid)?;
    let end = Instant::now() + Duration::from_secs(a.duration);
    let tasks: Vec<_> = (0..a.clients)
        .map(|i| {
            let token = readers[i % readers.len()].token.clone();
            let setup = ctx.setup.clone();
            tokio::spawn(async move { reader(&setup, token, channel, end).await })
        })
        .collect();
    let mut latency = Latency::default();
    let mut errors = ErrorCounts::default();
    let (mut ok, mut items) = (0u64, 0u64);
    for t in tasks {
        let r = t.await??;
        latency.merge(&r.latency);
        errors.merge(&r.errors);
        ok += r.ok;
        items += r.items;
    }
    let usage = meter.finish().await?;
    let secs = a.duration as f64;
    Ok(json!({
        "clients": a.clients,
        "duration_s": a.duration,
        "seeded": seeded,
        "page_limit": PAGE,
        "requests": ok + errors.total(),
        "ok": ok,
        "errors": errors,
        "requests_per_s": round3(ok as f64 / secs),
        "avg_page_len": if ok > 0 { round3(items as f64 / ok as f64) } else { 0.0 },
        "latency_ms": latency.summary_ms(),
        "server_cpu_s": usage.server_cpu_s.map(round3),
        "server_rss_kb": usage.server_rss_kb,
        "requests_per_cpu_s": usage.server_cpu_s.filter(|c| *c > 0.0).map(|c| round3(ok as f64 / c)),
        "loadgen_cpu_s": round3(usage.loadgen_cpu_s),
    }))
}

/// Sends `--seed-messages` messages from up to 8 sockets of one user (the per-socket
/// rate limit makes one socket slow) and waits for their acks. Returns how many were
/// acked.
async fn seed(ctx: &Ctx, token: &str, channel: Uuid) -> Result<u64> {
    let a = &ctx.args;
    let total = a.seed_messages as u64;
    if total == 0 {
        return Ok(0);
    }
    let n = (a.sockets_per_user as u64).min(total) as usize;
    let owner = [crate::setup::Account { username: "seeder".into(), token: token.to_owned(), user_id: None }];
    let sockets = open_all(ctx, "seeders", &owner, n, |_| vec![]).await?;
    let progress = Arc::new(Progress::default());
    let (_stop_tx, stop_rx) = watch::channel(false);
    let template = Arc::new(SendTemplate::new(channel, a.payload_bytes));
    let start = Instant::now();
    // Generous bound: the whole seed at the configured rate, plus slack.
    let deadline = start + Duration::from_secs_f64(total as f64 / (n as f64 * a.rate) + 30.0);
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let share = total / n as u64 + u64::from((i as u64) < total % n as u64);
            let plan = SendPlan {
                sender_idx: i as u64,
                template: template.clone(),
                first_send: start,
                send_end: deadline,
                rate: a.rate,
                max_messages: Some(share),
                collect_ids: false,
                exit_when_done: true,
            };
            tokio::spawn(run_sender(s.ws, plan, progress.clone(), stop_rx.clone()))
        })
        .collect();
    let mut errors = ErrorCounts::default();
    for t in tasks {
        errors.merge(&t.await?.errors);
    }
    let acked = progress.acked.load(Ordering::Relaxed);
    ensure!(acked == total, "seeding: {acked}/{total} messages acked (errors: {:?})", errors.0);
    eprintln!("history: seeded {acked} messages in {:.1}s", start.elapsed().as_secs_f64());
    Ok(acked)
}

struct ReaderReport {
    ok: u64,
    items: u64,
    latency: Latency,
    errors: ErrorCounts,
}

/// One HTTP client (its own keep-alive connection) reading the newest page in a loop.
async fn reader(setup: &Setup, token: String, channel: Uuid, end: Instant) -> Result<ReaderReport> {
    let client = http_client()?;
    let mut rep =
        ReaderReport { ok: 0, items: 0, latency: Latency::default(), errors: ErrorCounts::default() };
    while Instant::now() < end {
        let t0 = std::time::Instant::now();
        match setup.history_page(&client, &token, channel, PAGE, None).await {
            Ok(page) => {
                rep.latency.record_us(t0.elapsed().as_micros() as u64);
                rep.ok += 1;
                rep.items += page.len() as u64;
            }
            Err(e) => {
                rep.errors.add(&e.root_cause().to_string());
                // Do not spin on a failing server.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    Ok(rep)
}
