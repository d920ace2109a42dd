//! The group commit: pending messages are stored in batches (one transaction each, with their
//! scheduled-message claims), then acknowledged to their authors and announced to everyone
//! else. Nothing is acknowledged before its commit.

use std::time::Instant;

use bytes::Bytes;
use palaver_entity::{messages, users};
use ractor::{ActorRef, RpcReplyPort};
use sea_orm::EntityTrait;
use uuid::Uuid;

use super::nonce::Sent;
use super::{ChannelMsg, ChannelState, Origin, PostError};
use crate::error_code::ErrorCode;
use crate::protocol::ServerFrame;
use crate::shared::Shared;
use crate::sqlite_writer::WriteFailure;
use crate::store;

/// Most messages one insert statement carries.
pub(super) const MAX_BATCH: usize = 256;

/// Who hears about a pending message once it is committed.
pub(super) enum Author {
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
    pub(super) fn refuse(self, code: ErrorCode, text: &'static str) {
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
    /// Who hears about it once committed.
    pub(super) author: Author,
    /// The row to insert.
    pub(super) row: messages::Model,
    /// When its session got the `send_message` (socket sends): the ack latency's start.
    pub(super) received_at: Option<Instant>,
}

/// A finished group commit: its batch and what the database said.
pub(super) type CommitOutcome = (Vec<Pending>, Result<Vec<usize>, CommitError>);

#[derive(Debug)]
pub enum CommitError {
    Unavailable,
    Internal(String),
}

/// Stores one batch of pending messages (with their scheduled-message claims) in one
/// transaction; `Ok` lists the entries whose claim was already taken. Its size and duration
/// are counted.
pub(super) async fn commit_batch(
    shared: &Shared,
    batch: &[Pending],
    fence: Option<store::Fence>,
) -> Result<Vec<usize>, CommitError> {
    let started = Instant::now();
    let result = insert_batch(shared, batch, fence).await;
    shared.metrics.commit_batch_rows.observe(batch.len() as u64);
    shared.metrics.commit_seconds.observe_duration(started.elapsed());
    result
}

async fn insert_batch(
    shared: &Shared,
    batch: &[Pending],
    fence: Option<store::Fence>,
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
    // SQLite (never fenced: clusters run on PostgreSQL) commits on its writer thread.
    if let (Some(writer), None) = (&shared.sqlite_writer, fence) {
        return writer.insert_messages(rows, claims).await.map_err(|failure| match failure {
            WriteFailure::Unavailable(detail) => {
                tracing::warn!(%detail, "message commit: the database is unavailable");
                CommitError::Unavailable
            }
            WriteFailure::Internal(detail) => CommitError::Internal(detail),
        });
    }
    match store::insert_messages(&shared.db, rows, &claims, fence).await {
        Ok(lost) => Ok(lost),
        // A stale owner: nothing was stored, and nothing may be acked. The senders retry
        // (with `client_nonce`, safely) and reach the new owner.
        Err(sea_orm::DbErr::Custom(text)) if text == store::FENCED => {
            tracing::warn!(?fence, "a commit was refused by its fence: this node no longer owns the shard");
            Err(CommitError::Unavailable)
        }
        Err(err) if crate::is_unavailable(&err) => Err(CommitError::Unavailable),
        Err(err) => Err(CommitError::Internal(err.to_string())),
    }
}

impl ChannelState {
    /// Commits what is pending: normally through `start_commit`; while draining for an idle
    /// stop, right here, because a commit task's `Committed` would be refused by the
    /// draining mailbox and its senders never acked.
    pub(super) async fn commit_pending(&mut self, myself: &ActorRef<ChannelMsg>) {
        if !self.draining {
            return self.start_commit(myself);
        }
        while !self.committing && !self.pending.is_empty() {
            let take = self.pending.len().min(MAX_BATCH);
            let batch: Vec<Pending> = self.pending.drain(..take).collect();
            self.subscribers.set_unannounced(true);
            let result = commit_batch(&self.shared, &batch, self.fence).await;
            self.settle(batch, result).await;
            self.subscribers.set_unannounced(false);
        }
    }

    /// Starts a commit of everything pending unless one is in flight (then the pending
    /// sends wait and go together in the next one: group commit).
    pub(super) fn start_commit(&mut self, myself: &ActorRef<ChannelMsg>) {
        if self.committing || self.pending.is_empty() {
            return;
        }
        let take = self.pending.len().min(MAX_BATCH);
        let batch: Vec<Pending> = self.pending.drain(..take).collect();
        self.committing = true;
        self.subscribers.set_unannounced(true);
        let shared = self.shared.clone();
        let fence = self.fence;
        let myself = myself.clone();
        let (done, outcome) = tokio::sync::oneshot::channel();
        self.in_flight = Some(outcome);
        tokio::spawn(async move {
            let result = commit_batch(&shared, &batch, fence).await;
            // If the actor died meanwhile, its restart reloads state; these senders get no
            // ack (their socket sees nothing) and will resend: nothing acked is lost.
            let _ = done.send((batch, result));
            let _ = myself.send_message(ChannelMsg::Committed);
        });
    }

    pub(super) async fn committed(&mut self, myself: &ActorRef<ChannelMsg>) {
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
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                self.committing = false;
                self.forget_lost_nonces();
            }
        }
        self.start_commit(myself);
        if !self.committing {
            self.subscribers.set_unannounced(false);
        }
    }

    /// A batch's commit is over: acks and `new_message` frames, or the error, to its senders.
    pub(super) async fn settle(&mut self, batch: Vec<Pending>, result: Result<Vec<usize>, CommitError>) {
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
                        (ErrorCode::Unavailable, "the database is unavailable, message not sent")
                    }
                    CommitError::Internal(detail) => {
                        tracing::error!(channel = %self.id(), error = %detail, "message commit failed");
                        (ErrorCode::InternalError, "message not sent: internal error")
                    }
                };
                for pending in batch {
                    self.nonce_failed(&pending.row, code, text);
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
    pub(super) async fn announce(&mut self, pending: Pending) {
        let Pending { author, mut row, received_at } = pending;
        let client_nonce = row.client_nonce.take();
        let sender_id = row.sender_id;
        if let Some(user_id) = row.sender_id
            && self.typing.contains_key(&user_id)
        {
            self.stop_typing(user_id);
        }
        let live_sender = match &author {
            Author::Socket(_) => row.sender_id,
            Author::Server { live_sender_id, .. } => *live_sender_id,
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
        let (id, channel_id, created_at, thread_id) = (row.id, row.channel_id, row.created_at, row.thread_id);
        let frame = ServerFrame::NewMessage {
            id,
            channel_id,
            sender_id: live_sender,
            ciphertext: Bytes::from(row.ciphertext),
            nonce: Bytes::from(row.nonce),
            message_type: row.message_type,
            reply_to: row.reply_to_id,
            sender_key_id: row.sender_key_id,
            created_at,
            thread_id,
        };
        // The position first: the sender's ack carries it, and is queued before anyone else
        // hears of the message.
        let (bytes, cseq) = self.stamp(&frame);
        let except = match author {
            Author::Socket(origin) => {
                let sent = Sent { id, channel_id, created_at, thread_id, cseq };
                if client_nonce.is_some() {
                    self.nonce_committed(live_sender, client_nonce.as_ref(), &sent);
                }
                origin.reply(&sent.frame(client_nonce));
                if let Some(received_at) = received_at {
                    self.shared.metrics.ack_seconds.observe_duration(received_at.elapsed());
                }
                Some(origin.outbox.session_id)
            }
            Author::Server { reply, .. } => {
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(id));
                }
                None
            }
        };
        self.deliver(&bytes, cseq, except);
        self.report_offline_recipient(sender_id, channel_id);
    }

    /// A DM whose recipient has no open socket is reported (Web Push). Checked after the
    /// delivery, so a recipient who had a socket at that moment got the frame instead.
    fn report_offline_recipient(&self, sender: Option<Uuid>, channel_id: Uuid) {
        let (Some((a, b)), Some(sender)) = (self.snapshot.dm_pair, sender) else { return };
        let Some(sink) = self.shared.offline_dm.get() else { return };
        let recipient = if a == sender { b } else { a };
        if recipient != sender && !self.shared.is_connected(recipient) {
            sink.offline_dm(crate::shared::OfflineDm { recipient, sender, channel_id });
        }
    }

    /// A commit ended without an outcome: the keys of its sends are no longer pending (their
    /// repeats are new attempts); keys of sends still queued stay.
    pub(super) fn forget_lost_nonces(&mut self) {
        let pending = &self.pending;
        self.nonces.forget_lost(|(sender, key)| {
            pending
                .iter()
                .any(|p| p.row.sender_id == Some(*sender) && p.row.client_nonce.as_ref() == Some(key))
        });
    }

    pub(super) fn remember(&mut self, id: Uuid, thread: Option<Uuid>) {
        if self.recent.len() >= 512 {
            self.recent.pop_front();
        }
        self.recent.push_back((id, thread));
    }
}
