//! The custom emoji object and shortcode rule (rest-communities-groups-channels.md). The
//! icon/banner uploads answer the Community and Group views of `domain::community` and
//! `domain::group`.

use palaver_actors::wire_time::rfc3339;
use palaver_entity::custom_emojis;
use serde::Serialize;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

// ---------------------------------------------------------------------------------------
// Custom emojis

/// Most custom emojis in one community.
pub const EMOJIS_PER_COMMUNITY: u64 = 50;
pub const SHORTCODE_MIN: usize = 2;
pub const SHORTCODE_MAX: usize = 32;

/// An emoji shortcode: 2–32 of `[A-Za-z0-9_]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortcode(String);

impl Shortcode {
    pub fn parse(raw: Option<&str>) -> ApiResult<Self> {
        let value = raw.map(str::trim).unwrap_or("");
        if value.is_empty() {
            return Err(ApiError::validation("shortcode is required"));
        }
        if !(SHORTCODE_MIN..=SHORTCODE_MAX).contains(&value.len()) {
            return Err(ApiError::validation(format!(
                "shortcode must be {SHORTCODE_MIN}–{SHORTCODE_MAX} characters"
            )));
        }
        if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(ApiError::validation("shortcode may contain only letters, digits and _"));
        }
        Ok(Self(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The wire's Custom emoji object.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct EmojiView {
    pub id: Uuid,
    pub community_id: Uuid,
    pub shortcode: String,
    pub url: String,
    pub content_type: String,
    pub uploaded_by: Option<Uuid>,
    pub created_at: String,
}

impl From<&custom_emojis::Model> for EmojiView {
    fn from(e: &custom_emojis::Model) -> Self {
        Self {
            id: e.id,
            community_id: e.community_id,
            shortcode: e.shortcode.clone(),
            url: format!("/api/emojis/{}", e.id),
            content_type: e.content_type.clone(),
            uploaded_by: e.uploaded_by,
            created_at: rfc3339(&e.created_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortcode_rules() {
        assert_eq!(Shortcode::parse(Some(" party_parrot2 ")).unwrap().as_str(), "party_parrot2");
        for bad in [None, Some(""), Some("a"), Some(":cat:"), Some("with space"), Some("é_é")] {
            assert!(Shortcode::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Shortcode::parse(Some(&"x".repeat(32))).is_ok());
        assert!(Shortcode::parse(Some(&"x".repeat(33))).is_err());
    }
}
