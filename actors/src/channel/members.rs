//! Membership as the channel actor holds it: REST changes applied to the hot state, removed
//! members dropped from subscribers, typing and voice; and the `channel_updated` frame.

use uuid::Uuid;

use super::{ChannelState, MemberChange};
use crate::protocol::ServerFrame;

impl ChannelState {
    pub(super) fn member_change(&mut self, change: MemberChange) {
        match change {
            MemberChange::Upsert { user_id, role } => {
                if self.snapshot.members.insert(user_id, role).is_none() {
                    // A replay from before this point would show them what they were not
                    // there for.
                    self.joined_at.insert(user_id, self.stream.cseq);
                }
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

    pub(super) fn remove_member(&mut self, user_id: Uuid) {
        self.snapshot.members.remove(&user_id);
        self.joined_at.remove(&user_id);
        self.subscribers.remove_user(user_id);
        self.typing.remove(&user_id);
        self.leave_voice(user_id);
    }

    pub(super) fn updated_frame(&self) -> ServerFrame {
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
