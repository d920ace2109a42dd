//! Accepting content: the channel's send rules (membership, DM blocks, archived, read-only,
//! slow mode, timeouts), reply and thread references, and queueing a socket send or a server
//! post for the next group commit.

use std::time::{Duration, Instant};

use chrono::Utc;
use palaver_entity::messages;
use ractor::{ActorRef, RpcReplyPort};
use uuid::Uuid;

use super::commit::{Author, Pending};
use super::{ChannelMsg, ChannelState, Origin, Outgoing, PostError, Poster, ServerPost};
use crate::error_code::ErrorCode;
use crate::kinds::{ChannelType, MessageType};
use crate::roles::{Level, manages_webhooks};
use crate::store;

/// Recheck a DM's block / shared-community status at most this often.
const DM_RECHECK: Duration = Duration::from_secs(2);

/// Whether a DM may carry messages now: `Err((error code, text))` when it may not.
pub(super) type DmVerdict = Result<(), (ErrorCode, &'static str)>;

impl ChannelState {
    /// Checks a send against the channel's rules and queues it for the next commit.
    pub(super) async fn accept(&mut self, myself: &ActorRef<ChannelMsg>, origin: Origin, msg: Outgoing) {
        let user_id = origin.user_id;
        // A repeat is answered before the rules: it asks for no new message (and slow mode
        // must not refuse the retry of a send it let through).
        if let Some(key) = &msg.client_nonce
            && self.answer_repeat(&origin, key)
        {
            return;
        }
        let privileged = self.level(&origin).is_privileged();
        if let Err((code, text)) = self.send_rules(user_id, privileged, true).await {
            return origin.error(code, text);
        }
        // After the rules, so only members make the actor ask the database.
        if let Some(key) = &msg.client_nonce
            && self.answer_stored_repeat(&origin, key).await
        {
            return;
        }
        let thread_id = match self.resolve_reference(msg.reply_to, msg.thread_id).await {
            Ok(thread) => thread,
            Err(Some(text)) => return origin.error(ErrorCode::ValidationError, text),
            Err(None) => {
                return origin.error(ErrorCode::Unavailable, "the database is unavailable, try again");
            }
        };
        if ChannelType::Gallery.is(&self.snapshot.channel.channel_type)
            && thread_id.is_none()
            && msg.message_type != MessageType::File
        {
            return origin
                .error(ErrorCode::ValidationError, "gallery channels accept only files at the top level");
        }
        if !privileged && self.snapshot.channel.slow_mode_seconds > 0 {
            self.last_send.insert(user_id, Instant::now());
        }
        let mut row =
            self.new_row(Some(user_id), Vec::from(msg.ciphertext), Vec::from(msg.nonce), msg.message_type);
        row.reply_to_id = msg.reply_to;
        row.sender_key_id = msg.sender_key_id;
        row.thread_id = thread_id;
        if let Some(key) = &msg.client_nonce {
            self.nonces.accepted((user_id, key.clone()));
        }
        row.client_nonce = msg.client_nonce;
        self.pending.push(Pending {
            author: Author::Socket(origin),
            row,
            received_at: Some(msg.received_at),
        });
        self.commit_pending(myself).await;
    }

    /// Queues a server post (webhook, scheduled delivery) after the rules for its user.
    pub(super) async fn accept_post(
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
        self.pending.push(Pending { author, row, received_at: None });
        self.commit_pending(myself).await;
    }

    /// A new message row with a fresh ordered id, the server's time and the channel's TTL.
    pub(super) fn new_row(
        &mut self,
        sender_id: Option<Uuid>,
        ciphertext: Vec<u8>,
        nonce: Vec<u8>,
        message_type: MessageType,
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
            message_type: message_type.as_str().to_string(),
            reply_to_id: None,
            sender_key_id: None,
            thread_id: None,
            edited_at: None,
            deleted_at: None,
            quarantined_at: None,
            expires_at,
            webhook_content: None,
            created_at,
            client_nonce: None,
        }
    }

    /// The send rules for content from `poster` (slow mode excepted: it paces typing).
    pub(super) async fn poster_rules(&mut self, poster: Poster) -> Result<(), PostError> {
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
                _ => Err((
                    ErrorCode::Forbidden,
                    "this webhook's creator may no longer manage webhooks here".into(),
                )),
            },
        };
        result.map_err(|(code, text)| match code {
            ErrorCode::Unavailable => PostError::Unavailable,
            _ => PostError::Refused(code, text),
        })
    }

    /// The channel's rules for a send by `user_id`: membership, DM blocks, archived,
    /// read-only, slow mode (when `slow_mode`) and timeouts. `Err((code, text))` refuses.
    pub(super) async fn send_rules(
        &mut self,
        user_id: Uuid,
        privileged: bool,
        slow_mode: bool,
    ) -> Result<(), (ErrorCode, String)> {
        if !self.is_member(user_id) {
            return Err((ErrorCode::Forbidden, "you are not a member of this channel".into()));
        }
        if let Some((a, b)) = self.snapshot.dm_pair {
            let other = if a == user_id { b } else { a };
            return self.dm_allowed(user_id, other).await.map_err(|(code, text)| (code, text.to_string()));
        }
        let channel = &self.snapshot.channel;
        if channel.archived {
            return Err((ErrorCode::Archived, "this channel is archived".into()));
        }
        if channel.read_only && !privileged {
            return Err((ErrorCode::ReadOnly, "this channel is read-only".into()));
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
                return Err((ErrorCode::SlowMode, format!("slow mode: wait {wait} seconds")));
            }
        }
        if !privileged && let Some(until) = self.snapshot.timeouts.get(&user_id) {
            let left = (*until - Utc::now()).num_seconds();
            if left > 0 {
                return Err((ErrorCode::TimedOut, format!("you are timed out for {left} more seconds")));
            }
        }
        Ok(())
    }

    /// A fresh UUIDv7 strictly greater than every earlier one (commit order = id order).
    pub(super) fn next_id(&mut self) -> Uuid {
        let mut id = Uuid::now_v7();
        if id <= self.last_id {
            id = Uuid::from_u128(self.last_id.as_u128() + 1);
        }
        self.last_id = id;
        id
    }

    /// Validates `reply_to` / `thread_id` (same channel) and resolves a thread reply to its root.
    /// `Err(Some(text))` = invalid, `Err(None)` = database unavailable.
    pub(super) async fn resolve_reference(
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
    pub(super) async fn lookup_here(&self, id: Uuid) -> Result<Option<Option<Uuid>>, Option<String>> {
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

    pub(super) async fn dm_allowed(&mut self, me: Uuid, other: Uuid) -> DmVerdict {
        if let Some((at, verdict)) = &self.dm_check
            && at.elapsed() < DM_RECHECK
        {
            return *verdict;
        }
        let db = &self.shared.db;
        let verdict = match store::blocked_either_way(db, me, other).await {
            Ok(true) => Err((ErrorCode::Blocked, "you cannot message this user")),
            Ok(false) => match store::share_community(db, me, other).await {
                Ok(true) => Ok(()),
                Ok(false)
                    if self.shared.is_instance_owner(me).await
                        || self.shared.is_instance_owner(other).await =>
                {
                    Ok(())
                }
                Ok(false) => Err((ErrorCode::Forbidden, "you no longer share a community with this user")),
                Err(_) => return Err((ErrorCode::Unavailable, "the database is unavailable, try again")),
            },
            Err(_) => return Err((ErrorCode::Unavailable, "the database is unavailable, try again")),
        };
        self.dm_check = Some((Instant::now(), verdict));
        verdict
    }
}
