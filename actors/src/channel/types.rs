//! The payloads the channel actor's messages carry: who asks (`Origin`, `Poster`), what
//! they send (`Outgoing`, `ServerPost`), membership changes, voice actions, and the outcome
//! of a server post (`PostError`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Instant;

use bytes::Bytes;
use uuid::Uuid;

use crate::error_code::ErrorCode;
use crate::kinds::MessageType;
use crate::outbox::Outbox;
use crate::protocol::{self, Position, SendMessageFrame, ServerFrame};
use crate::roles::InstanceRole;

/// Who sent a request: the session (for replies) and its user. The user's instance role is
/// looked up when a decision needs it (`Shared::instance_roles`), never carried from connect.
#[derive(Clone)]
pub struct Origin {
    pub outbox: Arc<Outbox>,
    pub user_id: Uuid,
}

impl Origin {
    pub(crate) fn reply(&self, frame: &ServerFrame) {
        self.outbox.push(frame.encode());
    }

    pub(crate) fn error(&self, code: ErrorCode, message: impl Into<String>) {
        self.error_frame(code, message);
    }

    /// An `error` frame to this session (every one goes through here, so `unavailable`
    /// answers are counted once).
    pub fn error_frame(&self, code: ErrorCode, message: impl Into<String>) {
        if code == ErrorCode::Unavailable {
            self.outbox.metrics.unavailable.inc();
        }
        self.outbox.push(ServerFrame::error(code, message).encode());
    }
}

/// A `subscribe` with `since` (resume.md): answered with `subscribed` and a replay.
pub struct Resume {
    /// The last position the client holds in this channel, if it named one.
    pub since: Option<Position>,
    /// Bytes the whole `subscribe` frame may still replay (shared by its channels, which
    /// are asked one at a time in the frame's order).
    pub budget: Arc<AtomicUsize>,
    /// Taken by whoever answers the client first: the channel (`subscribed`) or the session
    /// giving up at its deadline (`subscribe_refused`). A late channel then attaches nothing.
    pub answered: Arc<AtomicBool>,
    /// Not the client's request: the server re-attaching a subscription after a planned shard
    /// move. No `subscribed` is sent; if the stream cannot go on from `since`, the session is
    /// told as for any loss (`resync_required`, or `out_of_sync` and 4008).
    pub quiet: bool,
}

impl Resume {
    /// The same request, to ask again (the same budget and the same answer flag).
    pub fn again(&self) -> Self {
        Self {
            since: self.since.clone(),
            budget: self.budget.clone(),
            answered: self.answered.clone(),
            quiet: self.quiet,
        }
    }
}

/// A message the client asked to send, checked for shape once ([`Outgoing::parse`]): the
/// channel actor trusts its sizes and type and checks only what needs its state.
pub struct Outgoing {
    pub ciphertext: Bytes,
    pub nonce: Bytes,
    pub message_type: MessageType,
    pub reply_to: Option<Uuid>,
    pub sender_key_id: Option<Uuid>,
    pub thread_id: Option<Uuid>,
    /// The client's idempotency key (1–64 bytes), if it sent one: repeats within
    /// `nonce::REMEMBER_FOR` get the original's answer instead of a new message.
    pub client_nonce: Option<String>,
    /// When the session got the frame (the ack latency is measured from here).
    pub received_at: Instant,
}

impl Outgoing {
    /// Largest ciphertext of a message or an edit, in bytes (wire).
    pub const MAX_CIPHERTEXT: usize = 65_536;
    /// Largest encryption nonce, in bytes (wire).
    pub const MAX_NONCE: usize = 256;

    /// Validates a decoded `send_message`: sizes, message type and idempotency key. Returns
    /// the channel it is for, or the `validation_error` text.
    pub fn parse(frame: SendMessageFrame, received_at: Instant) -> Result<(Uuid, Self), &'static str> {
        if !size_ok(&frame.ciphertext, Self::MAX_CIPHERTEXT) || !size_ok(&frame.nonce, Self::MAX_NONCE) {
            return Err("ciphertext must be 1–65536 bytes and nonce 1–256 bytes");
        }
        let message_type =
            MessageType::from_client(&frame.message_type).ok_or("message_type must be text or file")?;
        let client_nonce = protocol::client_nonce(frame.client_nonce)?;
        let message = Self {
            ciphertext: Bytes::from(frame.ciphertext),
            nonce: Bytes::from(frame.nonce),
            message_type,
            reply_to: frame.reply_to,
            sender_key_id: frame.sender_key_id,
            thread_id: frame.thread_id,
            client_nonce,
            received_at,
        };
        Ok((frame.channel_id, message))
    }
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

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub enum VoiceAction {
    Join,
    Leave,
    Kick { target: Uuid },
}

/// A message the server posts on its own (not typed on a socket).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ServerPost {
    /// Stored `sender_id` (None for webhook messages).
    pub sender_id: Option<Uuid>,
    /// `sender_id` of the live `new_message` (for webhooks: the webhook's creator).
    pub live_sender_id: Option<Uuid>,
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub message_type: MessageType,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PostError {
    /// The channel's rules refuse it: (error code, text), e.g. not a member, archived.
    Refused(ErrorCode, String),
    /// Its scheduled-message claim was already taken: it was delivered before.
    AlreadyDelivered,
    Unavailable,
    Internal(String),
}

/// Whether a client-chosen blob is present and within its limit.
pub(crate) fn size_ok(bytes: &[u8], max: usize) -> bool {
    !bytes.is_empty() && bytes.len() <= max
}
