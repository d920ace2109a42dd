//! The channel command path: every REST write to a channel's state goes through its actor.
//!
//! A route parses and gates (permission checks), then hands the channel actor a
//! [`ChannelCommand`] through [`Hub::channel_command`] / [`Hub::channel_write`] and maps the
//! answer. The actor runs each command inside one handler, so nothing else of the channel
//! happens in between:
//!
//! 1. **Flush.** Every send accepted before the command is committed and announced first: the
//!    in-flight group commit is awaited (its outcome comes through a oneshot, never through
//!    the mailbox, so the command cannot wait on a message queued behind itself) and what is
//!    still pending is committed right here.
//! 2. **Send rules.** A command carrying a `poster` (content: a poll, a pin…) meets the same
//!    rules as a socket send by that poster (`ChannelState::poster_rules`); a refusal answers
//!    `Err` and the write never runs.
//! 3. **Write.** The write itself is a boxed future built by the caller. The database logic of
//!    channel writes (bans, members, roles, settings, pins, polls, sender keys, admin deletes,
//!    images) lives in the server crate, which this crate cannot call; the future carries it
//!    in, and the actor decides *when* it runs. It must only touch the database: a write that
//!    called this channel's actor would wait on itself.
//! 4. **Effects.** The write returns the [`Effect`]s of what it committed (nothing when it
//!    failed); the actor applies them to its hot state and emits their frames, in order, before
//!    it handles its next message. So a send after a ban is refused, and the ban's frame
//!    follows every message accepted before it: the actor orders every event of its channel.
//!
//! The caller's own result (a view to answer, or its `ApiError`) goes back through a oneshot
//! of [`Hub::channel_write`], read once the actor has answered, so the response leaves after
//! the change is in effect. A channel nobody has open gets an actor started for the command
//! (its snapshot is loaded before the write; the write then updates it like any other).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use ractor::{ActorProcessingErr, ActorRef, RpcReplyPort};

use super::commit::{MAX_BATCH, commit_batch};
use super::{ChannelMsg, ChannelState, MemberChange, Pending, PostError, Poster};
use crate::error_code::ErrorCode;
use crate::protocol::ServerFrame;
use crate::store;

/// How long a route waits for a channel actor to run its command (the wait includes the
/// flush of earlier sends and the write itself).
pub const CHANNEL_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// The database part of a command: runs inside the actor, answers the effects to apply.
pub type ChannelWrite = Pin<Box<dyn Future<Output = Vec<Effect>> + Send>>;

/// A write to a channel, ordered by its actor (see the module doc).
pub struct ChannelCommand {
    /// Content entering the channel on someone's behalf: the send rules for this poster must
    /// pass before the write runs. `None` for moderation and settings (the route gated them).
    pub poster: Option<Poster>,
    /// The write; its effects are applied once it returns.
    pub write: ChannelWrite,
}

/// What a committed write changes in the live channel, applied in order by the actor.
#[derive(Debug, Clone)]
pub enum Effect {
    /// A frame for every subscriber (pins, polls, sender keys, role updates, admin deletes);
    /// held history pages are dropped with it, as the frame announces a change.
    Broadcast(ServerFrame),
    /// Membership changed: the hot member table follows; a removed member hears the event
    /// first and is then unsubscribed (see `MemberChange`).
    Member(MemberChange),
    /// Settings changed in the database: reload the snapshot; `announce` emits
    /// `channel_updated` with the new settings.
    Reload { announce: bool },
    /// Messages changed without a frame (purge of a deleted message, quarantine): held
    /// history pages are stale.
    HistoryChanged,
    /// The channel row is gone: subscribers are dropped without a word, voice is cleared, and
    /// the actor stops after answering.
    Deleted,
}

/// A command's outcome: `Ok` once its effects are in force, or why it did not run.
pub type CommandAnswer = Result<(), PostError>;

impl ChannelState {
    /// Runs one command: flush earlier sends, check the poster, write, apply the effects.
    /// `Err` only when reloading the settings failed (the supervisor restarts the actor,
    /// which loads them afresh), after the caller was answered.
    pub(super) async fn run_command(
        &mut self,
        myself: &ActorRef<ChannelMsg>,
        command: ChannelCommand,
        reply: RpcReplyPort<CommandAnswer>,
    ) -> Result<(), ActorProcessingErr> {
        self.flush().await;
        if let Some(poster) = command.poster
            && let Err(refusal) = self.poster_rules(poster).await
        {
            let _ = reply.send(Err(refusal));
            return Ok(());
        }
        let effects = command.write.await;
        let mut deleted = false;
        let mut reload_failed = None;
        for effect in effects {
            match effect {
                Effect::Broadcast(frame) => {
                    self.history.invalidate();
                    self.broadcast(&frame, None);
                }
                Effect::Member(change) => self.member_change(change),
                Effect::Reload { announce } => match store::load_channel(&self.shared.db, self.id()).await {
                    Ok(Some(fresh)) => {
                        self.snapshot = fresh;
                        if announce {
                            let frame = self.updated_frame();
                            self.broadcast(&frame, None);
                        }
                    }
                    Ok(None) => {}
                    Err(err) => reload_failed = Some(err),
                },
                Effect::HistoryChanged => self.history.invalidate(),
                Effect::Deleted => {
                    self.forget_deleted();
                    deleted = true;
                }
            }
        }
        let _ = reply.send(Ok(()));
        if deleted {
            myself.stop(Some("deleted".into()));
        }
        match reload_failed {
            Some(err) => Err(err.into()),
            None => Ok(()),
        }
    }

    /// Commits and announces every send accepted so far: the in-flight batch (awaited through
    /// its oneshot, not the mailbox) and then whatever is pending.
    pub(super) async fn flush(&mut self) {
        if let Some(outcome) = self.in_flight.take() {
            match outcome.await {
                Ok((batch, result)) => self.settle(batch, result).await,
                Err(_) => self.forget_lost_nonces(),
            }
            self.committing = false;
        }
        while !self.pending.is_empty() {
            let take = self.pending.len().min(MAX_BATCH);
            let batch: Vec<Pending> = self.pending.drain(..take).collect();
            self.subscribers.set_unannounced(true);
            let result = commit_batch(&self.shared, &batch, self.fence).await;
            self.settle(batch, result).await;
        }
        self.subscribers.set_unannounced(false);
    }

    /// The channel was deleted: nobody hears from it again, voice and typing are cleared, and
    /// sends still waiting for a commit are refused.
    pub(super) fn forget_deleted(&mut self) {
        self.subscribers.clear();
        for user_id in std::mem::take(&mut self.voice) {
            self.shared.voice_left(user_id, self.id());
        }
        self.typing.clear();
        let text = "this channel was deleted; message not sent";
        for pending in std::mem::take(&mut self.pending) {
            self.nonce_failed(&pending.row, ErrorCode::NotFound, text);
            pending.author.refuse(ErrorCode::NotFound, text);
        }
    }
}
