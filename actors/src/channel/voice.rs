//! The channel's voice session: join (bounded), leave, kick, and the participant list.

use uuid::Uuid;

use super::{ChannelState, Origin, VoiceAction};
use crate::error_code::ErrorCode;
use crate::protocol::ServerFrame;
use crate::roles::Level;

/// Most participants in one voice session.
const MAX_VOICE: usize = 25;

impl ChannelState {
    pub(super) fn voice_frame(&self) -> ServerFrame {
        ServerFrame::VoiceStateUpdate { channel_id: self.id(), participants: self.voice.clone() }
    }

    pub(super) fn voice(&mut self, origin: Origin, action: VoiceAction) {
        let user_id = origin.user_id;
        match action {
            VoiceAction::Join => {
                if !self.is_member(user_id) {
                    return origin.error(ErrorCode::Forbidden, "you are not a member of this channel");
                }
                if !self.voice.contains(&user_id) {
                    if self.voice.len() >= MAX_VOICE {
                        return origin.error(ErrorCode::VoiceFull, "this voice channel is full");
                    }
                    self.voice.push(user_id);
                    self.shared.voice_joined(user_id, self.id());
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
                    return origin.error(ErrorCode::Forbidden, "you cannot remove this user from voice");
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

    pub(super) fn leave_voice(&mut self, user_id: Uuid) {
        if let Some(pos) = self.voice.iter().position(|u| *u == user_id) {
            self.voice.remove(pos);
            self.shared.voice_left(user_id, self.id());
            self.broadcast(&ServerFrame::UserLeftVoice { channel_id: self.id(), user_id }, None);
            self.broadcast(&self.voice_frame(), None);
        }
    }
}
