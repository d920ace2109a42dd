//! The channel actor: one per active channel. Every write to the channel is ordered here.
//!
//! Owns: the channel's settings, members and roles, timeouts, slow-mode clocks, typing
//! state, voice participants; and the group commit of new messages. Subscribers live in a
//! `Subscribers` set owned by the registry slot, so they survive a restart of this actor.
//!
//! Never: blocks on a socket (hand-off is `Outbox::push`, non-blocking), panics on client
//! input, or acknowledges a message before its commit.
//!
//! One file per concern: `subscribers` (the registry of sessions), `live` (the slots the hub
//! and supervisor find actors by), `types` (message payloads), `post` (send rules and
//! queueing), `commit` (group commit and announcement), `nonce` (repeated sends answered
//! with the original's ack), `edit` (edit, delete, react),
//! `typing`, `read` (cursors), `voice`, `members`. This file: the state, the mailbox and the
//! actor, side by side.

mod command;
mod commit;
mod edit;
mod live;
mod members;
mod nonce;
mod post;
mod read;
mod resume;
mod ring;
mod subscribers;
mod types;
mod typing;
mod voice;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use uuid::Uuid;

pub use self::command::{CHANNEL_COMMAND_TIMEOUT, ChannelCommand, ChannelWrite, CommandAnswer, Effect};
pub use self::commit::{CommitError, Pending};
pub use self::live::{BoxFuture, ChannelRouter, ChannelSlot, LiveChannels};
use self::post::DmVerdict;
use self::ring::Stream;
pub use self::ring::{MAX_REPLAY_BYTES, MAX_REPLAY_FRAMES, RING_AGE, RING_FRAMES};
pub use self::subscribers::Subscribers;
pub(crate) use self::types::size_ok;
pub use self::types::{MemberChange, Origin, Outgoing, PostError, Poster, Resume, ServerPost, VoiceAction};
pub use crate::config::IDLE_STOP;
use crate::history::{HistoryAnswer, HistoryCache, PageKey};
use crate::protocol::{Frame, ServerFrame};
use crate::registry::DmPosition;
use crate::roles::Level;
use crate::shared::{Shared, StreamEnd};
use crate::store;

/// How often an actor checks whether it is idle, at most.
const IDLE_CHECK_EVERY: Duration = Duration::from_secs(60);

pub enum ChannelMsg {
    /// From a session: attach it to the channel's broadcast if the user is a member.
    /// Replies whether it was subscribed. With `resume` (a `subscribe` with `since`), the
    /// session is first sent `subscribed` and the frames it missed.
    Subscribe { origin: Origin, resume: Option<Resume>, reply: Option<RpcReplyPort<bool>> },
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
    /// applied (see `command.rs`).
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
    /// From the community actor: send this frame to the channel (a durable one takes its
    /// place in the stream). Such frames announce changes made outside the actor, so held
    /// history pages go too.
    Broadcast { frame: ServerFrame },
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
    /// From the hub at shutdown (`Hub::drain_channels`): commit and answer every send accepted
    /// so far, then handle what is already queued and stop, taking nothing new.
    Shutdown,
    /// Test hook: panic inside the actor (proves supervision restarts it).
    #[cfg(feature = "test-hooks")]
    Crash,
}

pub struct ChannelArgs {
    pub shared: Arc<Shared>,
    /// State loaded by whoever spawns the actor (so a missing channel or a database
    /// outage is reported to the caller instead of failing inside the actor).
    pub snapshot: store::ChannelSnapshot,
    pub subscribers: Arc<Subscribers>,
}

pub struct ChannelActor;

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
    in_flight: Option<tokio::sync::oneshot::Receiver<commit::CommitOutcome>>,
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
    /// This actor's stream: epoch, position, and the ring replays are served from.
    stream: Stream,
    /// Members who joined during this epoch → the position they joined at: a replay from
    /// before it would show them what was said before they were members.
    joined_at: HashMap<Uuid, u64>,
    /// Idempotency keys of recent sends (`nonce.rs`).
    nonces: nonce::NonceMemory,
    /// In a cluster: the shard epoch this node owned the channel under when the actor
    /// started; every commit checks it (see `store::Fence`).
    fence: Option<store::Fence>,
    /// When this actor started: younger than `nonce::REMEMBER_FOR`, its key memory may lack
    /// a repeated send's original, so the database is asked.
    started_at: Instant,
    /// Told to stop (`ChannelMsg::Shutdown`: its shard is handed to another node): where its
    /// stream ended is left in `Shared::stream_ends` once the last queued message is handled.
    shutting_down: bool,
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
        let handed_over = args.shared.handed_over.remove(&snapshot.channel.id).map(|(_, end)| end);
        myself.send_interval(args.shared.config.channel_idle_stop.min(IDLE_CHECK_EVERY), || {
            ChannelMsg::IdleCheck
        });
        let state = ChannelState {
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
            stream: match handed_over {
                Some(end) => Stream::continuing(end.epoch, end.cseq),
                None => Stream::default(),
            },
            joined_at: HashMap::new(),
            nonces: nonce::NonceMemory::default(),
            started_at: Instant::now(),
            fence: None,
            shutting_down: false,
        };
        let mut state = state;
        state.fence = state.shared.fence(state.id());
        // A continued stream is not new to anyone: its subscribers heard nothing to resync.
        if handed_over.is_none() {
            state.announce_epoch();
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if state.shutting_down {
            let end =
                StreamEnd { channel_id: state.id(), epoch: state.stream.epoch, cseq: state.stream.cseq };
            state.shared.stream_ends.insert(end.channel_id, end);
        }
        Ok(())
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
            ChannelMsg::Subscribe { origin, resume, reply } => {
                let ok = state.is_member(origin.user_id);
                if ok {
                    state.attach(&origin, resume);
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
                state.broadcast(&frame, None);
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
                        let frame = state.updated_frame();
                        state.broadcast(&frame, None);
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
                if state.voice.contains(&user_id) && !state.shared.is_connected(user_id) {
                    myself.send_after(Duration::from_secs(15), move || ChannelMsg::VoiceGrace { user_id });
                }
            }
            ChannelMsg::VoiceGrace { user_id } => {
                if !state.shared.is_connected(user_id) {
                    state.leave_voice(user_id);
                }
            }
            ChannelMsg::IdleCheck => {
                state.nonces.expire(Instant::now());
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
            ChannelMsg::Shutdown => {
                // Like the idle stop, but whether or not a commit is in flight: its outcome is
                // awaited here (its `Committed` wake-up would be refused by the draining
                // mailbox), so every accepted send is acked or refused before the actor ends.
                // Sends queued behind this message are still handled (committed inline while
                // draining); later ones are refused by the mailbox and answered by the hub.
                state.shutting_down = true;
                if !state.draining {
                    state.draining = true;
                    state.flush().await;
                    let _ = myself.drain();
                }
            }
            #[cfg(feature = "test-hooks")]
            ChannelMsg::Crash => panic!("crash requested for channel {} (test hook)", state.id()),
        }
        Ok(())
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

    /// Sends a frame to the channel; a durable one first takes the next position (see
    /// `stamp`). Returns that position.
    fn broadcast(&mut self, frame: &ServerFrame, except: Option<Uuid>) -> Option<u64> {
        let (bytes, cseq) = self.stamp(frame);
        self.deliver(&bytes, cseq, except);
        cseq
    }

    /// The one place a channel frame is serialized: a durable frame takes the next position
    /// in this channel's stream and is kept for replay, in the bytes every recipient shares.
    fn stamp(&mut self, frame: &ServerFrame) -> (Frame, Option<u64>) {
        self.stream.stamp(frame)
    }

    /// Channel scope: subscribers, or for DMs both participants' sessions (whether
    /// subscribed or not, as the wire has always had it).
    fn deliver(&self, frame: &Frame, cseq: Option<u64>, except: Option<Uuid>) {
        match (self.snapshot.dm_pair, cseq) {
            (Some((a, b)), Some(cseq)) => {
                let at = DmPosition { channel_id: self.id(), epoch: self.stream.epoch, cseq };
                self.shared.sessions.send_dm_frame(a, frame, except, at);
                self.shared.sessions.send_dm_frame(b, frame, except, at);
            }
            (Some((a, b)), None) => {
                self.shared.sessions.send_to_user(a, frame, except);
                self.shared.sessions.send_to_user(b, frame, except);
            }
            (None, _) => self.subscribers.broadcast(frame, except),
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
}
