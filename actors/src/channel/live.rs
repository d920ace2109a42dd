//! The registry of live channel actors: one slot per channel with a running actor, found by
//! the hub (to send), the community actor (to tell about membership) and the supervisor (to
//! restart or forget). Spawning is the supervisor's (see `supervisor::spawn_channel`).

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use dashmap::DashMap;
use ractor::{ActorCell, ActorRef};
use tokio::sync::{Notify, OnceCell};
use uuid::Uuid;

use super::{ChannelMsg, Subscribers};
use crate::protocol::ServerFrame;

/// A live channel: its actor (replaced on restart) and its subscribers (kept across restarts).
pub struct ChannelSlot {
    /// The channel this slot serves.
    pub channel_id: Uuid,
    /// The actor serving it now (the supervisor installs a restarted one here).
    actor: RwLock<ActorRef<ChannelMsg>>,
    /// Fires when the supervisor has installed a restarted actor.
    restarted: Notify,
    /// Who receives the channel's events; outlives any one actor.
    pub subscribers: Arc<Subscribers>,
}

impl ChannelSlot {
    /// A slot for a freshly spawned actor.
    pub(crate) fn new(channel_id: Uuid, actor: ActorRef<ChannelMsg>, subscribers: Arc<Subscribers>) -> Self {
        Self { channel_id, actor: RwLock::new(actor), restarted: Notify::new(), subscribers }
    }

    pub fn actor(&self) -> ActorRef<ChannelMsg> {
        self.actor.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn replace(&self, actor: ActorRef<ChannelMsg>) {
        *self.actor.write().unwrap_or_else(|p| p.into_inner()) = actor;
        self.restarted.notify_waiters();
    }

    /// Its actor stopped for good (idle, deleted) and the slot left the registry: senders
    /// waiting for a restart may start a fresh actor now.
    pub(crate) fn gone(&self) {
        self.restarted.notify_waiters();
    }

    /// Resolves at the next restart (or `gone`); create it before checking the actor.
    pub(crate) fn restarted(&self) -> tokio::sync::futures::Notified<'_> {
        self.restarted.notified()
    }
}

/// Where channels owned by another node of a cluster are reached (`cluster::route`): every
/// message for such a channel goes to its owner instead of a local actor. Unset on a single
/// node, where every channel is served here.
pub trait ChannelRouter: Send + Sync {
    /// Whether another node serves this channel now.
    fn elsewhere(&self, channel_id: Uuid) -> bool;
    /// Hands a message to the channel's owner. Resolves once the owner took it; its reply
    /// port (if any) is answered when the owner answers, or dropped if it cannot.
    fn forward(&self, channel_id: Uuid, message: ChannelMsg) -> BoxFuture<Result<(), crate::HubError>>;
    /// Applies the effects of a change committed here through the owner's actor, if one
    /// runs there (see `Hub::channel_effects`).
    fn forward_effects(
        &self,
        channel_id: Uuid,
        effects: Vec<super::Effect>,
    ) -> BoxFuture<super::CommandAnswer>;
}

/// What a router's calls resolve to.
pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// A slot initialised once by the first caller (concurrent callers wait for it).
pub(crate) type SlotCell = Arc<OnceCell<Arc<ChannelSlot>>>;

/// Every live channel actor, by channel and by actor id.
#[derive(Default)]
pub struct LiveChannels {
    /// channel id → its slot (initialised once by the first caller).
    pub(crate) slots: DashMap<Uuid, SlotCell>,
    /// actor id → channel id, so the supervisor knows which channel an event is about.
    pub(crate) actor_index: DashMap<ractor::ActorId, Uuid>,
    /// The supervisor every channel actor is linked to.
    pub(crate) supervisor: OnceLock<ActorCell>,
    /// In a cluster: how channels owned by other nodes are reached.
    router: OnceLock<Arc<dyn ChannelRouter>>,
}

impl LiveChannels {
    /// Routes channels owned by other nodes through `router` from now on (once).
    pub fn set_router(&self, router: Arc<dyn ChannelRouter>) {
        let _ = self.router.set(router);
    }

    /// The router, when another node serves this channel.
    pub fn remote(&self, channel_id: Uuid) -> Option<&Arc<dyn ChannelRouter>> {
        self.router.get().filter(|router| router.elsewhere(channel_id))
    }

    /// Sends to the channel's live actor, here or on its owner; nothing when none runs here
    /// (the next one loads the database state).
    pub fn send(&self, channel_id: Uuid, message: ChannelMsg) {
        if let Some(router) = self.remote(channel_id) {
            tokio::spawn(router.forward(channel_id, message));
        } else if let Some(actor) = self.live(channel_id) {
            let _ = actor.send_message(message);
        }
    }

    /// `send`, resolving once the owner took the message (so what is sent next comes after).
    pub async fn send_in_order(&self, channel_id: Uuid, message: ChannelMsg) {
        if let Some(router) = self.remote(channel_id) {
            let _ = router.forward(channel_id, message).await;
        } else if let Some(actor) = self.live(channel_id) {
            let _ = actor.send_message(message);
        }
    }

    /// The actor serving a channel, if one is live.
    pub fn live(&self, channel_id: Uuid) -> Option<ActorRef<ChannelMsg>> {
        self.slots.get(&channel_id).and_then(|c| c.get().map(|s| s.actor()))
    }

    /// The slot of a channel, if its actor is live.
    pub fn slot(&self, channel_id: Uuid) -> Option<Arc<ChannelSlot>> {
        self.slots.get(&channel_id).and_then(|c| c.get().cloned())
    }

    /// Channel actors running now (metrics).
    pub fn live_count(&self) -> usize {
        self.actor_index.len()
    }

    /// Records which channel an actor serves (the supervisor's events name only actors).
    pub(crate) fn index(&self, actor: &ActorRef<ChannelMsg>, channel_id: Uuid) {
        self.actor_index.insert(actor.get_id(), channel_id);
    }

    /// Tells a live channel actor about a change and waits (up to `wait`) until it has applied
    /// it. Nothing to do when none runs: the next one loads the database state.
    pub async fn tell(
        &self,
        channel_id: Uuid,
        wait: Duration,
        message: impl FnOnce(Option<ractor::RpcReplyPort<()>>) -> ChannelMsg,
    ) {
        if let Some(router) = self.remote(channel_id) {
            let (reply, answered) = ractor::concurrency::oneshot();
            if router.forward(channel_id, message(Some(reply.into()))).await.is_ok() {
                let _ = tokio::time::timeout(wait, answered).await;
            }
            return;
        }
        let Some(actor) = self.live(channel_id) else { return };
        match actor.call(|reply| message(Some(reply)), Some(wait)).await {
            Ok(ractor::rpc::CallResult::Success(())) => {}
            Ok(other) => {
                tracing::warn!(channel = %channel_id, result = ?other, "live channel did not answer")
            }
            Err(err) => tracing::debug!(channel = %channel_id, error = %err, "live channel gone"),
        }
    }

    /// Channel scope: every subscriber of a live channel (nobody to tell otherwise).
    pub fn broadcast(&self, channel_id: Uuid, frame: &ServerFrame) {
        self.send(channel_id, ChannelMsg::Broadcast { frame: frame.clone() });
    }
}
