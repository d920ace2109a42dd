//! The channel supervisor: every channel actor is linked to it.
//!
//! A channel actor that panics is restarted with state reloaded from the database; its
//! `Subscribers` set lives in the registry slot, so subscribers keep receiving events.
//! An actor that stopped (idle) is removed from the registry.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use uuid::Uuid;

use crate::channel::ChannelMsg;
use crate::hub::Shared;

pub struct ChannelSupervisor;

/// The supervisor takes no messages of its own; it only reacts to supervision events.
pub enum SupervisorMsg {}

/// Records which channel an actor serves (the supervisor's events name only actors).
pub(crate) fn index(shared: &Shared, actor: &ActorRef<ChannelMsg>, channel_id: Uuid) {
    shared.actor_index.insert(actor.get_id(), channel_id);
}

impl Actor for ChannelSupervisor {
    type Msg = SupervisorMsg;
    type State = Arc<Shared>;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        shared: Arc<Shared>,
    ) -> Result<Arc<Shared>, ActorProcessingErr> {
        Ok(shared)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        shared: &mut Arc<Shared>,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some((_, channel_id)) = shared.actor_index.remove(&cell.get_id()) else { return Ok(()) };
                tracing::error!(channel = %channel_id, %error, "channel actor failed; restarting");
                let Some(slot) = shared.channels.get(&channel_id).and_then(|c| c.get().cloned()) else {
                    return Ok(());
                };
                match shared.spawn_channel(channel_id, slot.subscribers.clone()).await {
                    Ok(actor) => {
                        index(shared, &actor, channel_id);
                        slot.replace(actor);
                    }
                    Err(err) => {
                        // Could not reload (e.g. database down): forget the slot; the next
                        // use starts a fresh actor.
                        tracing::error!(channel = %channel_id, error = %err, "channel restart failed");
                        shared.channels.remove(&channel_id);
                    }
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some((_, channel_id)) = shared.actor_index.remove(&cell.get_id())
                    && let Some((_, removed)) = shared.channels.remove_if(&channel_id, |_, c| {
                        c.get().is_some_and(|slot| slot.actor().get_id() == cell.get_id())
                    })
                    && let Some(slot) = removed.get()
                {
                    slot.gone();
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The community supervisor: every community actor is linked to it. A community actor that
/// panics is restarted with its state reloaded from the database (which holds every change it
/// ever made: it persists before it updates its memory); one that stopped is forgotten.
pub struct CommunitySupervisor;

impl Actor for CommunitySupervisor {
    type Msg = SupervisorMsg;
    type State = Arc<Shared>;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        shared: Arc<Shared>,
    ) -> Result<Arc<Shared>, ActorProcessingErr> {
        Ok(shared)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        shared: &mut Arc<Shared>,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some((_, community_id)) = shared.community_index.remove(&cell.get_id()) else {
                    return Ok(());
                };
                tracing::error!(community = %community_id, %error, "community actor failed; restarting");
                let Some(slot) = shared.communities.get(&community_id).and_then(|c| c.get().cloned()) else {
                    return Ok(());
                };
                match shared.spawn_community(community_id).await {
                    Ok(actor) => slot.replace(actor),
                    Err(err) => {
                        tracing::error!(community = %community_id, error = %err, "community restart failed");
                        shared.communities.remove(&community_id);
                    }
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some((_, community_id)) = shared.community_index.remove(&cell.get_id()) {
                    shared.communities.remove_if(&community_id, |_, c| {
                        c.get().is_some_and(|slot| slot.actor().get_id() == cell.get_id())
                    });
                }
            }
            _ => {}
        }
        Ok(())
    }
}
