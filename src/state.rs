//! `AppState`: what every route handler can reach. Cheap to clone (all shared).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota};
use sea_orm::DatabaseConnection;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;

use crate::auth::hashing::HashPool;
use crate::auth::lockout::Lockouts;
use crate::auth::tokens::TokenKeys;
use crate::auth::totp::TotpKeys;
use crate::config::{Config, RateLimit};
use crate::settings::Settings;

#[derive(Clone)]
pub struct AppState {
    /// The SeaORM pool (SQLite or PostgreSQL).
    pub db: DatabaseConnection,
    pub config: Arc<Config>,
    /// Signs and verifies access tokens.
    pub tokens: Arc<TokenKeys>,
    /// Encrypts TOTP secrets at rest and peppers backup-code hashes.
    pub totp_keys: Arc<TotpKeys>,
    /// The live side: actors, sessions, fan-out.
    pub hub: Arc<palaver_actors::Hub>,
    /// Per-IP HTTP buckets (None when turned off by configuration).
    pub limits: Arc<HttpLimits>,
    /// Failed-login and failed-recovery counters per username.
    pub lockouts: Arc<Lockouts>,
    /// The bounded password-hashing pool (argon2 off the async threads, at most one per core).
    pub hashing: Arc<HashPool>,
    /// File blobs on disk and per-user upload bookkeeping.
    pub uploads: Arc<crate::storage::Uploads>,
    /// Instance settings (cached; admins change them at run time).
    pub settings: Arc<Settings>,
    /// When this process started (for `/health`).
    pub started: Instant,
    /// Wakes the scheduled-message delivery task (src/scheduler.rs).
    pub scheduler: Arc<SchedulerWake>,
    /// One bucket per webhook token (keyed by the token's hash).
    pub webhook_limits: Arc<DefaultKeyedRateLimiter<String>>,
    /// Giphy proxy: HTTP client and the 5-minute result cache.
    pub gifs: Arc<crate::domain::gif::GifProxy>,
    /// Feedback forwarding to GitHub issues, when configured.
    pub github_issues: Option<Arc<crate::domain::feedback::GithubIssues>>,
    /// The SSRF-safe link previewer and its cache.
    pub link_previews: Arc<crate::linkpreview::LinkPreviews>,
    /// Message search admission: per-user concurrency and the matching pool.
    pub search: Arc<crate::domain::search::SearchGate>,
    /// Graceful-shutdown state: health's `draining`, the sockets shutdown waits for.
    pub drain: Arc<crate::drain::Drain>,
    /// The HTTP side's counters (`GET /metrics`; the live side's are the hub's).
    pub metrics: Arc<crate::metrics::HttpMetrics>,
    /// This node's cluster membership (`PALAVER_NATS_URL`); `None` on a single node.
    pub cluster: Option<Arc<palaver_actors::cluster::Cluster>>,
    /// Web Push: the VAPID key and the delivery workers.
    pub push: Arc<crate::push::PushService>,
}

/// The general and the `/auth/*` token buckets, keyed by client (`http::limit_key`: an IPv4
/// address, or an IPv6 /64). Idle keys are purged by `spawn_housekeeping`.
pub struct HttpLimits {
    pub general: Option<DefaultKeyedRateLimiter<IpAddr>>,
    pub auth: Option<DefaultKeyedRateLimiter<IpAddr>>,
    pub general_retry_after: u64,
    pub auth_retry_after: u64,
}

impl HttpLimits {
    pub fn new(config: &Config) -> Self {
        let make = |limit: RateLimit| {
            config.http_rate_limits.then(|| DefaultKeyedRateLimiter::<IpAddr>::keyed(quota(limit)))
        };
        Self {
            general: make(config.http_rate_limit),
            auth: make(config.auth_rate_limit),
            general_retry_after: 1,
            auth_retry_after: 5,
        }
    }
}

impl HttpLimits {
    /// Forgets keys whose bucket is full again (their state is the same as a new key's), so
    /// clients that went away, or a stream of random addresses, do not grow memory for ever.
    pub fn purge_idle(&self) {
        for limiter in [&self.general, &self.auth].into_iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Keys currently held (both buckets).
    pub fn len(&self) -> usize {
        [&self.general, &self.auth].into_iter().flatten().map(|l| l.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How often the in-memory per-client state (HTTP buckets, webhook buckets, lockouts) drops
/// what has gone idle.
const PURGE_EVERY: Duration = Duration::from_secs(30);

/// Starts the periodic purge of per-client state; it ends when `shutdown` fires.
pub fn spawn_housekeeping(state: AppState, mut shutdown: broadcast::Receiver<()>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PURGE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.recv() => return,
            }
            state.limits.purge_idle();
            state.webhook_limits.retain_recent();
            state.webhook_limits.shrink_to_fit();
            state.lockouts.purge_expired();
            state.push.purge_idle();
        }
    })
}

/// A governor quota from our `BURST/PER_SECOND` form.
pub fn quota(limit: RateLimit) -> Quota {
    use std::num::NonZeroU32;
    let per_second = NonZeroU32::new(limit.per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(per_second).allow_burst(burst)
}

/// Wakes the scheduled-message delivery task (src/scheduler.rs) early: a message was
/// scheduled or cancelled. It lives here, not in the scheduler, so state does not depend on it.
#[derive(Default)]
pub struct SchedulerWake(Notify);

impl SchedulerWake {
    pub fn wake(&self) {
        // `notify_one` keeps a permit when the task is busy, so no wake-up is lost.
        self.0.notify_one();
    }

    /// Resolves at the next `wake` (or at once if one happened since the last wait).
    pub async fn notified(&self) {
        self.0.notified().await
    }
}

/// On a cluster node: reloads the admin settings when another node changed them, and every
/// `CACHE_RELOAD` reloads them and the hub's barred users and instance roles anyway (the
/// cluster bus is at-most-once: a change this node missed is repaired within that time).
pub fn spawn_cluster_cache_sync(state: AppState, mut shutdown: broadcast::Receiver<()>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = state.hub.settings_changes();
        let mut tick = tokio::time::interval(palaver_actors::cluster::bus::CACHE_RELOAD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let everything = tokio::select! {
                _ = tick.tick() => true,
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    false
                }
                _ = shutdown.recv() => return,
            };
            if let Err(err) = state.settings.reload(&state.db).await {
                tracing::warn!(%err, "could not reload the admin settings");
            }
            if everything && let Err(err) = state.hub.reload_user_caches().await {
                tracing::warn!(%err, "could not reload barred users and instance roles");
            }
        }
    })
}
