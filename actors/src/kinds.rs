//! The closed vocabularies stored as text (`channels.channel_type`, `messages.message_type`):
//! parsed once into enums, so the rest of the code matches on variants, not string literals.

/// What a channel is for (`channels.channel_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelType {
    Text,
    Voice,
    /// Top-level posts must be files; threads under them may be text.
    Gallery,
    /// A direct message between exactly two people (created by `POST /dms`, never joined).
    Dm,
}

impl ChannelType {
    /// The types a client may create (`dm` channels come from `POST /dms`).
    pub const CREATABLE: [ChannelType; 3] = [ChannelType::Text, ChannelType::Voice, ChannelType::Gallery];

    pub fn parse(stored: &str) -> Option<Self> {
        Some(match stored {
            "text" => Self::Text,
            "voice" => Self::Voice,
            "gallery" => Self::Gallery,
            "dm" => Self::Dm,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Voice => "voice",
            Self::Gallery => "gallery",
            Self::Dm => "dm",
        }
    }

    /// Whether a stored `channel_type` is this type.
    pub fn is(self, stored: &str) -> bool {
        Self::parse(stored) == Some(self)
    }
}

/// What a message's payload is (`messages.message_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MessageType {
    Text,
    File,
    /// Posted by a webhook: the server stores its content in `webhook_content`.
    Webhook,
}

impl MessageType {
    pub fn parse(stored: &str) -> Option<Self> {
        Some(match stored {
            "text" => Self::Text,
            "file" => Self::File,
            "webhook" => Self::Webhook,
            _ => return None,
        })
    }

    /// The types a client may send on a socket (`webhook` is the server's own).
    pub fn from_client(wire: &str) -> Option<Self> {
        Self::parse(wire).filter(|kind| *kind != Self::Webhook)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::File => "file",
            Self::Webhook => "webhook",
        }
    }

    /// Whether a stored `message_type` is this type.
    pub fn is(self, stored: &str) -> bool {
        Self::parse(stored) == Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_round_trips_and_unknown_text_is_refused() {
        for kind in [ChannelType::Text, ChannelType::Voice, ChannelType::Gallery, ChannelType::Dm] {
            assert_eq!(ChannelType::parse(kind.as_str()), Some(kind));
        }
        for kind in [MessageType::Text, MessageType::File, MessageType::Webhook] {
            assert_eq!(MessageType::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ChannelType::parse("Text"), None);
        assert_eq!(MessageType::parse(""), None);
        assert_eq!(MessageType::from_client("webhook"), None);
        assert_eq!(MessageType::from_client("file"), Some(MessageType::File));
        assert!(!ChannelType::CREATABLE.contains(&ChannelType::Dm));
    }
}
