//! What the image routes answer and whom they let in (rest-communities-groups-channels.md):
//! the Community and Group objects returned by the icon/banner uploads, their live frames,
//! the custom emoji object and shortcode rule, and the group-role check of the group uploads.
//!
//! The community and group routes are built elsewhere; when they land, their views should
//! replace `CommunityView`/`GroupView` here (same wire shape).

use palaver_actors::protocol::{ServerFrame, rfc3339};
use palaver_entity::{communities, community_members, custom_emojis, group_members, groups};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect};
use serde::Serialize;
use uuid::Uuid;

use crate::auth::Caller;
use crate::domain::community::community_role;
use crate::error::{ApiError, ApiResult};

/// The wire's Community object.
#[derive(Debug, Clone, Serialize)]
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

/// The stored theme as JSON (`null` when unset or unreadable).
fn theme(c: &communities::Model) -> Option<serde_json::Value> {
    c.community_theme.as_deref().and_then(|t| serde_json::from_str(t).ok())
}

impl CommunityView {
    pub async fn load(db: &impl ConnectionTrait, c: &communities::Model) -> ApiResult<Self> {
        Ok(Self {
            id: c.id,
            name: c.name.clone(),
            description: c.description.clone(),
            icon_url: c.icon_url.clone(),
            banner_url: c.banner_url.clone(),
            owner_id: c.owner_id,
            created_at: rfc3339(&c.created_at),
            member_count: community_members::Entity::find()
                .filter(community_members::Column::CommunityId.eq(c.id))
                .count(db)
                .await?,
            who_can_create_groups: c.who_can_create_groups.clone(),
            who_can_create_invites: c.who_can_create_invites.clone(),
            discoverable: c.discoverable,
            community_theme: theme(c),
            welcome_message: c.welcome_message.clone(),
        })
    }
}

/// `community_updated` for a community row.
pub fn community_updated_frame(c: &communities::Model) -> ServerFrame {
    ServerFrame::CommunityUpdated {
        community_id: c.id,
        name: Some(c.name.clone()),
        description: c.description.clone(),
        icon_url: c.icon_url.clone(),
        banner_url: c.banner_url.clone(),
        community_theme: theme(c),
        welcome_message: c.welcome_message.clone(),
    }
}

/// The wire's Group object.
#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub icon_url: Option<String>,
    pub banner_url: Option<String>,
    pub accent_color: Option<String>,
    pub owner_id: Uuid,
    pub community_id: Uuid,
    pub created_at: String,
    pub member_count: u64,
    pub visibility: String,
    pub discoverable: bool,
    pub assigned_member_id: Option<Uuid>,
    pub allow_invites: bool,
}

impl GroupView {
    pub async fn load(db: &impl ConnectionTrait, g: &groups::Model) -> ApiResult<Self> {
        let member_count =
            group_members::Entity::find().filter(group_members::Column::GroupId.eq(g.id)).count(db).await?;
        Ok(Self {
            id: g.id,
            name: g.name.clone(),
            description: g.description.clone(),
            icon_url: g.icon_url.clone(),
            banner_url: g.banner_url.clone(),
            accent_color: g.accent_color.clone(),
            owner_id: g.owner_id,
            community_id: g.community_id,
            created_at: rfc3339(&g.created_at),
            member_count,
            visibility: g.visibility.clone(),
            discoverable: g.discoverable,
            assigned_member_id: g.assigned_member_id,
            allow_invites: g.allow_invites,
        })
    }
}

/// `group_updated` for a group row.
pub fn group_updated_frame(g: &groups::Model) -> ServerFrame {
    ServerFrame::GroupUpdated {
        group_id: g.id,
        name: Some(g.name.clone()),
        description: g.description.clone(),
        icon_url: g.icon_url.clone(),
        banner_url: g.banner_url.clone(),
        accent_color: g.accent_color.clone(),
        visibility: g.visibility.clone(),
    }
}

/// The group, or 404.
pub async fn find_group(db: &impl ConnectionTrait, group_id: Uuid) -> ApiResult<groups::Model> {
    groups::Entity::find_by_id(group_id).one(db).await?.ok_or_else(|| ApiError::not_found("group"))
}

/// The wire's "group role": the instance owner is `admin` (`owner` of groups they own); else
/// the group membership role; else, for personal groups only, community owners, admins and
/// moderators are `admin`; else none. Instance admins get no implicit group access.
pub async fn group_role(
    db: &impl ConnectionTrait,
    group: &groups::Model,
    caller: &Caller,
) -> ApiResult<Option<String>> {
    if caller.is_owner {
        return Ok(Some(if group.owner_id == caller.user_id { "owner" } else { "admin" }.into()));
    }
    let role = group_members::Entity::find()
        .select_only()
        .column(group_members::Column::Role)
        .filter(group_members::Column::GroupId.eq(group.id))
        .filter(group_members::Column::UserId.eq(caller.user_id))
        .into_tuple::<String>()
        .one(db)
        .await?;
    if role.is_some() {
        return Ok(role);
    }
    if group.assigned_member_id.is_some()
        && let Some(community) = community_role(db, group.community_id, caller.user_id).await?
        && matches!(community.as_str(), "owner" | "admin" | "moderator")
    {
        return Ok(Some("admin".into()));
    }
    Ok(None)
}

/// Group owner or admin (uploads, settings); 403 otherwise, 404 for a missing group.
pub async fn require_group_manager(
    db: &impl ConnectionTrait,
    group_id: Uuid,
    caller: &Caller,
) -> ApiResult<groups::Model> {
    let group = find_group(db, group_id).await?;
    match group_role(db, &group, caller).await?.as_deref() {
        Some("owner" | "admin") => Ok(group),
        _ => Err(ApiError::Forbidden),
    }
}

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
#[derive(Debug, Clone, Serialize)]
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
