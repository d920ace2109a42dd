//! Typing indicators: throttled broadcasts and expiry (ephemeral frames).

use std::time::{Duration, Instant};

use ractor::ActorRef;
use uuid::Uuid;

use super::{ChannelMsg, ChannelState, Origin};
use crate::protocol::ServerFrame;

/// Typing broadcasts per (user, channel) at most this often.
const TYPING_THROTTLE: Duration = Duration::from_secs(3);
/// Typing state expires this long after the last `typing`.
const TYPING_EXPIRY: Duration = Duration::from_secs(10);

impl ChannelState {
    pub(super) fn typing(&mut self, myself: &ActorRef<ChannelMsg>, origin: Origin, typing: bool) {
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

    pub(super) fn stop_typing(&mut self, user_id: Uuid) {
        if self.typing.remove(&user_id).is_some() {
            self.broadcast_ephemeral(&ServerFrame::UserStoppedTyping { channel_id: self.id(), user_id });
        }
    }
}
