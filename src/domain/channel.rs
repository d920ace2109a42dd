//! Channels (rest-communities-groups-channels.md, "Channels"): the Channel object and
//! Channel member views, validated create / update input, and the permission helpers every
//! channel-scoped route shares (`channel_role`, `effective_level`).

use palaver_actors::kinds::ChannelType;
use palaver_actors::roles::Level;
use palaver_actors::wire_time::rfc3339;
use palaver_entity::{channel_members, channels, sender_keys, users};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};

/// Channel names: 1–64 bytes after trimming.
pub const NAME_MAX: usize = 64;
/// Topics: at most 512 bytes after trimming.
pub const TOPIC_MAX: usize = 512;
/// Slow mode: 0 (off) to one day.
pub const SLOW_MODE_MAX: i32 = 86_400;
/// Message lifetime: 0 (off) to 30 days.
pub const TTL_MAX: i32 = 2_592_000;
/// Longest voice background URL, in bytes.
pub const URL_MAX: usize = 2048;
/// Longest ban reason, in bytes after trimming.
pub const BAN_REASON_MAX: usize = 500;
/// Standalone channels (no group) one user may create in an hour; beyond it `POST /channels`
/// answers 429 `rate_limited` with `Retry-After`. Every channel costs its members work on
/// `mark_all_read`, subscribe and unread counts. Channels in groups are bounded by the group
/// limits instead (`group::MAX_CHANNELS_PER_GROUP`, `group::MAX_GROUPS_PER_COMMUNITY`).
pub const CREATED_PER_HOUR_MAX: u64 = 30;
/// Standalone channels created by one user that may exist at once; beyond it: 400
/// `validation_error`.
pub const CREATED_TOTAL_MAX: u64 = 500;

/// Roles `PATCH /channels/{id}/members/{uid}/role` may assign (ownership moves by transfer).
pub const ASSIGNABLE_ROLES: [&str; 3] = ["admin", "moderator", "member"];

/// The wire's Channel object. The message TTL is stored but not shown.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ChannelView {
    pub id: Uuid,
    pub name: Option<String>,
    pub channel_type: String,
    pub topic: Option<String>,
    pub created_by: Option<Uuid>,
    pub created_at: String,
    pub group_id: Option<Uuid>,
    pub read_only: bool,
    pub slow_mode_seconds: i32,
    pub discoverable: bool,
    pub archived: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voice_background: Option<String>,
}

impl From<&channels::Model> for ChannelView {
    fn from(c: &channels::Model) -> Self {
        Self {
            id: c.id,
            name: c.name.clone(),
            channel_type: c.channel_type.clone(),
            topic: c.topic.clone(),
            created_by: c.created_by,
            created_at: rfc3339(&c.created_at),
            group_id: c.group_id,
            read_only: c.read_only,
            slow_mode_seconds: c.slow_mode_seconds,
            discoverable: c.discoverable,
            archived: c.archived,
            voice_background: c.voice_background.clone(),
        }
    }
}

/// The wire's Channel member (same shape as Group member).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ChannelMemberView {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: String,
    pub avatar_url: Option<String>,
    pub role: String,
    pub joined_at: String,
}

impl ChannelMemberView {
    pub fn new(user: &users::Model, role: &str, joined_at: &chrono::DateTime<chrono::Utc>) -> Self {
        Self {
            user_id: user.id,
            username: user.username.clone(),
            display_name: user.display_name.clone(),
            avatar_url: user.avatar_url.clone(),
            role: role.to_string(),
            joined_at: rfc3339(joined_at),
        }
    }
}

/// The wire's Sender-key distribution.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SenderKeyView {
    pub id: Uuid,
    pub channel_id: Uuid,
    pub user_id: Uuid,
    pub chain_id: i64,
    /// Opaque client JSON, passed through unchanged.
    pub distribution: serde_json::Value,
    pub created_at: String,
}

impl From<&sender_keys::Model> for SenderKeyView {
    fn from(k: &sender_keys::Model) -> Self {
        Self {
            id: k.id,
            channel_id: k.channel_id,
            user_id: k.user_id,
            chain_id: k.chain_id,
            // Stored as JSON text; anything unreadable goes back as the raw string.
            distribution: serde_json::from_str(&k.distribution)
                .unwrap_or_else(|_| serde_json::Value::String(k.distribution.clone())),
            created_at: rfc3339(&k.created_at),
        }
    }
}

/// The caller's stored role in a channel, `None` when not a member.
pub async fn channel_role(
    db: &impl ConnectionTrait,
    channel_id: Uuid,
    user_id: Uuid,
) -> ApiResult<Option<String>> {
    Ok(channel_members::Entity::find()
        .select_only()
        .column(channel_members::Column::Role)
        .filter(channel_members::Column::ChannelId.eq(channel_id))
        .filter(channel_members::Column::UserId.eq(user_id))
        .into_tuple::<String>()
        .one(db)
        .await?)
}

/// Effective role (wire README, "Roles"): the instance role if any, else the channel role.
pub fn effective_level(caller: &Caller, role: Option<&str>) -> Level {
    Level::effective(Level::instance(caller.is_admin, caller.is_owner), role)
}

/// The channel, or 404.
pub async fn find_channel(db: &impl ConnectionTrait, channel_id: Uuid) -> ApiResult<channels::Model> {
    channels::Entity::find_by_id(channel_id).one(db).await?.ok_or_else(|| ApiError::not_found("channel"))
}

/// The caller's role in an existing channel; 403 when not a member ("members only").
pub async fn require_member(
    db: &impl ConnectionTrait,
    channel_id: Uuid,
    caller: &Caller,
) -> ApiResult<String> {
    find_channel(db, channel_id).await?;
    channel_role(db, channel_id, caller.user_id).await?.ok_or(ApiError::Forbidden)
}

/// The caller's effective level in an existing channel (404 when the channel is missing).
pub async fn caller_level(db: &impl ConnectionTrait, channel_id: Uuid, caller: &Caller) -> ApiResult<Level> {
    find_channel(db, channel_id).await?;
    let role = channel_role(db, channel_id, caller.user_id).await?;
    Ok(effective_level(caller, role.as_deref()))
}

/// `POST /channels` as sent.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CreateChannelRequest {
    pub name: String,
    pub channel_type: String,
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub group_id: Option<Uuid>,
    #[serde(default)]
    pub discoverable: Option<bool>,
}

/// A checked `POST /channels`.
#[derive(Debug)]
pub struct NewChannel {
    pub name: String,
    pub channel_type: String,
    pub topic: Option<String>,
    pub group_id: Option<Uuid>,
    pub discoverable: bool,
}

impl NewChannel {
    pub fn parse(req: CreateChannelRequest) -> ApiResult<Self> {
        let channel_type = ChannelType::parse(req.channel_type.trim())
            .filter(|kind| ChannelType::CREATABLE.contains(kind))
            .ok_or_else(|| ApiError::validation("channel_type must be one of text, voice, gallery"))?;
        Ok(Self {
            name: name(&req.name)?,
            channel_type: channel_type.as_str().to_string(),
            topic: req.topic.as_deref().map(topic).transpose()?.flatten(),
            group_id: req.group_id,
            discoverable: req.discoverable.unwrap_or(true),
        })
    }
}

/// `PATCH /channels/{id}` as sent: absent or `null` = unchanged.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct UpdateChannelRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub read_only: Option<bool>,
    #[serde(default)]
    pub slow_mode_seconds: Option<i64>,
    #[serde(default)]
    pub message_ttl_seconds: Option<i64>,
    #[serde(default)]
    pub discoverable: Option<bool>,
    #[serde(default)]
    pub archived: Option<bool>,
    #[serde(default)]
    pub voice_background: Option<String>,
}

/// A checked channel edit. `Option<Option<_>>`: `None` = keep, `Some(None)` = clear.
#[derive(Debug, Default)]
pub struct ChannelUpdate {
    pub name: Option<String>,
    pub topic: Option<Option<String>>,
    pub read_only: Option<bool>,
    pub slow_mode_seconds: Option<i32>,
    /// `Some(None)` turns the TTL off (0 on the wire).
    pub message_ttl_seconds: Option<Option<i32>>,
    pub discoverable: Option<bool>,
    pub archived: Option<bool>,
    pub voice_background: Option<Option<String>>,
}

impl ChannelUpdate {
    pub fn parse(req: UpdateChannelRequest) -> ApiResult<Self> {
        let slow_mode_seconds = match req.slow_mode_seconds {
            None => None,
            Some(s) if (0..=SLOW_MODE_MAX as i64).contains(&s) => Some(s as i32),
            Some(_) => {
                return Err(ApiError::validation(format!("slow_mode_seconds must be 0-{SLOW_MODE_MAX}")));
            }
        };
        let message_ttl_seconds = match req.message_ttl_seconds {
            None => None,
            Some(0) => Some(None),
            Some(t) if (1..=TTL_MAX as i64).contains(&t) => Some(Some(t as i32)),
            Some(_) => return Err(ApiError::validation(format!("message_ttl_seconds must be 0-{TTL_MAX}"))),
        };
        let voice_background = match req.voice_background.as_deref().map(str::trim) {
            None => None,
            Some("") => Some(None),
            Some(url) => Some(Some(image_url("voice_background", url)?)),
        };
        Ok(Self {
            name: req.name.as_deref().map(name).transpose()?,
            topic: req.topic.as_deref().map(topic).transpose()?,
            read_only: req.read_only,
            slow_mode_seconds,
            message_ttl_seconds,
            discoverable: req.discoverable,
            archived: req.archived,
            voice_background,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.topic.is_none()
            && self.read_only.is_none()
            && self.slow_mode_seconds.is_none()
            && self.message_ttl_seconds.is_none()
            && self.discoverable.is_none()
            && self.archived.is_none()
            && self.voice_background.is_none()
    }

    /// Applies the edit to a row.
    pub fn apply(self, c: &mut channels::Model) {
        if let Some(v) = self.name {
            c.name = Some(v);
        }
        if let Some(v) = self.topic {
            c.topic = v;
        }
        if let Some(v) = self.read_only {
            c.read_only = v;
        }
        if let Some(v) = self.slow_mode_seconds {
            c.slow_mode_seconds = v;
        }
        if let Some(v) = self.message_ttl_seconds {
            c.message_ttl_seconds = v;
        }
        if let Some(v) = self.discoverable {
            c.discoverable = v;
        }
        if let Some(v) = self.archived {
            c.archived = v;
        }
        if let Some(v) = self.voice_background {
            c.voice_background = v;
        }
    }
}

/// A channel name: 1–64 bytes after trimming.
pub fn name(raw: &str) -> ApiResult<String> {
    let name = raw.trim();
    if name.is_empty() || name.len() > NAME_MAX {
        return Err(ApiError::validation(format!("name must be 1-{NAME_MAX} bytes")));
    }
    Ok(name.to_string())
}

/// A topic: ≤512 bytes after trimming; empty = none.
pub fn topic(raw: &str) -> ApiResult<Option<String>> {
    let topic = raw.trim();
    if topic.len() > TOPIC_MAX {
        return Err(ApiError::validation(format!("topic must be at most {TOPIC_MAX} bytes")));
    }
    Ok((!topic.is_empty()).then(|| topic.to_string()))
}

/// The avatar URL rule: `http://`, `https://` or a local `/api/` path, ≤2048 bytes, no spaces.
pub fn image_url(field: &str, value: &str) -> ApiResult<String> {
    if value.len() > URL_MAX {
        return Err(ApiError::validation(format!("{field} must be at most {URL_MAX} bytes")));
    }
    if !(value.starts_with("http://") || value.starts_with("https://") || value.starts_with("/api/")) {
        return Err(ApiError::validation(format!("{field} must start with http://, https:// or /api/")));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::validation(format!("{field} must not contain spaces")));
    }
    Ok(value.to_string())
}

/// A role `PATCH …/role` may assign.
pub fn assignable_role(raw: &str) -> ApiResult<&'static str> {
    ASSIGNABLE_ROLES
        .into_iter()
        .find(|r| *r == raw)
        .ok_or_else(|| ApiError::validation("role must be one of admin, moderator, member"))
}

/// A ban reason: ≤500 bytes after trimming; empty = none.
pub fn ban_reason(raw: Option<&str>) -> ApiResult<Option<String>> {
    let Some(reason) = raw.map(str::trim) else { return Ok(None) };
    if reason.len() > BAN_REASON_MAX {
        return Err(ApiError::validation(format!("reason must be at most {BAN_REASON_MAX} bytes")));
    }
    Ok((!reason.is_empty()).then(|| reason.to_string()))
}

/// Refuses a standalone channel creation by `user_id` beyond the per-user limits
/// (`CREATED_PER_HOUR_MAX`, `CREATED_TOTAL_MAX`). Checked before the insert, outside its
/// transaction: concurrent creations may pass it together, which bounds the overshoot by the
/// caller's concurrency.
pub async fn check_creation_quota(db: &impl ConnectionTrait, user_id: Uuid) -> ApiResult<()> {
    use sea_orm::{PaginatorTrait, QueryOrder};
    let mine = || {
        channels::Entity::find()
            .filter(channels::Column::CreatedBy.eq(user_id))
            .filter(channels::Column::GroupId.is_null())
            .filter(channels::Column::ChannelType.ne("dm"))
    };
    let window_start = palaver_entity::now() - chrono::Duration::hours(1);
    let recent = mine().filter(channels::Column::CreatedAt.gt(window_start));
    if recent.clone().count(db).await? >= CREATED_PER_HOUR_MAX {
        let oldest: Option<chrono::DateTime<chrono::Utc>> = recent
            .select_only()
            .column(channels::Column::CreatedAt)
            .order_by_asc(channels::Column::CreatedAt)
            .into_tuple()
            .one(db)
            .await?;
        let retry_after =
            oldest.map(|t| (t - window_start).num_seconds().clamp(1, 3600) as u64).unwrap_or(3600);
        return Err(ApiError::RateLimited { retry_after });
    }
    if mine().count(db).await? >= CREATED_TOTAL_MAX {
        return Err(ApiError::validation(format!(
            "a user can have created at most {CREATED_TOTAL_MAX} channels outside groups; delete some first"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(json: &str) -> ApiResult<ChannelUpdate> {
        ChannelUpdate::parse(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn create_rules() {
        let parse = |json: &str| NewChannel::parse(serde_json::from_str(json).unwrap());
        let c = parse(r#"{"name": " general ", "channel_type": "text", "topic": "  "}"#).unwrap();
        assert_eq!((c.name.as_str(), c.topic, c.discoverable), ("general", None, true));
        assert!(parse(r#"{"name": " ", "channel_type": "text"}"#).is_err());
        assert!(parse(&format!(r#"{{"name": "{}", "channel_type": "text"}}"#, "x".repeat(65))).is_err());
        assert!(parse(r#"{"name": "a", "channel_type": "dm"}"#).is_err());
        assert!(
            parse(&format!(r#"{{"name": "a", "channel_type": "voice", "topic": "{}"}}"#, "x".repeat(513)))
                .is_err()
        );
    }

    #[test]
    fn update_rules() {
        let u = update(r#"{"topic": "", "message_ttl_seconds": 0, "voice_background": ""}"#).unwrap();
        assert_eq!(u.topic, Some(None));
        assert_eq!(u.message_ttl_seconds, Some(None));
        assert_eq!(u.voice_background, Some(None));
        assert!(update("{}").unwrap().is_empty());
        assert!(update(r#"{"slow_mode_seconds": 86401}"#).is_err());
        assert!(update(r#"{"slow_mode_seconds": -1}"#).is_err());
        assert!(update(r#"{"message_ttl_seconds": 2592001}"#).is_err());
        assert!(update(r#"{"voice_background": "javascript:x"}"#).is_err());
        assert!(update(r#"{"voice_background": "/api/avatars/x.png"}"#).is_ok());
        assert!(update(r#"{"name": ""}"#).is_err());
    }

    #[test]
    fn roles_and_reasons() {
        assert!(assignable_role("owner").is_err());
        assert_eq!(assignable_role("moderator").unwrap(), "moderator");
        assert_eq!(ban_reason(Some("  ")).unwrap(), None);
        assert!(ban_reason(Some(&"x".repeat(501))).is_err());
    }
}
