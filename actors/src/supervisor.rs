//! The channel supervisor: every channel actor is linked to it.
//!
//! A channel actor that panics is restarted with state reloaded from the database; its
//! `Subscribers` set lives in the registry slot, so subscribers keep receiving events.
//! An actor that stopped (idle) is removed from the registry.
//!
//! Spawning lives here too (`spawn_channel`, `spawn_community`): the hub and the supervisors
//! start actors through these, so no actor module needs to know how actors are started.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use uuid::Uuid;

use crate::channel::{ChannelActor, ChannelArgs, ChannelMsg, LiveChannels, Subscribers};
use crate::community::{CommunityActor, CommunityArgs, CommunityMsg, LiveCommunities, load_community};
use crate::shared::Shared;
use crate::{HubError, store};

/// Spawns a channel actor under the channel supervisor with freshly loaded state, and
/// indexes it (so the supervisor knows which channel its events are about).
pub(crate) async fn spawn_channel(
    shared: &Arc<Shared>,
    channels: &LiveChannels,
    channel_id: Uuid,
    subscribers: Arc<Subscribers>,
) -> Result<ActorRef<ChannelMsg>, HubError> {
    let snapshot = store::load_channel(&shared.db, channel_id)
        .await
        .map_err(HubError::from_db)?
        .ok_or(HubError::NotFound)?;
    let supervisor = channels.supervisor.get().cloned().ok_or(HubError::Stopped)?;
    let args = ChannelArgs { shared: shared.clone(), snapshot, subscribers };
    let (actor, _) = Actor::spawn_linked(None, ChannelActor, args, supervisor)
        .await
        .map_err(|e| HubError::Internal(format!("spawn channel actor: {e}")))?;
    channels.index(&actor, channel_id);
    shared.metrics.channel_actors_started.inc();
    Ok(actor)
}

/// Spawns a community actor under the community supervisor with freshly loaded state.
pub(crate) async fn spawn_community(
    shared: &Arc<Shared>,
    channels: &Arc<LiveChannels>,
    communities: &LiveCommunities,
    community_id: Uuid,
) -> Result<ActorRef<CommunityMsg>, HubError> {
    let snapshot = load_community(&shared.db, community_id)
        .await
        .map_err(HubError::from_db)?
        .ok_or(HubError::NotFound)?;
    let supervisor = communities.supervisor.get().cloned().ok_or(HubError::Stopped)?;
    let args = CommunityArgs { shared: shared.clone(), channels: channels.clone(), snapshot };
    let (actor, _) = Actor::spawn_linked(None, CommunityActor, args, supervisor)
        .await
        .map_err(|e| HubError::Internal(format!("spawn community actor: {e}")))?;
    communities.actor_index.insert(actor.get_id(), community_id);
    Ok(actor)
}

/// What both supervisors hold: the shared context and the registries they restart into.
#[derive(Clone)]
pub struct Registries {
    /// Passed on to restarted actors.
    pub shared: Arc<Shared>,
    /// Live channel actors (restarted or forgotten by the channel supervisor).
    pub channels: Arc<LiveChannels>,
    /// Live community actors (restarted or forgotten by the community supervisor).
    pub communities: Arc<LiveCommunities>,
}

pub struct ChannelSupervisor;

/// The supervisor takes no messages of its own; it only reacts to supervision events.
pub enum SupervisorMsg {}

impl Actor for ChannelSupervisor {
    type Msg = SupervisorMsg;
    type State = Registries;
    type Arguments = Registries;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        registries: Registries,
    ) -> Result<Registries, ActorProcessingErr> {
        Ok(registries)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        registries: &mut Registries,
    ) -> Result<(), ActorProcessingErr> {
        let channels = &registries.channels;
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some((_, channel_id)) = channels.actor_index.remove(&cell.get_id()) else {
                    return Ok(());
                };
                tracing::error!(channel = %channel_id, %error, "channel actor failed; restarting");
                let Some(slot) = channels.slot(channel_id) else {
                    return Ok(());
                };
                match spawn_channel(&registries.shared, channels, channel_id, slot.subscribers.clone()).await
                {
                    Ok(actor) => {
                        registries.shared.metrics.channel_actors_restarted.inc();
                        slot.replace(actor)
                    }
                    Err(err) => {
                        // Could not reload (e.g. database down): forget the slot; the next
                        // use starts a fresh actor.
                        tracing::error!(channel = %channel_id, error = %err, "channel restart failed");
                        channels.slots.remove(&channel_id);
                        // Its subscribers would hear nothing more from it: never a silent gap.
                        slot.subscribers.close_all_out_of_sync();
                    }
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some((_, channel_id)) = channels.actor_index.remove(&cell.get_id())
                    && let Some((_, removed)) = channels.slots.remove_if(&channel_id, |_, c| {
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
    type State = Registries;
    type Arguments = Registries;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        registries: Registries,
    ) -> Result<Registries, ActorProcessingErr> {
        Ok(registries)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        registries: &mut Registries,
    ) -> Result<(), ActorProcessingErr> {
        let communities = &registries.communities;
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some((_, community_id)) = communities.actor_index.remove(&cell.get_id()) else {
                    return Ok(());
                };
                tracing::error!(community = %community_id, %error, "community actor failed; restarting");
                let Some(slot) = communities.slots.get(&community_id).and_then(|c| c.get().cloned()) else {
                    return Ok(());
                };
                match spawn_community(&registries.shared, &registries.channels, communities, community_id)
                    .await
                {
                    Ok(actor) => slot.replace(actor),
                    Err(err) => {
                        tracing::error!(community = %community_id, error = %err, "community restart failed");
                        communities.slots.remove(&community_id);
                    }
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some((_, community_id)) = communities.actor_index.remove(&cell.get_id()) {
                    communities.slots.remove_if(&community_id, |_, c| {
                        c.get().is_some_and(|slot| slot.actor().get_id() == cell.get_id())
                    });
                }
            }
            _ => {}
        }
        Ok(())
    }
}
