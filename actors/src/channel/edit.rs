//! Changes to existing messages: edit (own, within the edit window), delete (own, or anyone's
//! as moderator+), and reactions (throttled, bounded distinct emoji).

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use uuid::Uuid;

use super::{ChannelState, Origin};
use crate::error_code::ErrorCode;
use crate::protocol::ServerFrame;
use crate::store;

/// One reaction add per user per this interval.
const REACTION_COOLDOWN: Duration = Duration::from_millis(200);
/// Most distinct emoji on one message.
const MAX_DISTINCT_EMOJI: u64 = 20;
/// Edits are allowed this long after sending.
const EDIT_WINDOW_SECS: i64 = 15 * 60;

impl ChannelState {
    pub(super) async fn edit(&mut self, origin: Origin, message_id: Uuid, ciphertext: Bytes, nonce: Bytes) {
        let db = &self.shared.db;
        let message = match store::live_message(db, message_id).await {
            Ok(Some(m)) if m.channel_id == self.id() => m,
            Ok(_) => return origin.error(ErrorCode::NotFound, "message not found"),
            Err(_) => return origin.error(ErrorCode::Unavailable, "the database is unavailable, try again"),
        };
        if message.sender_id != Some(origin.user_id) {
            return origin.error(ErrorCode::Forbidden, "you can only edit your own messages");
        }
        if let Some(until) = self.snapshot.timeouts.get(&origin.user_id)
            && *until > Utc::now()
        {
            return origin.error(ErrorCode::TimedOut, "you are timed out in this channel");
        }
        if (Utc::now() - message.created_at).num_seconds() > EDIT_WINDOW_SECS {
            return origin.error(ErrorCode::ValidationError, "messages can only be edited for 15 minutes");
        }
        let edited_at = palaver_entity::now();
        let written =
            store::record_edit(db, &message, ciphertext.to_vec(), nonce.to_vec(), edited_at, self.fence)
                .await;
        self.history.invalidate();
        match written {
            Ok(()) => {}
            Err(err) if crate::is_unavailable(&err) || store::is_fenced(&err) => {
                return origin.error(ErrorCode::Unavailable, "the database is unavailable, try again");
            }
            Err(err) => {
                tracing::error!(error = %err, "edit failed");
                return origin.error(ErrorCode::InternalError, "edit failed");
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

    pub(super) async fn delete(&mut self, origin: Origin, message_id: Uuid) {
        let db = &self.shared.db;
        let message = match store::live_message(db, message_id).await {
            Ok(Some(m)) if m.channel_id == self.id() => m,
            Ok(_) => return origin.error(ErrorCode::NotFound, "message not found"),
            Err(_) => return origin.error(ErrorCode::Unavailable, "the database is unavailable, try again"),
        };
        if message.sender_id != Some(origin.user_id) && !self.level(&origin).is_privileged() {
            return origin.error(ErrorCode::Forbidden, "you cannot delete this message");
        }
        let deleted = store::owner_write!(db, self.fence, |conn| store::soft_delete(conn, message_id));
        self.history.invalidate();
        match deleted {
            Ok(true) => {
                self.broadcast(&ServerFrame::MessageDeleted { message_id, channel_id: self.id() }, None);
            }
            Ok(false) => origin.error(ErrorCode::NotFound, "message not found"),
            Err(_) => origin.error(ErrorCode::Unavailable, "the database is unavailable, try again"),
        }
    }

    pub(super) async fn react(&mut self, origin: Origin, message_id: Uuid, emoji: String, add: bool) {
        let user_id = origin.user_id;
        // Members only, checked first: the throttle map below must not grow with outsiders.
        if !self.is_member(user_id) {
            return origin.error(ErrorCode::Forbidden, "you are not a member of this channel");
        }
        if add {
            if let Some(last) = self.last_reaction.get(&user_id)
                && last.elapsed() < REACTION_COOLDOWN
            {
                return origin.error(ErrorCode::RateLimited, "reacting too fast");
            }
            self.last_reaction.insert(user_id, Instant::now());
        }
        let db = &self.shared.db;
        match store::live_message(db, message_id).await {
            Ok(Some(m)) if m.channel_id == self.id() => {}
            Ok(_) => return origin.error(ErrorCode::NotFound, "message not found"),
            Err(_) => return origin.error(ErrorCode::Unavailable, "the database is unavailable, try again"),
        }
        // The distinct-emoji count and the insert run under one owner, so they cannot race.
        let outcome = if add {
            store::owner_write!(db, self.fence, |conn| store::add_reaction(
                conn,
                message_id,
                user_id,
                &emoji,
                MAX_DISTINCT_EMOJI
            ))
        } else {
            store::owner_write!(db, self.fence, |conn| store::remove_reaction(
                conn, message_id, user_id, &emoji
            ))
        };
        self.history.invalidate();
        match outcome {
            Ok(store::ReactionOutcome::Changed) | Ok(store::ReactionOutcome::AlreadyThere) if add => {
                let channel_id = self.id();
                self.broadcast(&ServerFrame::ReactionAdded { message_id, channel_id, user_id, emoji }, None);
            }
            Ok(store::ReactionOutcome::Changed) => {
                let channel_id = self.id();
                self.broadcast(
                    &ServerFrame::ReactionRemoved { message_id, channel_id, user_id, emoji },
                    None,
                );
            }
            Ok(store::ReactionOutcome::TooManyEmoji) => {
                origin.error(ErrorCode::ValidationError, "a message can carry at most 20 different reactions")
            }
            Ok(_) => {}
            Err(_) => origin.error(ErrorCode::Unavailable, "the database is unavailable, try again"),
        }
    }
}
