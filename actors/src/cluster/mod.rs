//! Several nodes on one PostgreSQL, talking over core NATS (docs: "Running several nodes";
//! design: ../shared/design/scale-out.md).
//!
//! Built: joining (start-up refusals, node lock, heartbeats), shard ownership (rendezvous
//! placement over live nodes, advisory locks, fencing epochs), the health view, the bus on
//! which user-scoped and instance-wide frames, revocations, role, settings and membership
//! changes and presence reach every node, and channel routing: a channel's actor runs only on
//! its shard's owner, which every other node asks (`route`, forwarding per node: `forward`),
//! with the owner's writes (message commits, edits, deletes, reactions) fenced by the shard
//! epoch (`store::Fence`), REST writes of other nodes ordered by holding the owner's actor, and
//! the per-user session cap counted on every node (`SessionRegistry::remote_sessions`), and
//! planned handoffs that keep a channel's stream and its subscribers (a leaving or rebalancing
//! owner writes where each stream ended into `channel_handoffs` before unlocking; the next
//! owner continues the epoch and position, and every subscribed session is re-attached there
//! from where it was), and single-owner community actors (commands routed like a channel's,
//! the owner's writes fenced).
//!
//! One file per concern: `shards` (hashing and placement), `locks` (the lock connection),
//! `members` (heartbeats and the live set), `bus` (events every node applies), `route`
//! (channel and community requests to owners, stand-ins of remote sessions), `link` (one
//! ordered queue per other node that stand-ins push into), `forward` (the wire format of what
//! a link sends a node), this file (configuration,
//! start, the ownership loop and the status view).

pub mod bus;
pub mod forward;
pub mod link;
pub mod locks;
pub mod members;
pub mod route;
pub mod shards;
mod wire_bytes;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::watch;

use self::locks::{Keepalives, LockConnection};
use self::members::{ControlMessage, Members};
use self::shards::{SHARDS, Shard, node_lock_key, placement, valid_node_id};
use crate::shared::StreamEnd;

/// How long a leaving node waits for its links to hand their last frames and moves to NATS.
const LINK_FLUSH_PATIENCE: Duration = Duration::from_secs(2);

/// How a node joins a cluster (every field has a configuration option, except the timers,
/// which tests shorten).
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Comma-separated `nats://` URLs (`PALAVER_NATS_URL`).
    pub nats_url: String,
    /// `[A-Za-z0-9_-]{1,64}`, unique among live nodes (`PALAVER_NODE_ID`).
    pub node_id: String,
    /// Subject prefix, so several deployments can share one NATS (`PALAVER_NATS_PREFIX`).
    pub prefix: String,
    /// Where the advisory locks are held (`PALAVER_LOCK_DATABASE_URL`).
    pub lock_database_url: String,
    /// NATS disconnection tolerated before the node detaches (`PALAVER_DETACH_AFTER`).
    pub detach_after: Duration,
    pub timers: ClusterTimers,
}

/// The cluster's clocks. Production values are the defaults; tests shorten them.
#[derive(Clone, Copy, Debug)]
pub struct ClusterTimers {
    /// How often a node announces itself on `ctl`.
    pub heartbeat: Duration,
    /// Silence after which a node is no longer counted live.
    pub dead_after: Duration,
    /// How often placement is recomputed and shards taken or given up.
    pub tick: Duration,
    /// A starting node listens this long before taking shards, so nodes starting together
    /// see each other first instead of taking everything and handing it back.
    pub join_grace: Duration,
    /// Most shards handed to another node per tick (moves are gradual).
    pub moves_per_tick: usize,
    pub keepalives: Keepalives,
    /// How often a node sends the digest of its users' presence.
    pub presence_digest: Duration,
    /// Silence after which a node's users are no longer listed as present. Longer than the
    /// Chatalot client's first reconnect backoffs, so a user moving node does not flap.
    pub presence_ttl: Duration,
}

impl Default for ClusterTimers {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(3),
            dead_after: Duration::from_secs(7),
            tick: Duration::from_secs(1),
            join_grace: Duration::from_secs(5),
            moves_per_tick: 32,
            keepalives: Keepalives::default(),
            presence_digest: Duration::from_secs(10),
            presence_ttl: Duration::from_secs(30),
        }
    }
}

/// Where this node stands, as `/api/health` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterState {
    /// Listening before taking shards, or shards still moving.
    Joining,
    /// Owns exactly what placement gives it; nothing moving.
    Settled,
    /// NATS is unreachable; shards are held, nothing is taken.
    Degraded,
    /// Cut off from NATS longer than `detach_after`: every shard given up.
    Detached,
}

/// The `cluster` section of `/api/health`.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterStatus {
    pub state: ClusterState,
    pub node_id: String,
    /// Live nodes, this one included.
    pub nodes: usize,
    pub shards_owned: usize,
    /// Shards this node should take or give up but has not yet.
    pub moving: usize,
}

/// This node's membership of the cluster.
pub struct Cluster {
    config: ClusterConfig,
    nats: async_nats::Client,
    /// Owned shards → their fencing epoch (checked by every owner write).
    owned: Arc<DashMap<Shard, i64>>,
    /// Channel routing, once the hub is up (`start_routing`).
    router: std::sync::OnceLock<Arc<route::Router>>,
    members: Members,
    status: Mutex<ClusterStatus>,
    /// Fires once on shutdown; every cluster task ends.
    stop: watch::Sender<bool>,
    /// The ownership loop, awaited on leave (it frees the locks as it ends).
    ownership: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// One line, for the operator: why this node may not join.
pub type StartRefusal = String;

impl Cluster {
    /// Joins the cluster: checks the configuration, connects to NATS and takes the node lock,
    /// then starts heartbeats and the ownership loop. `fingerprint` identifies the token and
    /// TOTP keys: every node must use the same ones (a shared data dir).
    pub async fn start(config: ClusterConfig, fingerprint: String) -> Result<Arc<Self>, StartRefusal> {
        if !valid_node_id(&config.node_id) {
            return Err(format!(
                "node id {:?} is not [A-Za-z0-9_-]{{1,64}} (PALAVER_NODE_ID)",
                config.node_id
            ));
        }
        let nats = async_nats::ConnectOptions::new()
            .no_echo()
            .connection_timeout(Duration::from_secs(3))
            .max_reconnects(None)
            .connect(config.nats_url.as_str())
            .await
            .map_err(|e| format!("cannot reach NATS at {} (PALAVER_NATS_URL): {e}", config.nats_url))?;
        if !nats.server_info().headers {
            return Err(format!("the NATS server at {} does not support headers", config.nats_url));
        }
        let mut lock =
            LockConnection::open(&config.lock_database_url, &config.node_id, config.timers.keepalives)
                .await
                .map_err(|e| format!("lock database (PALAVER_LOCK_DATABASE_URL): {e}"))?
                .ok_or_else(|| format!("node id {} is already live (PALAVER_NODE_ID)", config.node_id))?;
        let others =
            lock.live_fingerprints(&config.node_id).await.map_err(|e| format!("cluster_nodes: {e}"))?;
        if let Some((node, _)) = others.iter().find(|(_, theirs)| *theirs != fingerprint) {
            lock.close().await;
            return Err(format!(
                "node {node} uses other signing/TOTP keys: every node must share PALAVER_DATA_DIR"
            ));
        }
        let boot_id = uuid::Uuid::new_v4().simple().to_string();
        lock.record_seen(&config.node_id, &boot_id, &fingerprint, true)
            .await
            .map_err(|e| format!("cluster_nodes: {e}"))?;
        let members = Members::new(&config, boot_id);
        let control =
            nats.subscribe(members.control_subject()).await.map_err(|e| format!("NATS subscribe: {e}"))?;
        let (stop, _) = watch::channel(false);
        let cluster = Arc::new(Self {
            status: Mutex::new(ClusterStatus {
                state: ClusterState::Joining,
                node_id: config.node_id.clone(),
                nodes: 1,
                shards_owned: 0,
                moving: 0,
            }),
            config,
            nats,
            owned: Arc::new(DashMap::new()),
            router: std::sync::OnceLock::new(),
            members,
            stop,
            ownership: Mutex::new(None),
        });
        tokio::spawn(members::listen(cluster.clone(), control, cluster.stop.subscribe()));
        tokio::spawn(members::heartbeats(cluster.clone(), cluster.stop.subscribe()));
        let ownership =
            tokio::spawn(ownership_loop(cluster.clone(), lock, fingerprint, cluster.stop.subscribe()));
        *cluster.ownership.lock().unwrap_or_else(|e| e.into_inner()) = Some(ownership);
        tracing::info!(node = %cluster.config.node_id, "joined the cluster");
        Ok(cluster)
    }

    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// The health view.
    pub fn status(&self) -> ClusterStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether this node owns the shard, and under which fencing epoch.
    pub fn owner_epoch(&self, shard: Shard) -> Option<i64> {
        self.owned.get(&shard).map(|e| *e)
    }

    /// Leaves: hands every shard over (their streams and subscribers move to the next
    /// owners), frees every lock by closing the lock connection, then tells the others at
    /// once (they need not wait for silence). `Leaving` goes last: a node that drops this one
    /// from its live set closes the sessions that depended on it, unless the handoff's moves
    /// (published before, on the same connection) released them.
    pub async fn leave(&self) {
        let _ = self.stop.send(true);
        let ownership = self.ownership.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(ownership) = ownership {
            let _ = ownership.await;
        }
        if let Some(router) = self.router.get() {
            router.flush_links(LINK_FLUSH_PATIENCE).await;
        }
        let _ = self.members.publish(&self.nats, &ControlMessage::Leaving).await;
        let _ = self.nats.flush().await;
    }

    /// Starts this node's side of the cluster bus (`bus`), applying other nodes' events to
    /// `hub`. The caller hands the returned `Bus` to the hub, which publishes through it.
    pub async fn start_bus(&self, hub: Arc<dyn bus::RemoteEvents>) -> Result<Arc<bus::Bus>, String> {
        let timers = bus::PresenceTimers {
            digest_every: self.config.timers.presence_digest,
            ttl: self.config.timers.presence_ttl,
            // A killed node's lock is released at once and the next tick or two drops it
            // from the live set (and its sessions from every count); three ticks cover that.
            cap_grace: self.config.timers.tick * 3,
        };
        let names = (self.config.prefix.as_str(), self.config.node_id.as_str());
        bus::start(self.nats.clone(), names, timers, hub, self.stop.subscribe()).await
    }

    /// Starts routing channel traffic: from now on channels of shards owned elsewhere are
    /// served by their owners, and this node answers for the shards it owns. Returns the
    /// router, which the hub's channel registry uses.
    pub async fn start_routing(
        &self,
        here: Arc<dyn route::ChannelsHere>,
        limits: route::StandInLimits,
    ) -> Result<Arc<route::Router>, String> {
        let router = route::Router::new(
            self.nats.clone(),
            &self.config.prefix,
            &self.config.node_id,
            self.owned.clone(),
            limits,
        );
        let _ = self.router.set(router.clone());
        router.start(here, self.stop.subscribe()).await?;
        Ok(router)
    }

    /// The shards this node owns → their fencing epochs (owner writes check theirs).
    pub fn owned_shards(&self) -> Arc<DashMap<Shard, i64>> {
        self.owned.clone()
    }

    /// Channel routing, once started.
    pub fn router(&self) -> Option<&Arc<route::Router>> {
        self.router.get()
    }

    /// Stops serving shards (their actors drain first, while the locks are still held, so
    /// no other node owns them before these stop writing). Answers the fencing epochs they
    /// were held under and where their channels' streams ended.
    async fn give_up(&self, shards: &[Shard], planned: bool) -> Handoff {
        let held = shards.iter().filter_map(|shard| self.owned.remove(shard)).collect();
        let ends = match self.router.get() {
            Some(router) => router.lost(shards, planned).await,
            None => Vec::new(),
        };
        Handoff { held, ends }
    }

    /// A planned give-up: the shards' streams are written down for their next owner (which
    /// continues them: same epoch, next position), then the shards are unlocked.
    async fn hand_off(&self, conn: &mut LockConnection, shards: &[Shard]) {
        let Handoff { held, ends } = self.give_up(shards, true).await;
        match conn.record_handoffs(&self.config.node_id, &held, &ends).await {
            Ok(written) => tracing::debug!(shards = shards.len(), written, "streams handed over"),
            // The next owner starts new epochs instead: clients resync, nothing is lost.
            Err(err) => tracing::warn!(%err, "could not record the handed-over streams"),
        }
        let _ = conn.release(shards).await;
    }

    fn set_status(&self, update: impl FnOnce(&mut ClusterStatus)) {
        update(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// Every tick: check the lock connection, compute the live set, take the shards placement
/// gives this node and hand over the ones it gives others.
async fn ownership_loop(
    cluster: Arc<Cluster>,
    lock: LockConnection,
    fingerprint: String,
    mut stop: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let timers = cluster.config.timers;
    let mut lock = Some(lock);
    let mut ticker = tokio::time::interval(timers.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seen_write = Instant::now();
    let mut nats_down_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => break,
        }
        let nats_ok = matches!(cluster.nats.connection_state(), async_nats::connection::State::Connected);
        nats_down_since = if nats_ok { None } else { nats_down_since.or(Some(Instant::now())) };
        let Some(conn) = lock.as_mut() else {
            // The lock connection died: every lock went with it. Reconnect and start over.
            let held: Vec<Shard> = cluster.owned.iter().map(|e| *e.key()).collect();
            cluster.give_up(&held, false).await;
            lock = LockConnection::open(
                &cluster.config.lock_database_url,
                &cluster.config.node_id,
                timers.keepalives,
            )
            .await
            .ok()
            .flatten();
            cluster.set_status(|s| {
                s.state = ClusterState::Joining;
                s.shards_owned = 0;
            });
            continue;
        };
        if conn.ping().await.is_err() {
            tracing::warn!("lock connection lost: every shard given up");
            lock = None;
            let held: Vec<Shard> = cluster.owned.iter().map(|e| *e.key()).collect();
            cluster.give_up(&held, false).await;
            continue;
        }
        if last_seen_write.elapsed() >= timers.heartbeat {
            last_seen_write = Instant::now();
            let _ = conn
                .record_seen(&cluster.config.node_id, cluster.members.boot_id(), &fingerprint, nats_ok)
                .await;
        }
        if nats_down_since.is_some_and(|since| since.elapsed() >= cluster.config.detach_after) {
            // Cut off: give everything up so live nodes can take it.
            let held: Vec<Shard> = cluster.owned.iter().map(|e| *e.key()).collect();
            if !held.is_empty() {
                cluster.hand_off(conn, &held).await;
            }
            cluster.set_status(|s| {
                s.state = ClusterState::Detached;
                s.shards_owned = cluster.owned.len();
            });
            continue;
        }
        if !nats_ok {
            cluster.set_status(|s| s.state = ClusterState::Degraded);
            continue;
        }
        let Ok(holders) = conn.live_node_keys().await else { continue };
        let live =
            cluster.members.live(timers.dead_after, |node| holders.contains(&i64::from(node_lock_key(node))));
        if let Some(router) = cluster.router.get() {
            router.set_live_nodes(live.clone());
        }
        let live: Vec<&str> = live.iter().map(String::as_str).collect();
        let me = cluster.config.node_id.as_str();
        let mine: BTreeSet<Shard> = (0..SHARDS).filter(|s| placement(*s, &live) == Some(me)).collect();
        let joining = started.elapsed() < timers.join_grace;
        if !joining {
            let to_take: Vec<Shard> =
                mine.iter().copied().filter(|s| !cluster.owned.contains_key(s)).collect();
            if let Ok(taken) = conn.acquire(me, &to_take).await
                && !taken.is_empty()
            {
                let shards: Vec<Shard> = taken.iter().map(|(s, _)| *s).collect();
                // Before any actor of these shards can start here.
                let handed = conn.take_handoffs(&taken).await.unwrap_or_else(|err| {
                    tracing::warn!(%err, "could not read the handed-over streams: new epochs");
                    Vec::new()
                });
                if let Some(router) = cluster.router.get() {
                    router.taken(&shards, handed);
                }
                for (shard, epoch) in &taken {
                    cluster.owned.insert(*shard, *epoch);
                }
                if let Some(router) = cluster.router.get() {
                    router.serve(&shards).await;
                }
                let _ = cluster.members.publish(&cluster.nats, &ControlMessage::Acquired { shards }).await;
            }
            let to_give: Vec<Shard> = cluster
                .owned
                .iter()
                .map(|e| *e.key())
                .filter(|s| !mine.contains(s))
                .take(timers.moves_per_tick)
                .collect();
            if !to_give.is_empty() {
                cluster.hand_off(conn, &to_give).await;
                let _ = cluster
                    .members
                    .publish(&cluster.nats, &ControlMessage::Released { shards: to_give })
                    .await;
            }
        }
        let owned: BTreeSet<Shard> = cluster.owned.iter().map(|e| *e.key()).collect();
        let moving = mine.symmetric_difference(&owned).count();
        cluster.set_status(|s| {
            s.state = if joining || moving > 0 { ClusterState::Joining } else { ClusterState::Settled };
            s.nodes = live.len();
            s.shards_owned = owned.len();
            s.moving = moving;
        });
    }
    let held: Vec<Shard> = cluster.owned.iter().map(|e| *e.key()).collect();
    match lock {
        Some(mut conn) => {
            cluster.hand_off(&mut conn, &held).await;
            conn.close().await;
        }
        None => {
            cluster.give_up(&held, false).await;
        }
    }
}

/// What giving shards up leaves: the fencing epochs they were held under, and where their
/// channels' streams ended.
struct Handoff {
    held: Vec<(Shard, i64)>,
    ends: Vec<StreamEnd>,
}
