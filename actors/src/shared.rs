//! `Shared`: what every actor may read — the database, the tunables, the session registry,
//! instance roles, the roster and who is in which voice session.
//!
//! It holds no actor references, so the actors that receive it (channel, community, presence)
//! import it without importing each other or the hub. The registries of live actors are
//! [`LiveChannels`](crate::channel::LiveChannels) and
//! [`LiveCommunities`](crate::community::LiveCommunities), beside their actors.

use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use palaver_entity::users;
use sea_orm::{DatabaseConnection, EntityTrait, QuerySelect};
use uuid::Uuid;

use crate::config::HubConfig;
use crate::metrics::HubMetrics;
use crate::registry::SessionRegistry;
use crate::roster::Roster;
use crate::users::InstanceRoles;

/// What actors share: the database, sessions, instance roles, memberships and voice.
pub struct Shared {
    /// The one connection pool; actors query through it (and commit, on PostgreSQL).
    pub db: DatabaseConnection,
    /// On a SQLite file: the thread that stores every channel's group commits (no sqlx
    /// worker-thread hop per statement). `None` on PostgreSQL.
    pub sqlite_writer: Option<crate::sqlite_writer::SqliteWriter>,
    /// The live side's tunables.
    pub config: HubConfig,
    /// Every open session (user scope delivery, eviction, DMs).
    pub sessions: SessionRegistry,
    /// Who is instance admin / owner now: sockets decide with this, not their token's flags.
    pub instance_roles: InstanceRoles,
    /// Community memberships and who shows as present (for presence).
    pub roster: Roster,
    /// user → the channel whose voice session they are in.
    pub voice: DashMap<Uuid, Uuid>,
    /// This hub's counters (one registry per server: see `metrics.rs`).
    pub metrics: Arc<HubMetrics>,
    /// Told of each committed DM whose recipient has no open socket (Web Push lives in the
    /// server crate; unset means nobody listens).
    pub offline_dm: OnceLock<Arc<dyn OfflineDmSink>>,
    /// In a cluster: the shards this node owns → their fencing epochs (kept by the ownership
    /// loop). Unset on a single node, where no write is fenced.
    pub owned_shards: OnceLock<Arc<DashMap<crate::cluster::shards::Shard, i64>>>,
    /// In a cluster: where the streams of channels this node just took over in a planned
    /// handoff ended on their previous owner. The channel's next actor here continues that
    /// epoch and position (taken once: a later restart starts a new epoch).
    pub handed_over: DashMap<Uuid, StreamEnd>,
    /// Where the streams of actors stopped by `ChannelMsg::Shutdown` ended (the hub takes
    /// them when it hands the channels' shards to another node).
    pub stream_ends: DashMap<Uuid, StreamEnd>,
}

/// The epoch and last position of a channel's stream when its actor stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamEnd {
    pub channel_id: Uuid,
    pub epoch: crate::protocol::Epoch,
    pub cseq: u64,
}

impl Shared {
    /// `user_id` is now in the voice session of `channel_id` (owned here); the other nodes of
    /// a cluster are told, so signalling between participants works wherever their sockets are.
    pub fn voice_joined(&self, user_id: Uuid, channel_id: Uuid) {
        self.voice.insert(user_id, channel_id);
        if let Some(elsewhere) = self.sessions.elsewhere() {
            elsewhere.voice_changed(user_id, channel_id, true);
        }
    }

    /// `user_id` left the voice session of `channel_id` (owned here).
    pub fn voice_left(&self, user_id: Uuid, channel_id: Uuid) {
        self.voice.remove_if(&user_id, |_, channel| *channel == channel_id);
        if let Some(elsewhere) = self.sessions.elsewhere() {
            elsewhere.voice_changed(user_id, channel_id, false);
        }
    }

    /// Whether a user still has a socket, here or (in a cluster) on another node.
    pub fn is_connected(&self, user_id: Uuid) -> bool {
        self.sessions.is_online(user_id)
            || (self.sessions.elsewhere().is_some() && self.roster.is_present(user_id))
    }

    /// The fence a channel's writes go under here: `None` on a single node. In a cluster, the
    /// epoch this node holds the channel's shard with, or -1 (never matches) if it does not.
    pub fn fence(&self, channel_id: Uuid) -> Option<crate::store::Fence> {
        let owned = self.owned_shards.get()?;
        let shard = crate::cluster::shards::shard_of(channel_id);
        let epoch = owned.get(&shard).map_or(-1, |e| *e);
        Some(crate::store::Fence { shard: shard as i16, epoch })
    }
}

/// A committed DM whose recipient had no open socket when it was announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OfflineDm {
    pub recipient: Uuid,
    pub sender: Uuid,
    pub channel_id: Uuid,
}

/// Where channel actors report [`OfflineDm`]s. Called from the actor right after the announce:
/// it must return at once (queue the work, never wait on it).
pub trait OfflineDmSink: Send + Sync {
    fn offline_dm(&self, dm: OfflineDm);
}

impl Shared {
    /// Whether the user owns the instance (read from the database: DM rules need the truth
    /// even for users with no open socket).
    pub async fn is_instance_owner(&self, user_id: Uuid) -> bool {
        users::Entity::find_by_id(user_id)
            .select_only()
            .column(users::Column::IsOwner)
            .into_tuple::<bool>()
            .one(&self.db)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    }
}
