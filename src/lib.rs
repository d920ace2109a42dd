//! Palaver: a self-hosted, end-to-end-encrypted chat server.
//!
//! `serve(config)` starts everything (database, actors, HTTP + WebSocket) and returns a
//! handle; `main.rs` and the black-box tests both start the real server through it.

pub mod audit;
pub mod auth;
pub mod config;
pub mod db;
pub mod domain;
pub mod drain;
pub mod error;
pub mod http;
pub mod images;
pub mod linkpreview;
pub mod metrics;
pub mod openapi;
pub mod push;
pub mod routes;
pub mod scheduler;
pub mod settings;
pub mod state;
pub mod storage;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

pub use config::Config;
use state::{AppState, HttpLimits};

/// A running server. Dropping it does not stop it; call `shutdown`.
pub struct Server {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The separate metrics listener's address, when `metrics_bind` is set.
    pub metrics_addr: Option<SocketAddr>,
    pub state: AppState,
    shutdown: broadcast::Sender<()>,
    task: JoinHandle<()>,
    /// Scheduled-message delivery (src/scheduler.rs).
    scheduler: JoinHandle<()>,
    /// Periodic purge of idle per-client state (`state::spawn_housekeeping`).
    housekeeping: JoinHandle<()>,
}

impl Server {
    /// The graceful drain (see `drain.rs` for the order and why): health says `draining`,
    /// the listener closes, channel actors answer every send they accepted, sockets close with
    /// 1012, the pool closes.
    pub async fn shutdown(self) {
        self.state.drain.begin();
        if !self.state.config.drain_delay.is_zero() {
            tokio::time::sleep(self.state.config.drain_delay).await;
        }
        let _ = self.shutdown.send(());
        // The delivery task stops between messages; a delivery in flight is one transaction,
        // so stopping at any point neither loses nor repeats a scheduled message.
        let _ = self.scheduler.await;
        let _ = self.housekeeping.await;
        let _ = self.task.await;
        if !self.state.hub.drain_channels(drain::CHANNEL_FLUSH_LIMIT).await {
            tracing::warn!("some channels did not finish their commits in time");
        }
        self.state.hub.shutdown().await;
        if !self.state.drain.sockets_closed(drain::SOCKET_CLOSE_LIMIT).await {
            tracing::warn!("some sockets did not take their close frame in time");
        }
        // Shards are handed over only once every channel committed what it accepted.
        if let Some(cluster) = &self.state.cluster {
            cluster.leave().await;
        }
        self.state.db.clone().close().await.ok();
    }

    /// Resolves when the server has stopped.
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// A receiver that fires on shutdown (graceful-shutdown signal for helpers).
    pub fn shutdown_signal(&self) -> broadcast::Receiver<()> {
        self.shutdown.subscribe()
    }

    /// Starts shutting down without waiting (for signal handlers).
    pub fn trigger_shutdown(&self) {
        let _ = self.shutdown.send(());
    }
}

/// Opens the database, migrates, starts the actors and serves HTTP and WebSocket.
pub async fn serve(config: Config) -> Result<Server, String> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("cannot create data dir {}: {e}", config.data_dir.display()))?;
    if config.cluster.is_some() && !config.is_postgres() {
        return Err("a cluster needs PostgreSQL: PALAVER_NATS_URL is set but DATABASE_URL is SQLite".into());
    }
    let db = db::connect_and_migrate(&config.database_url)
        .await
        .map_err(|e| format!("database {}: {e}", redact(&config.database_url)))?;
    let tokens = auth::tokens::TokenKeys::load_or_create(&config.data_dir)?;
    let totp_keys = auth::totp::TotpKeys::load_or_create(&config.data_dir)?;
    let cluster = match &config.cluster {
        Some(settings) => Some(join_cluster(settings, &config.data_dir).await?),
        None => None,
    };
    let settings = settings::Settings::load(&db).await.map_err(|e| format!("load settings: {e}"))?;
    let hub = palaver_actors::Hub::start(db.clone(), hub_config(&config))
        .await
        .map_err(|e| format!("start actors: {e}"))?;

    if let Some(cluster) = &cluster {
        let bus = cluster.start_bus(hub.clone()).await?;
        hub.join_cluster_bus(bus);
        let limits = palaver_actors::cluster::route::StandInLimits {
            frames: hub.config.outbound_queue,
            bytes: hub.config.outbound_queue_bytes,
        };
        let _ = hub.shared.owned_shards.set(cluster.owned_shards());
        let router = cluster.start_routing(hub.clone(), limits).await?;
        hub.channels.set_router(router.clone());
        hub.communities.set_router(router);
    }

    let (shutdown, _) = broadcast::channel(1);
    let push = push::PushService::start(db.clone(), &config, &shutdown)?;
    hub.set_offline_dm_sink(push.clone());

    let webhook_limits = governor::DefaultKeyedRateLimiter::keyed(state::quota(config.webhook_rate_limit));
    let gifs = domain::gif::GifProxy::new(&config)?;
    let github_issues = domain::feedback::GithubIssues::from_config(&config)?.map(Arc::new);
    let state = AppState {
        db,
        limits: Arc::new(HttpLimits::new(&config)),
        lockouts: Arc::new(auth::lockout::Lockouts::new(config.login_max_failures)),
        hashing: Arc::new(auth::hashing::HashPool::new(config.hash_workers, config.hash_queue)),
        uploads: Arc::new(storage::Uploads::new(&config)),
        search: Arc::new(domain::search::SearchGate::new(config.search.per_user)),
        push,
        link_previews: Arc::new(linkpreview::LinkPreviews::new(
            config.link_preview,
            config.allow_loopback_previews_for_tests.clone(),
        )),
        config: Arc::new(config),
        tokens: Arc::new(tokens),
        totp_keys: Arc::new(totp_keys),
        hub,
        settings: Arc::new(settings),
        started: Instant::now(),
        scheduler: Default::default(),
        webhook_limits: Arc::new(webhook_limits),
        gifs: Arc::new(gifs),
        github_issues,
        drain: Arc::new(drain::Drain::default()),
        metrics: Arc::new(metrics::HttpMetrics::new(routes::ROUTES)),
        cluster,
    };

    let listener =
        listen(state.config.bind).map_err(|e| format!("cannot listen on {}: {e}", state.config.bind))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let routes = routes::all(&state);
    let task = tokio::spawn(http::server::run(listener, state.clone(), routes, shutdown.subscribe()));
    let metrics_addr = match state.config.metrics_bind {
        Some(bind) => {
            let listener = listen(bind).map_err(|e| format!("cannot listen on {bind} (metrics): {e}"))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            tokio::spawn(http::metrics_endpoint::serve_separate(
                listener,
                state.clone(),
                shutdown.subscribe(),
            ));
            Some(addr)
        }
        None => None,
    };
    let scheduler = scheduler::start(state.clone(), shutdown.subscribe());
    let housekeeping = state::spawn_housekeeping(state.clone(), shutdown.subscribe());
    if state.cluster.is_some() {
        state::spawn_cluster_cache_sync(state.clone(), shutdown.subscribe());
    }
    tracing::info!(url = %format!("http://{addr}"), database = %redact(&state.config.database_url), "palaver is serving");
    Ok(Server { addr, metrics_addr, state, shutdown, task, scheduler, housekeeping })
}

/// Joins the cluster named by the configuration (see `palaver_actors::cluster`).
async fn join_cluster(
    settings: &config::ClusterSettings,
    data_dir: &std::path::Path,
) -> Result<Arc<palaver_actors::cluster::Cluster>, String> {
    let config = palaver_actors::cluster::ClusterConfig {
        nats_url: settings.nats_url.clone(),
        node_id: settings.node_id.clone(),
        prefix: settings.prefix.clone(),
        lock_database_url: settings.lock_database_url.clone(),
        detach_after: settings.detach_after,
        timers: settings.timers,
    };
    palaver_actors::cluster::Cluster::start(config, key_fingerprint(data_dir)).await
}

/// Identifies the token-signing and TOTP keys, so nodes with different keys refuse to join
/// one cluster (a token signed by one would fail on another).
fn key_fingerprint(data_dir: &std::path::Path) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for file in ["signing_key.pem", "totp.key"] {
        hash.update(std::fs::read(data_dir.join(file)).unwrap_or_default());
        hash.update([0]);
    }
    hex::encode(&hash.finalize()[..8])
}

/// Binds with a deep accept backlog: a burst of reconnecting clients (hundreds at once) must
/// not overflow the kernel's queue (the default 128 makes the overflow wait ~1 s to retry).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

fn hub_config(config: &Config) -> palaver_actors::HubConfig {
    palaver_actors::HubConfig {
        ws_rate_burst: config.ws_rate_limit.burst,
        ws_rate_per_second: config.ws_rate_limit.per_second,
        outbound_queue: config.ws_queue,
        outbound_queue_bytes: config.ws_queue_bytes,
        channel_idle_stop: config.channel_idle_stop,
        history_cache: config.history_cache,
        ..palaver_actors::HubConfig::default()
    }
}

/// Hides a password in a database URL before logging it.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}://{user}:***@{}", &url[..scheme], &url[at + 1..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
