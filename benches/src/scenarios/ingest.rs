//! `ingest`: many channels, one sending socket each (subscribed to its own channel), all
//! sending at `--rate`. Measures how many messages per second the server commits, then
//! checks that every acked message is in the channel history.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::{StreamExt, TryStreamExt, stream};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::sender::{Progress, SendPlan, run_sender};
use super::{Ctx, account_for, open_all};
use crate::frame::SendTemplate;
use crate::procfs::PhaseMeter;
use crate::setup::{Account, Setup, users_for};
use crate::stats::{ErrorCounts, Latency, round3};

pub async fn run(ctx: &Ctx) -> Result<Value> {
    let a = &ctx.args;
    let per_user = a.sockets_per_user;
    let n = a.channels;
    eprintln!("ingest: {n} channels × {}/s for {}s", a.rate, a.duration);
    let users = ctx.setup.users("g", users_for(n, per_user)).await?;
    // Channel i is owned by the user of socket i, so no joins are needed.
    let per_owner: Vec<Vec<Uuid>> = stream::iter(users.iter().enumerate())
        .map(|(u, owner)| {
            let count = n.saturating_sub(u * per_user).min(per_user);
            ctx.setup.owned_channels(owner, format!("bench-ingest-{u}"), count)
        })
        .buffered(a.setup_concurrency)
        .try_collect()
        .await?;
    let channels: Vec<Uuid> = per_owner.into_iter().flatten().collect();

    let sockets = open_all(ctx, "ingest senders", &users, n, |i| vec![channels[i]]).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let progress = Arc::new(Progress::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let meter = PhaseMeter::start(a.server_pid)?;
    let start = Instant::now() + Duration::from_millis(200);
    let send_end = start + Duration::from_secs(a.duration);
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let plan = SendPlan {
                sender_idx: i as u64,
                template: Arc::new(SendTemplate::new(channels[i], a.payload_bytes)),
                first_send: start + Duration::from_secs_f64(i as f64 / n as f64 / a.rate),
                send_end,
                rate: a.rate,
                max_messages: None,
                collect_ids: true,
                exit_when_done: false,
            };
            tokio::spawn(run_sender(s.ws, plan, progress.clone(), stop_rx.clone()))
        })
        .collect();

    tokio::time::sleep_until(send_end).await;
    let drain_end = send_end + Duration::from_secs(a.drain);
    while Instant::now() < drain_end && progress.outstanding.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    let usage = meter.finish().await?;

    let (mut sent, mut acked) = (0u64, 0u64);
    let mut ack_latency = Latency::default();
    let mut errors = ErrorCounts::default();
    let mut acked_ids: Vec<Vec<Uuid>> = Vec::with_capacity(n);
    for t in tasks {
        let r = t.await?;
        sent += r.sent;
        acked += r.acked.len();
        ack_latency.merge(&r.ack_latency);
        errors.merge(&r.errors);
        acked_ids.push(r.acked_ids);
    }

    let missing_after = if ctx.setup.is_ceiling() {
        None // the ceiling keeps no history
    } else {
        eprintln!("ingest: verifying history of {n} channels");
        let missing: Vec<u64> = stream::iter(0..n)
            .map(|i| {
                let owner = account_for(&users, per_user, i);
                missing_from_history(&ctx.setup, owner, channels[i], &acked_ids[i])
            })
            .buffer_unordered(a.setup_concurrency)
            .try_collect()
            .await?;
        Some(missing.iter().sum::<u64>())
    };

    Ok(json!({
        "channels": n,
        "rate": a.rate,
        "duration_s": a.duration,
        "payload_bytes": a.payload_bytes,
        "sent": sent,
        "acked": acked,
        "errors": errors,
        "offered_per_s": round3(n as f64 * a.rate),
        "committed_per_s": round3(acked as f64 / a.duration as f64),
        "ack_latency_ms": ack_latency.summary_ms(),
        "ack_cdf_ms": ack_latency.cdf_ms(),
        "missing_after": missing_after,
        "server_cpu_s": usage.server_cpu_s.map(round3),
        "server_rss_kb": usage.server_rss_kb,
        "loadgen_cpu_s": round3(usage.loadgen_cpu_s),
    }))
}

/// Pages through a channel's history (newest first, `before` = oldest id seen) and
/// counts the acked ids that are not there.
async fn missing_from_history(setup: &Setup, owner: &Account, channel: Uuid, acked: &[Uuid]) -> Result<u64> {
    let mut seen = HashSet::with_capacity(acked.len());
    let mut before = None;
    // Bounded: more pages than acked messages could need means the cursor is broken.
    for _ in 0..=acked.len() / 100 + 10 {
        let page = setup
            .history_page(&setup.http, &owner.token, channel, 100, before)
            .await
            .with_context(|| format!("history of channel {channel}"))?;
        let Some(last) = page.last() else {
            return Ok(acked.iter().filter(|id| !seen.contains(*id)).count() as u64);
        };
        before = Some(last.id);
        seen.extend(page.iter().map(|m| m.id));
    }
    anyhow::bail!("history of channel {channel} did not end: `before` paging is not making progress")
}
