//! The Registration invite object of the wire (rest-admin.md) and its validation.

use palaver_actors::wire_time::rfc3339;
use palaver_entity::registration_invites;
use serde::Serialize;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// Length of a registration invite code (ASCII alphanumerics).
pub const CODE_LEN: usize = 12;
/// Longest lifetime an admin may give an invite: one year.
pub const MAX_EXPIRES_IN_HOURS: i64 = 8760;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RegistrationInviteView {
    pub id: Uuid,
    pub code: String,
    pub created_by: Option<Uuid>,
    pub max_uses: Option<i32>,
    pub used_count: i32,
    pub expires_at: Option<String>,
    pub created_at: String,
}

impl From<&registration_invites::Model> for RegistrationInviteView {
    fn from(i: &registration_invites::Model) -> Self {
        Self {
            id: i.id,
            code: i.code.clone(),
            created_by: i.created_by,
            max_uses: i.max_uses,
            used_count: i.used_count,
            expires_at: i.expires_at.as_ref().map(rfc3339),
            created_at: rfc3339(&i.created_at),
        }
    }
}

/// `max_uses`: null = unlimited, otherwise at least 1.
pub fn max_uses(raw: Option<i64>) -> ApiResult<Option<i32>> {
    match raw {
        None => Ok(None),
        Some(n) if n >= 1 => {
            i32::try_from(n).map(Some).map_err(|_| ApiError::validation("max_uses is too large"))
        }
        Some(_) => Err(ApiError::validation("max_uses must be at least 1 (or null for unlimited)")),
    }
}

/// `expires_in_hours`: null = never, otherwise 1–8760.
pub fn expires_in_hours(raw: Option<i64>) -> ApiResult<Option<chrono::Duration>> {
    match raw {
        None => Ok(None),
        Some(h) if (1..=MAX_EXPIRES_IN_HOURS).contains(&h) => Ok(Some(chrono::Duration::hours(h))),
        Some(_) => Err(ApiError::validation(format!(
            "expires_in_hours must be between 1 and {MAX_EXPIRES_IN_HOURS} (or null for never)"
        ))),
    }
}
