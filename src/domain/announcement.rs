//! The Announcement object of the wire (rest-auth-account-users.md) and its validation.

use palaver_actors::protocol::ServerFrame;
use palaver_actors::wire_time::rfc3339;
use palaver_entity::announcements;
use serde::Serialize;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

pub const MAX_TITLE_BYTES: usize = 200;
pub const MAX_BODY_BYTES: usize = 5000;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct AnnouncementView {
    pub id: Uuid,
    pub title: String,
    pub body: String,
    /// The admin who posted it; null once that account is deleted.
    pub created_by: Option<Uuid>,
    pub created_at: String,
}

impl From<&announcements::Model> for AnnouncementView {
    fn from(a: &announcements::Model) -> Self {
        Self {
            id: a.id,
            title: a.title.clone(),
            body: a.body.clone(),
            created_by: a.created_by,
            created_at: rfc3339(&a.created_at),
        }
    }
}

/// The live `announcement` frame for a freshly posted announcement.
pub fn announcement_frame(a: &announcements::Model, created_by: Uuid) -> ServerFrame {
    ServerFrame::Announcement {
        id: a.id,
        title: a.title.clone(),
        body: a.body.clone(),
        created_by,
        created_at: a.created_at,
    }
}

/// Title (1–200 bytes) and body (1–5000 bytes), both trimmed.
pub fn validate(title: &str, body: &str) -> ApiResult<(String, String)> {
    let (title, body) = (title.trim(), body.trim());
    if title.is_empty() || title.len() > MAX_TITLE_BYTES {
        return Err(ApiError::validation(format!("title must be 1-{MAX_TITLE_BYTES} bytes")));
    }
    if body.is_empty() || body.len() > MAX_BODY_BYTES {
        return Err(ApiError::validation(format!("body must be 1-{MAX_BODY_BYTES} bytes")));
    }
    Ok((title.to_string(), body.to_string()))
}
