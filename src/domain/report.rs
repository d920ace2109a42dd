//! The Report object of the wire (rest-auth-account-users.md) and report validation.

use palaver_actors::wire_time::rfc3339;
use palaver_entity::reports;
use serde::Serialize;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// What may be reported.
pub const REPORT_TYPES: [&str; 3] = ["message", "user", "file"];
/// Longest reason, in bytes after trimming.
pub const MAX_REASON_BYTES: usize = 2000;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ReportView {
    pub id: Uuid,
    pub reporter_id: Uuid,
    pub report_type: String,
    pub target_id: Uuid,
    pub reason: String,
    pub status: String,
    pub reviewed_by: Option<Uuid>,
    pub reviewed_at: Option<String>,
    pub admin_notes: Option<String>,
    pub created_at: String,
}

impl From<&reports::Model> for ReportView {
    fn from(r: &reports::Model) -> Self {
        Self {
            id: r.id,
            reporter_id: r.reporter_id,
            report_type: r.report_type.clone(),
            target_id: r.target_id,
            reason: r.reason.clone(),
            status: r.status.clone(),
            reviewed_by: r.reviewed_by,
            reviewed_at: r.reviewed_at.as_ref().map(rfc3339),
            admin_notes: r.admin_notes.clone(),
            created_at: rfc3339(&r.created_at),
        }
    }
}

/// A report type from the wire: `message`, `user` or `file`.
pub fn report_type(raw: &str) -> ApiResult<&'static str> {
    REPORT_TYPES
        .into_iter()
        .find(|t| *t == raw)
        .ok_or_else(|| ApiError::validation("report_type must be one of message, user, file"))
}

/// A reason: 1–2000 bytes after trimming; returns the trimmed text.
pub fn reason(raw: &str) -> ApiResult<String> {
    let reason = raw.trim();
    if reason.is_empty() || reason.len() > MAX_REASON_BYTES {
        return Err(ApiError::validation(format!("reason must be 1-{MAX_REASON_BYTES} bytes")));
    }
    Ok(reason.to_string())
}
