//! The `Hub`: finds live actors and sessions; the entry point for routes and sockets.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Duration;

use dashmap::DashMap;
use palaver_entity::users;
use ractor::{Actor, ActorRef};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect};
use uuid::Uuid;

use crate::channel::{
    BoxFuture, CHANNEL_COMMAND_TIMEOUT, ChannelCommand, ChannelMsg, ChannelSlot, ChannelWrite, CommandAnswer,
    Effect, LiveChannels, MAX_REPLAY_BYTES, Origin, PostError, Poster, Resume, ServerPost, Subscribers,
};
use crate::cluster::bus::{Bus, BusEvent, RemoteEvents, role_of};
use crate::cluster::route::ChannelsHere;
use crate::cluster::shards::{Shard, shard_of};
use crate::community::{Answer, Command, CommunityMsg, CommunitySlot, LiveCommunities, Refusal};
pub use crate::config::{HubConfig, SIGNAL_RATE_BURST, SIGNAL_RATE_PER_SECOND};
use crate::error_code::ErrorCode;
use crate::outbox::{CLOSE_SERVICE_RESTART, CLOSE_UNAUTHORIZED, Outbox};
use crate::presence::Presence;
use crate::protocol::{Epoch, Position, ServerFrame};
use crate::registry::{Logins, SessionRegistry};
use crate::roles::InstanceRole;
use crate::roster::Roster;
pub use crate::shared::Shared;
use crate::shared::StreamEnd;
use crate::supervisor::{ChannelSupervisor, CommunitySupervisor, Registries, spawn_channel, spawn_community};
use crate::users::{BarredUsers, InstanceRoles, RevokedLogins};
use crate::{HubError, store};

/// How long a caller waits for a community actor's answer.
pub const COMMUNITY_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a node losing a shard waits for its channel actors to finish what they accepted.
const SHARD_DRAIN: Duration = Duration::from_secs(3);
/// How long a session whose channel moved (planned) keeps asking the next owner to attach it.
const REATTACH_PATIENCE: Duration = Duration::from_secs(10);
/// Pause between those attempts (the next owner takes the shard at its next tick).
const REATTACH_RETRY: Duration = Duration::from_millis(250);
/// How long one attempt waits for the channel's answer.
const REATTACH_ANSWER: Duration = Duration::from_secs(5);
/// How long a `may_post` question waits for the channel actor.
const MAY_POST_WAIT: Duration = Duration::from_secs(5);

pub struct Hub {
    /// Itself, for futures that outlive a borrow (`ChannelsHere`).
    this: std::sync::Weak<Hub>,
    /// What every actor may read (database, sessions, roles, roster, voice).
    pub shared: Arc<Shared>,
    /// The live channel actors.
    pub channels: Arc<LiveChannels>,
    /// The live community actors.
    pub communities: Arc<LiveCommunities>,
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
    /// Set when shutdown begins (`drain_channels`): no channel actor starts any more, and a
    /// send that finds its actor stopped is answered `Stopped` instead of starting a new one.
    stopping: std::sync::atomic::AtomicBool,
    /// The channels the shutdown's drain stopped, until their shards are handed over: a
    /// cluster's other nodes still have sessions subscribed to them, which the handoff moves.
    drained_slots: std::sync::Mutex<Vec<Arc<ChannelSlot>>>,
    /// The other nodes of a cluster (unset on a single node): revocations, role and settings
    /// changes made here are published to them.
    bus: std::sync::OnceLock<Arc<Bus>>,
    /// Bumped by every change to barred users or instance roles, so a reload that read the
    /// database before such a change does not undo it (`reload_user_caches`).
    cache_changes: std::sync::atomic::AtomicU64,
    /// Bumped when another node changed the admin settings (the server crate reloads them).
    settings_changes: tokio::sync::watch::Sender<u64>,
    supervisor: ActorRef<crate::supervisor::SupervisorMsg>,
    community_supervisor: ActorRef<crate::supervisor::SupervisorMsg>,
}

impl Hub {
    /// Installs the listener for DMs to users with no open socket (once; later calls are
    /// ignored).
    pub fn set_offline_dm_sink(&self, sink: Arc<dyn crate::shared::OfflineDmSink>) {
        let _ = self.shared.offline_dm.set(sink);
    }

    /// Loads what must be known before serving (barred users) and starts the supervisors.
    pub async fn start(db: DatabaseConnection, config: HubConfig) -> Result<Arc<Self>, String> {
        let barred = BarredUsers::default();
        for id in suspended_users(&db).await.map_err(|e| e.to_string())? {
            barred.bar(id);
        }
        let instance_roles = InstanceRoles::default();
        instance_roles.replace(instance_staff(&db).await.map_err(|e| e.to_string())?);
        let roster = Roster::load(&db).await.map_err(|e| format!("load community memberships: {e}"))?;
        let shared = Arc::new(Shared {
            sqlite_writer: crate::sqlite_writer::SqliteWriter::for_database(&db),
            db: db.clone(),
            config: config.clone(),
            sessions: SessionRegistry::default(),
            instance_roles,
            roster,
            voice: DashMap::new(),
            metrics: Default::default(),
            offline_dm: std::sync::OnceLock::new(),
            owned_shards: std::sync::OnceLock::new(),
            handed_over: DashMap::new(),
            stream_ends: DashMap::new(),
        });
        let registries = Registries {
            shared: shared.clone(),
            channels: Arc::new(LiveChannels::default()),
            communities: Arc::new(LiveCommunities::default()),
        };
        let (supervisor, _) = Actor::spawn(None, ChannelSupervisor, registries.clone())
            .await
            .map_err(|e| format!("start channel supervisor: {e}"))?;
        let _ = registries.channels.supervisor.set(supervisor.get_cell());
        let (community_supervisor, _) = Actor::spawn(None, CommunitySupervisor, registries.clone())
            .await
            .map_err(|e| format!("start community supervisor: {e}"))?;
        let _ = registries.communities.supervisor.set(community_supervisor.get_cell());
        let presence = Presence::start(shared.clone());
        let Registries { channels, communities, .. } = registries;
        Ok(Arc::new_cyclic(|this| Self {
            this: this.clone(),
            shared,
            channels,
            communities,
            db,
            config,
            users: barred,
            revoked_logins: RevokedLogins::default(),
            presence,
            voice_cooldowns: DashMap::new(),
            frames_in_flight_peak: Default::default(),
            stopping: Default::default(),
            drained_slots: Default::default(),
            bus: std::sync::OnceLock::new(),
            cache_changes: Default::default(),
            settings_changes: tokio::sync::watch::channel(0).0,
            supervisor,
            community_supervisor,
        }))
    }

    /// First step of a graceful shutdown: from now on nothing reaches a channel actor, and
    /// every live one commits and answers what it accepted (ack if committed, error otherwise),
    /// handles what is already in its mailbox, and stops. Returns once all have stopped or
    /// `deadline` passed (false then: an actor stuck on the database is left to the process exit,
    /// its senders get no ack, which never means a lost ack).
    pub async fn drain_channels(&self, deadline: Duration) -> bool {
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        let slots: Vec<Arc<ChannelSlot>> =
            self.channels.slots.iter().filter_map(|cell| cell.get().cloned()).collect();
        let actors: Vec<ActorRef<ChannelMsg>> = slots.iter().map(|slot| slot.actor()).collect();
        // Their subscribers from other nodes of a cluster stay attached until the shards are
        // handed over (`shards_lost`), which moves them to the next owner.
        *self.drained_slots.lock().unwrap_or_else(|e| e.into_inner()) = slots;
        for actor in &actors {
            let _ = actor.send_message(ChannelMsg::Shutdown);
        }
        // They drain concurrently; waiting for them one by one only observes it.
        let until = tokio::time::Instant::now() + deadline;
        let mut all = true;
        for actor in &actors {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if actor.get_cell().wait(Some(left)).await.is_err() {
                all = false;
                break;
            }
        }
        all
    }

    /// True once shutdown began: sockets that authenticate now are closed at once.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Closes every session (1012, "service restart": clients reconnect elsewhere or later)
    /// and stops every actor. After `drain_channels`, every send a socket had made was
    /// answered before its close.
    pub async fn shutdown(&self) {
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        self.shared.sessions.close_all(CLOSE_SERVICE_RESTART);
        self.presence.stop();
        self.supervisor.stop(Some("shutdown".into()));
        self.community_supervisor.stop(Some("shutdown".into()));
    }

    pub fn sessions(&self) -> &SessionRegistry {
        &self.shared.sessions
    }

    /// Writes the live side's metrics: the counters of `Shared::metrics` and what is read
    /// from the registries at scrape time (sessions, live actors), which costs nothing between
    /// scrapes.
    pub fn write_metrics(&self, out: &mut crate::metrics::Exposition) {
        self.shared.metrics.write(out);
        out.gauge(
            "palaver_ws_sessions_authenticated",
            "Authenticated WebSocket sessions",
            self.shared.sessions.session_count(),
        );
        out.gauge("palaver_channel_actors_live", "Channel actors running", self.channels.live_count());
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
        let cell = self.communities.slots.entry(community_id).or_default().clone();
        let result = cell
            .get_or_try_init(|| async move {
                let actor =
                    spawn_community(&self.shared, &self.channels, &self.communities, community_id).await?;
                Ok::<_, HubError>(Arc::new(CommunitySlot::new(community_id, actor)))
            })
            .await;
        match result {
            Ok(slot) => Ok(slot.clone()),
            Err(err) => {
                self.communities
                    .slots
                    .remove_if(&community_id, |_, c| Arc::ptr_eq(c, &cell) && c.get().is_none());
                Err(err)
            }
        }
    }

    /// Runs a command on the community's actor (starting it if needed) and waits for its
    /// answer, riding out a restart or an idle stop in between. A command is sent at most once
    /// to a live actor; a timeout is answered `Unavailable` (the command may have completed).
    /// In a cluster, the command runs on the node owning the community's shard (also the
    /// owner's side of a routed command, whose shard may have moved on since).
    pub async fn community_command(&self, community_id: Uuid, command: Command) -> Result<Answer, HubError> {
        for _ in 0..3 {
            // Owned elsewhere, or the shard moved while this command waited (its actor was
            // stopped for the move): it goes to the owner rather than to an actor started on a
            // non-owner.
            if let Some(router) = self.communities.owned_elsewhere(community_id) {
                return router.command(community_id, command).await;
            }
            let slot = self.community(community_id).await?;
            let restarted = slot.restarted();
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
                        self.communities
                            .slots
                            .remove_if(&community_id, |_, c| c.get().is_some_and(|s| Arc::ptr_eq(s, &slot)));
                    }
                }
            }
        }
        Err(HubError::Unavailable)
    }

    /// The actor currently serving a community, if live.
    pub fn live_community_actor(&self, community_id: Uuid) -> Option<ActorRef<CommunityMsg>> {
        self.communities.live(community_id)
    }

    #[cfg(feature = "test-hooks")]
    /// Test hook: makes a community's actor panic, to prove supervision.
    pub async fn crash_community(&self, community_id: Uuid) -> Result<(), HubError> {
        let slot = self.community(community_id).await?;
        let _ = slot.actor().send_message(CommunityMsg::Crash);
        Ok(())
    }

    /// Every session of each listed user; the frame is serialized once.
    pub fn send_to_users(&self, user_ids: &[Uuid], frame: &ServerFrame) {
        self.shared.sessions.send_to_users(user_ids, &frame.encode());
    }

    /// Everyone scope: every connected session (profile updates, announcements).
    pub fn send_to_everyone(&self, frame: &ServerFrame) {
        self.shared.sessions.send_to_everyone(&frame.encode());
    }

    /// Refuses a user's tokens from now on and closes their sockets (suspension, deletion), on
    /// every node.
    pub fn bar_user(&self, user_id: Uuid) {
        self.apply_here(&BusEvent::Bar { user: user_id });
        self.publish(&BusEvent::Bar { user: user_id });
    }

    /// A user's logins were revoked (password change, logout, session revoke): their sockets
    /// close as if their session expired (4001), so the client refreshes, fails, and signs in.
    pub fn end_logins(&self, user_id: Uuid, logins: Logins) {
        let event = BusEvent::EndLogins { user: user_id, logins: logins.into(), code: CLOSE_UNAUTHORIZED };
        self.apply_here(&event);
        self.publish(&event);
    }

    /// A revoked login's access tokens open no socket for `for_at_least` (on every node).
    pub fn revoke_login(&self, login: Uuid, for_at_least: Duration) {
        let event = BusEvent::RevokeLogin { login, secs: for_at_least.as_secs().max(1) };
        self.apply_here(&event);
        self.publish(&event);
    }

    /// A user's instance role changed (committed): every open socket of theirs, on every node,
    /// decides with the new one from its next frame.
    pub fn set_instance_role(&self, user_id: Uuid, role: InstanceRole) {
        let event = BusEvent::InstanceRole { user: user_id, role: Some((role.is_admin, role.is_owner)) };
        self.apply_here(&event);
        self.publish(&event);
    }

    /// The account is gone: it has no instance role any more.
    pub fn forget_instance_role(&self, user_id: Uuid) {
        let event = BusEvent::InstanceRole { user: user_id, role: None };
        self.apply_here(&event);
        self.publish(&event);
    }

    /// Accepts a user's tokens again (unsuspension), on every node.
    pub fn unbar_user(&self, user_id: Uuid) {
        self.apply_here(&BusEvent::Unbar { user: user_id });
        self.publish(&BusEvent::Unbar { user: user_id });
    }

    /// The admin settings changed here (committed): the other nodes reload theirs.
    pub fn settings_changed(&self) {
        self.publish(&BusEvent::SettingsChanged);
    }

    /// Ticks when another node changed the admin settings.
    pub fn settings_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.settings_changes.subscribe()
    }

    /// Joins the other nodes of a cluster: from now on user-scoped frames, revocations and
    /// role changes made here reach them too (once; later calls are ignored).
    pub fn join_cluster_bus(&self, bus: Arc<Bus>) {
        self.shared.sessions.set_elsewhere(bus.clone());
        self.shared.roster.set_elsewhere(bus.clone());
        self.presence.set_elsewhere(bus.clone());
        let _ = self.bus.set(bus);
    }

    /// Reloads the caches the cluster bus keeps in step (barred users, instance roles) from
    /// the database: the bus is at-most-once, so a change a node missed is repaired here.
    /// A reload that raced a change (made here or heard from the bus) is skipped: its read may
    /// predate the change, and the next reload comes soon.
    pub async fn reload_user_caches(&self) -> Result<(), sea_orm::DbErr> {
        use std::sync::atomic::Ordering;
        let before = self.cache_changes.load(Ordering::SeqCst);
        let barred = self.users.all();
        let suspended = suspended_users(&self.db).await?;
        // Barred ids that exist and are not suspended (a deleted account stays barred), asked
        // in chunks: a bind list has a parameter limit (SQLite 32 766, PostgreSQL 65 535).
        let mut cleared: Vec<Uuid> = Vec::new();
        for chunk in barred.chunks(1000) {
            let found: Vec<Uuid> = users::Entity::find()
                .select_only()
                .column(users::Column::Id)
                .filter(users::Column::Id.is_in(chunk.iter().copied()))
                .filter(users::Column::SuspendedAt.is_null())
                .into_tuple()
                .all(&self.db)
                .await?;
            cleared.extend(found);
        }
        let staff = instance_staff(&self.db).await?;
        if self.cache_changes.load(Ordering::SeqCst) != before {
            return Ok(());
        }
        for id in suspended {
            if !self.users.is_barred(id) {
                self.users.bar(id);
                self.shared.sessions.close_user(id, CLOSE_UNAUTHORIZED);
            }
        }
        for id in cleared {
            self.users.unbar(id);
        }
        self.shared.instance_roles.replace(staff);
        Ok(())
    }

    fn publish(&self, event: &BusEvent) {
        if let Some(bus) = self.bus.get() {
            bus.publish(event, None);
        }
    }

    /// Applies a revocation or role change to this node's caches and sockets.
    fn apply_here(&self, event: &BusEvent) {
        use std::sync::atomic::Ordering;
        match event {
            BusEvent::Bar { user } => {
                self.cache_changes.fetch_add(1, Ordering::SeqCst);
                self.users.bar(*user);
                self.shared.sessions.close_user(*user, CLOSE_UNAUTHORIZED);
            }
            BusEvent::Unbar { user } => {
                self.cache_changes.fetch_add(1, Ordering::SeqCst);
                self.users.unbar(*user);
            }
            BusEvent::EndLogins { user, logins, code } => {
                self.shared.sessions.close_logins(*user, (*logins).into(), *code);
            }
            BusEvent::RevokeLogin { login, secs } => {
                self.revoked_logins.revoke(*login, Duration::from_secs(*secs));
            }
            BusEvent::InstanceRole { user, role } => {
                self.cache_changes.fetch_add(1, Ordering::SeqCst);
                match role {
                    Some(pair) => self.shared.instance_roles.set(*user, role_of(*pair)),
                    None => self.shared.instance_roles.forget(*user),
                }
            }
            BusEvent::SettingsChanged => {
                self.settings_changes.send_modify(|n| *n += 1);
            }
            // Deliveries, memberships and presence come only from other nodes: see
            // `apply_remote`.
            BusEvent::Users { .. }
            | BusEvent::Everyone
            | BusEvent::Roster { .. }
            | BusEvent::Voice { .. }
            | BusEvent::Presence { .. }
            | BusEvent::PresenceDigest { .. }
            | BusEvent::PresenceDigestPlease { .. }
            | BusEvent::Sessions { .. } => {}
        }
    }

    /// The live slot of a channel, starting its actor if needed. In a cluster, only for
    /// channels this node owns (`Unavailable` otherwise: callers read the database instead,
    /// or go through `send_to_channel`, which reaches the owner).
    pub async fn channel(&self, channel_id: Uuid) -> Result<Arc<ChannelSlot>, HubError> {
        if self.is_stopping() {
            return Err(HubError::Stopped);
        }
        if self.channels.remote(channel_id).is_some() {
            return Err(HubError::Unavailable);
        }
        let cell = self.channels.slots.entry(channel_id).or_default().clone();
        let result = cell
            .get_or_try_init(|| async move {
                let subscribers = Arc::new(Subscribers::new(channel_id));
                let actor =
                    spawn_channel(&self.shared, &self.channels, channel_id, subscribers.clone()).await?;
                Ok::<_, HubError>(Arc::new(ChannelSlot::new(channel_id, actor, subscribers)))
            })
            .await;
        match result {
            Ok(slot) => Ok(slot.clone()),
            Err(err) => {
                // Forget the empty cell so the next caller tries again.
                self.channels.slots.remove_if(&channel_id, |_, c| Arc::ptr_eq(c, &cell) && c.get().is_none());
                Err(err)
            }
        }
    }

    /// Sends to a channel's actor, riding out a restart or an idle stop in between (an actor
    /// stopping for idleness drains: what it holds is handled, and a refused message is
    /// retried here on a fresh actor once it has stopped).
    pub async fn send_to_channel(&self, channel_id: Uuid, message: ChannelMsg) -> Result<(), HubError> {
        if let Some(router) = self.channels.remote(channel_id) {
            return router.forward(channel_id, message).await;
        }
        self.send_to_channel_here(channel_id, message).await
    }

    /// `send_to_channel` to this node's actor (a channel owned here).
    async fn send_to_channel_here(&self, channel_id: Uuid, message: ChannelMsg) -> Result<(), HubError> {
        let mut message = message;
        for _ in 0..3 {
            let slot = self.channel(channel_id).await?;
            let restarted = slot.restarted();
            match slot.actor().send_message(message) {
                Ok(()) => return Ok(()),
                // Drained for shutdown: no fresh actor will take it.
                Err(ractor::MessagingErr::SendErr(_)) if self.is_stopping() => return Err(HubError::Stopped),
                Err(ractor::MessagingErr::SendErr(back)) => {
                    message = back;
                    // Dead actor: either the supervisor is restarting it, or it stopped idle.
                    // Wait briefly for a restart; if none came, drop the slot and start anew.
                    let dead = slot.actor().get_id();
                    let _ = tokio::time::timeout(Duration::from_millis(500), restarted).await;
                    if slot.actor().get_id() == dead {
                        self.channels
                            .slots
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
        self.channels.send(channel_id, message);
    }

    /// Messages of a channel changed outside its actor: its held history pages are stale.
    pub fn history_changed(&self, channel_id: Uuid) {
        self.notify_channel(channel_id, ChannelMsg::InvalidateHistory);
    }

    /// Messages of unknown channels changed (e.g. an account and its reactions deleted).
    pub fn all_history_changed(&self) {
        for cell in self.channels.slots.iter() {
            if let Some(slot) = cell.get() {
                let _ = slot.actor().send_message(ChannelMsg::InvalidateHistory);
            }
        }
    }

    #[cfg(feature = "test-hooks")]
    /// Test hook: makes a channel's actor panic, to prove supervision.
    pub async fn crash_channel(&self, channel_id: Uuid) -> Result<(), HubError> {
        let slot = self.channel(channel_id).await?;
        let _ = slot.actor().send_message(ChannelMsg::Crash);
        Ok(())
    }

    /// The actor currently serving a channel, if live (tests compare ids across restarts).
    pub fn live_channel_actor(&self, channel_id: Uuid) -> Option<ActorRef<ChannelMsg>> {
        self.channels.live(channel_id)
    }
}

/// A failure to reach a channel's actor, as a post's outcome.
fn post_error(err: HubError) -> PostError {
    match err {
        HubError::NotFound => PostError::Refused(ErrorCode::NotFound, "channel not found".into()),
        HubError::Unavailable | HubError::Stopped => PostError::Unavailable,
        HubError::Internal(detail) => PostError::Internal(detail),
    }
}

// ---------------------------------------------------------------------------------------
// Channel commands: REST writes ordered by the channel actor (see channel/command.rs).

impl Hub {
    /// Runs a command on a channel's actor (started if none runs) and waits for its answer.
    pub async fn channel_command(&self, channel_id: Uuid, command: ChannelCommand) -> CommandAnswer {
        let (reply, answer) = ractor::concurrency::oneshot();
        self.send_to_channel(channel_id, ChannelMsg::Command { command, reply: reply.into() })
            .await
            .map_err(post_error)?;
        match tokio::time::timeout(CHANNEL_COMMAND_TIMEOUT, answer).await {
            Ok(Ok(answer)) => answer,
            // The actor stopped before answering, or is too slow: the outcome is unknown.
            Ok(Err(_)) | Err(_) => Err(PostError::Unavailable),
        }
    }

    /// Runs `write` as a command on a channel's actor (see the module doc) and answers its own
    /// result once the actor has applied the effects it returned. `Err` when the actor refused
    /// the poster or could not be reached (the write did not run, or its outcome is unknown).
    pub async fn channel_write<T, E, W>(
        &self,
        channel_id: Uuid,
        poster: Option<Poster>,
        write: W,
    ) -> Result<Result<T, E>, PostError>
    where
        T: Send + 'static,
        E: Send + 'static,
        W: Future<Output = Result<(T, Vec<Effect>), E>> + Send + 'static,
    {
        let (result_tx, result_rx) = tokio::sync::oneshot::channel();
        let write: ChannelWrite = Box::pin(async move {
            match write.await {
                Ok((value, effects)) => {
                    let _ = result_tx.send(Ok(value));
                    effects
                }
                Err(err) => {
                    let _ = result_tx.send(Err(err));
                    Vec::new()
                }
            }
        });
        self.channel_command(channel_id, ChannelCommand { poster, write }).await?;
        result_rx.await.map_err(|_| PostError::Unavailable)
    }

    /// Applies the effects of a change committed outside the channel's order (a transaction
    /// spanning channels: group joins and deletions, bulk purges, account deletion) through
    /// the channel's actor, if one serves it or is starting. A channel with neither needs
    /// nothing: an actor started after the commit loads the new state.
    pub async fn channel_effects(&self, channel_id: Uuid, effects: Vec<Effect>) -> CommandAnswer {
        if effects.is_empty() {
            return Ok(());
        }
        if let Some(router) = self.channels.remote(channel_id) {
            return router.forward_effects(channel_id, effects).await;
        }
        if !self.channels.slots.contains_key(&channel_id) {
            return Ok(());
        }
        let write: ChannelWrite = Box::pin(async move { effects });
        self.channel_command(channel_id, ChannelCommand { poster: None, write }).await
    }
}

/// A session whose channels moved: its outbox, and each channel with where its stream ended.
type MovingSession = (Arc<Outbox>, Vec<(Uuid, (Epoch, u64))>);

impl Hub {
    /// After a planned move of these channels (their actors stopped, `ends` where each stream
    /// stopped): every subscriber is attached to the next owner, which goes on from the same
    /// position. A session of this node is re-attached from here; a stand-in's node is told
    /// after the frames it was sent (it re-attaches its session). A channel whose stream was
    /// not handed on (its actor was still running) closes its subscribers as before.
    fn move_subscribers(&self, slots: &[Arc<ChannelSlot>], ends: &[StreamEnd]) {
        let ends: HashMap<Uuid, (Epoch, u64)> =
            ends.iter().map(|e| (e.channel_id, (e.epoch, e.cseq))).collect();
        let out_of_sync = ServerFrame::out_of_sync().encode();
        // Session → its outbox and the channels it moves with; one clone per session, so a
        // stand-in's reference count tells whether anything else here still holds it.
        let mut moving: HashMap<Uuid, MovingSession> = HashMap::new();
        for slot in slots {
            let end = ends.get(&slot.channel_id).copied();
            for outbox in slot.subscribers.take_all() {
                if outbox.is_closed() {
                    continue;
                }
                match end {
                    Some(at) => {
                        let session = outbox.session_id;
                        moving
                            .entry(session)
                            .or_insert_with(|| (outbox, Vec::new()))
                            .1
                            .push((slot.channel_id, at));
                    }
                    None => outbox.close_out_of_sync(&out_of_sync),
                }
            }
        }
        for (_, (outbox, channels)) in moving {
            if outbox.is_relayed() {
                // Held by the router's stand-in map and this list only: in no other channel
                // here and no request in flight, so its node may forget this one.
                let released = Arc::strong_count(&outbox) <= 2;
                let last = channels.len() - 1;
                for (i, (channel_id, at)) in channels.into_iter().enumerate() {
                    outbox.relay_moved(channel_id, at, released && i == last);
                }
            } else {
                for (channel_id, at) in channels {
                    if let Some(hub) = self.this.upgrade() {
                        tokio::spawn(hub.reattach_moved(outbox.clone(), channel_id, Some(at)));
                    }
                }
            }
        }
    }

    /// Attaches a session of this node to a channel that moved to another owner, from the
    /// position the old owner left it at (`Resume::quiet`: no `subscribed`; a stream that
    /// cannot go on from there tells the session as for any loss). The next owner may not
    /// hold the shard yet (it takes it at its next tick): asked again until `REATTACH_PATIENCE`;
    /// then, as before planned moves, the socket is closed out of sync (4008) and its client
    /// resubscribes. Without `at` (its owner died: where the stream ended is unknown) the
    /// session is told `resync_required` (`restarted`) by the next owner.
    async fn reattach_moved(
        self: Arc<Self>,
        outbox: Arc<Outbox>,
        channel_id: Uuid,
        at: Option<(Epoch, u64)>,
    ) {
        let give_up = tokio::time::Instant::now() + REATTACH_PATIENCE;
        let resume = Resume {
            since: at.map(|(epoch, cseq)| Position { epoch: epoch.as_str().to_owned(), cseq }),
            budget: Arc::new(AtomicUsize::new(MAX_REPLAY_BYTES)),
            answered: Arc::new(AtomicBool::new(false)),
            quiet: true,
        };
        let user_id = outbox.user_id;
        while !outbox.is_closed() && !self.is_stopping() {
            let (reply, answer) = ractor::concurrency::oneshot();
            let origin = Origin { outbox: outbox.clone(), user_id };
            let message =
                ChannelMsg::Subscribe { origin, resume: Some(resume.again()), reply: Some(reply.into()) };
            // Bounded: a request NATS handed to a node that just let the shard go is never
            // answered, and this session must not wait out the owner timeout for it.
            let sent = tokio::time::timeout(REATTACH_ANSWER, self.send_to_channel(channel_id, message)).await;
            match sent.unwrap_or(Err(HubError::Unavailable)) {
                Ok(()) => {
                    // Attached (or no longer a member: nothing to follow). No answer (the actor
                    // stopped, or too slow): asked again.
                    if let Ok(Ok(attached)) = tokio::time::timeout(REATTACH_ANSWER, answer).await {
                        // The session closed meanwhile, and its goodbye may have reached the
                        // channel before this attach did: say it again.
                        if attached && outbox.is_closed() {
                            let bye = ChannelMsg::SessionClosed { user_id, session_id: outbox.session_id };
                            self.notify_channel(channel_id, bye);
                        }
                        return;
                    }
                }
                Err(HubError::NotFound) => return,
                Err(_) => {}
            }
            if tokio::time::Instant::now() + REATTACH_RETRY >= give_up {
                tracing::warn!(session = %outbox.session_id, %channel_id, "a moved channel could not be re-attached");
                outbox.close_out_of_sync(&ServerFrame::out_of_sync().encode());
                return;
            }
            tokio::time::sleep(REATTACH_RETRY).await;
        }
    }
}

impl ChannelsHere for Hub {
    fn deliver_here(&self, channel_id: Uuid, message: ChannelMsg) -> BoxFuture<Result<(), HubError>> {
        let Some(hub) = self.this.upgrade() else { return Box::pin(async { Err(HubError::Stopped) }) };
        Box::pin(async move { hub.send_to_channel_here(channel_id, message).await })
    }

    fn live_here(&self, channel_id: Uuid) -> bool {
        self.channels.slots.contains_key(&channel_id)
    }

    fn community_here(&self, community_id: Uuid, command: Command) -> BoxFuture<Result<Answer, HubError>> {
        let Some(hub) = self.this.upgrade() else { return Box::pin(async { Err(HubError::Stopped) }) };
        Box::pin(async move { hub.community_command(community_id, command).await })
    }

    /// Every channel of these shards stops here: its actor commits and answers what it
    /// accepted, then stops (waited for up to `SHARD_DRAIN`). Unplanned, its subscribers are
    /// first told they may have missed frames and closed (they resubscribe through the new
    /// owner); planned, they get every last frame and then follow the channel to the next
    /// owner (`move_subscribers`). Answers where the streams of the actors that stopped in
    /// time ended.
    fn shards_lost(&self, shards: HashSet<Shard>, planned: bool) -> BoxFuture<Vec<StreamEnd>> {
        // Community actors of these shards stop too (the next owner loads them afresh);
        // a command they are running finishes first (a stop is handled after it).
        let communities: Vec<ActorRef<CommunityMsg>> = self
            .communities
            .slots
            .iter()
            .filter(|cell| shards.contains(&shard_of(*cell.key())))
            .filter_map(|cell| cell.get().map(|slot| slot.actor()))
            .collect();
        for actor in communities {
            actor.stop(Some("shard moved".into()));
        }
        let mut slots: Vec<Arc<ChannelSlot>> = self
            .channels
            .slots
            .iter()
            .filter(|cell| shards.contains(&shard_of(*cell.key())))
            .filter_map(|cell| cell.get().cloned())
            .collect();
        // Stopped by the shutdown's drain: their actors are gone, their subscribers are not.
        self.drained_slots.lock().unwrap_or_else(|e| e.into_inner()).retain(|slot| {
            let here = shards.contains(&shard_of(slot.channel_id));
            if here && !slots.iter().any(|s| Arc::ptr_eq(s, slot)) {
                slots.push(slot.clone());
            }
            !here
        });
        let shared = self.shared.clone();
        let hub = self.this.clone();
        Box::pin(async move {
            let mut actors = Vec::new();
            for slot in &slots {
                // A planned move keeps the subscribers: they get the actor's last frames and
                // are attached to the next owner below.
                if !planned {
                    slot.subscribers.close_all_out_of_sync();
                }
                let actor = slot.actor();
                let _ = actor.send_message(ChannelMsg::Shutdown);
                actors.push((slot.channel_id, actor));
            }
            let until = tokio::time::Instant::now() + SHARD_DRAIN;
            let mut still_running = HashSet::new();
            for (channel_id, actor) in actors {
                let left = until.saturating_duration_since(tokio::time::Instant::now());
                if actor.get_cell().wait(Some(left)).await.is_err() {
                    still_running.insert(channel_id);
                }
            }
            shared.handed_over.retain(|id, _| !shards.contains(&shard_of(*id)));
            // Every end recorded in this tenure (`shards_taken` cleared older ones): by this
            // stop, or by the graceful shutdown's drain. An actor still running may stamp
            // more frames, so its stream is not handed on (the next owner starts a new epoch).
            let mut ends = Vec::new();
            shared.stream_ends.retain(|id, end| {
                if !shards.contains(&shard_of(*id)) {
                    return true;
                }
                if !still_running.contains(id) {
                    ends.push(*end);
                }
                false
            });
            if planned && let Some(hub) = hub.upgrade() {
                hub.move_subscribers(&slots, &ends);
            }
            ends
        })
    }

    /// This node took these shards: ends recorded in an earlier tenure mean nothing now, and
    /// `handed` (from the previous owner's planned handoff) is where their streams go on.
    fn shards_taken(&self, shards: HashSet<Shard>, handed: Vec<StreamEnd>) {
        let shared = &self.shared;
        shared.stream_ends.retain(|id, _| !shards.contains(&shard_of(*id)));
        shared.handed_over.retain(|id, _| !shards.contains(&shard_of(*id)));
        for end in handed {
            if shards.contains(&shard_of(end.channel_id)) {
                shared.handed_over.insert(end.channel_id, end);
            }
        }
    }

    fn sessions(&self) -> &SessionRegistry {
        &self.shared.sessions
    }

    fn reattach(&self, outbox: Arc<Outbox>, channel_id: Uuid, at: Option<(Epoch, u64)>) {
        if let Some(hub) = self.this.upgrade() {
            tokio::spawn(hub.reattach_moved(outbox, channel_id, at));
        }
    }
}

impl RemoteEvents for Hub {
    /// What another node published: delivered to this node's sockets or applied to its caches
    /// (never published again).
    fn apply_remote(&self, event: BusEvent, frame: Option<crate::protocol::Frame>) {
        match (event, frame) {
            (BusEvent::Users { users, except }, Some(frame)) => {
                self.shared.sessions.send_to_users_here(&users, &frame, except)
            }
            (BusEvent::Everyone, Some(frame)) => self.shared.sessions.send_to_everyone_here(&frame),
            (BusEvent::Roster { change }, _) => self.shared.roster.apply(change),
            (BusEvent::Voice { user, channel, joined: true }, _) => {
                self.shared.voice.insert(user, channel);
            }
            (BusEvent::Voice { user, channel, joined: false }, _) => {
                self.shared.voice.remove_if(&user, |_, c| *c == channel);
            }
            (BusEvent::Presence { node, user, status }, _) => {
                if let Some(status) = remote_status(&status) {
                    self.presence.remote_changed(&node, user, status);
                }
            }
            (BusEvent::Sessions { node, user, sessions }, _) => {
                self.shared.sessions.remote_sessions(
                    &node,
                    user,
                    sessions,
                    self.config.max_sessions_per_user,
                );
            }
            (BusEvent::PresenceDigest { node, statuses }, _) => {
                let listed = statuses.iter().map(|(user, _)| *user).collect();
                self.shared.sessions.remote_digest(&node, &listed);
                let statuses =
                    statuses.iter().filter_map(|(user, s)| Some((*user, remote_status(s)?))).collect();
                self.presence.remote_digest(&node, statuses);
            }
            (event, _) => self.apply_here(&event),
        }
    }

    fn local_presence(&self) -> Vec<(Uuid, &'static str)> {
        self.presence.local_statuses()
    }

    fn expire_remote_presence(&self, ttl: Duration) {
        for node in self.presence.expire_remote(ttl) {
            self.shared.sessions.forget_node(&node);
        }
    }
}

/// A status another node announced (`invisible` is never sent; shown as offline if it were).
fn remote_status(status: &str) -> Option<&'static str> {
    crate::presence::parse_status(status).map(|s| if s == "invisible" { "offline" } else { s })
}

/// Suspended users (their tokens are refused).
async fn suspended_users(db: &DatabaseConnection) -> Result<Vec<Uuid>, sea_orm::DbErr> {
    users::Entity::find()
        .select_only()
        .column(users::Column::Id)
        .filter(users::Column::SuspendedAt.is_not_null())
        .into_tuple()
        .all(db)
        .await
}

/// Instance admins and owners with their roles.
async fn instance_staff(db: &DatabaseConnection) -> Result<Vec<(Uuid, InstanceRole)>, sea_orm::DbErr> {
    let staff: Vec<(Uuid, bool, bool)> = users::Entity::find()
        .select_only()
        .columns([users::Column::Id, users::Column::IsAdmin, users::Column::IsOwner])
        .filter(
            sea_orm::Condition::any()
                .add(users::Column::IsAdmin.eq(true))
                .add(users::Column::IsOwner.eq(true)),
        )
        .into_tuple()
        .all(db)
        .await?;
    Ok(staff.into_iter().map(|(id, is_admin, is_owner)| (id, InstanceRole { is_admin, is_owner })).collect())
}
