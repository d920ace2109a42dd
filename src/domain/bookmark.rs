//! Bookmarks (rest-messages-dms-files.md, "Bookmarks"): the Bookmark object and the note rule.

use palaver_actors::wire_time::rfc3339;
use palaver_entity::bookmarks;
use serde::Serialize;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// Notes: at most 500 bytes after trimming.
pub const NOTE_MAX: usize = 500;
/// `GET /bookmarks` page: default and largest.
pub const DEFAULT_LIMIT: u64 = 100;
pub const MAX_LIMIT: u64 = 500;

/// The wire's Bookmark object.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct BookmarkView {
    pub id: Uuid,
    pub message_id: Uuid,
    pub note: Option<String>,
    pub created_at: String,
}

impl From<&bookmarks::Model> for BookmarkView {
    fn from(b: &bookmarks::Model) -> Self {
        Self { id: b.id, message_id: b.message_id, note: b.note.clone(), created_at: rfc3339(&b.created_at) }
    }
}

/// A note: ≤500 bytes after trimming; empty = none.
pub fn note(raw: Option<&str>) -> ApiResult<Option<String>> {
    let Some(note) = raw.map(str::trim) else { return Ok(None) };
    if note.len() > NOTE_MAX {
        return Err(ApiError::validation(format!("note must be at most {NOTE_MAX} bytes")));
    }
    Ok((!note.is_empty()).then(|| note.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_rules() {
        assert_eq!(note(None).unwrap(), None);
        assert_eq!(note(Some("  ")).unwrap(), None);
        assert_eq!(note(Some(" read later ")).unwrap().as_deref(), Some("read later"));
        assert!(note(Some(&"x".repeat(501))).is_err());
    }
}
