//! The WebSocket wire protocol: one enum per direction (see `docs/wire/websocket.md`).
//!
//! Every frame is a JSON object with a snake_case `type` and its fields at the top level.
//! Byte arrays travel as arrays of integers; timestamps as RFC 3339 strings.

use std::collections::HashMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, Serializer};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use uuid::Uuid;

use crate::error_code::ErrorCode;
pub use crate::wire_time::rfc3339;

/// A serialized server frame, shared without copying by every recipient.
pub type Frame = Utf8Bytes;

/// `send_message`: the hot frame, decoded without the enum (see [`decode`]).
#[derive(Debug, Deserialize)]
pub struct SendMessageFrame {
    pub channel_id: Uuid,
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub message_type: String,
    #[serde(default)]
    pub reply_to: Option<Uuid>,
    #[serde(default)]
    pub sender_key_id: Option<Uuid>,
    #[serde(default)]
    pub thread_id: Option<Uuid>,
    /// The client's idempotency key as sent (any JSON type decodes, so that a wrong type is
    /// answered with `validation_error` by the session rather than refused as undecodable;
    /// `null` decodes as absent). Checked by [`client_nonce`].
    #[serde(default)]
    pub client_nonce: Option<RawClientNonce>,
}

/// A `client_nonce` as sent: a string, or anything else, which is skipped without being
/// built in memory (a frame of nested arrays must not cost more than its text).
#[derive(Debug, PartialEq, Eq)]
pub enum RawClientNonce {
    Text(String),
    NotText,
}

impl<'de> Deserialize<'de> for RawClientNonce {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawClientNonce;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawClientNonce::Text(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(RawClientNonce::Text(v))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(RawClientNonce::NotText)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(RawClientNonce::NotText)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(RawClientNonce::NotText)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(RawClientNonce::NotText)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(RawClientNonce::NotText)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(RawClientNonce::NotText)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Longest `client_nonce`, in bytes (docs/wire/resume.md).
pub const CLIENT_NONCE_MAX: usize = 64;

/// The checked `client_nonce` of a `send_message`: `Ok(None)` when absent or `null`,
/// `Err(text)` for a wrong type, an empty string or one over [`CLIENT_NONCE_MAX`] bytes.
pub fn client_nonce(raw: Option<RawClientNonce>) -> Result<Option<String>, &'static str> {
    match raw {
        None => Ok(None),
        Some(RawClientNonce::Text(key)) if !key.is_empty() && key.len() <= CLIENT_NONCE_MAX => Ok(Some(key)),
        Some(_) => Err("client_nonce must be a string of 1–64 bytes"),
    }
}

/// `edit_message`, also carrying a ciphertext.
#[derive(Debug, Deserialize)]
pub struct EditMessageFrame {
    pub message_id: Uuid,
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
}

/// A position in a channel's stream, as a client holds it (resume.md, "Positions").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Position {
    /// Compared for equality only; any other text simply does not match.
    pub epoch: String,
    pub cseq: u64,
}

/// Frames a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Authenticate {
        token: String,
    },
    SendMessage(SendMessageFrame),
    EditMessage(EditMessageFrame),
    DeleteMessage {
        message_id: Uuid,
    },
    UpdatePresence {
        status: String,
    },
    Typing {
        channel_id: Uuid,
    },
    StopTyping {
        channel_id: Uuid,
    },
    /// `since` present (even `{}`): answered per channel and the socket becomes
    /// resume-capable (resume.md); absent: today's silent subscribe.
    Subscribe {
        channel_ids: Vec<Uuid>,
        since: Option<HashMap<Uuid, Position>>,
    },
    Unsubscribe {
        channel_ids: Vec<Uuid>,
    },
    RtcOffer {
        target_user_id: Uuid,
        session_id: Uuid,
        sdp: String,
    },
    RtcAnswer {
        target_user_id: Uuid,
        session_id: Uuid,
        sdp: String,
    },
    RtcIceCandidate {
        target_user_id: Uuid,
        session_id: Uuid,
        candidate: String,
    },
    JoinVoice {
        channel_id: Uuid,
    },
    LeaveVoice {
        channel_id: Uuid,
    },
    KickFromVoice {
        channel_id: Uuid,
        user_id: Uuid,
    },
    AddReaction {
        message_id: Uuid,
        emoji: String,
    },
    RemoveReaction {
        message_id: Uuid,
        emoji: String,
    },
    MarkRead {
        channel_id: Uuid,
        message_id: Uuid,
    },
    MarkAllRead,
    Ping {
        timestamp: i64,
    },
}

impl ClientFrame {
    /// The frame's `type` as sent (metrics count frames by it).
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Authenticate { .. } => "authenticate",
            Self::SendMessage(_) => "send_message",
            Self::EditMessage(_) => "edit_message",
            Self::DeleteMessage { .. } => "delete_message",
            Self::UpdatePresence { .. } => "update_presence",
            Self::Typing { .. } => "typing",
            Self::StopTyping { .. } => "stop_typing",
            Self::Subscribe { .. } => "subscribe",
            Self::Unsubscribe { .. } => "unsubscribe",
            Self::RtcOffer { .. } => "rtc_offer",
            Self::RtcAnswer { .. } => "rtc_answer",
            Self::RtcIceCandidate { .. } => "rtc_ice_candidate",
            Self::JoinVoice { .. } => "join_voice",
            Self::LeaveVoice { .. } => "leave_voice",
            Self::KickFromVoice { .. } => "kick_from_voice",
            Self::AddReaction { .. } => "add_reaction",
            Self::RemoveReaction { .. } => "remove_reaction",
            Self::MarkRead { .. } => "mark_read",
            Self::MarkAllRead => "mark_all_read",
            Self::Ping { .. } => "ping",
        }
    }

    /// WebRTC signalling relayed to a peer (rate-limited by their own bucket).
    pub fn is_signalling(&self) -> bool {
        matches!(self, Self::RtcOffer { .. } | Self::RtcAnswer { .. } | Self::RtcIceCandidate { .. })
    }
}

fn ser_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(t))
}

/// Bytes as a JSON array of integers (never base64).
fn ser_bytes<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(b.iter())
}

/// A server frame serialized on another node: its text and whether it is durable (takes a
/// position in its channel's stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayedFrame {
    pub text: String,
    pub durable: bool,
}

/// Frames the server sends. Field names and presence follow the wire tables exactly.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// A frame another node of a cluster serialized (a REST change made there, applied by
    /// this channel's owner): its bytes are sent as they are. Never serialized by serde.
    #[serde(skip)]
    Relayed(RelayedFrame),
    Authenticated {
        user_id: Uuid,
        server_version: String,
    },
    NewMessage {
        id: Uuid,
        channel_id: Uuid,
        sender_id: Option<Uuid>,
        #[serde(serialize_with = "ser_bytes")]
        ciphertext: Bytes,
        #[serde(serialize_with = "ser_bytes")]
        nonce: Bytes,
        message_type: String,
        reply_to: Option<Uuid>,
        sender_key_id: Option<Uuid>,
        #[serde(serialize_with = "ser_time")]
        created_at: DateTime<Utc>,
        #[serde(skip_serializing_if = "Option::is_none")]
        thread_id: Option<Uuid>,
    },
    MessageSent {
        id: Uuid,
        channel_id: Uuid,
        #[serde(serialize_with = "ser_time")]
        created_at: DateTime<Utc>,
        /// The message's position in its channel (absent only when it is not known, e.g. an
        /// answer rebuilt from the database after a restart).
        #[serde(skip_serializing_if = "Option::is_none")]
        cseq: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        thread_id: Option<Uuid>,
        /// Echo of the send's idempotency key; absent for sends without one.
        #[serde(skip_serializing_if = "Option::is_none")]
        client_nonce: Option<String>,
    },
    MessageEdited {
        message_id: Uuid,
        channel_id: Uuid,
        sender_id: Option<Uuid>,
        #[serde(serialize_with = "ser_bytes")]
        ciphertext: Bytes,
        #[serde(serialize_with = "ser_bytes")]
        nonce: Bytes,
        #[serde(serialize_with = "ser_time")]
        edited_at: DateTime<Utc>,
    },
    MessageDeleted {
        message_id: Uuid,
        channel_id: Uuid,
    },
    PresenceUpdate {
        user_id: Uuid,
        status: String,
    },
    PresenceBulk {
        statuses: Vec<(Uuid, String)>,
    },
    UserTyping {
        channel_id: Uuid,
        user_id: Uuid,
    },
    UserStoppedTyping {
        channel_id: Uuid,
        user_id: Uuid,
    },
    RtcOffer {
        from_user_id: Uuid,
        session_id: Uuid,
        sdp: String,
    },
    RtcAnswer {
        from_user_id: Uuid,
        session_id: Uuid,
        sdp: String,
    },
    RtcIceCandidate {
        from_user_id: Uuid,
        session_id: Uuid,
        candidate: String,
    },
    VoiceStateUpdate {
        channel_id: Uuid,
        participants: Vec<Uuid>,
    },
    UserJoinedVoice {
        channel_id: Uuid,
        user_id: Uuid,
    },
    UserLeftVoice {
        channel_id: Uuid,
        user_id: Uuid,
    },
    KickedFromVoice {
        channel_id: Uuid,
        user_id: Uuid,
        kicked_by: Uuid,
    },
    ReactionAdded {
        message_id: Uuid,
        channel_id: Uuid,
        user_id: Uuid,
        emoji: String,
    },
    ReactionRemoved {
        message_id: Uuid,
        channel_id: Uuid,
        user_id: Uuid,
        emoji: String,
    },
    ReadReceipt {
        channel_id: Uuid,
        user_id: Uuid,
        message_id: Uuid,
        #[serde(serialize_with = "ser_time")]
        timestamp: DateTime<Utc>,
    },
    MemberKicked {
        channel_id: Uuid,
        user_id: Uuid,
        kicked_by: Uuid,
    },
    MemberBanned {
        channel_id: Uuid,
        user_id: Uuid,
        banned_by: Uuid,
    },
    MemberRoleUpdated {
        channel_id: Uuid,
        user_id: Uuid,
        role: String,
    },
    MessagePinned {
        message_id: Uuid,
        channel_id: Uuid,
        pinned_by: Uuid,
        #[serde(serialize_with = "ser_time")]
        pinned_at: DateTime<Utc>,
    },
    MessageUnpinned {
        message_id: Uuid,
        channel_id: Uuid,
    },
    NewDmChannel {
        channel_id: Uuid,
        channel_name: Option<String>,
        #[serde(serialize_with = "ser_time")]
        created_at: DateTime<Utc>,
        other_user_id: Uuid,
        other_user_username: String,
        other_user_display_name: Option<String>,
        other_user_avatar_url: Option<String>,
    },
    SenderKeyUpdated {
        channel_id: Uuid,
        user_id: Uuid,
        chain_id: i64,
        distribution: serde_json::Value,
    },
    SenderKeyRotationRequired {
        channel_id: Uuid,
        reason: String,
    },
    PollCreated {
        poll_id: Uuid,
        channel_id: Uuid,
        created_by: Uuid,
        question: String,
    },
    PollVoted {
        poll_id: Uuid,
        channel_id: Uuid,
        option_index: i32,
        voter_id: Option<Uuid>,
    },
    PollVoteRemoved {
        poll_id: Uuid,
        channel_id: Uuid,
        option_index: i32,
        voter_id: Option<Uuid>,
    },
    PollClosed {
        poll_id: Uuid,
        channel_id: Uuid,
    },
    UserTimedOut {
        channel_id: Uuid,
        user_id: Uuid,
        #[serde(serialize_with = "ser_time")]
        expires_at: DateTime<Utc>,
        reason: Option<String>,
    },
    UserWarned {
        channel_id: Uuid,
        user_id: Uuid,
        reason: String,
        warning_count: i64,
    },
    UserProfileUpdated {
        user_id: Uuid,
        display_name: String,
        avatar_url: Option<String>,
        banner_url: Option<String>,
        voice_background_url: Option<String>,
        custom_status: Option<String>,
        bio: Option<String>,
        pronouns: Option<String>,
    },
    ChannelUpdated {
        channel_id: Uuid,
        name: Option<String>,
        topic: Option<String>,
        read_only: bool,
        slow_mode_seconds: i32,
        archived: bool,
        voice_background: Option<String>,
    },
    GroupUpdated {
        group_id: Uuid,
        name: Option<String>,
        description: Option<String>,
        icon_url: Option<String>,
        banner_url: Option<String>,
        accent_color: Option<String>,
        visibility: String,
    },
    CommunityUpdated {
        community_id: Uuid,
        name: Option<String>,
        description: Option<String>,
        icon_url: Option<String>,
        banner_url: Option<String>,
        community_theme: Option<serde_json::Value>,
        welcome_message: Option<String>,
    },
    ChannelDeleted {
        channel_id: Uuid,
    },
    GroupDeleted {
        group_id: Uuid,
    },
    Announcement {
        id: Uuid,
        title: String,
        body: String,
        created_by: Uuid,
        #[serde(serialize_with = "ser_time")]
        created_at: DateTime<Utc>,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
    Pong {
        timestamp: i64,
    },
    KeysLow {
        remaining: i64,
    },
    /// The answer to a `subscribe` with `since`, one per channel subscribed; exactly
    /// `replayed` durable frames of the channel follow before any live one.
    Subscribed {
        channel_id: Uuid,
        epoch: Epoch,
        cseq: u64,
        recovered: bool,
        replayed: usize,
    },
    /// The answer to a `subscribe` with `since` for a channel not subscribed.
    SubscribeRefused {
        channel_id: Uuid,
        code: ErrorCode,
    },
    /// To resume-capable sockets: durable frames of the channel may have been missed; live
    /// frames continue above `cseq` of `epoch`.
    ResyncRequired {
        channel_id: Uuid,
        epoch: Epoch,
        cseq: u64,
        reason: &'static str,
    },
}

/// A channel stream's identity: 8 characters of `[A-Za-z0-9]`, new each time the channel's
/// actor starts. Held as bytes so comparing and copying it costs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch([u8; 8]);

impl Epoch {
    /// A fresh random epoch.
    pub fn random() -> Self {
        const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let bits = Uuid::new_v4().as_u128();
        Self(std::array::from_fn(|i| ALPHABET[((bits >> (i * 8)) as u8 % 62) as usize]))
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII letters and digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// An epoch as `as_str` wrote it (8 ASCII letters or digits), e.g. one handed over by the
    /// node that owned a channel before; anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        let bytes: [u8; 8] = text.as_bytes().try_into().ok()?;
        bytes.iter().all(u8::is_ascii_alphanumeric).then_some(Self(bytes))
    }

    /// The 8 bytes (node-to-node messages carry them raw).
    pub fn to_bytes(self) -> [u8; 8] {
        self.0
    }

    /// `to_bytes` read back; anything but 8 ASCII letters or digits is `None`.
    pub fn from_bytes(bytes: [u8; 8]) -> Option<Self> {
        bytes.iter().all(u8::is_ascii_alphanumeric).then_some(Self(bytes))
    }

    /// Whether a client's text names this epoch.
    pub fn is(&self, text: &str) -> bool {
        text.as_bytes() == self.0
    }
}

impl Serialize for Epoch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl ServerFrame {
    /// Serializes once; the result is shared by every recipient.
    #[allow(
        clippy::expect_used,
        reason = "server frames hold no maps with non-string keys and no custom serializers: serializing cannot fail"
    )]
    pub fn encode(&self) -> Frame {
        if let Self::Relayed(relayed) = self {
            return Frame::from(relayed.text.clone());
        }
        // Serializing these types cannot fail (no maps with non-string keys, no custom errors).
        let text = serde_json::to_string(self).expect("server frames serialize");
        Frame::from(text)
    }

    /// The frame as another node of a cluster receives it (`ServerFrame::Relayed` there).
    pub fn relayed(&self) -> RelayedFrame {
        match self {
            Self::Relayed(relayed) => relayed.clone(),
            frame => RelayedFrame { text: frame.encode().as_str().to_owned(), durable: frame.is_durable() },
        }
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error { code, message: message.into() }
    }

    /// Sent before a 4008 close when messages of a channel may have been missed by a socket
    /// that does not read stream positions (resume.md, "Loss signals").
    pub fn out_of_sync() -> Self {
        Self::error(ErrorCode::OutOfSync, "messages of a channel may have been missed: reconnect and refresh")
    }

    /// Durable channel frames take a position in their channel's stream, are kept for replay
    /// and are never dropped from a queue (resume.md's class table).
    pub fn is_durable(&self) -> bool {
        if let Self::Relayed(relayed) = self {
            return relayed.durable;
        }
        matches!(
            self,
            Self::NewMessage { .. }
                | Self::MessageEdited { .. }
                | Self::MessageDeleted { .. }
                | Self::ReactionAdded { .. }
                | Self::ReactionRemoved { .. }
                | Self::MessagePinned { .. }
                | Self::MessageUnpinned { .. }
                | Self::MemberKicked { .. }
                | Self::MemberBanned { .. }
                | Self::MemberRoleUpdated { .. }
                | Self::ChannelUpdated { .. }
                | Self::PollCreated { .. }
                | Self::PollVoted { .. }
                | Self::PollVoteRemoved { .. }
                | Self::PollClosed { .. }
                | Self::SenderKeyUpdated { .. }
                | Self::SenderKeyRotationRequired { .. }
                | Self::UserTimedOut { .. }
                | Self::UserWarned { .. }
        )
    }

    /// Serializes once with `"cseq":N` right after the `type`, the shape resume.md shows.
    /// Still one serialization shared by every recipient (and by the replay ring).
    #[allow(clippy::expect_used, reason = "as for encode")]
    pub fn encode_at(&self, cseq: u64) -> Frame {
        let mut text = match self {
            Self::Relayed(relayed) => relayed.text.clone(),
            frame => serde_json::to_string(frame).expect("server frames serialize"),
        };
        // `{"type":"snake_case_name"` comes first and holds no comma, so the first comma (or
        // the closing brace of a frame with no other field) is where the position goes.
        match text.find(',') {
            Some(at) => text.insert_str(at + 1, &format!("\"cseq\":{cseq},")),
            None => text.insert_str(text.len() - 1, &format!(",\"cseq\":{cseq}")),
        }
        Frame::from(text)
    }
}

/// Parses a client frame; the error is the `invalid_message` text.
///
/// The `type` is read first, then the frame is parsed straight into that variant's fields
/// (the `type` key and unknown keys are ignored, as the tagged enum did). Never through the
/// internally tagged enum: it buffers every value of the frame first (each number of a
/// ciphertext array a separate ~32-byte node, ~40 ns each), so a 1 MiB frame of small numbers
/// cost ~17 MiB and its time before any field was checked. Like this, what decoding holds is
/// bounded by the fields themselves, which the frame's own size bounds.
pub fn decode(text: &str) -> Result<ClientFrame, String> {
    let invalid = |e: serde_json::Error| format!("invalid message: {e}");
    #[derive(Deserialize)]
    struct Tag<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<std::borrow::Cow<'a, str>>,
    }
    // Checks the whole text is one JSON object (every other key skipped without allocating).
    let kind = serde_json::from_str::<Tag>(text).map_err(invalid)?.kind;
    let Some(kind) = kind else {
        return Err("invalid message: missing field `type`".into());
    };
    /// Parses the named variant's fields from the text.
    macro_rules! variant {
        ($variant:ident { $($field:ident: $ty:ty),* $(,)? }) => {{
            #[derive(Deserialize)]
            struct Fields {
                $($field: $ty),*
            }
            serde_json::from_str::<Fields>(text)
                .map(|f| ClientFrame::$variant { $($field: f.$field),* })
                .map_err(invalid)
        }};
    }
    match kind.as_ref() {
        "authenticate" => variant!(Authenticate { token: String }),
        "send_message" => serde_json::from_str(text).map(ClientFrame::SendMessage).map_err(invalid),
        "edit_message" => serde_json::from_str(text).map(ClientFrame::EditMessage).map_err(invalid),
        "delete_message" => variant!(DeleteMessage { message_id: Uuid }),
        "update_presence" => variant!(UpdatePresence { status: String }),
        "typing" => variant!(Typing { channel_id: Uuid }),
        "stop_typing" => variant!(StopTyping { channel_id: Uuid }),
        "subscribe" => variant!(Subscribe { channel_ids: Vec<Uuid>, since: Option<HashMap<Uuid, Position>> }),
        "unsubscribe" => variant!(Unsubscribe { channel_ids: Vec<Uuid> }),
        "rtc_offer" => variant!(RtcOffer { target_user_id: Uuid, session_id: Uuid, sdp: String }),
        "rtc_answer" => variant!(RtcAnswer { target_user_id: Uuid, session_id: Uuid, sdp: String }),
        "rtc_ice_candidate" => {
            variant!(RtcIceCandidate { target_user_id: Uuid, session_id: Uuid, candidate: String })
        }
        "join_voice" => variant!(JoinVoice { channel_id: Uuid }),
        "leave_voice" => variant!(LeaveVoice { channel_id: Uuid }),
        "kick_from_voice" => variant!(KickFromVoice { channel_id: Uuid, user_id: Uuid }),
        "add_reaction" => variant!(AddReaction { message_id: Uuid, emoji: String }),
        "remove_reaction" => variant!(RemoveReaction { message_id: Uuid, emoji: String }),
        "mark_read" => variant!(MarkRead { channel_id: Uuid, message_id: Uuid }),
        "mark_all_read" => Ok(ClientFrame::MarkAllRead),
        "ping" => variant!(Ping { timestamp: i64 }),
        other => Err(format!("invalid message: unknown frame type `{}`", other.escape_default())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ciphertext_frames_decode_directly_and_the_rest_through_the_enum() {
        let id = Uuid::now_v7();
        let text = format!(
            r#"{{"ciphertext":[1,2,255],"type":"send_message","channel_id":"{id}","nonce":[9],"message_type":"text","thread_id":"{id}"}}"#
        );
        match decode(&text).unwrap() {
            ClientFrame::SendMessage(m) => {
                assert_eq!((m.channel_id, m.ciphertext, m.nonce), (id, vec![1, 2, 255], vec![9]));
                assert_eq!((m.reply_to, m.thread_id, m.message_type.as_str()), (None, Some(id), "text"));
            }
            other => panic!("{other:?}"),
        }
        let edit = format!(r#"{{"type":"edit_message","message_id":"{id}","ciphertext":[7],"nonce":[8]}}"#);
        assert!(matches!(decode(&edit).unwrap(), ClientFrame::EditMessage(e) if e.ciphertext == [7]));
        assert!(matches!(
            decode(r#"{"type":"ping","timestamp":5}"#).unwrap(),
            ClientFrame::Ping { timestamp: 5 }
        ));
    }

    #[test]
    fn malformed_frames_are_refused_with_a_reason() {
        let id = Uuid::now_v7();
        for bad in [
            String::from("[]"),
            String::from("not json"),
            String::from(r#"{"type":"send_message"}"#),
            format!(
                r#"{{"type":"send_message","channel_id":"{id}","ciphertext":[256],"nonce":[1],"message_type":"text"}}"#
            ),
            format!(r#"{{"type":"edit_message","message_id":"{id}","ciphertext":"AQI=","nonce":[1]}}"#),
            String::from(r#"{"type":"no_such_frame"}"#),
            String::from(r#"{"timestamp":5}"#),
        ] {
            let err = decode(&bad).expect_err(&bad);
            assert!(err.starts_with("invalid message: "), "{err}");
        }
    }

    #[test]
    fn client_nonce_decodes_any_json_and_is_checked_after() {
        let id = Uuid::now_v7();
        let key = |raw: &str| {
            let text = format!(
                r#"{{"type":"send_message","channel_id":"{id}","ciphertext":[1],"nonce":[1],"message_type":"text"{raw}}}"#
            );
            match decode(&text).expect("decodes whatever the key's type") {
                ClientFrame::SendMessage(m) => client_nonce(m.client_nonce),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(key(""), Ok(None));
        assert_eq!(key(r#","client_nonce":null"#), Ok(None));
        assert_eq!(key(r#","client_nonce":"abc""#), Ok(Some("abc".into())));
        assert_eq!(key(&format!(r#","client_nonce":"{}""#, "x".repeat(64))), Ok(Some("x".repeat(64))));
        for bad in [
            r#","client_nonce":5"#,
            r#","client_nonce":"""#,
            r#","client_nonce":[]"#,
            r#","client_nonce":{"a":[1,{"b":true}]}"#,
            r#","client_nonce":false"#,
        ] {
            assert!(key(bad).is_err(), "{bad}");
        }
        assert!(key(&format!(r#","client_nonce":"{}""#, "x".repeat(65))).is_err());
    }

    #[test]
    fn message_sent_without_a_key_has_no_client_nonce_field() {
        let frame = |client_nonce| ServerFrame::MessageSent {
            id: Uuid::nil(),
            channel_id: Uuid::nil(),
            created_at: DateTime::UNIX_EPOCH,
            cseq: None,
            thread_id: None,
            client_nonce,
        };
        assert!(!frame(None).encode().as_str().contains("client_nonce"));
        assert!(frame(Some("k".into())).encode().as_str().ends_with(r#","client_nonce":"k"}"#));
    }

    #[test]
    fn new_message_matches_the_wire_shape() {
        let frame = ServerFrame::NewMessage {
            id: Uuid::nil(),
            channel_id: Uuid::nil(),
            sender_id: Some(Uuid::nil()),
            ciphertext: Bytes::from_static(&[1, 2, 255]),
            nonce: Bytes::from_static(&[9]),
            message_type: "text".into(),
            reply_to: None,
            sender_key_id: None,
            created_at: DateTime::parse_from_rfc3339("2025-01-31T12:34:56.123456+00:00").unwrap().into(),
            thread_id: None,
        };
        let v: serde_json::Value = serde_json::from_str(frame.encode().as_str()).unwrap();
        assert_eq!(v["type"], "new_message");
        assert_eq!(v["ciphertext"], serde_json::json!([1, 2, 255]));
        assert_eq!(v["created_at"], "2025-01-31T12:34:56.123456+00:00");
        assert!(v["reply_to"].is_null() && v.as_object().unwrap().contains_key("reply_to"));
        assert!(!v.as_object().unwrap().contains_key("thread_id"));
    }

    #[test]
    fn client_frames_parse_and_reject_unknown_types() {
        let f = decode(r#"{"type":"ping","timestamp":5}"#).unwrap();
        assert!(matches!(f, ClientFrame::Ping { timestamp: 5 }));
        assert!(matches!(decode(r#"{"type":"mark_all_read"}"#).unwrap(), ClientFrame::MarkAllRead));
        assert!(decode(r#"{"type":"nope"}"#).is_err());
        assert!(decode(r#"{"type":"send_message","channel_id":"x"}"#).is_err());
    }

    #[test]
    fn presence_bulk_is_pairs() {
        let v: serde_json::Value = serde_json::from_str(
            ServerFrame::PresenceBulk { statuses: vec![(Uuid::nil(), "online".into())] }.encode().as_str(),
        )
        .unwrap();
        assert_eq!(v["statuses"][0][1], "online");
    }
}
