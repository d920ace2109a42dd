//! The channel actor: one per active channel. Every write to the channel is ordered here.
//!
//! Owns: the channel's settings, members and roles, timeouts, slow-mode clocks, typing
//! state, voice participants; and the group commit of new messages. Subscribers live in a
//! `Subscribers` set owned by the registry slot, so they survive a restart of this actor.
//!
//! Never: blocks on a socket (hand-off is `Outbox::push`, non-blocking), panics on client
//! input, or acknowledges a message before its commit.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use palaver_entity::{messages, read_cursors, users};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, EntityTrait, QuerySelect};
use uuid::Uuid;

use crate::history::{HistoryAnswer, HistoryCache, PageKey};
use crate::hub::Shared;
use crate::outbox::Outbox;
use crate::protocol::{Frame, ServerFrame};
use crate::roles::{InstanceRole, Level, manages_webhooks};
use crate::store;

// The REST command path (`ChannelMsg::Command`) lives beside the actor, as a child module so
// it reaches the actor's state; see its module doc.
#[path = "channel_command.rs"]
mod command;
pub use command::{ChannelCommand, ChannelWrite, CommandAnswer, Effect};

/// Most messages one insert statement carries.
const MAX_BATCH: usize = 256;
/// Typing broadcasts per (user, channel) at most this often.
const TYPING_THROTTLE: Duration = Duration::from_secs(3);
/// Typing state expires this long after the last `typing`.
const TYPING_EXPIRY: Duration = Duration::from_secs(10);
/// One reaction add per user per this interval.
const REACTION_COOLDOWN: Duration = Duration::from_millis(200);
/// Most distinct emoji on one message.
const MAX_DISTINCT_EMOJI: u64 = 20;
/// Most participants in one voice session.
const MAX_VOICE: usize = 25;
/// Recheck a DM's block / shared-community status at most this often.
const DM_RECHECK: Duration = Duration::from_secs(2);
/// Edits are allowed this long after sending.
const EDIT_WINDOW_SECS: i64 = 15 * 60;
/// How long an actor with no subscribers lingers before stopping (default of
/// `HubConfig::channel_idle_stop`).
pub const IDLE_STOP: Duration = Duration::from_secs(300);
/// How often an actor checks whether it is idle, at most.
const IDLE_CHECK_EVERY: Duration = Duration::from_secs(60);

/// The sessions subscribed to one channel. Only the channel actor fans out from it.
#[derive(Default)]
pub struct Subscribers {
    sessions: Mutex<HashMap<Uuid, Arc<Outbox>>>,
}

impl Subscribers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Outbox>>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts
        // and removals), so a poisoned lock is still usable.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands the same bytes to every subscriber except `except`. Never waits.
    pub fn broadcast(&self, frame: &Frame, except: Option<Uuid>) {
        self.fan_out(frame, except, Outbox::push);
    }

    /// `broadcast` for frames of the droppable class (see `Outbox::push_ephemeral`).
    pub fn broadcast_ephemeral(&self, frame: &Frame, except: Option<Uuid>) {
        self.fan_out(frame, except, Outbox::push_ephemeral);
    }

    fn fan_out(&self, frame: &Frame, except: Option<Uuid>, push: fn(&Outbox, Frame) -> bool) {
        let mut sessions = self.lock();
        sessions.retain(|id, outbox| {
            if Some(*id) != except {
                push(outbox, frame.clone());
            }
            !outbox.is_closed()
        });
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn insert(&self, outbox: Arc<Outbox>) -> bool {
        self.lock().insert(outbox.session_id, outbox).is_none()
    }

    fn remove(&self, session_id: Uuid) {
        self.lock().remove(&session_id);
    }

    fn clear(&self) {
        self.lock().clear();
    }

    fn remove_user(&self, user_id: Uuid) {
        self.lock().retain(|_, o| o.user_id != user_id);
    }
}

/// Who sent a request: the session (for replies) and its user. The user's instance role is
/// looked up when a decision needs it (`Shared::instance_roles`), never carried from connect.
#[derive(Clone)]
pub struct Origin {
    pub outbox: Arc<Outbox>,
    pub user_id: Uuid,
}

impl Origin {
    fn reply(&self, frame: &ServerFrame) {
        self.outbox.push(frame.encode());
    }

    fn error(&self, code: &str, message: impl Into<String>) {
        self.reply(&ServerFrame::error(code, message));
    }
}

/// A message the client asked to send, already checked for shape by the session.
pub struct Outgoing {
    pub ciphertext: Bytes,
    pub nonce: Bytes,
    pub message_type: String,
    pub reply_to: Option<Uuid>,
    pub sender_key_id: Option<Uuid>,
    pub thread_id: Option<Uuid>,
}

/// A membership change made through REST (join, leave, kick, ban, role change).
#[derive(Debug, Clone)]
pub enum MemberChange {
    /// Joined, or role changed.
    Upsert { user_id: Uuid, role: String },
    /// Left (no event) — the user's sessions stop receiving the channel at once.
    Left { user_id: Uuid },
    /// Removed by a moderator: `event` (member_kicked / member_banned) goes to subscribers first.
    Removed { user_id: Uuid, event: ServerFrame },
}

pub enum ChannelMsg {
    /// From a session: attach it to the channel's broadcast if the user is a member.
    /// Replies whether it was subscribed.
    Subscribe { origin: Origin, reply: Option<RpcReplyPort<bool>> },
    /// From a session: detach it.
    Unsubscribe { session_id: Uuid },
    /// From a session: send a message (acked after commit).
    Send { origin: Origin, message: Outgoing },
    /// From the server (webhook execution, scheduled delivery): post a message that was not
    /// typed on a socket. It is ordered and group-committed like any send; `reply` answers
    /// after the commit (or with the reason it was refused).
    Post { post: ServerPost, reply: Option<RpcReplyPort<Result<Uuid, PostError>>> },
    /// From REST: whether `poster` may put content here now (the send rules, slow mode
    /// excepted), before a write that does not go through the actor (a poll, a file).
    MayPost { poster: Poster, reply: RpcReplyPort<Result<(), PostError>> },
    /// Internal: the in-flight group commit finished; its outcome waits in `in_flight` (a
    /// command may already have taken it, then this wake-up finds nothing to settle).
    Committed,
    /// From REST (`Hub::channel_command`): a write to this channel's state, run in the
    /// channel's order after every earlier send is committed; answers once its effects are
    /// applied (see `channel_command.rs`).
    Command { command: ChannelCommand, reply: RpcReplyPort<CommandAnswer> },
    /// From a session: edit own message.
    Edit { origin: Origin, message_id: Uuid, ciphertext: Bytes, nonce: Bytes },
    /// From a session: delete a message (own, or anyone's as moderator+).
    Delete { origin: Origin, message_id: Uuid },
    /// From a session: add or remove a reaction.
    React { origin: Origin, message_id: Uuid, emoji: String, add: bool },
    /// From a session: typing / stop typing.
    Typing { origin: Origin, typing: bool },
    /// Internal: check whether a user's typing state has expired.
    TypingExpired { user_id: Uuid },
    /// From a session: read cursor.
    MarkRead { origin: Origin, message_id: Uuid },
    /// From a session: voice join / leave / kick.
    Voice { origin: Origin, action: VoiceAction },
    /// From REST or the hub: send this already-built frame to every subscriber. Such frames
    /// announce changes made outside the actor (pins, polls…), so held history pages go too.
    Broadcast { frame: Frame },
    /// From REST: the newest history page for `user_id`, from memory if held.
    History { user_id: Uuid, key: PageKey, reply: RpcReplyPort<HistoryAnswer> },
    /// From REST after a `Miss`: the page read from the database at `version`.
    HistoryFill { key: PageKey, version: u64, body: Bytes, valid_until: Option<DateTime<Utc>> },
    /// From REST: messages changed outside the actor (admin purge or quarantine, account
    /// deletion); held history pages are stale.
    InvalidateHistory,
    /// From REST: membership changed; keeps hot state exact and unsubscribes removed users.
    Members { change: MemberChange, reply: Option<RpcReplyPort<()>> },
    /// From REST: settings changed in the database; reload them (and emit `channel_updated`
    /// when `announce` is set).
    Reload { announce: bool, reply: Option<RpcReplyPort<()>> },
    /// From REST: the channel was deleted from the database. Its subscribers are dropped (they
    /// receive nothing more from it), voice is cleared without events, and the actor stops.
    /// Replies once it no longer delivers anything.
    Deleted { reply: Option<RpcReplyPort<()>> },
    /// From REST: a timeout was issued or lifted.
    Timeout { user_id: Uuid, until: Option<DateTime<Utc>> },
    /// From the hub: a user's last session went away (voice cleanup happens later).
    SessionClosed { user_id: Uuid, session_id: Uuid },
    /// Internal: remove a disconnected user from voice if they did not come back.
    VoiceGrace { user_id: Uuid },
    /// Internal, periodic: stop when idle with no subscribers.
    IdleCheck,
    /// Test hook: panic inside the actor (proves supervision restarts it).
    Crash,
}

#[derive(Debug, Clone, Copy)]
pub enum VoiceAction {
    Join,
    Leave,
    Kick { target: Uuid },
}

/// A message the server posts on its own (not typed on a socket).
#[derive(Debug, Clone)]
pub struct ServerPost {
    /// Stored `sender_id` (None for webhook messages).
    pub sender_id: Option<Uuid>,
    /// `sender_id` of the live `new_message` (for webhooks: the webhook's creator).
    pub live_sender_id: Option<Uuid>,
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub message_type: String,
    /// Webhook messages: `{content, webhook_name, webhook_avatar}` as JSON text.
    pub webhook_content: Option<String>,
    /// On whose behalf it is posted: the channel's send rules for that poster decide.
    pub poster: Poster,
    /// A scheduled message being delivered: claimed (`delivered_at` set where still null) in
    /// the same transaction that stores the message, so it is delivered exactly once.
    pub claim: Option<Uuid>,
}

/// Who content entering a channel outside a socket send comes from. Every such path (polls,
/// webhooks, scheduled messages, files) asks the channel actor, whose send rules are the
/// same ones a socket send meets: one place for "may this be posted here".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poster {
    /// A user (a poll, a scheduled delivery, a file): the rules for a send by them
    /// (membership, DM blocks, archived, read-only, timeout), slow mode excepted.
    User(Uuid, InstanceRole),
    /// A webhook: its creator must still be a member holding the right to manage the
    /// channel's webhooks; the post itself meets the rules of a plain member (archived and
    /// read-only refuse it, whatever the creator's rank).
    Webhook { creator: Option<Uuid> },
}

/// Why a server post was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostError {
    /// The channel's rules refuse it: (error code, text), e.g. not a member, archived.
    Refused(&'static str, String),
    /// Its scheduled-message claim was already taken: it was delivered before.
    AlreadyDelivered,
    Unavailable,
    Internal(String),
}

/// Who hears about a pending message once it is committed.
enum Author {
    /// A socket's send: `message_sent` to that session, `new_message` to everyone else.
    Socket(Origin),
    /// A server post: the poster's reply port; `new_message` goes to every subscriber.
    Server {
        live_sender_id: Option<Uuid>,
        claim: Option<Uuid>,
        reply: Option<RpcReplyPort<Result<Uuid, PostError>>>,
    },
}

impl Author {
    /// Tells the author their message was not accepted.
    fn refuse(self, code: &'static str, text: &'static str) {
        match self {
            Self::Socket(origin) => origin.error(code, text),
            Self::Server { reply: Some(reply), .. } => {
                let _ = reply.send(Err(PostError::Refused(code, text.to_string())));
            }
            Self::Server { reply: None, .. } => {}
        }
    }
}

/// A message accepted by the actor and waiting for (or in) a commit.
pub struct Pending {
    author: Author,
    row: messages::Model,
}

/// A finished group commit: its batch and what the database said.
type CommitOutcome = (Vec<Pending>, Result<Vec<usize>, CommitError>);

#[derive(Debug)]
pub enum CommitError {
    Unavailable,
    Internal(String),
}

pub struct ChannelArgs {
    pub shared: Arc<Shared>,
    /// State loaded by whoever spawns the actor (so a missing channel or a database
    /// outage is reported to the caller instead of failing inside the actor).
    pub snapshot: store::ChannelSnapshot,
    pub subscribers: Arc<Subscribers>,
}

pub struct ChannelActor;

/// Whether a DM may carry messages now: `Err((error code, text))` when it may not.
type DmVerdict = Result<(), (&'static str, &'static str)>;

pub struct ChannelState {
    shared: Arc<Shared>,
    subscribers: Arc<Subscribers>,
    snapshot: store::ChannelSnapshot,
    /// Last non-privileged send per user (slow mode).
    last_send: HashMap<Uuid, Instant>,
    /// user → (typing expires at, last broadcast at).
    typing: HashMap<Uuid, (Instant, Instant)>,
    last_reaction: HashMap<Uuid, Instant>,
    /// Accepted, not yet committed; the next batch.
    pending: Vec<Pending>,
    /// True while a commit is in flight.
    committing: bool,
    /// The in-flight commit's outcome (its batch and result): settled on `Committed`, or
    /// awaited at once by a command that must be ordered after it.
    in_flight: Option<tokio::sync::oneshot::Receiver<CommitOutcome>>,
    /// True once the actor stops for idleness: its mailbox takes nothing new (senders are
    /// routed to a fresh actor) and what it already holds is still handled, so no send
    /// queued before the stop goes unanswered.
    draining: bool,
    /// Id of the newest accepted message (ids must grow in commit order).
    last_id: Uuid,
    voice: Vec<Uuid>,
    /// Cached DM check: when it was made and its verdict (error code, text).
    dm_check: Option<(Instant, DmVerdict)>,
    last_activity: Instant,
    /// Recent message ids in this channel (reply/thread validation without a query).
    recent: VecDeque<(Uuid, Option<Uuid>)>,
    /// The newest history pages, when enabled (`HubConfig::history_cache`).
    history: HistoryCache,
}

impl Actor for ChannelActor {
    type Msg = ChannelMsg;
    type State = ChannelState;
    type Arguments = ChannelArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ChannelArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let snapshot = args.snapshot;
        myself.send_interval(args.shared.config.channel_idle_stop.min(IDLE_CHECK_EVERY), || {
            ChannelMsg::IdleCheck
        });
        Ok(ChannelState {
            shared: args.shared,
            subscribers: args.subscribers,
            snapshot,
            last_send: HashMap::new(),
            typing: HashMap::new(),
            last_reaction: HashMap::new(),
            pending: Vec::new(),
            committing: false,
            in_flight: None,
            draining: false,
            last_id: Uuid::nil(),
            voice: Vec::new(),
            dm_check: None,
            last_activity: Instant::now(),
            recent: VecDeque::new(),
            history: HistoryCache::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if !matches!(message, ChannelMsg::IdleCheck) {
            state.last_activity = Instant::now();
        }
        match message {
            // Asked after the idle stop began: left unanswered, so the session asks again and
            // reaches the fresh actor (a subscriber added here would be forgotten).
            ChannelMsg::Subscribe { .. } if state.draining => {}
            ChannelMsg::Subscribe { origin, reply } => {
                let ok = state.is_member(origin.user_id);
                if ok && state.subscribers.insert(origin.outbox.clone()) && !state.voice.is_empty() {
                    origin.reply(&state.voice_frame());
                }
                if let Some(reply) = reply {
                    let _ = reply.send(ok);
                }
            }
            ChannelMsg::Unsubscribe { session_id } => state.subscribers.remove(session_id),
            ChannelMsg::Send { origin, message } => state.accept(&myself, origin, message).await,
            ChannelMsg::Post { post, reply } => state.accept_post(&myself, post, reply).await,
            ChannelMsg::MayPost { poster, reply } => {
                let _ = reply.send(state.poster_rules(poster).await);
            }
            ChannelMsg::Committed => state.committed(&myself).await,
            ChannelMsg::Command { command, reply } => state.run_command(&myself, command, reply).await?,
            ChannelMsg::Edit { origin, message_id, ciphertext, nonce } => {
                state.edit(origin, message_id, ciphertext, nonce).await
            }
            ChannelMsg::Delete { origin, message_id } => state.delete(origin, message_id).await,
            ChannelMsg::React { origin, message_id, emoji, add } => {
                state.react(origin, message_id, emoji, add).await
            }
            ChannelMsg::Typing { origin, typing } => state.typing(&myself, origin, typing),
            ChannelMsg::TypingExpired { user_id } => {
                if state.typing.get(&user_id).is_some_and(|(until, _)| *until <= Instant::now()) {
                    state.stop_typing(user_id);
                }
            }
            ChannelMsg::MarkRead { origin, message_id } => state.mark_read(origin, message_id).await,
            ChannelMsg::Voice { origin, action } => state.voice(origin, action),
            ChannelMsg::Broadcast { frame } => {
                state.history.invalidate();
                state.subscribers.broadcast(&frame, None)
            }
            ChannelMsg::History { user_id, key, reply } => {
                let answer = if !state.is_member(user_id) {
                    HistoryAnswer::NotMember
                } else if !state.shared.config.history_cache {
                    HistoryAnswer::Miss { version: 0 }
                } else {
                    match state.history.get(key, Utc::now()) {
                        Ok(body) => HistoryAnswer::Page(body),
                        Err(version) => HistoryAnswer::Miss { version },
                    }
                };
                let _ = reply.send(answer);
            }
            ChannelMsg::HistoryFill { key, version, body, valid_until } => {
                if state.shared.config.history_cache {
                    state.history.fill(key, version, body, valid_until);
                }
            }
            ChannelMsg::InvalidateHistory => state.history.invalidate(),
            ChannelMsg::Members { change, reply } => {
                state.member_change(change);
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
            }
            ChannelMsg::Reload { announce, reply } => {
                if let Some(fresh) = store::load_channel(&state.shared.db, state.id()).await? {
                    state.snapshot = fresh;
                    if announce {
                        state.broadcast(&state.updated_frame(), None);
                    }
                }
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
            }
            ChannelMsg::Deleted { reply } => {
                state.forget_deleted();
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
                myself.stop(Some("deleted".into()));
            }
            ChannelMsg::Timeout { user_id, until } => match until {
                Some(until) => {
                    state.snapshot.timeouts.insert(user_id, until);
                }
                None => {
                    state.snapshot.timeouts.remove(&user_id);
                }
            },
            ChannelMsg::SessionClosed { user_id, session_id } => {
                state.subscribers.remove(session_id);
                state.stop_typing(user_id);
                if state.voice.contains(&user_id) && !state.shared.sessions.is_online(user_id) {
                    myself.send_after(Duration::from_secs(15), move || ChannelMsg::VoiceGrace { user_id });
                }
            }
            ChannelMsg::VoiceGrace { user_id } => {
                if !state.shared.sessions.is_online(user_id) {
                    state.leave_voice(user_id);
                }
            }
            ChannelMsg::IdleCheck => {
                if !state.draining
                    && state.last_activity.elapsed() >= state.shared.config.channel_idle_stop
                    && state.subscribers.is_empty()
                    && state.pending.is_empty()
                    && !state.committing
                    && state.voice.is_empty()
                {
                    // Not `stop`: that would drop whatever is already queued (a send would get
                    // neither `message_sent` nor an error). Draining refuses new messages
                    // (the hub then starts a fresh actor) and handles the queued ones first.
                    state.draining = true;
                    let _ = myself.drain();
                }
            }
            ChannelMsg::Crash => panic!("crash requested for channel {} (test hook)", state.id()),
        }
        Ok(())
    }
}

/// Stores one batch of pending messages (with their scheduled-message claims) in one
/// transaction; `Ok` lists the entries whose claim was already taken.
async fn commit_batch(
    db: &sea_orm::DatabaseConnection,
    batch: &[Pending],
) -> Result<Vec<usize>, CommitError> {
    let rows: Vec<messages::Model> = batch.iter().map(|p| p.row.clone()).collect();
    let claims: Vec<(usize, Uuid)> = batch
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match &p.author {
            Author::Server { claim: Some(id), .. } => Some((i, *id)),
            _ => None,
        })
        .collect();
    match store::insert_messages(db, rows, &claims).await {
        Ok(lost) => Ok(lost),
        Err(err) if crate::is_unavailable(&err) => Err(CommitError::Unavailable),
        Err(err) => Err(CommitError::Internal(err.to_string())),
    }
}

impl ChannelState {
    fn id(&self) -> Uuid {
        self.snapshot.channel.id
    }

    fn is_member(&self, user_id: Uuid) -> bool {
        self.snapshot.members.contains_key(&user_id)
    }

    /// The sender's effective role now: instance role as of this moment, else channel role.
    fn level(&self, origin: &Origin) -> Level {
        Level::effective(
            self.instance_level(origin.user_id),
            self.snapshot.members.get(&origin.user_id).map(String::as_str),
        )
    }

    fn instance_level(&self, user_id: Uuid) -> Option<Level> {
        self.shared.instance_roles.get(user_id).level()
    }

    fn broadcast(&self, frame: &ServerFrame, except: Option<Uuid>) {
        self.deliver(&frame.encode(), except);
    }

    /// Channel scope: subscribers, or for DMs both participants' sessions.
    fn deliver(&self, frame: &Frame, except: Option<Uuid>) {
        match self.snapshot.dm_pair {
            Some((a, b)) => {
                self.shared.sessions.send_to_user(a, frame, except);
                self.shared.sessions.send_to_user(b, frame, except);
            }
            None => self.subscribers.broadcast(frame, except),
        }
    }

    /// `broadcast` for the droppable class (typing, read receipts): a socket whose queue is
    /// over half full does not get it.
    fn broadcast_ephemeral(&self, frame: &ServerFrame) {
        let frame = frame.encode();
        match self.snapshot.dm_pair {
            Some((a, b)) => {
                self.shared.sessions.send_to_user_ephemeral(a, &frame, None);
                self.shared.sessions.send_to_user_ephemeral(b, &frame, None);
            }
            None => self.subscribers.broadcast_ephemeral(&frame, None),
        }
    }

    /// Checks a send against the channel's rules and queues it for the next commit.
    async fn accept(&mut self, myself: &ActorRef<ChannelMsg>, origin: Origin, msg: Outgoing) {
        let user_id = origin.user_id;
        let privileged = self.level(&origin).is_privileged();
        if let Err((code, text)) = self.send_rules(user_id, privileged, true).await {
            return origin.error(code, text);
        }
        let thread_id = match self.resolve_reference(msg.reply_to, msg.thread_id).await {
            Ok(thread) => thread,
            Err(Some(text)) => return origin.error("validation_error", text),
            Err(None) => return origin.error("unavailable", "the database is unavailable, try again"),
        };
        if self.snapshot.channel.channel_type == "gallery"
            && thread_id.is_none()
            && msg.message_type != "file"
        {
            return origin.error("validation_error", "gallery channels accept only files at the top level");
        }
        if !privileged && self.snapshot.channel.slow_mode_seconds > 0 {
            self.last_send.insert(user_id, Instant::now());
        }
        let mut row =
            self.new_row(Some(user_id), msg.ciphertext.to_vec(), msg.nonce.to_vec(), msg.message_type);
        row.reply_to_id = msg.reply_to;
        row.sender_key_id = msg.sender_key_id;
        row.thread_id = thread_id;
        self.pending.push(Pending { author: Author::Socket(origin), row });
        self.commit_pending(myself).await;
    }

    /// Queues a server post (webhook, scheduled delivery) after the rules for its user.
    async fn accept_post(
        &mut self,
        myself: &ActorRef<ChannelMsg>,
        post: ServerPost,
        reply: Option<RpcReplyPort<Result<Uuid, PostError>>>,
    ) {
        if let Err(error) = self.poster_rules(post.poster).await {
            if let Some(reply) = reply {
                let _ = reply.send(Err(error));
            }
            return;
        }
        let mut row = self.new_row(post.sender_id, post.ciphertext, post.nonce, post.message_type);
        row.webhook_content = post.webhook_content;
        let author = Author::Server { live_sender_id: post.live_sender_id, claim: post.claim, reply };
        self.pending.push(Pending { author, row });
        self.commit_pending(myself).await;
    }

    /// A new message row with a fresh ordered id, the server's time and the channel's TTL.
    fn new_row(
        &mut self,
        sender_id: Option<Uuid>,
        ciphertext: Vec<u8>,
        nonce: Vec<u8>,
        message_type: String,
    ) -> messages::Model {
        let id = self.next_id();
        let created_at = palaver_entity::now();
        let expires_at = self
            .snapshot
            .channel
            .message_ttl_seconds
            .filter(|ttl| *ttl > 0)
            .map(|ttl| created_at + chrono::Duration::seconds(ttl as i64));
        messages::Model {
            id,
            channel_id: self.id(),
            sender_id,
            ciphertext,
            nonce,
            message_type,
            reply_to_id: None,
            sender_key_id: None,
            thread_id: None,
            edited_at: None,
            deleted_at: None,
            quarantined_at: None,
            expires_at,
            webhook_content: None,
            created_at,
        }
    }

    /// The send rules for content from `poster` (slow mode excepted: it paces typing).
    async fn poster_rules(&mut self, poster: Poster) -> Result<(), PostError> {
        let result = match poster {
            Poster::User(user_id, instance) => {
                let local = self.snapshot.members.get(&user_id).map(String::as_str);
                let privileged = Level::effective(instance.level(), local).is_privileged();
                self.send_rules(user_id, privileged, false).await
            }
            Poster::Webhook { creator } => match creator {
                Some(creator)
                    if manages_webhooks(self.snapshot.members.get(&creator).map(String::as_str)) =>
                {
                    self.send_rules(creator, false, false).await
                }
                _ => Err(("forbidden", "this webhook's creator may no longer manage webhooks here".into())),
            },
        };
        result.map_err(|(code, text)| match code {
            "unavailable" => PostError::Unavailable,
            _ => PostError::Refused(code, text),
        })
    }

    /// The channel's rules for a send by `user_id`: membership, DM blocks, archived,
    /// read-only, slow mode (when `slow_mode`) and timeouts. `Err((code, text))` refuses.
    async fn send_rules(
        &mut self,
        user_id: Uuid,
        privileged: bool,
        slow_mode: bool,
    ) -> Result<(), (&'static str, String)> {
        if !self.is_member(user_id) {
            return Err(("forbidden", "you are not a member of this channel".into()));
        }
        if let Some((a, b)) = self.snapshot.dm_pair {
            let other = if a == user_id { b } else { a };
            return self.dm_allowed(user_id, other).await.map_err(|(code, text)| (code, text.to_string()));
        }
        let channel = &self.snapshot.channel;
        if channel.archived {
            return Err(("archived", "this channel is archived".into()));
        }
        if channel.read_only && !privileged {
            return Err(("read_only", "this channel is read-only".into()));
        }
        if slow_mode
            && channel.slow_mode_seconds > 0
            && !privileged
            && let Some(last) = self.last_send.get(&user_id)
        {
            let window = Duration::from_secs(channel.slow_mode_seconds as u64);
            let elapsed = last.elapsed();
            if elapsed < window {
                let wait = (window - elapsed).as_secs_f64().ceil().max(1.0) as u64;
                return Err(("slow_mode", format!("slow mode: wait {wait} seconds")));
            }
        }
        if !privileged && let Some(until) = self.snapshot.timeouts.get(&user_id) {
            let left = (*until - Utc::now()).num_seconds();
            if left > 0 {
                return Err(("timed_out", format!("you are timed out for {left} more seconds")));
            }
        }
        Ok(())
    }

    /// A fresh UUIDv7 strictly greater than every earlier one (commit order = id order).
    fn next_id(&mut self) -> Uuid {
        let mut id = Uuid::now_v7();
        if id <= self.last_id {
            id = Uuid::from_u128(self.last_id.as_u128() + 1);
        }
        self.last_id = id;
        id
    }

    /// Validates `reply_to` / `thread_id` (same channel) and resolves a thread reply to its root.
    /// `Err(Some(text))` = invalid, `Err(None)` = database unavailable.
    async fn resolve_reference(
        &self,
        reply_to: Option<Uuid>,
        thread_id: Option<Uuid>,
    ) -> Result<Option<Uuid>, Option<String>> {
        if let Some(reply_to) = reply_to {
            self.lookup_here(reply_to)
                .await?
                .ok_or_else(|| Some("reply_to is not a message in this channel".into()))?;
        }
        let Some(thread_id) = thread_id else { return Ok(None) };
        let root = self
            .lookup_here(thread_id)
            .await?
            .ok_or_else(|| Some("thread_id is not a message in this channel".to_string()))?;
        Ok(Some(root.unwrap_or(thread_id)))
    }

    /// `Some(thread root or None)` if the message is live in this channel.
    async fn lookup_here(&self, id: Uuid) -> Result<Option<Option<Uuid>>, Option<String>> {
        if let Some((_, thread)) = self.recent.iter().find(|(m, _)| *m == id) {
            return Ok(Some(*thread));
        }
        match store::live_message(&self.shared.db, id).await {
            Ok(Some(m)) if m.channel_id == self.id() => Ok(Some(m.thread_id)),
            Ok(_) => Ok(None),
            Err(err) => {
                tracing::warn!(error = %err, "message lookup failed");
                Err(None)
            }
        }
    }

    async fn dm_allowed(&mut self, me: Uuid, other: Uuid) -> DmVerdict {
        if let Some((at, verdict)) = &self.dm_check
            && at.elapsed() < DM_RECHECK
        {
            return *verdict;
        }
        let db = &self.shared.db;
        let verdict = match store::blocked_either_way(db, me, other).await {
            Ok(true) => Err(("blocked", "you cannot message this user")),
            Ok(false) => match store::share_community(db, me, other).await {
                Ok(true) => Ok(()),
                Ok(false)
                    if self.shared.is_instance_owner(me).await
                        || self.shared.is_instance_owner(other).await =>
                {
                    Ok(())
                }
                Ok(false) => Err(("forbidden", "you no longer share a community with this user")),
                Err(_) => return Err(("unavailable", "the database is unavailable, try again")),
            },
            Err(_) => return Err(("unavailable", "the database is unavailable, try again")),
        };
        self.dm_check = Some((Instant::now(), verdict));
        verdict
    }

    /// Commits what is pending: normally through `start_commit`; while draining for an idle
    /// stop, right here, because a commit task's `Committed` would be refused by the
    /// draining mailbox and its senders never acked.
    async fn commit_pending(&mut self, myself: &ActorRef<ChannelMsg>) {
        if !self.draining {
            return self.start_commit(myself);
        }
        while !self.committing && !self.pending.is_empty() {
            let take = self.pending.len().min(MAX_BATCH);
            let batch: Vec<Pending> = self.pending.drain(..take).collect();
            let result = commit_batch(&self.shared.db, &batch).await;
            self.settle(batch, result).await;
        }
    }

    /// Starts a commit of everything pending unless one is in flight (then the pending
    /// sends wait and go together in the next one: group commit).
    fn start_commit(&mut self, myself: &ActorRef<ChannelMsg>) {
        if self.committing || self.pending.is_empty() {
            return;
        }
        let take = self.pending.len().min(MAX_BATCH);
        let batch: Vec<Pending> = self.pending.drain(..take).collect();
        self.committing = true;
        let db = self.shared.db.clone();
        let myself = myself.clone();
        let (done, outcome) = tokio::sync::oneshot::channel();
        self.in_flight = Some(outcome);
        tokio::spawn(async move {
            let result = commit_batch(&db, &batch).await;
            // If the actor died meanwhile, its restart reloads state; these senders get no
            // ack (their socket sees nothing) and will resend: nothing acked is lost.
            let _ = done.send((batch, result));
            let _ = myself.send_message(ChannelMsg::Committed);
        });
    }

    async fn committed(&mut self, myself: &ActorRef<ChannelMsg>) {
        let Some(mut outcome) = self.in_flight.take() else { return };
        match outcome.try_recv() {
            Ok((batch, result)) => {
                self.committing = false;
                self.settle(batch, result).await;
            }
            // The wake-up of a commit a command already settled; the one in flight now has
            // not finished.
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                self.in_flight = Some(outcome);
                return;
            }
            // The commit task died without an outcome: its senders get nothing (as if the
            // actor had restarted), later sends must not wait for it.
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => self.committing = false,
        }
        self.start_commit(myself);
    }

    /// A batch's commit is over: acks and `new_message` frames, or the error, to its senders.
    async fn settle(&mut self, batch: Vec<Pending>, result: Result<Vec<usize>, CommitError>) {
        // Even a failed commit may have landed (a connection lost after COMMIT was sent).
        self.history.invalidate();
        match result {
            Ok(lost) => {
                for (i, pending) in batch.into_iter().enumerate() {
                    if lost.contains(&i) {
                        if let Author::Server { reply: Some(reply), .. } = pending.author {
                            let _ = reply.send(Err(PostError::AlreadyDelivered));
                        }
                        continue;
                    }
                    self.announce(pending).await;
                }
            }
            Err(err) => {
                let (code, text) = match &err {
                    CommitError::Unavailable => {
                        ("unavailable", "the database is unavailable, message not sent")
                    }
                    CommitError::Internal(detail) => {
                        tracing::error!(channel = %self.id(), error = %detail, "message commit failed");
                        ("internal_error", "message not sent: internal error")
                    }
                };
                for pending in batch {
                    match pending.author {
                        Author::Socket(origin) => origin.error(code, text),
                        Author::Server { reply: Some(reply), .. } => {
                            let _ = reply.send(Err(match &err {
                                CommitError::Unavailable => PostError::Unavailable,
                                CommitError::Internal(detail) => PostError::Internal(detail.clone()),
                            }));
                        }
                        Author::Server { reply: None, .. } => {}
                    }
                }
            }
        }
    }

    /// After commit: stop-typing (if typing), the ack to the sender (socket sends) or the
    /// poster's reply (server posts), then the message to everyone else.
    async fn announce(&mut self, pending: Pending) {
        let Pending { author, row } = pending;
        if let Some(user_id) = row.sender_id
            && self.typing.contains_key(&user_id)
        {
            self.stop_typing(user_id);
        }
        let (live_sender, except) = match author {
            Author::Socket(origin) => {
                origin.reply(&ServerFrame::MessageSent {
                    id: row.id,
                    channel_id: row.channel_id,
                    created_at: row.created_at,
                    thread_id: row.thread_id,
                });
                (row.sender_id, Some(origin.outbox.session_id))
            }
            Author::Server { live_sender_id, reply, .. } => {
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(row.id));
                }
                (live_sender_id, None)
            }
        };
        if let Some((a, b)) = self.snapshot.dm_pair
            && !self.snapshot.has_messages
            && let Some(user_id) = row.sender_id
        {
            let other = if a == user_id { b } else { a };
            if let Ok(Some(sender)) = users::Entity::find_by_id(user_id).one(&self.shared.db).await {
                let frame = ServerFrame::NewDmChannel {
                    channel_id: row.channel_id,
                    channel_name: None,
                    created_at: self.snapshot.channel.created_at,
                    other_user_id: sender.id,
                    other_user_username: sender.username,
                    other_user_display_name: Some(sender.display_name),
                    other_user_avatar_url: sender.avatar_url,
                };
                self.shared.sessions.send_to_user(other, &frame.encode(), None);
            }
        }
        self.snapshot.has_messages = true;
        self.remember(row.id, row.thread_id);
        let frame = ServerFrame::NewMessage {
            id: row.id,
            channel_id: row.channel_id,
            sender_id: live_sender,
            ciphertext: Bytes::from(row.ciphertext),
            nonce: Bytes::from(row.nonce),
            message_type: row.message_type,
            reply_to: row.reply_to_id,
            sender_key_id: row.sender_key_id,
            created_at: row.created_at,
            thread_id: row.thread_id,
        };
        self.deliver(&frame.encode(), except);
    }

    fn remember(&mut self, id: Uuid, thread: Option<Uuid>) {
        if self.recent.len() >= 512 {
            self.recent.pop_front();
        }
        self.recent.push_back((id, thread));
    }

    async fn edit(&mut self, origin: Origin, message_id: Uuid, ciphertext: Bytes, nonce: Bytes) {
        let db = &self.shared.db;
        let message = match store::live_message(db, message_id).await {
            Ok(Some(m)) if m.channel_id == self.id() => m,
            Ok(_) => return origin.error("not_found", "message not found"),
            Err(_) => return origin.error("unavailable", "the database is unavailable, try again"),
        };
        if message.sender_id != Some(origin.user_id) {
            return origin.error("forbidden", "you can only edit your own messages");
        }
        if let Some(until) = self.snapshot.timeouts.get(&origin.user_id)
            && *until > Utc::now()
        {
            return origin.error("timed_out", "you are timed out in this channel");
        }
        if (Utc::now() - message.created_at).num_seconds() > EDIT_WINDOW_SECS {
            return origin.error("validation_error", "messages can only be edited for 15 minutes");
        }
        let edited_at = palaver_entity::now();
        let written = store::record_edit(db, &message, ciphertext.to_vec(), nonce.to_vec(), edited_at).await;
        self.history.invalidate();
        match written {
            Ok(()) => {}
            Err(err) if crate::is_unavailable(&err) => {
                return origin.error("unavailable", "the database is unavailable, try again");
            }
            Err(err) => {
                tracing::error!(error = %err, "edit failed");
                return origin.error("internal_error", "edit failed");
            }
        }
        self.broadcast(
            &ServerFrame::MessageEdited {
                message_id,
                channel_id: self.id(),
                sender_id: message.sender_id,
                ciphertext,
                nonce,
                edited_at,
            },
            None,
        );
    }

    async fn delete(&mut self, origin: Origin, message_id: Uuid) {
        let db = &self.shared.db;
        let message = match store::live_message(db, message_id).await {
            Ok(Some(m)) if m.channel_id == self.id() => m,
            Ok(_) => return origin.error("not_found", "message not found"),
            Err(_) => return origin.error("unavailable", "the database is unavailable, try again"),
        };
        if message.sender_id != Some(origin.user_id) && !self.level(&origin).is_privileged() {
            return origin.error("forbidden", "you cannot delete this message");
        }
        let deleted = store::soft_delete(db, message_id).await;
        self.history.invalidate();
        match deleted {
            Ok(true) => self.broadcast(&ServerFrame::MessageDeleted { message_id }, None),
            Ok(false) => origin.error("not_found", "message not found"),
            Err(_) => origin.error("unavailable", "the database is unavailable, try again"),
        }
    }

    async fn react(&mut self, origin: Origin, message_id: Uuid, emoji: String, add: bool) {
        let user_id = origin.user_id;
        // Members only, checked first: the throttle map below must not grow with outsiders.
        if !self.is_member(user_id) {
            return origin.error("forbidden", "you are not a member of this channel");
        }
        if add {
            if let Some(last) = self.last_reaction.get(&user_id)
                && last.elapsed() < REACTION_COOLDOWN
            {
                return origin.error("rate_limited", "reacting too fast");
            }
            self.last_reaction.insert(user_id, Instant::now());
        }
        let db = &self.shared.db;
        match store::live_message(db, message_id).await {
            Ok(Some(m)) if m.channel_id == self.id() => {}
            Ok(_) => return origin.error("not_found", "message not found"),
            Err(_) => return origin.error("unavailable", "the database is unavailable, try again"),
        }
        let outcome = if add {
            store::add_reaction(db, message_id, user_id, &emoji, MAX_DISTINCT_EMOJI).await
        } else {
            store::remove_reaction(db, message_id, user_id, &emoji).await
        };
        self.history.invalidate();
        match outcome {
            Ok(store::ReactionOutcome::Changed) | Ok(store::ReactionOutcome::AlreadyThere) if add => {
                self.broadcast(&ServerFrame::ReactionAdded { message_id, user_id, emoji }, None)
            }
            Ok(store::ReactionOutcome::Changed) => {
                self.broadcast(&ServerFrame::ReactionRemoved { message_id, user_id, emoji }, None)
            }
            Ok(store::ReactionOutcome::TooManyEmoji) => {
                origin.error("validation_error", "a message can carry at most 20 different reactions")
            }
            Ok(_) => {}
            Err(_) => origin.error("unavailable", "the database is unavailable, try again"),
        }
    }

    fn typing(&mut self, myself: &ActorRef<ChannelMsg>, origin: Origin, typing: bool) {
        let user_id = origin.user_id;
        if !self.is_member(user_id) {
            return;
        }
        if !typing {
            if self.typing.contains_key(&user_id) {
                self.stop_typing(user_id);
            }
            return;
        }
        let now = Instant::now();
        let throttled = self.typing.get(&user_id).is_some_and(|(_, sent)| now - *sent < TYPING_THROTTLE);
        let sent_at = if throttled { self.typing[&user_id].1 } else { now };
        self.typing.insert(user_id, (now + TYPING_EXPIRY, sent_at));
        if !throttled {
            self.broadcast_ephemeral(&ServerFrame::UserTyping { channel_id: self.id(), user_id });
        }
        myself.send_after(TYPING_EXPIRY, move || ChannelMsg::TypingExpired { user_id });
    }

    fn stop_typing(&mut self, user_id: Uuid) {
        if self.typing.remove(&user_id).is_some() {
            self.broadcast_ephemeral(&ServerFrame::UserStoppedTyping { channel_id: self.id(), user_id });
        }
    }

    async fn mark_read(&mut self, origin: Origin, message_id: Uuid) {
        if !self.is_member(origin.user_id) {
            return;
        }
        let db = &self.shared.db;
        let now = palaver_entity::now();
        let cursor = read_cursors::ActiveModel {
            channel_id: Set(self.id()),
            user_id: Set(origin.user_id),
            last_read_message_id: Set(Some(message_id)),
            last_read_at: Set(now),
        };
        let saved = read_cursors::Entity::insert(cursor)
            .on_conflict(
                OnConflict::columns([read_cursors::Column::ChannelId, read_cursors::Column::UserId])
                    .update_columns([
                        read_cursors::Column::LastReadMessageId,
                        read_cursors::Column::LastReadAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await;
        if saved.is_err() {
            return origin.error("unavailable", "the database is unavailable, try again");
        }
        let send_receipts = users::Entity::find_by_id(origin.user_id)
            .select_only()
            .column(users::Column::Preferences)
            .into_tuple::<String>()
            .one(db)
            .await
            .ok()
            .flatten()
            .is_some_and(|prefs| {
                serde_json::from_str::<serde_json::Value>(&prefs)
                    .map(|p| p.get("sendReadReceipts") != Some(&serde_json::Value::Bool(false)))
                    .unwrap_or(true)
            });
        if send_receipts {
            self.broadcast_ephemeral(&ServerFrame::ReadReceipt {
                channel_id: self.id(),
                user_id: origin.user_id,
                message_id,
                timestamp: now,
            });
        }
    }

    fn voice_frame(&self) -> ServerFrame {
        ServerFrame::VoiceStateUpdate { channel_id: self.id(), participants: self.voice.clone() }
    }

    fn voice(&mut self, origin: Origin, action: VoiceAction) {
        let user_id = origin.user_id;
        match action {
            VoiceAction::Join => {
                if !self.is_member(user_id) {
                    return origin.error("forbidden", "you are not a member of this channel");
                }
                if !self.voice.contains(&user_id) {
                    if self.voice.len() >= MAX_VOICE {
                        return origin.error("voice_full", "this voice channel is full");
                    }
                    self.voice.push(user_id);
                    self.shared.voice.insert(user_id, self.id());
                }
                origin.reply(&self.voice_frame());
                self.broadcast(&self.voice_frame(), None);
                self.broadcast(&ServerFrame::UserJoinedVoice { channel_id: self.id(), user_id }, None);
            }
            VoiceAction::Leave => self.leave_voice(user_id),
            VoiceAction::Kick { target } => {
                let actor = self.level(&origin);
                let allowed = match self.snapshot.members.get(&target) {
                    Some(role) => actor > Level::from_role(role),
                    None => self.instance_level(user_id).is_some(),
                };
                if !allowed {
                    return origin.error("forbidden", "you cannot remove this user from voice");
                }
                if self.voice.contains(&target) {
                    self.broadcast(
                        &ServerFrame::KickedFromVoice {
                            channel_id: self.id(),
                            user_id: target,
                            kicked_by: user_id,
                        },
                        None,
                    );
                    self.leave_voice(target);
                }
            }
        }
    }

    fn leave_voice(&mut self, user_id: Uuid) {
        if let Some(pos) = self.voice.iter().position(|u| *u == user_id) {
            self.voice.remove(pos);
            self.shared.voice.remove_if(&user_id, |_, channel| *channel == self.id());
            self.broadcast(&ServerFrame::UserLeftVoice { channel_id: self.id(), user_id }, None);
            self.broadcast(&self.voice_frame(), None);
        }
    }

    fn member_change(&mut self, change: MemberChange) {
        match change {
            MemberChange::Upsert { user_id, role } => {
                self.snapshot.members.insert(user_id, role);
            }
            MemberChange::Left { user_id } => self.remove_member(user_id),
            MemberChange::Removed { user_id, event } => {
                // Everyone subscribed (the removed user included) learns of it, then the
                // removed user's sessions stop receiving this channel at once.
                self.broadcast(&event, None);
                self.remove_member(user_id);
                self.broadcast(
                    &ServerFrame::SenderKeyRotationRequired {
                        channel_id: self.id(),
                        reason: "member_removed".into(),
                    },
                    None,
                );
            }
        }
    }

    fn remove_member(&mut self, user_id: Uuid) {
        self.snapshot.members.remove(&user_id);
        self.subscribers.remove_user(user_id);
        self.typing.remove(&user_id);
        self.leave_voice(user_id);
    }

    fn updated_frame(&self) -> ServerFrame {
        let c = &self.snapshot.channel;
        ServerFrame::ChannelUpdated {
            channel_id: c.id,
            name: c.name.clone(),
            topic: c.topic.clone(),
            read_only: c.read_only,
            slow_mode_seconds: c.slow_mode_seconds,
            archived: c.archived,
            voice_background: c.voice_background.clone(),
        }
    }
}
