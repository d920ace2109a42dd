//! The admin API's wire objects (rest-admin.md: Admin user object, Audit entry, purge result,
//! webhook overview) and the validation of admin input (suspension reasons, report reviews,
//! page/per_page paging).

use std::collections::HashMap;

use palaver_actors::wire_time::rfc3339;
use palaver_entity::{audit_log, users, webhooks};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::http::query::QueryParams;

/// Longest suspension reason, in bytes after trimming.
pub const MAX_SUSPEND_REASON_BYTES: usize = 500;
/// Longest admin note on a report review, in bytes after trimming.
pub const MAX_ADMIN_NOTES_BYTES: usize = 5000;
/// Report states an admin filters by.
pub const REPORT_STATUSES: [&str; 4] = ["pending", "reviewed", "resolved", "dismissed"];
/// Report states a review may set.
pub const REVIEW_STATUSES: [&str; 3] = ["reviewed", "resolved", "dismissed"];

/// `{id, name, role}`: one group or community the user belongs to.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct Membership {
    pub id: Uuid,
    pub name: String,
    pub role: String,
}

/// The wire's Admin user object.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct AdminUserView {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    pub email: String,
    pub avatar_url: Option<String>,
    pub is_admin: bool,
    pub is_owner: bool,
    pub suspended_at: Option<String>,
    pub suspended_reason: Option<String>,
    pub created_at: String,
    /// Ordered by name.
    pub groups: Vec<Membership>,
    /// Ordered by name.
    pub communities: Vec<Membership>,
}

impl AdminUserView {
    pub fn new(u: &users::Model, groups: Vec<Membership>, communities: Vec<Membership>) -> Self {
        Self {
            id: u.id,
            username: u.username.clone(),
            display_name: u.display_name.clone(),
            email: u.email.clone(),
            avatar_url: u.avatar_url.clone(),
            is_admin: u.is_admin,
            is_owner: u.is_owner,
            suspended_at: u.suspended_at.as_ref().map(rfc3339),
            suspended_reason: u.suspended_reason.clone(),
            created_at: rfc3339(&u.created_at),
            groups,
            communities,
        }
    }
}

/// Sorts each user's memberships by name (then id, so equal names keep a stable order).
pub fn sort_memberships(map: &mut HashMap<Uuid, Vec<Membership>>) {
    for list in map.values_mut() {
        list.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    }
}

/// The wire's Audit entry.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct AuditEntryView {
    pub id: Uuid,
    pub user_id: Option<Uuid>,
    pub action: String,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    /// Stored as JSON text; shown as the JSON value (or the raw text if it is not JSON).
    pub metadata: Option<Value>,
    pub created_at: String,
}

impl From<&audit_log::Model> for AuditEntryView {
    fn from(a: &audit_log::Model) -> Self {
        Self {
            id: a.id,
            user_id: a.user_id,
            action: a.action.clone(),
            ip_address: a.ip_address.clone(),
            user_agent: a.user_agent.clone(),
            metadata: a
                .metadata
                .as_deref()
                .map(|raw| serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))),
            created_at: rfc3339(&a.created_at),
        }
    }
}

/// What every purge answers.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct PurgeResult {
    pub messages_deleted: u64,
    pub files_deleted: u64,
    pub hashes_blocked: u64,
}

/// One entry of `GET /admin/webhooks` (never the token).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct WebhookOverview {
    pub id: Uuid,
    pub channel_id: Uuid,
    pub name: String,
    pub active: bool,
    pub created_by: Option<Uuid>,
    pub created_at: String,
}

impl From<&webhooks::Model> for WebhookOverview {
    fn from(w: &webhooks::Model) -> Self {
        Self {
            id: w.id,
            channel_id: w.channel_id,
            name: w.name.clone(),
            active: w.active,
            created_by: w.created_by,
            created_at: rfc3339(&w.created_at),
        }
    }
}

/// A suspension reason: trimmed, ≤500 bytes; empty or absent = no reason.
pub fn suspend_reason(raw: Option<&str>) -> ApiResult<Option<String>> {
    let Some(reason) = raw.map(str::trim).filter(|r| !r.is_empty()) else { return Ok(None) };
    if reason.len() > MAX_SUSPEND_REASON_BYTES {
        return Err(ApiError::validation(format!("reason must be at most {MAX_SUSPEND_REASON_BYTES} bytes")));
    }
    Ok(Some(reason.to_string()))
}

/// A report status filter: one of `pending`, `reviewed`, `resolved`, `dismissed`.
pub fn report_status_filter(raw: &str) -> ApiResult<&'static str> {
    REPORT_STATUSES
        .into_iter()
        .find(|s| *s == raw.trim())
        .ok_or_else(|| ApiError::validation("status must be one of pending, reviewed, resolved, dismissed"))
}

/// A review's new status: `reviewed`, `resolved` or `dismissed`.
pub fn review_status(raw: &str) -> ApiResult<&'static str> {
    REVIEW_STATUSES
        .into_iter()
        .find(|s| *s == raw)
        .ok_or_else(|| ApiError::validation("status must be one of reviewed, resolved, dismissed"))
}

/// Review notes: trimmed, ≤5000 bytes; empty or absent = none.
pub fn admin_notes(raw: Option<&str>) -> ApiResult<Option<String>> {
    let Some(notes) = raw.map(str::trim).filter(|n| !n.is_empty()) else { return Ok(None) };
    if notes.len() > MAX_ADMIN_NOTES_BYTES {
        return Err(ApiError::validation(format!(
            "admin_notes must be at most {MAX_ADMIN_NOTES_BYTES} bytes"
        )));
    }
    Ok(Some(notes.to_string()))
}

/// Admin paging (wire convention 3): `page` 1-based, clamped to 1–10000 (default 1);
/// `per_page` clamped to 1–100 (default 50). Not a number → 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub page: u64,
    pub per_page: u64,
}

pub const MAX_PAGE: i64 = 10_000;
pub const DEFAULT_PER_PAGE: i64 = 50;
pub const MAX_PER_PAGE: i64 = 100;

impl Page {
    pub fn from_query(query: &QueryParams) -> ApiResult<Self> {
        let page = int_param(query, "page")?.unwrap_or(1).clamp(1, MAX_PAGE);
        let per_page = int_param(query, "per_page")?.unwrap_or(DEFAULT_PER_PAGE).clamp(1, MAX_PER_PAGE);
        Ok(Self { page: page as u64, per_page: per_page as u64 })
    }

    pub fn offset(self) -> u64 {
        (self.page - 1) * self.per_page
    }
}

/// An optional integer query parameter; 400 when present but not an integer.
pub fn int_param(query: &QueryParams, key: &str) -> ApiResult<Option<i64>> {
    match query.text(key) {
        None => Ok(None),
        Some(raw) => {
            raw.parse().map(Some).map_err(|_| ApiError::validation(format!("{key} must be an integer")))
        }
    }
}

/// An optional UUID query parameter; 400 when malformed.
pub fn uuid_param(query: &QueryParams, key: &str) -> ApiResult<Option<Uuid>> {
    match query.text(key) {
        None => Ok(None),
        Some(raw) => {
            Uuid::parse_str(raw).map(Some).map_err(|_| ApiError::validation(format!("{key} must be a UUID")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> QueryParams {
        QueryParams::from(
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>(),
        )
    }

    #[test]
    fn paging_clamps_and_rejects_non_numbers() {
        assert_eq!(Page::from_query(&query(&[])).unwrap(), Page { page: 1, per_page: 50 });
        let p = Page::from_query(&query(&[("page", "0"), ("per_page", "500")])).unwrap();
        assert_eq!(p, Page { page: 1, per_page: 100 });
        let p = Page::from_query(&query(&[("page", "99999"), ("per_page", "-3")])).unwrap();
        assert_eq!(p, Page { page: 10_000, per_page: 1 });
        assert_eq!(Page { page: 3, per_page: 20 }.offset(), 40);
        assert!(Page::from_query(&query(&[("page", "two")])).is_err());
    }

    #[test]
    fn reasons_and_notes_are_trimmed_and_bounded() {
        assert_eq!(suspend_reason(None).unwrap(), None);
        assert_eq!(suspend_reason(Some("  ")).unwrap(), None);
        assert_eq!(suspend_reason(Some(" spam ")).unwrap().as_deref(), Some("spam"));
        assert!(suspend_reason(Some(&"x".repeat(501))).is_err());
        assert!(suspend_reason(Some(&"x".repeat(500))).is_ok());
        assert!(admin_notes(Some(&"é".repeat(2501))).is_err(), "bytes, not characters");
        assert!(review_status("pending").is_err() && review_status("resolved").is_ok());
        assert!(report_status_filter("pending").is_ok() && report_status_filter("open").is_err());
    }
}
