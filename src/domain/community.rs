//! Community membership and the caller's standing in a community (wire README, "Roles";
//! rest-communities-groups-channels.md, "Gates"). Shared by the community, group, channel,
//! image and moderation routes so every gate reads the same way.

use std::collections::HashMap;

use palaver_actors::HubError;
use palaver_actors::community::{By, CommunityChanges, Refusal};
use palaver_actors::protocol::ServerFrame;
use palaver_actors::roles::{InstanceRole, Level};
use palaver_actors::wire_time::rfc3339;
use palaver_entity::{
    channel_timeouts, channel_warnings, communities, community_bans, community_invites, community_members,
    users,
};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};

/// The community, or 404.
pub async fn find_community(db: &impl ConnectionTrait, community_id: Uuid) -> ApiResult<communities::Model> {
    communities::Entity::find_by_id(community_id)
        .one(db)
        .await?
        .ok_or_else(|| ApiError::not_found("community"))
}

/// The user's stored role in a community, `None` when not a member.
pub async fn community_role(
    db: &impl ConnectionTrait,
    community_id: Uuid,
    user_id: Uuid,
) -> ApiResult<Option<String>> {
    Ok(community_members::Entity::find()
        .select_only()
        .column(community_members::Column::Role)
        .filter(community_members::Column::CommunityId.eq(community_id))
        .filter(community_members::Column::UserId.eq(user_id))
        .into_tuple::<String>()
        .one(db)
        .await?)
}

/// Whether the user is banned from the community.
pub async fn is_banned(db: &impl ConnectionTrait, community_id: Uuid, user_id: Uuid) -> ApiResult<bool> {
    Ok(community_bans::Entity::find()
        .filter(community_bans::Column::CommunityId.eq(community_id))
        .filter(community_bans::Column::UserId.eq(user_id))
        .count(db)
        .await?
        > 0)
}

/// The caller's standing in a community they may enter.
#[derive(Clone, Debug)]
pub struct Standing {
    pub community: communities::Model,
    /// The stored community role; `None` for instance staff who are not members.
    pub role: Option<String>,
    /// Effective level: the instance role if any, else the community role.
    pub level: Level,
}

impl Standing {
    /// Moderator or above (kick, ban, timeouts, warnings).
    pub fn can_moderate(&self) -> bool {
        self.level >= Level::Moderator
    }
    /// Admin or above (roles, settings, invites by default).
    pub fn can_manage(&self) -> bool {
        self.level >= Level::Admin
    }
    /// "Is owner" (wire README, "Roles"): the community owner or an instance role.
    pub fn is_owner(&self) -> bool {
        self.level >= Level::Owner
    }

    /// The community's `who_can_create_*` policy: `everyone`, `moderator`, or `admin`
    /// (anything else counts as `admin`); owner and instance roles are admin-level.
    pub fn meets_policy(&self, policy: &str) -> bool {
        match policy {
            "everyone" => true,
            "moderator" => self.level >= Level::Moderator,
            _ => self.level >= Level::Admin,
        }
    }
}

/// The gate of every `/communities/{cid}/…` route: 404 when the community does not exist,
/// 403 for a non-member or a banned user (a ban removes the membership, so a banned user is
/// never a member); instance admins and the instance owner pass.
pub async fn require_member(
    db: &impl ConnectionTrait,
    community_id: Uuid,
    caller: &Caller,
) -> ApiResult<Standing> {
    let community = find_community(db, community_id).await?;
    let role = community_role(db, community_id, caller.user_id).await?;
    let instance = Level::instance(caller.is_admin, caller.is_owner);
    if instance.is_none() && role.is_none() {
        return Err(ApiError::ForbiddenBecause("you are not a member of this community".into()));
    }
    let level = Level::effective(instance, role.as_deref());
    Ok(Standing { community, role, level })
}

// ---------------------------------------------------------------------------------------
// Live side: the caller as the community actor sees them, and its refusals as API errors.

/// The caller as a community actor command's requester.
pub fn by(caller: &Caller) -> By {
    By {
        user_id: caller.user_id,
        instance: InstanceRole { is_admin: caller.is_admin, is_owner: caller.is_owner },
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Invalid(m) => ApiError::Validation(m),
            Refusal::Forbidden(None) => ApiError::Forbidden,
            Refusal::Forbidden(Some(m)) => ApiError::ForbiddenBecause(m),
            Refusal::NotFound(what) => ApiError::not_found(what),
            Refusal::Conflict(m) => ApiError::Conflict(m),
            Refusal::Unavailable => {
                ApiError::Unavailable("community actor: database unavailable or timed out".into())
            }
            Refusal::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<HubError> for ApiError {
    fn from(err: HubError) -> Self {
        match err {
            HubError::NotFound => ApiError::not_found("community"),
            HubError::Unavailable | HubError::Stopped => ApiError::Unavailable(err.to_string()),
            HubError::Internal(m) => ApiError::Internal(m),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Wire views

/// The wire's Community object.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct CommunityView {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub icon_url: Option<String>,
    pub banner_url: Option<String>,
    pub owner_id: Uuid,
    pub created_at: String,
    pub member_count: u64,
    pub who_can_create_groups: String,
    pub who_can_create_invites: String,
    pub discoverable: bool,
    pub community_theme: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub welcome_message: Option<String>,
}

impl CommunityView {
    pub fn new(c: &communities::Model, member_count: u64) -> Self {
        Self {
            id: c.id,
            name: c.name.clone(),
            description: c.description.clone(),
            icon_url: c.icon_url.clone(),
            banner_url: c.banner_url.clone(),
            owner_id: c.owner_id,
            created_at: rfc3339(&c.created_at),
            member_count,
            who_can_create_groups: c.who_can_create_groups.clone(),
            who_can_create_invites: c.who_can_create_invites.clone(),
            discoverable: c.discoverable,
            community_theme: theme_value(c.community_theme.as_deref()),
            welcome_message: c.welcome_message.clone(),
        }
    }
}

/// The stored theme as JSON (anything unreadable is shown as no theme).
pub fn theme_value(stored: Option<&str>) -> Option<serde_json::Value> {
    stored.and_then(|t| serde_json::from_str(t).ok())
}

/// `community_updated` for a community row changed outside its actor (icon, banner uploads).
pub fn community_updated_frame(c: &communities::Model) -> ServerFrame {
    ServerFrame::CommunityUpdated {
        community_id: c.id,
        name: Some(c.name.clone()),
        description: c.description.clone(),
        icon_url: c.icon_url.clone(),
        banner_url: c.banner_url.clone(),
        community_theme: theme_value(c.community_theme.as_deref()),
        welcome_message: c.welcome_message.clone(),
    }
}

/// The wire's Community member.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct CommunityMemberView {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: String,
    pub avatar_url: Option<String>,
    pub role: String,
    pub nickname: Option<String>,
    pub joined_at: String,
}

impl CommunityMemberView {
    pub fn new(member: &community_members::Model, user: &users::Model) -> Self {
        Self {
            user_id: user.id,
            username: user.username.clone(),
            display_name: user.display_name.clone(),
            avatar_url: user.avatar_url.clone(),
            role: member.role.clone(),
            nickname: member.nickname.clone(),
            joined_at: rfc3339(&member.joined_at),
        }
    }
}

/// The wire's Community invite.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct CommunityInviteView {
    pub id: Uuid,
    pub code: String,
    pub community_id: Uuid,
    pub max_uses: Option<i32>,
    pub used_count: i32,
    pub expires_at: Option<String>,
    pub created_at: String,
}

impl From<&community_invites::Model> for CommunityInviteView {
    fn from(i: &community_invites::Model) -> Self {
        Self {
            id: i.id,
            code: i.code.clone(),
            community_id: i.community_id,
            max_uses: i.max_uses,
            used_count: i.used_count,
            expires_at: i.expires_at.as_ref().map(rfc3339),
            created_at: rfc3339(&i.created_at),
        }
    }
}

/// Whether an invite can still be used now (not expired, not used up).
pub fn invite_usable(i: &community_invites::Model) -> bool {
    let fresh = i.expires_at.is_none_or(|at| at > palaver_entity::now());
    let left = i.max_uses.is_none_or(|max| i.used_count < max);
    fresh && left
}

/// `GET /community-invites/{code}`: the preview (redacted when not discoverable).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[schemars(rename = "CommunityInvitePreview")]
pub struct InvitePreview {
    pub community_name: String,
    pub community_description: Option<String>,
    pub member_count: u64,
    pub code: String,
}

impl InvitePreview {
    pub fn new(c: &communities::Model, member_count: u64, code: &str) -> Self {
        let (community_name, community_description) = if c.discoverable {
            (c.name.clone(), c.description.clone())
        } else {
            ("Private Community".to_string(), None)
        };
        Self { community_name, community_description, member_count, code: code.to_string() }
    }
}

/// An entry of `GET /communities/{cid}/bans`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct BanView {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: String,
    pub reason: Option<String>,
    pub created_at: String,
}

impl BanView {
    pub fn new(ban: &community_bans::Model, user: &users::Model) -> Self {
        Self {
            user_id: user.id,
            username: user.username.clone(),
            display_name: user.display_name.clone(),
            reason: ban.reason.clone(),
            created_at: rfc3339(&ban.created_at),
        }
    }
}

/// The wire's Timeout object.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TimeoutView {
    pub id: Uuid,
    pub user_id: Uuid,
    pub channel_id: Uuid,
    pub issued_by: Option<Uuid>,
    pub reason: Option<String>,
    pub expires_at: String,
    pub created_at: String,
}

impl From<&channel_timeouts::Model> for TimeoutView {
    fn from(t: &channel_timeouts::Model) -> Self {
        Self {
            id: t.id,
            user_id: t.user_id,
            channel_id: t.channel_id,
            issued_by: t.issued_by,
            reason: t.reason.clone(),
            expires_at: rfc3339(&t.expires_at),
            created_at: rfc3339(&t.created_at),
        }
    }
}

/// The wire's Warning object.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct WarningView {
    pub id: Uuid,
    pub user_id: Uuid,
    pub channel_id: Uuid,
    pub issued_by: Option<Uuid>,
    pub reason: String,
    pub created_at: String,
}

impl From<&channel_warnings::Model> for WarningView {
    fn from(w: &channel_warnings::Model) -> Self {
        Self {
            id: w.id,
            user_id: w.user_id,
            channel_id: w.channel_id,
            issued_by: w.issued_by,
            reason: w.reason.clone(),
            created_at: rfc3339(&w.created_at),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Validated input

/// Community names: 1–64 bytes after trimming.
pub const NAME_MAX: usize = 64;
pub const DESCRIPTION_MAX: usize = 2048;
pub const WELCOME_MAX: usize = 2000;
pub const NICKNAME_MAX: usize = 64;
pub const THEME_MAX: usize = 8192;
pub const REASON_MAX: usize = 500;
pub const WARNING_MAX: usize = 1000;
/// Timeouts: one minute to thirty days.
pub const TIMEOUT_MIN: i64 = 60;
pub const TIMEOUT_MAX: i64 = 2_592_000;
/// Invite codes longer than this are refused outright.
pub const INVITE_CODE_MAX: usize = 100;
pub const POLICIES: [&str; 3] = ["everyone", "moderator", "admin"];
/// Theme keys holding a colour.
pub const THEME_COLOURS: [&str; 7] =
    ["accent", "accentHover", "bgPrimary", "bgSecondary", "bgTertiary", "textPrimary", "textSecondary"];

/// `POST /communities` as sent.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CreateCommunityRequest {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Not in the wire's request (its object has it); accepted when sent. Absent = discoverable,
    /// as Chatalot creates communities, so invite previews show the name.
    #[serde(default)]
    pub discoverable: Option<bool>,
}

/// A checked `POST /communities`.
#[derive(Debug)]
pub struct NewCommunity {
    pub name: String,
    pub description: Option<String>,
    pub discoverable: bool,
}

impl NewCommunity {
    pub fn parse(req: CreateCommunityRequest) -> ApiResult<Self> {
        Ok(Self {
            name: name(&req.name)?,
            description: req.description.as_deref().map(description).transpose()?.flatten(),
            discoverable: req.discoverable.unwrap_or(true),
        })
    }
}

/// `PATCH /communities/{cid}` as sent: absent or `null` = unchanged.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct UpdateCommunityRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub icon_url: Option<String>,
    #[serde(default)]
    pub banner_url: Option<String>,
    #[serde(default)]
    pub who_can_create_groups: Option<String>,
    #[serde(default)]
    pub who_can_create_invites: Option<String>,
    #[serde(default)]
    pub discoverable: Option<bool>,
    #[serde(default)]
    pub welcome_message: Option<String>,
    #[serde(default)]
    pub community_theme: Option<serde_json::Value>,
}

/// Checks a `PATCH /communities/{cid}` into the actor's change set.
pub fn parse_update(req: UpdateCommunityRequest) -> ApiResult<CommunityChanges> {
    let cleared = |v: Option<String>| v.map(|s| Some(s.trim().to_string()).filter(|s| !s.is_empty()));
    let welcome_message = cleared(req.welcome_message);
    if let Some(Some(w)) = &welcome_message
        && w.len() > WELCOME_MAX
    {
        return Err(ApiError::validation(format!("welcome_message must be at most {WELCOME_MAX} bytes")));
    }
    Ok(CommunityChanges {
        name: req.name.as_deref().map(name).transpose()?,
        description: req.description.as_deref().map(description).transpose()?,
        icon_url: cleared(req.icon_url),
        banner_url: cleared(req.banner_url),
        who_can_create_groups: req
            .who_can_create_groups
            .as_deref()
            .map(|p| policy("who_can_create_groups", p))
            .transpose()?,
        who_can_create_invites: req
            .who_can_create_invites
            .as_deref()
            .map(|p| policy("who_can_create_invites", p))
            .transpose()?,
        discoverable: req.discoverable,
        welcome_message,
        community_theme: req.community_theme.filter(|t| !t.is_null()).map(|t| theme(&t)).transpose()?,
    })
}

/// A community name: 1–64 bytes after trimming.
pub fn name(raw: &str) -> ApiResult<String> {
    let name = raw.trim();
    if name.is_empty() || name.len() > NAME_MAX {
        return Err(ApiError::validation(format!("name must be 1-{NAME_MAX} bytes")));
    }
    Ok(name.to_string())
}

/// A description: ≤2048 bytes after trimming; empty = none.
pub fn description(raw: &str) -> ApiResult<Option<String>> {
    let d = raw.trim();
    if d.len() > DESCRIPTION_MAX {
        return Err(ApiError::validation(format!("description must be at most {DESCRIPTION_MAX} bytes")));
    }
    Ok((!d.is_empty()).then(|| d.to_string()))
}

fn policy(field: &str, raw: &str) -> ApiResult<String> {
    let p = raw.trim();
    if POLICIES.contains(&p) {
        Ok(p.to_string())
    } else {
        Err(ApiError::validation(format!("{field} must be one of everyone, moderator, admin")))
    }
}

fn is_colour(v: &str) -> bool {
    v.strip_prefix('#')
        .is_some_and(|hex| (3..=8).contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A community theme: an object of the allowed keys only, colours `#` + 3–8 hex, `customCss`
/// through the CSS sanitizer; serialized ≤8192 bytes. Returns the JSON to store.
pub fn theme(value: &serde_json::Value) -> ApiResult<String> {
    let map = value.as_object().ok_or_else(|| ApiError::validation("community_theme must be an object"))?;
    let mut clean = serde_json::Map::new();
    for (key, v) in map {
        if THEME_COLOURS.contains(&key.as_str()) {
            match v.as_str() {
                Some(c) if is_colour(c) => {
                    clean.insert(key.clone(), serde_json::Value::String(c.to_string()));
                }
                _ => {
                    return Err(ApiError::validation(format!(
                        "community_theme.{key} must be # and 3-8 hex digits"
                    )));
                }
            }
        } else if key == "customCss" {
            let css = v
                .as_str()
                .ok_or_else(|| ApiError::validation("community_theme.customCss must be a string"))?;
            clean.insert(key.clone(), serde_json::Value::String(sanitize_css(css)?));
        } else {
            return Err(ApiError::validation(format!("community_theme: unknown key {key:?}")));
        }
    }
    let out = serde_json::Value::Object(clean).to_string();
    if out.len() > THEME_MAX {
        return Err(ApiError::validation(format!("community_theme must be at most {THEME_MAX} bytes")));
    }
    Ok(out)
}

/// The custom-CSS sanitizer: refuses anything that could load remote content, run script or
/// break out of a style element. What passes is stored as sent (trimmed).
pub fn sanitize_css(css: &str) -> ApiResult<String> {
    let lower = css.to_ascii_lowercase();
    const REFUSED: [&str; 10] = [
        "<",
        "\\",
        "@import",
        "@charset",
        "@namespace",
        "url(",
        "expression(",
        "javascript:",
        "behavior",
        "-moz-binding",
    ];
    if let Some(bad) = REFUSED.iter().find(|bad| lower.contains(**bad)) {
        return Err(ApiError::validation(format!("customCss may not contain {bad:?}")));
    }
    if css.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(ApiError::validation("customCss may not contain control characters"));
    }
    Ok(css.trim().to_string())
}

/// A nickname: trimmed, empty or null clears, ≤64 bytes.
pub fn nickname(raw: Option<&str>) -> ApiResult<Option<String>> {
    let Some(n) = raw.map(str::trim).filter(|n| !n.is_empty()) else { return Ok(None) };
    if n.len() > NICKNAME_MAX {
        return Err(ApiError::validation(format!("nickname must be at most {NICKNAME_MAX} bytes")));
    }
    Ok(Some(n.to_string()))
}

/// A ban or timeout reason: trimmed, empty = none, ≤500 bytes.
pub fn reason(raw: Option<&str>) -> ApiResult<Option<String>> {
    let Some(r) = raw.map(str::trim).filter(|r| !r.is_empty()) else { return Ok(None) };
    if r.len() > REASON_MAX {
        return Err(ApiError::validation(format!("reason must be at most {REASON_MAX} bytes")));
    }
    Ok(Some(r.to_string()))
}

/// A warning's reason: 1–1000 bytes after trimming.
pub fn warning_reason(raw: &str) -> ApiResult<String> {
    let r = raw.trim();
    if r.is_empty() || r.len() > WARNING_MAX {
        return Err(ApiError::validation(format!("reason must be 1-{WARNING_MAX} bytes")));
    }
    Ok(r.to_string())
}

/// A timeout's length: 60 s to 30 days.
pub fn timeout_seconds(raw: i64) -> ApiResult<i64> {
    if (TIMEOUT_MIN..=TIMEOUT_MAX).contains(&raw) {
        Ok(raw)
    } else {
        Err(ApiError::validation(format!("duration_seconds must be {TIMEOUT_MIN}-{TIMEOUT_MAX}")))
    }
}

/// `max_uses` of a community invite: null = unlimited, else at least 1.
pub fn invite_max_uses(raw: Option<i64>) -> ApiResult<Option<i32>> {
    crate::domain::invite::max_uses(raw)
}

/// Member counts of the given communities (communities without members are absent).
pub async fn member_counts(
    db: &impl ConnectionTrait,
    community_ids: &[Uuid],
) -> ApiResult<HashMap<Uuid, u64>> {
    if community_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, i64)> = community_members::Entity::find()
        .select_only()
        .column(community_members::Column::CommunityId)
        .column_as(Expr::col(community_members::Column::UserId).count(), "n")
        .filter(community_members::Column::CommunityId.is_in(community_ids.iter().copied()))
        .group_by(community_members::Column::CommunityId)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().map(|(id, n)| (id, u64::try_from(n).unwrap_or(0))).collect())
}

/// Members of one community.
pub async fn member_count(db: &impl ConnectionTrait, community_id: Uuid) -> ApiResult<u64> {
    Ok(community_members::Entity::find()
        .filter(community_members::Column::CommunityId.eq(community_id))
        .count(db)
        .await?)
}

/// A channel of a group of this community, or 404.
pub async fn require_group_channel(
    db: &impl ConnectionTrait,
    community_id: Uuid,
    channel_id: Uuid,
) -> ApiResult<palaver_entity::channels::Model> {
    use palaver_entity::{channels, groups};
    let channel = channels::Entity::find_by_id(channel_id)
        .one(db)
        .await?
        .ok_or_else(|| ApiError::not_found("channel"))?;
    let group = match channel.group_id {
        Some(group_id) => groups::Entity::find_by_id(group_id).one(db).await?,
        None => None,
    };
    match group {
        Some(g) if g.community_id == community_id => Ok(channel),
        _ => Err(ApiError::not_found("channel")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(json: &str) -> ApiResult<CommunityChanges> {
        parse_update(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn update_rules() {
        let u = update(r#"{"description": "", "welcome_message": " hi ", "icon_url": ""}"#).unwrap();
        assert_eq!(u.description, Some(None));
        assert_eq!(u.welcome_message, Some(Some("hi".into())));
        assert_eq!(u.icon_url, Some(None));
        assert!(update(r#"{"community_theme": null}"#).unwrap().community_theme.is_none());
        assert_eq!(update(r#"{"community_theme": {}}"#).unwrap().community_theme.as_deref(), Some("{}"));
        assert!(update(r#"{"name": "  "}"#).is_err());
        assert!(update(r#"{"who_can_create_groups": "owner"}"#).is_err());
        assert!(update(r#"{"community_theme": {"accent": "red"}}"#).is_err());
        assert!(update(r#"{"community_theme": {"font": "x"}}"#).is_err());
        assert!(update(r#"{"community_theme": {"customCss": "a{background:url(http://x)}"}}"#).is_err());
        assert!(
            update(r##"{"community_theme": {"accent": "#abc", "customCss": ".a { color: red; }"}}"##).is_ok()
        );
        assert!(update(&format!(r#"{{"welcome_message": "{}"}}"#, "x".repeat(2001))).is_err());
    }

    #[test]
    fn small_rules() {
        assert_eq!(nickname(Some("  ")).unwrap(), None);
        assert!(nickname(Some(&"x".repeat(65))).is_err());
        assert!(timeout_seconds(59).is_err());
        assert!(timeout_seconds(2_592_001).is_err());
        assert!(warning_reason(" ").is_err());
        assert_eq!(reason(Some(" ")).unwrap(), None);
    }
}
