//! The `Hub`: finds live actors and sessions; the entry point for routes and sockets.

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use dashmap::DashMap;
use palaver_entity::users;
use ractor::{Actor, ActorCell, ActorRef};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect};
use tokio::sync::{Notify, OnceCell};
use uuid::Uuid;

use crate::channel::{ChannelActor, ChannelArgs, ChannelMsg, PostError, Poster, ServerPost, Subscribers};
use crate::community::{
    Answer, Command, CommunityActor, CommunityArgs, CommunityMsg, Refusal, load_community,
};
use crate::outbox::{CLOSE_GOING_AWAY, CLOSE_UNAUTHORIZED};
use crate::presence::Presence;
use crate::protocol::ServerFrame;
use crate::registry::{Logins, SessionRegistry};
use crate::roles::InstanceRole;
use crate::roster::Roster;
use crate::supervisor::{ChannelSupervisor, CommunitySupervisor};
use crate::users::{BarredUsers, InstanceRoles, RevokedLogins};
use crate::{HubError, store};

/// Tunables of the live side (the server fills them from its configuration).
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Per-socket frame bucket: burst.
    pub ws_rate_burst: u32,
    /// Per-socket frame bucket: refill per second.
    pub ws_rate_per_second: u32,
    /// Frames queued per socket before a slow reader is disconnected.
    pub outbound_queue: usize,
    /// Bytes queued per socket before a slow reader is disconnected.
    pub outbound_queue_bytes: usize,
    /// Signalling relay frames (`rtc_*`) per socket: their own bucket, so a call's setup
    /// burst is not starved by other traffic and cannot starve it.
    pub signal_rate_burst: u32,
    pub signal_rate_per_second: u32,
    /// A channel actor with no subscribers stops after this long without activity.
    pub channel_idle_stop: Duration,
    /// Sockets per user; one more evicts the oldest.
    pub max_sessions_per_user: usize,
    /// Channel actors keep the newest history pages in memory (off: every read queries).
    pub history_cache: bool,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            ws_rate_burst: 30,
            ws_rate_per_second: 10,
            outbound_queue: 1024,
            outbound_queue_bytes: crate::outbox::DEFAULT_QUEUE_BYTES,
            signal_rate_burst: SIGNAL_RATE_BURST,
            signal_rate_per_second: SIGNAL_RATE_PER_SECOND,
            channel_idle_stop: crate::channel::IDLE_STOP,
            max_sessions_per_user: 8,
            history_cache: true,
        }
    }
}

/// The signalling bucket: a call setup is an offer (or answer) and ~15 ICE candidates per
/// peer, sent at once; 64 covers four peers, and the refill lets renegotiation through.
pub const SIGNAL_RATE_BURST: u32 = 64;
pub const SIGNAL_RATE_PER_SECOND: u32 = 16;

/// How long a caller waits for a community actor's answer.
pub const COMMUNITY_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a `may_post` question waits for the channel actor.
const MAY_POST_WAIT: Duration = Duration::from_secs(5);

/// A live community: its actor (replaced on restart).
pub struct CommunitySlot {
    pub community_id: Uuid,
    actor: RwLock<ActorRef<CommunityMsg>>,
    restarted: Notify,
}

impl CommunitySlot {
    pub fn actor(&self) -> ActorRef<CommunityMsg> {
        self.actor.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn replace(&self, actor: ActorRef<CommunityMsg>) {
        *self.actor.write().unwrap_or_else(|p| p.into_inner()) = actor;
        self.restarted.notify_waiters();
    }
}

type CommunityCell = Arc<OnceCell<Arc<CommunitySlot>>>;

/// A live channel: its actor (replaced on restart) and its subscribers (kept across restarts).
pub struct ChannelSlot {
    pub channel_id: Uuid,
    actor: RwLock<ActorRef<ChannelMsg>>,
    /// Fires when the supervisor has installed a restarted actor.
    restarted: Notify,
    pub subscribers: Arc<Subscribers>,
}

impl ChannelSlot {
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
}

type SlotCell = Arc<OnceCell<Arc<ChannelSlot>>>;

/// What actors share: the database, sessions, and the registry of live channels.
pub struct Shared {
    pub db: DatabaseConnection,
    pub config: HubConfig,
    pub sessions: SessionRegistry,
    /// Who is instance admin / owner now: sockets decide with this, not their token's flags.
    pub instance_roles: InstanceRoles,
    /// Community memberships and who shows as present (for presence).
    pub roster: Roster,
    /// user → the channel whose voice session they are in.
    pub voice: DashMap<Uuid, Uuid>,
    /// channel id → its slot (initialised once by the first caller).
    pub(crate) channels: DashMap<Uuid, SlotCell>,
    /// actor id → channel id, so the supervisor knows which channel an event is about.
    pub(crate) actor_index: DashMap<ractor::ActorId, Uuid>,
    /// The supervisor every channel actor is linked to.
    pub(crate) supervisor: OnceLock<ActorCell>,
    /// community id → its slot.
    pub(crate) communities: DashMap<Uuid, CommunityCell>,
    /// actor id → community id (for the community supervisor).
    pub(crate) community_index: DashMap<ractor::ActorId, Uuid>,
    /// The supervisor every community actor is linked to.
    pub(crate) community_supervisor: OnceLock<ActorCell>,
}

impl Shared {
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

    /// Spawns a channel actor under the supervisor with freshly loaded state.
    pub(crate) async fn spawn_channel(
        self: &Arc<Self>,
        channel_id: Uuid,
        subscribers: Arc<Subscribers>,
    ) -> Result<ActorRef<ChannelMsg>, HubError> {
        let snapshot = store::load_channel(&self.db, channel_id)
            .await
            .map_err(HubError::from_db)?
            .ok_or(HubError::NotFound)?;
        let supervisor = self.supervisor.get().cloned().ok_or(HubError::Stopped)?;
        let args = ChannelArgs { shared: self.clone(), snapshot, subscribers };
        let (actor, _) = Actor::spawn_linked(None, ChannelActor, args, supervisor)
            .await
            .map_err(|e| HubError::Internal(format!("spawn channel actor: {e}")))?;
        Ok(actor)
    }

    /// Spawns a community actor under its supervisor with freshly loaded state.
    pub(crate) async fn spawn_community(
        self: &Arc<Self>,
        community_id: Uuid,
    ) -> Result<ActorRef<CommunityMsg>, HubError> {
        let snapshot = load_community(&self.db, community_id)
            .await
            .map_err(HubError::from_db)?
            .ok_or(HubError::NotFound)?;
        let supervisor = self.community_supervisor.get().cloned().ok_or(HubError::Stopped)?;
        let args = CommunityArgs { shared: self.clone(), snapshot };
        let (actor, _) = Actor::spawn_linked(None, CommunityActor, args, supervisor)
            .await
            .map_err(|e| HubError::Internal(format!("spawn community actor: {e}")))?;
        self.community_index.insert(actor.get_id(), community_id);
        Ok(actor)
    }

    /// The actor serving a channel, if one is live.
    pub fn live_channel(&self, channel_id: Uuid) -> Option<ActorRef<ChannelMsg>> {
        self.channels.get(&channel_id).and_then(|c| c.get().map(|s| s.actor()))
    }

    /// Tells a live channel actor about a change and waits (up to `wait`) until it has applied
    /// it. Nothing to do when none runs: the next one loads the database state.
    pub async fn tell_channel(
        &self,
        channel_id: Uuid,
        wait: Duration,
        message: impl FnOnce(Option<ractor::RpcReplyPort<()>>) -> ChannelMsg,
    ) {
        let Some(actor) = self.live_channel(channel_id) else { return };
        match actor.call(|reply| message(Some(reply)), Some(wait)).await {
            Ok(ractor::rpc::CallResult::Success(())) => {}
            Ok(other) => {
                tracing::warn!(channel = %channel_id, result = ?other, "live channel did not answer")
            }
            Err(err) => tracing::debug!(channel = %channel_id, error = %err, "live channel gone"),
        }
    }

    /// Channel scope: every subscriber of a live channel (nobody to tell otherwise).
    pub fn broadcast_channel(&self, channel_id: Uuid, frame: &ServerFrame) {
        if let Some(actor) = self.live_channel(channel_id) {
            let _ = actor.send_message(ChannelMsg::Broadcast { frame: frame.encode() });
        }
    }
}

pub struct Hub {
    pub shared: Arc<Shared>,
    pub db: DatabaseConnection,
    pub config: HubConfig,
    /// Suspended or deleted users: refused on every request and socket.
    pub users: BarredUsers,
    /// Revoked logins whose access tokens may not open sockets any more.
    pub revoked_logins: RevokedLogins,
    /// Coalesces presence changes and delivers them to community mates.
    pub presence: Presence,
    /// Last voice join/leave per user (one per 2 s across sessions).
    pub voice_cooldowns: DashMap<Uuid, std::time::Instant>,
    /// Most frames any one socket has had handed to its session and not yet handled
    /// (bounded by `session::MAX_FRAMES_IN_FLIGHT`; metrics, tests).
    pub frames_in_flight_peak: std::sync::atomic::AtomicUsize,
    supervisor: ActorRef<crate::supervisor::SupervisorMsg>,
    community_supervisor: ActorRef<crate::supervisor::SupervisorMsg>,
}

impl Hub {
    /// Loads what must be known before serving (barred users) and starts the supervisors.
    pub async fn start(db: DatabaseConnection, config: HubConfig) -> Result<Arc<Self>, String> {
        let barred = BarredUsers::default();
        let suspended: Vec<Uuid> = users::Entity::find()
            .select_only()
            .column(users::Column::Id)
            .filter(users::Column::SuspendedAt.is_not_null())
            .into_tuple()
            .all(&db)
            .await
            .map_err(|e| e.to_string())?;
        for id in suspended {
            barred.bar(id);
        }
        let instance_roles = InstanceRoles::default();
        let staff: Vec<(Uuid, bool, bool)> = users::Entity::find()
            .select_only()
            .columns([users::Column::Id, users::Column::IsAdmin, users::Column::IsOwner])
            .filter(
                sea_orm::Condition::any()
                    .add(users::Column::IsAdmin.eq(true))
                    .add(users::Column::IsOwner.eq(true)),
            )
            .into_tuple()
            .all(&db)
            .await
            .map_err(|e| e.to_string())?;
        for (id, is_admin, is_owner) in staff {
            instance_roles.set(id, InstanceRole { is_admin, is_owner });
        }
        let roster = Roster::load(&db).await.map_err(|e| format!("load community memberships: {e}"))?;
        let shared = Arc::new(Shared {
            db: db.clone(),
            config: config.clone(),
            sessions: SessionRegistry::default(),
            instance_roles,
            roster,
            voice: DashMap::new(),
            channels: DashMap::new(),
            actor_index: DashMap::new(),
            supervisor: OnceLock::new(),
            communities: DashMap::new(),
            community_index: DashMap::new(),
            community_supervisor: OnceLock::new(),
        });
        let (supervisor, _) = Actor::spawn(None, ChannelSupervisor, shared.clone())
            .await
            .map_err(|e| format!("start channel supervisor: {e}"))?;
        let _ = shared.supervisor.set(supervisor.get_cell());
        let (community_supervisor, _) = Actor::spawn(None, CommunitySupervisor, shared.clone())
            .await
            .map_err(|e| format!("start community supervisor: {e}"))?;
        let _ = shared.community_supervisor.set(community_supervisor.get_cell());
        let presence = Presence::start(shared.clone());
        Ok(Arc::new(Self {
            shared,
            db,
            config,
            users: barred,
            revoked_logins: RevokedLogins::default(),
            presence,
            voice_cooldowns: DashMap::new(),
            frames_in_flight_peak: Default::default(),
            supervisor,
            community_supervisor,
        }))
    }

    /// Closes every session and stops every actor.
    pub async fn shutdown(&self) {
        self.shared.sessions.close_all(CLOSE_GOING_AWAY);
        self.presence.stop();
        self.supervisor.stop(Some("shutdown".into()));
        self.community_supervisor.stop(Some("shutdown".into()));
    }

    pub fn sessions(&self) -> &SessionRegistry {
        &self.shared.sessions
    }

    /// User scope: every session of one user.
    pub fn send_to_user(&self, user_id: Uuid, frame: &ServerFrame) {
        self.shared.sessions.send_to_user(user_id, &frame.encode(), None);
    }

    /// Community scope: every session of every member of a community (community, group and
    /// channel updates and deletions). The member list comes from the community's actor when
    /// it is live, else from the database. Errors only when the member list cannot be read.
    pub async fn send_to_community(
        &self,
        community_id: Uuid,
        frame: &ServerFrame,
    ) -> Result<(), sea_orm::DbErr> {
        let live = match self.live_community_actor(community_id) {
            Some(actor) => ractor::call_t!(
                actor,
                |reply| CommunityMsg::MemberIds { reply },
                COMMUNITY_CALL_TIMEOUT.as_millis() as u64
            )
            .ok(),
            None => None,
        };
        let members = match live {
            Some(members) => members,
            None => store::community_member_ids(&self.db, community_id).await?,
        };
        self.send_to_users(&members, frame);
        Ok(())
    }

    /// The live slot of a community, starting its actor if needed (`NotFound` when the
    /// community does not exist).
    pub async fn community(&self, community_id: Uuid) -> Result<Arc<CommunitySlot>, HubError> {
        let cell = self.shared.communities.entry(community_id).or_default().clone();
        let shared = self.shared.clone();
        let result = cell
            .get_or_try_init(|| async move {
                let actor = shared.spawn_community(community_id).await?;
                Ok::<_, HubError>(Arc::new(CommunitySlot {
                    community_id,
                    actor: RwLock::new(actor),
                    restarted: Notify::new(),
                }))
            })
            .await;
        match result {
            Ok(slot) => Ok(slot.clone()),
            Err(err) => {
                self.shared
                    .communities
                    .remove_if(&community_id, |_, c| Arc::ptr_eq(c, &cell) && c.get().is_none());
                Err(err)
            }
        }
    }

    /// Runs a command on the community's actor (starting it if needed) and waits for its
    /// answer, riding out a restart or an idle stop in between. A command is sent at most once
    /// to a live actor; a timeout is answered `Unavailable` (the command may have completed).
    pub async fn community_command(&self, community_id: Uuid, command: Command) -> Result<Answer, HubError> {
        for _ in 0..3 {
            let slot = self.community(community_id).await?;
            let restarted = slot.restarted.notified();
            let actor = slot.actor();
            let cmd = Box::new(command.clone());
            match actor
                .call(|reply| CommunityMsg::Command { command: cmd, reply }, Some(COMMUNITY_CALL_TIMEOUT))
                .await
            {
                Ok(ractor::rpc::CallResult::Success(answer)) => return Ok(answer),
                Ok(ractor::rpc::CallResult::Timeout) => return Ok(Err(Refusal::Unavailable)),
                // The actor died before answering (crash or idle stop): wait for a restart,
                // else forget the slot; then try again.
                Ok(ractor::rpc::CallResult::SenderError) | Err(_) => {
                    let dead = actor.get_id();
                    let _ = tokio::time::timeout(Duration::from_millis(500), restarted).await;
                    if slot.actor().get_id() == dead {
                        self.shared
                            .communities
                            .remove_if(&community_id, |_, c| c.get().is_some_and(|s| Arc::ptr_eq(s, &slot)));
                    }
                }
            }
        }
        Err(HubError::Unavailable)
    }

    /// The actor currently serving a community, if live.
    pub fn live_community_actor(&self, community_id: Uuid) -> Option<ActorRef<CommunityMsg>> {
        self.shared.communities.get(&community_id).and_then(|c| c.get().map(|s| s.actor()))
    }

    /// Test hook: makes a community's actor panic, to prove supervision.
    pub async fn crash_community(&self, community_id: Uuid) -> Result<(), HubError> {
        let slot = self.community(community_id).await?;
        let _ = slot.actor().send_message(CommunityMsg::Crash);
        Ok(())
    }

    /// Every session of each listed user; the frame is serialized once.
    pub fn send_to_users(&self, user_ids: &[Uuid], frame: &ServerFrame) {
        let bytes = frame.encode();
        for user_id in user_ids {
            self.shared.sessions.send_to_user(*user_id, &bytes, None);
        }
    }

    /// Everyone scope: every connected session (profile updates, announcements).
    pub fn send_to_everyone(&self, frame: &ServerFrame) {
        self.shared.sessions.send_to_everyone(&frame.encode());
    }

    /// Refuses a user's tokens from now on and closes their sockets (suspension, deletion).
    pub fn bar_user(&self, user_id: Uuid) {
        self.users.bar(user_id);
        self.shared.sessions.close_user(user_id, CLOSE_UNAUTHORIZED);
    }

    /// A user's logins were revoked (password change, logout, session revoke): their sockets
    /// close as if their session expired (4001), so the client refreshes, fails, and signs in.
    pub fn end_logins(&self, user_id: Uuid, logins: Logins) {
        self.shared.sessions.close_logins(user_id, logins, CLOSE_UNAUTHORIZED);
    }

    /// A user's instance role changed (committed): every open socket of theirs decides with
    /// the new one from its next frame.
    pub fn set_instance_role(&self, user_id: Uuid, role: InstanceRole) {
        self.shared.instance_roles.set(user_id, role);
    }

    /// Accepts a user's tokens again (unsuspension).
    pub fn unbar_user(&self, user_id: Uuid) {
        self.users.unbar(user_id);
    }

    /// The live slot of a channel, starting its actor if needed.
    pub async fn channel(&self, channel_id: Uuid) -> Result<Arc<ChannelSlot>, HubError> {
        let cell = self.shared.channels.entry(channel_id).or_default().clone();
        let shared = self.shared.clone();
        let result = cell
            .get_or_try_init(|| async move {
                let subscribers = Arc::new(Subscribers::default());
                let actor = shared.spawn_channel(channel_id, subscribers.clone()).await?;
                crate::supervisor::index(&shared, &actor, channel_id);
                Ok::<_, HubError>(Arc::new(ChannelSlot {
                    channel_id,
                    actor: RwLock::new(actor),
                    restarted: Notify::new(),
                    subscribers,
                }))
            })
            .await;
        match result {
            Ok(slot) => Ok(slot.clone()),
            Err(err) => {
                // Forget the empty cell so the next caller tries again.
                self.shared
                    .channels
                    .remove_if(&channel_id, |_, c| Arc::ptr_eq(c, &cell) && c.get().is_none());
                Err(err)
            }
        }
    }

    /// Sends to a channel's actor, riding out a restart or an idle stop in between (an actor
    /// stopping for idleness drains: what it holds is handled, and a refused message is
    /// retried here on a fresh actor once it has stopped).
    pub async fn send_to_channel(&self, channel_id: Uuid, message: ChannelMsg) -> Result<(), HubError> {
        let mut message = message;
        for _ in 0..3 {
            let slot = self.channel(channel_id).await?;
            let restarted = slot.restarted.notified();
            match slot.actor().send_message(message) {
                Ok(()) => return Ok(()),
                Err(ractor::MessagingErr::SendErr(back)) => {
                    message = back;
                    // Dead actor: either the supervisor is restarting it, or it stopped idle.
                    // Wait briefly for a restart; if none came, drop the slot and start anew.
                    let dead = slot.actor().get_id();
                    let _ = tokio::time::timeout(Duration::from_millis(500), restarted).await;
                    if slot.actor().get_id() == dead {
                        self.shared
                            .channels
                            .remove_if(&channel_id, |_, c| c.get().is_some_and(|s| Arc::ptr_eq(s, &slot)));
                    }
                }
                Err(_) => return Err(HubError::Internal("channel actor unreachable".into())),
            }
        }
        Err(HubError::Unavailable)
    }

    /// Posts a server message (webhook execution, scheduled delivery) through the channel's
    /// actor (started if needed) and waits up to `wait` for its commit; answers the new id.
    pub async fn post_message(
        &self,
        channel_id: Uuid,
        post: ServerPost,
        wait: Duration,
    ) -> Result<Uuid, PostError> {
        let (tx, rx) = ractor::concurrency::oneshot();
        self.send_to_channel(channel_id, ChannelMsg::Post { post, reply: Some(tx.into()) })
            .await
            .map_err(post_error)?;
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(result)) => result,
            // The actor stopped before answering, or the commit is slow: the outcome is
            // unknown to us (a scheduled claim keeps a retry from delivering twice).
            Ok(Err(_)) | Err(_) => Err(PostError::Unavailable),
        }
    }

    /// Whether `poster` may put content into the channel now: the channel actor's send rules
    /// (see [`Poster`]). Asked before writes that do not go through the actor (polls, files).
    pub async fn may_post(&self, channel_id: Uuid, poster: Poster) -> Result<(), PostError> {
        let (tx, rx) = ractor::concurrency::oneshot();
        self.send_to_channel(channel_id, ChannelMsg::MayPost { poster, reply: tx.into() })
            .await
            .map_err(post_error)?;
        match tokio::time::timeout(MAY_POST_WAIT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(PostError::Unavailable),
        }
    }

    /// Sends only if the channel's actor is live (REST changes to channels nobody has open
    /// need no live effect: the next actor loads the new state from the database).
    pub fn notify_channel(&self, channel_id: Uuid, message: ChannelMsg) {
        if let Some(slot) = self.shared.channels.get(&channel_id).and_then(|c| c.get().cloned()) {
            let _ = slot.actor().send_message(message);
        }
    }

    /// Messages of a channel changed outside its actor: its held history pages are stale.
    pub fn history_changed(&self, channel_id: Uuid) {
        self.notify_channel(channel_id, ChannelMsg::InvalidateHistory);
    }

    /// Messages of unknown channels changed (e.g. an account and its reactions deleted).
    pub fn all_history_changed(&self) {
        for cell in self.shared.channels.iter() {
            if let Some(slot) = cell.get() {
                let _ = slot.actor().send_message(ChannelMsg::InvalidateHistory);
            }
        }
    }

    /// Test hook: makes a channel's actor panic, to prove supervision.
    pub async fn crash_channel(&self, channel_id: Uuid) -> Result<(), HubError> {
        let slot = self.channel(channel_id).await?;
        let _ = slot.actor().send_message(ChannelMsg::Crash);
        Ok(())
    }

    /// The actor currently serving a channel, if live (tests compare ids across restarts).
    pub fn live_channel_actor(&self, channel_id: Uuid) -> Option<ActorRef<ChannelMsg>> {
        self.shared.channels.get(&channel_id).and_then(|c| c.get().map(|s| s.actor()))
    }
}

/// A failure to reach a channel's actor, as a post's outcome.
fn post_error(err: HubError) -> PostError {
    match err {
        HubError::NotFound => PostError::Refused("not_found", "channel not found".into()),
        HubError::Unavailable | HubError::Stopped => PostError::Unavailable,
        HubError::Internal(detail) => PostError::Internal(detail),
    }
}
