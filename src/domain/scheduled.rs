//! Scheduled messages (rest-messages-dms-files.md, "Scheduled messages"): the Scheduled
//! message object and the checked `POST /messages/schedule` input. Delivery is
//! src/scheduler.rs.

use chrono::{DateTime, Utc};
use palaver_actors::wire_time::rfc3339;
use palaver_entity::scheduled_messages;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// Text-encoded ciphertext: 1–100 000 bytes.
pub const CIPHERTEXT_MAX: usize = 100_000;
/// Text-encoded nonce: 1–256 bytes.
pub const NONCE_MAX: usize = 256;
/// Opaque preview: at most 10 000 bytes.
pub const PREVIEW_MAX: usize = 10_000;
/// How far ahead a message may be scheduled.
pub const MAX_AHEAD_DAYS: i64 = 30;
/// Pending messages per user.
pub const MAX_PENDING: u64 = 50;
/// `GET /messages/scheduled` returns at most this many.
pub const LIST_MAX: u64 = 200;

/// The wire's Scheduled message object.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ScheduledView {
    pub id: Uuid,
    pub channel_id: Uuid,
    pub scheduled_for: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_preview: Option<String>,
}

impl From<&scheduled_messages::Model> for ScheduledView {
    fn from(m: &scheduled_messages::Model) -> Self {
        Self {
            id: m.id,
            channel_id: m.channel_id,
            scheduled_for: rfc3339(&m.scheduled_for),
            created_at: rfc3339(&m.created_at),
            content_preview: m.content_preview.clone(),
        }
    }
}

/// `POST /messages/schedule` as sent.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ScheduleRequest {
    pub channel_id: Uuid,
    pub ciphertext: String,
    pub nonce: String,
    pub scheduled_for: String,
    #[serde(default)]
    pub content_preview: Option<String>,
}

/// A checked schedule request.
#[derive(Debug)]
pub struct NewScheduled {
    pub channel_id: Uuid,
    pub ciphertext: String,
    pub nonce: String,
    pub scheduled_for: DateTime<Utc>,
    pub content_preview: Option<String>,
}

impl NewScheduled {
    pub fn parse(req: ScheduleRequest, now: DateTime<Utc>) -> ApiResult<Self> {
        if req.ciphertext.is_empty() || req.ciphertext.len() > CIPHERTEXT_MAX {
            return Err(ApiError::validation(format!("ciphertext must be 1-{CIPHERTEXT_MAX} bytes")));
        }
        if req.nonce.is_empty() || req.nonce.len() > NONCE_MAX {
            return Err(ApiError::validation(format!("nonce must be 1-{NONCE_MAX} bytes")));
        }
        if req.content_preview.as_ref().is_some_and(|p| p.len() > PREVIEW_MAX) {
            return Err(ApiError::validation(format!("content_preview must be at most {PREVIEW_MAX} bytes")));
        }
        let scheduled_for = DateTime::parse_from_rfc3339(req.scheduled_for.trim())
            .map_err(|_| ApiError::validation("scheduled_for must be an RFC 3339 time"))?
            .with_timezone(&Utc);
        // Stored with microseconds (PostgreSQL keeps no more).
        let scheduled_for = DateTime::from_timestamp_micros(scheduled_for.timestamp_micros())
            .ok_or_else(|| ApiError::validation("scheduled_for is out of range"))?;
        if scheduled_for <= now {
            return Err(ApiError::validation("scheduled_for must be in the future"));
        }
        if scheduled_for > now + chrono::Duration::days(MAX_AHEAD_DAYS) {
            return Err(ApiError::validation(format!(
                "scheduled_for must be at most {MAX_AHEAD_DAYS} days ahead"
            )));
        }
        Ok(Self {
            channel_id: req.channel_id,
            ciphertext: req.ciphertext,
            nonce: req.nonce,
            scheduled_for,
            content_preview: req.content_preview,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(when: &str, ciphertext: &str) -> ApiResult<NewScheduled> {
        let req = serde_json::from_value(json!({
            "channel_id": Uuid::nil(), "ciphertext": ciphertext, "nonce": "[1]", "scheduled_for": when,
        }))
        .unwrap();
        NewScheduled::parse(req, "2030-01-01T00:00:00Z".parse().unwrap())
    }

    #[test]
    fn schedule_rules() {
        assert!(parse("2030-01-01T00:00:01+00:00", "[1,2]").is_ok());
        assert!(parse("2030-01-01T00:00:00Z", "[1,2]").is_err(), "not in the future");
        assert!(parse("2030-01-31T00:00:01Z", "[1,2]").is_err(), "more than 30 days");
        assert!(parse("2030-01-30T23:00:00Z", "[1,2]").is_ok());
        assert!(parse("tomorrow", "[1,2]").is_err());
        assert!(parse("2030-01-02T00:00:00Z", "").is_err());
        assert!(parse("2030-01-02T00:00:00Z", &"1".repeat(100_001)).is_err());
    }
}
