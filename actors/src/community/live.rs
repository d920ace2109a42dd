//! The registry of live community actors: one slot per community with a running actor,
//! found by the hub (commands, member lists) and the supervisor (restart or forget). Spawning
//! is the supervisor's (see `supervisor::spawn_community`).

use std::sync::{Arc, OnceLock, RwLock};

use dashmap::DashMap;
use ractor::{ActorCell, ActorRef};
use tokio::sync::{Notify, OnceCell};
use uuid::Uuid;

use super::{Answer, Command, CommunityMsg};
use crate::HubError;
use crate::channel::BoxFuture;

/// In a cluster, where a community's commands go when another node owns its shard (the
/// community's actor runs only there, so its in-memory members, roles and bans stay exact).
pub trait CommunityRouter: Send + Sync {
    /// Whether another node serves this community now.
    fn elsewhere(&self, community_id: Uuid) -> bool;
    /// Runs `command` on the owner's actor and answers as it answered.
    fn command(&self, community_id: Uuid, command: Command) -> BoxFuture<Result<Answer, HubError>>;
}

/// A live community: its actor (replaced on restart).
pub struct CommunitySlot {
    /// The community this slot serves.
    pub community_id: Uuid,
    /// The actor serving it now (the supervisor installs a restarted one here).
    actor: RwLock<ActorRef<CommunityMsg>>,
    /// Fires when the supervisor has installed a restarted actor.
    restarted: Notify,
}

impl CommunitySlot {
    /// A slot for a freshly spawned actor.
    pub(crate) fn new(community_id: Uuid, actor: ActorRef<CommunityMsg>) -> Self {
        Self { community_id, actor: RwLock::new(actor), restarted: Notify::new() }
    }

    pub fn actor(&self) -> ActorRef<CommunityMsg> {
        self.actor.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn replace(&self, actor: ActorRef<CommunityMsg>) {
        *self.actor.write().unwrap_or_else(|p| p.into_inner()) = actor;
        self.restarted.notify_waiters();
    }

    /// Resolves at the next restart; create it before checking the actor.
    pub(crate) fn restarted(&self) -> tokio::sync::futures::Notified<'_> {
        self.restarted.notified()
    }
}

/// A slot initialised once by the first caller (concurrent callers wait for it).
pub(crate) type CommunityCell = Arc<OnceCell<Arc<CommunitySlot>>>;

/// Every live community actor, by community and by actor id.
#[derive(Default)]
pub struct LiveCommunities {
    /// community id → its slot.
    pub(crate) slots: DashMap<Uuid, CommunityCell>,
    /// actor id → community id (for the community supervisor).
    pub(crate) actor_index: DashMap<ractor::ActorId, Uuid>,
    /// The supervisor every community actor is linked to.
    pub(crate) supervisor: OnceLock<ActorCell>,
    /// Set in a cluster: commands of communities owned elsewhere go there.
    router: OnceLock<Arc<dyn CommunityRouter>>,
}

impl LiveCommunities {
    /// Joins a cluster: from now on communities owned elsewhere are served there.
    pub fn set_router(&self, router: Arc<dyn CommunityRouter>) {
        let _ = self.router.set(router);
    }

    /// The router, when another node owns `community_id`.
    pub(crate) fn owned_elsewhere(&self, community_id: Uuid) -> Option<&Arc<dyn CommunityRouter>> {
        self.router.get().filter(|router| router.elsewhere(community_id))
    }

    /// The actor currently serving a community, if live.
    pub fn live(&self, community_id: Uuid) -> Option<ActorRef<CommunityMsg>> {
        self.slots.get(&community_id).and_then(|c| c.get().map(|s| s.actor()))
    }
}
