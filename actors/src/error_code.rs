//! The error codes of the wire: the `code` of an HTTP error body and of a WebSocket `error`
//! frame, one enum for both (`ApiError::code` in the server maps onto it).
//!
//! Serialized as the snake_case strings clients read (`validation_error`, `not_found`…);
//! `as_str` gives the same text without serde.

use serde::{Deserialize, Serialize};

/// Why a request was refused, as the client reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Bad input, or a business rule refused it (HTTP 400).
    ValidationError,
    /// Missing, invalid or expired credentials (HTTP 401; a socket's rejected token).
    Unauthorized,
    /// The caller may not do this (HTTP 403).
    Forbidden,
    /// Missing, or hidden from this caller (HTTP 404).
    NotFound,
    /// The path exists, the method does not (HTTP 405).
    MethodNotAllowed,
    /// A duplicate (HTTP 409).
    Conflict,
    /// The body is over the limit (HTTP 413).
    PayloadTooLarge,
    /// JSON was expected (HTTP 415).
    UnsupportedMediaType,
    /// Too many requests or frames (HTTP 429).
    RateLimited,
    /// The database or another dependency is unreachable; retrying later helps (HTTP 503).
    Unavailable,
    /// Logged with context, never detailed to the client (HTTP 500).
    InternalError,
    /// A socket frame that does not parse.
    InvalidMessage,
    /// The socket's first frame was not `authenticate`.
    AuthRequired,
    /// The socket did not authenticate in time.
    AuthTimeout,
    /// A send into an archived channel.
    Archived,
    /// A send by a non-moderator into a read-only channel.
    ReadOnly,
    /// A send within the channel's slow-mode window.
    SlowMode,
    /// A send or edit by a user timed out in the channel.
    TimedOut,
    /// A DM between users where one blocked the other.
    Blocked,
    /// A voice join into a full voice session.
    VoiceFull,
    /// Sent to a user's oldest session when a new one goes over the per-user cap.
    TooManySessions,
    /// Messages of a channel may have been missed; sent before a 4008 close to sockets that
    /// did not opt into stream positions (resume.md, "Loss signals").
    OutOfSync,
}

impl ErrorCode {
    /// The wire text (what serde writes).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ValidationError => "validation_error",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::InternalError => "internal_error",
            Self::InvalidMessage => "invalid_message",
            Self::AuthRequired => "auth_required",
            Self::AuthTimeout => "auth_timeout",
            Self::Archived => "archived",
            Self::ReadOnly => "read_only",
            Self::SlowMode => "slow_mode",
            Self::TimedOut => "timed_out",
            Self::Blocked => "blocked",
            Self::VoiceFull => "voice_full",
            Self::TooManySessions => "too_many_sessions",
            Self::OutOfSync => "out_of_sync",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn serde_and_as_str_agree() {
        use ErrorCode::*;
        for code in [
            ValidationError,
            Unauthorized,
            Forbidden,
            NotFound,
            MethodNotAllowed,
            Conflict,
            PayloadTooLarge,
            UnsupportedMediaType,
            RateLimited,
            Unavailable,
            InternalError,
            InvalidMessage,
            AuthRequired,
            AuthTimeout,
            Archived,
            ReadOnly,
            SlowMode,
            TimedOut,
            Blocked,
            VoiceFull,
            TooManySessions,
            OutOfSync,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), serde_json::json!(code.as_str()));
        }
    }
}
