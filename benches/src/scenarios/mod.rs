//! Scenarios. Each one sets up through [`crate::setup`], runs over real sockets and
//! returns one JSON object of results.

mod failover;
mod fanout;
mod history;
mod idle;
mod ingest;
mod presence;
mod recovery;
mod register;
mod sender;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::cli::{Args, Scenario};
use crate::setup::{Account, Setup};
use crate::target::Target;
use crate::ws::{self, Ready};

/// Everything a scenario needs.
pub struct Ctx {
    pub args: Args,
    pub target: Arc<Target>,
    pub setup: Arc<Setup>,
}

/// Runs the chosen scenario and returns its result line.
pub async fn run(args: Args) -> Result<Value> {
    args.validate()?;
    let _ = crate::procfs::ALSO_MEASURED.set(args.also_pids.clone());
    let target = Arc::new(Target::resolve(&args.url, args.source_ips.clone()).await?);
    let setup = Arc::new(Setup::new(
        target.clone(),
        args.ceiling,
        args.users_prefix.clone(),
        args.setup_concurrency,
    )?);
    let ctx = Ctx { args, target, setup };
    let scenario = ctx.args.scenario;
    let body = match scenario {
        Scenario::Fanout => fanout::run(&ctx).await?,
        Scenario::Idle => idle::run(&ctx).await?,
        Scenario::History => history::run(&ctx).await?,
        Scenario::Ingest => ingest::run(&ctx).await?,
        Scenario::Presence => presence::run(&ctx).await?,
        Scenario::Register => register::run(&ctx).await?,
        Scenario::Recovery => recovery::run(&ctx).await?,
        Scenario::Failover => failover::run(&ctx).await?,
    };
    let mut line = json!({
        "scenario": scenario.name(),
        "target": ctx.target.base_url,
        "target_kind": if ctx.args.ceiling { "ceiling" } else { "palaver" },
        "label": ctx.args.label,
        "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    if let (Some(l), Value::Object(b)) = (line.as_object_mut(), body) {
        l.extend(b);
    }
    Ok(line)
}

/// Socket `i` of a group belongs to account `i / per_user` (the server allows 8 per user).
pub fn account_for(accounts: &[Account], per_user: usize, i: usize) -> &Account {
    &accounts[(i / per_user).min(accounts.len() - 1)]
}

/// Opens `n` sockets with at most `concurrency` handshakes in flight; socket `i` uses
/// account `i / per_user` and subscribes to `channels(i)` (none if empty). Results keep
/// the socket order.
pub async fn open_many(
    ctx: &Ctx,
    what: &str,
    accounts: &[Account],
    n: usize,
    channels: impl Fn(usize) -> Vec<Uuid>,
) -> Vec<Result<Ready>> {
    let per_user = ctx.args.sockets_per_user;
    let started = Instant::now();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<(usize, Result<Ready>)> = stream::iter(0..n)
        .map(|i| {
            let (token, chans) = (account_for(accounts, per_user, i).token.clone(), channels(i));
            let target = ctx.target.clone();
            let done = &done;
            async move {
                let r = ws::open(&target, &token, &chans).await;
                let k = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if k.is_multiple_of(2000) {
                    eprintln!("  {what}: {k}/{n} sockets ready");
                }
                (i, r)
            }
        })
        .buffer_unordered(ctx.args.connect_concurrency)
        .collect()
        .await;
    results.sort_by_key(|(i, _)| *i);
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    eprintln!(
        "  {what}: {} sockets connected in {:.1}s ({failed} failed)",
        n - failed,
        started.elapsed().as_secs_f64()
    );
    results.into_iter().map(|(_, r)| r).collect()
}

/// Like [`open_many`] but every socket must succeed.
pub async fn open_all(
    ctx: &Ctx,
    what: &str,
    accounts: &[Account],
    n: usize,
    channels: impl Fn(usize) -> Vec<Uuid>,
) -> Result<Vec<Ready>> {
    open_many(ctx, what, accounts, n, channels)
        .await
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.with_context(|| format!("{what} socket {i}")))
        .collect()
}

/// A tokio interval ticking every `1/rate` s from `start`, never bursting to catch up
/// (a burst could trip the server's per-socket rate limit).
pub fn send_ticker(start: tokio::time::Instant, rate: f64) -> tokio::time::Interval {
    let mut t = tokio::time::interval_at(start, Duration::from_secs_f64(1.0 / rate));
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// Warns when this process may not open `sockets` more sockets (each needs a descriptor).
pub fn warn_if_few_files(what: &str, sockets: usize) {
    if let Ok(limit) = open_files_limit()
        && limit < sockets as u64 + 100
    {
        eprintln!(
            "{what}: warning: open-file limit {limit} is too low for {sockets} sockets (raise `ulimit -n`)"
        );
    }
}

/// This process's soft limit on open files.
fn open_files_limit() -> Result<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files")?.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no open-file limit in /proc/self/limits"))
}
