//! The registry of live community actors: one slot per community with a running actor,
//! found by the hub (commands, member lists) and the supervisor (restart or forget). Spawning
//! is the supervisor's (see `supervisor::spawn_community`).

use std::sync::{Arc, OnceLock, RwLock};

use dashmap::DashMap;
use ractor::{ActorCell, ActorRef};
use tokio::sync::{Notify, OnceCell};
use uuid::Uuid;

use super::CommunityMsg;

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
}

impl LiveCommunities {
    /// The actor currently serving a community, if live.
    pub fn live(&self, community_id: Uuid) -> Option<ActorRef<CommunityMsg>> {
        self.slots.get(&community_id).and_then(|c| c.get().map(|s| s.actor()))
    }
}
