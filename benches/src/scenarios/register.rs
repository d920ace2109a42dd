//! `register`: N registrations (argon2 each) with some concurrency, then the server's RSS.
//! Measures what password hashing costs in memory after the burst (issue 10: it used to
//! grow by ~19 MiB per blocking thread and never come back).
//!
//! A 503 (the server's hashing pool is full) is retried after its `Retry-After`, so every
//! registration eventually succeeds; the retries are counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{StreamExt, TryStreamExt, stream};
use serde_json::{Value, json};

use super::Ctx;
use crate::procfs::{PhaseMeter, Proc};
use crate::stats::round3;

/// Time for the server to settle (allocator trims, idle threads) before RSS is read.
const SETTLE: Duration = Duration::from_secs(3);
/// Give up on one registration after this many 503s.
const MAX_RETRIES: u32 = 100;

pub async fn run(ctx: &Ctx) -> Result<Value> {
    let a = &ctx.args;
    let n = a.registrations;
    eprintln!("register: {n} registrations, concurrency {}", a.setup_concurrency);
    let server = a.server_pid.map(|p| Proc(Some(p)));
    let rss_before = server.map(|p| p.rss_kb()).transpose()?;
    let busy = AtomicU64::new(0);
    let meter = PhaseMeter::start(a.server_pid)?;
    let t0 = Instant::now();
    let prefix = ctx.setup.prefix();
    stream::iter(0..n)
        .map(|i| register_retrying(ctx, format!("{prefix}_r{i}"), &busy))
        .buffer_unordered(a.setup_concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    let elapsed = t0.elapsed();
    let usage = meter.finish().await?;
    tokio::time::sleep(SETTLE).await;
    let rss_after = server.map(|p| p.rss_kb()).transpose()?;
    eprintln!(
        "register: done in {:.1}s; server RSS {:?} KiB -> {:?} KiB (peak {:?})",
        elapsed.as_secs_f64(),
        rss_before,
        rss_after,
        usage.server_rss_kb.as_ref().map(|r| r.peak)
    );
    Ok(json!({
        "registrations": n,
        "concurrency": a.setup_concurrency,
        "busy_503": busy.load(Ordering::Relaxed),
        "total_s": round3(elapsed.as_secs_f64()),
        "registrations_per_s": round3(n as f64 / elapsed.as_secs_f64()),
        "server_cpu_s": usage.server_cpu_s.map(round3),
        "server_rss_kb": {
            "before": rss_before,
            "peak": usage.server_rss_kb.as_ref().map(|r| r.peak),
            "after_settle": rss_after,
        },
    }))
}

async fn register_retrying(ctx: &Ctx, username: String, busy: &AtomicU64) -> Result<()> {
    let body = crate::setup::register_body(&username);
    for _ in 0..MAX_RETRIES {
        let resp = ctx
            .setup
            .http
            .post(ctx.target.api("/auth/register"))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST /api/auth/register ({username})"))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        if status.as_u16() == 503 {
            busy.fetch_add(1, Ordering::Relaxed);
            let wait = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait.min(5))).await;
            continue;
        }
        let text = resp.text().await.unwrap_or_default();
        bail!("registering {username}: HTTP {status}: {}", crate::frame::truncate(&text));
    }
    bail!("registering {username}: still 503 after {MAX_RETRIES} tries")
}
