//! Groups (rest-communities-groups-channels.md, "Groups"): the Group object, Group invite and
//! invite-preview views, validated create / update input, the "group role" permission helper
//! every group route uses, and the membership writes shared with the community routes
//! (joining a group joins its channels; leaving it leaves them).

use std::collections::{HashMap, HashSet};

use palaver_actors::protocol::ServerFrame;
use palaver_actors::roles::Level;
use palaver_actors::wire_time::rfc3339;
use palaver_entity::{
    channel_bans, channel_members, channels, community_members, group_invites, group_members, groups,
    sender_keys,
};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::domain::channel::image_url;
use crate::domain::community::community_role;
use crate::error::{ApiError, ApiResult};

/// Groups one community may hold.
pub const MAX_GROUPS_PER_COMMUNITY: u64 = 200;
/// Channels one group may hold.
pub const MAX_CHANNELS_PER_GROUP: u64 = 100;

/// Refuses a new channel in a group that already holds `MAX_CHANNELS_PER_GROUP` (every path
/// that creates one: `POST /groups/{id}/channels` and `POST /channels` with a `group_id`).
pub async fn check_channel_room(db: &impl ConnectionTrait, group_id: Uuid) -> ApiResult<()> {
    use sea_orm::PaginatorTrait;
    let existing = channels::Entity::find().filter(channels::Column::GroupId.eq(group_id)).count(db).await?;
    if existing >= MAX_CHANNELS_PER_GROUP {
        return Err(ApiError::validation(format!(
            "a group can have at most {MAX_CHANNELS_PER_GROUP} channels"
        )));
    }
    Ok(())
}
/// A public group adds every community member; refused above this many.
pub const PUBLIC_AUTOJOIN_MAX: usize = 5000;
/// Longest invite code a lookup accepts (real codes are 12 characters).
pub const INVITE_CODE_MAX: usize = 100;
/// Name shown in an invite preview of a non-discoverable group.
pub const PRIVATE_GROUP_NAME: &str = "Private Group";

// ---------------------------------------------------------------------------------------
// Views

/// The wire's Group object.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
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
    pub member_count: i64,
    pub visibility: String,
    pub discoverable: bool,
    pub assigned_member_id: Option<Uuid>,
    pub allow_invites: bool,
}

impl GroupView {
    pub fn new(g: &groups::Model, member_count: i64) -> Self {
        Self {
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
        }
    }
}

/// `group_updated` for a group row (settings, icon, banner).
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

/// The wire's Group invite.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct GroupInviteView {
    pub id: Uuid,
    pub code: String,
    pub group_id: Uuid,
    pub max_uses: Option<i32>,
    pub used_count: i32,
    pub expires_at: Option<String>,
    pub created_at: String,
}

impl From<&group_invites::Model> for GroupInviteView {
    fn from(i: &group_invites::Model) -> Self {
        Self {
            id: i.id,
            code: i.code.clone(),
            group_id: i.group_id,
            max_uses: i.max_uses,
            used_count: i.used_count,
            expires_at: i.expires_at.as_ref().map(rfc3339),
            created_at: rfc3339(&i.created_at),
        }
    }
}

/// `GET /invites/{code}`: a preview, redacted for non-discoverable groups.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[schemars(rename = "GroupInvitePreview")]
pub struct InvitePreview {
    pub group_name: String,
    pub group_description: Option<String>,
    pub member_count: i64,
    pub code: String,
}

impl InvitePreview {
    pub fn new(group: &groups::Model, invite: &group_invites::Model, member_count: i64) -> Self {
        let (group_name, group_description) = if group.discoverable {
            (group.name.clone(), group.description.clone())
        } else {
            (PRIVATE_GROUP_NAME.to_string(), None)
        };
        Self { group_name, group_description, member_count, code: invite.code.clone() }
    }
}

/// `POST /invites/{code}/accept`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct AcceptedInvite {
    pub group_id: Uuid,
    pub group_name: String,
}

/// Why an invite cannot be used right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteState {
    Usable,
    Expired,
    UsedUp,
}

pub fn invite_state(invite: &group_invites::Model, now: chrono::DateTime<chrono::Utc>) -> InviteState {
    if invite.expires_at.is_some_and(|at| at <= now) {
        InviteState::Expired
    } else if invite.max_uses.is_some_and(|max| invite.used_count >= max) {
        InviteState::UsedUp
    } else {
        InviteState::Usable
    }
}

// ---------------------------------------------------------------------------------------
// Input

/// `public` or `private`.
pub fn visibility(raw: &str) -> ApiResult<&'static str> {
    match raw.trim() {
        "public" => Ok("public"),
        "private" => Ok("private"),
        _ => Err(ApiError::validation("visibility must be public or private")),
    }
}

/// Group names and descriptions follow the community rules (same limits, same messages).
pub use super::community::{description, name};

/// An accent colour: `#` and 3–8 hex digits.
pub fn accent_color(raw: &str) -> ApiResult<String> {
    let c = raw.trim();
    let ok = c
        .strip_prefix('#')
        .is_some_and(|hex| (3..=8).contains(&hex.len()) && hex.chars().all(|ch| ch.is_ascii_hexdigit()));
    if !ok {
        return Err(ApiError::validation("accent_color must be # followed by 3-8 hex digits"));
    }
    Ok(c.to_string())
}

/// An icon / banner URL: `""` clears, otherwise the avatar URL rule.
fn optional_image(field: &str, raw: &str) -> ApiResult<Option<String>> {
    match raw.trim() {
        "" => Ok(None),
        url => image_url(field, url).map(Some),
    }
}

/// `POST /groups` as sent.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CreateGroupRequest {
    pub community_id: Uuid,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub visibility: Option<String>,
    #[serde(default)]
    pub assigned_member_id: Option<Uuid>,
}

/// A checked `POST /groups`.
#[derive(Debug)]
pub struct NewGroup {
    pub community_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    /// Already forced to `private` for personal groups.
    pub visibility: &'static str,
    pub assigned_member_id: Option<Uuid>,
}

impl NewGroup {
    pub fn parse(req: CreateGroupRequest) -> ApiResult<Self> {
        let requested = req.visibility.as_deref().map(visibility).transpose()?.unwrap_or("public");
        Ok(Self {
            community_id: req.community_id,
            name: name(&req.name)?,
            description: req.description.as_deref().map(description).transpose()?.flatten(),
            visibility: if req.assigned_member_id.is_some() { "private" } else { requested },
            assigned_member_id: req.assigned_member_id,
        })
    }

    pub fn is_personal(&self) -> bool {
        self.assigned_member_id.is_some()
    }
}

/// `PATCH /groups/{id}` as sent: absent or `null` = unchanged.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct UpdateGroupRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub visibility: Option<String>,
    #[serde(default)]
    pub discoverable: Option<bool>,
    #[serde(default)]
    pub allow_invites: Option<bool>,
    #[serde(default)]
    pub icon_url: Option<String>,
    #[serde(default)]
    pub banner_url: Option<String>,
    #[serde(default)]
    pub accent_color: Option<String>,
}

/// A checked group edit. `Option<Option<_>>`: `None` = keep, `Some(None)` = clear.
#[derive(Debug, Default)]
pub struct GroupUpdate {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub visibility: Option<&'static str>,
    pub discoverable: Option<bool>,
    pub allow_invites: Option<bool>,
    pub icon_url: Option<Option<String>>,
    pub banner_url: Option<Option<String>>,
    pub accent_color: Option<String>,
}

impl GroupUpdate {
    pub fn parse(req: UpdateGroupRequest) -> ApiResult<Self> {
        Ok(Self {
            name: req.name.as_deref().map(name).transpose()?,
            description: req.description.as_deref().map(description).transpose()?,
            visibility: req.visibility.as_deref().map(visibility).transpose()?,
            discoverable: req.discoverable,
            allow_invites: req.allow_invites,
            icon_url: req.icon_url.as_deref().map(|v| optional_image("icon_url", v)).transpose()?,
            banner_url: req.banner_url.as_deref().map(|v| optional_image("banner_url", v)).transpose()?,
            accent_color: req.accent_color.as_deref().map(accent_color).transpose()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.description.is_none()
            && self.visibility.is_none()
            && self.discoverable.is_none()
            && self.allow_invites.is_none()
            && self.icon_url.is_none()
            && self.banner_url.is_none()
            && self.accent_color.is_none()
    }

    /// Applies the edit to a row.
    pub fn apply(self, g: &mut groups::Model) {
        if let Some(v) = self.name {
            g.name = v;
        }
        if let Some(v) = self.description {
            g.description = v;
        }
        if let Some(v) = self.visibility {
            g.visibility = v.to_string();
        }
        if let Some(v) = self.discoverable {
            g.discoverable = v;
        }
        if let Some(v) = self.allow_invites {
            g.allow_invites = v;
        }
        if let Some(v) = self.icon_url {
            g.icon_url = v;
        }
        if let Some(v) = self.banner_url {
            g.banner_url = v;
        }
        if let Some(v) = self.accent_color {
            g.accent_color = Some(v);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Permissions

/// A caller's role in a group ("group role" in the wire docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupRole {
    Member,
    Admin,
    Owner,
}

impl GroupRole {
    pub fn from_stored(role: &str) -> Self {
        match role {
            "owner" => Self::Owner,
            "admin" => Self::Admin,
            _ => Self::Member,
        }
    }

    /// Owner or admin: may edit the group, its channels and its invites.
    pub fn can_manage(self) -> bool {
        self >= Self::Admin
    }
}

/// The group, or 404.
pub async fn find_group(db: &impl ConnectionTrait, group_id: Uuid) -> ApiResult<groups::Model> {
    groups::Entity::find_by_id(group_id).one(db).await?.ok_or_else(|| ApiError::not_found("group"))
}

/// The user's stored group role, `None` when not a member.
pub async fn membership(
    db: &impl ConnectionTrait,
    group_id: Uuid,
    user_id: Uuid,
) -> ApiResult<Option<String>> {
    Ok(group_members::Entity::find()
        .select_only()
        .column(group_members::Column::Role)
        .filter(group_members::Column::GroupId.eq(group_id))
        .filter(group_members::Column::UserId.eq(user_id))
        .into_tuple::<String>()
        .one(db)
        .await?)
}

/// Community moderator or above in the group's community (the instance owner counts).
pub async fn is_community_moderator(
    db: &impl ConnectionTrait,
    community_id: Uuid,
    caller: &Caller,
) -> ApiResult<bool> {
    if caller.is_owner {
        return Ok(true);
    }
    let role = community_role(db, community_id, caller.user_id).await?;
    Ok(role.is_some_and(|r| Level::from_role(&r) >= Level::Moderator))
}

/// The wire's group role: the instance owner is `admin` (or `owner` when they own it);
/// otherwise the membership role; otherwise, for personal groups only, community
/// moderators and above are `admin`. Instance admins get no implicit access.
pub async fn group_role(
    db: &impl ConnectionTrait,
    group: &groups::Model,
    caller: &Caller,
) -> ApiResult<Option<GroupRole>> {
    let stored = membership(db, group.id, caller.user_id).await?.map(|r| GroupRole::from_stored(&r));
    if caller.is_owner {
        return Ok(Some(if stored == Some(GroupRole::Owner) { GroupRole::Owner } else { GroupRole::Admin }));
    }
    if stored.is_some() {
        return Ok(stored);
    }
    if group.assigned_member_id.is_some() && is_community_moderator(db, group.community_id, caller).await? {
        return Ok(Some(GroupRole::Admin));
    }
    Ok(None)
}

/// The group and the caller's role in it: 404 when missing, 403 without a group role.
pub async fn require_role(
    db: &impl ConnectionTrait,
    group_id: Uuid,
    caller: &Caller,
) -> ApiResult<(groups::Model, GroupRole)> {
    let group = find_group(db, group_id).await?;
    let role = group_role(db, &group, caller).await?.ok_or(ApiError::Forbidden)?;
    Ok((group, role))
}

/// As `require_role`, and the role must be owner or admin (403).
pub async fn require_manager(
    db: &impl ConnectionTrait,
    group_id: Uuid,
    caller: &Caller,
) -> ApiResult<(groups::Model, GroupRole)> {
    let (group, role) = require_role(db, group_id, caller).await?;
    if !role.can_manage() {
        return Err(ApiError::Forbidden);
    }
    Ok((group, role))
}

/// A community policy (`who_can_create_groups` / `who_can_create_invites`): `everyone`,
/// `moderator` or `admin`; anything else counts as `admin`.
pub fn meets_policy(level: Level, policy: &str) -> bool {
    let needed = match policy {
        "everyone" => Level::Member,
        "moderator" => Level::Moderator,
        _ => Level::Admin,
    };
    level >= needed
}

// ---------------------------------------------------------------------------------------
// Membership writes (run them inside the caller's transaction)

/// Member counts of the given groups (groups without members are absent).
pub async fn member_counts(db: &impl ConnectionTrait, group_ids: &[Uuid]) -> ApiResult<HashMap<Uuid, i64>> {
    if group_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, i64)> = group_members::Entity::find()
        .select_only()
        .column(group_members::Column::GroupId)
        .column_as(Expr::col(group_members::Column::UserId).count(), "n")
        .filter(group_members::Column::GroupId.is_in(group_ids.iter().copied()))
        .group_by(group_members::Column::GroupId)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().collect())
}

/// One group's member count.
pub async fn member_count(db: &impl ConnectionTrait, group_id: Uuid) -> ApiResult<i64> {
    Ok(member_counts(db, &[group_id]).await?.get(&group_id).copied().unwrap_or(0))
}

/// Which channels a joining member enters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelScope {
    /// Every channel of the group (join, invite accept).
    All,
    /// Only discoverable channels (auto-join when entering a community).
    Discoverable,
}

/// What a join changed: whether the group membership is new, and the channels newly joined
/// (their live actors must learn of the member).
#[derive(Debug, Default)]
pub struct Joined {
    pub new_member: bool,
    pub channels: Vec<Uuid>,
}

/// Adds `user_id` to a group with `role` (kept when already a member) and to its channels
/// in `scope` as channel `member`, skipping channels the user is banned from.
pub async fn add_member(
    db: &impl ConnectionTrait,
    group_id: Uuid,
    user_id: Uuid,
    role: &str,
    scope: ChannelScope,
) -> ApiResult<Joined> {
    let now = palaver_entity::now();
    let inserted = group_members::Entity::insert(group_members::ActiveModel {
        group_id: Set(group_id),
        user_id: Set(user_id),
        role: Set(role.to_string()),
        joined_at: Set(now),
    })
    .on_conflict(
        OnConflict::columns([group_members::Column::GroupId, group_members::Column::UserId])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    let mut wanted = channels::Entity::find()
        .select_only()
        .column(channels::Column::Id)
        .filter(channels::Column::GroupId.eq(group_id));
    if scope == ChannelScope::Discoverable {
        wanted = wanted.filter(channels::Column::Discoverable.eq(true));
    }
    let wanted: Vec<Uuid> = wanted.into_tuple().all(db).await?;
    let channels = if wanted.is_empty() {
        Vec::new()
    } else {
        let joined_or_banned: HashSet<Uuid> = channel_members::Entity::find()
            .select_only()
            .column(channel_members::Column::ChannelId)
            .filter(channel_members::Column::UserId.eq(user_id))
            .filter(channel_members::Column::ChannelId.is_in(wanted.clone()))
            .into_tuple::<Uuid>()
            .all(db)
            .await?
            .into_iter()
            .chain(
                channel_bans::Entity::find()
                    .select_only()
                    .column(channel_bans::Column::ChannelId)
                    .filter(channel_bans::Column::UserId.eq(user_id))
                    .filter(channel_bans::Column::ChannelId.is_in(wanted.clone()))
                    .into_tuple::<Uuid>()
                    .all(db)
                    .await?,
            )
            .collect();
        let fresh: Vec<Uuid> = wanted.into_iter().filter(|c| !joined_or_banned.contains(c)).collect();
        if !fresh.is_empty() {
            channel_members::Entity::insert_many(fresh.iter().map(|channel_id| {
                channel_members::ActiveModel {
                    channel_id: Set(*channel_id),
                    user_id: Set(user_id),
                    role: Set("member".into()),
                    joined_at: Set(now),
                }
            }))
            .on_conflict(
                OnConflict::columns([channel_members::Column::ChannelId, channel_members::Column::UserId])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
        }
        fresh
    };
    Ok(Joined { new_member: inserted > 0, channels })
}

/// Removes `user_id` from a group, from every channel of the group and drops their sender
/// keys there. Returns the group's channel ids and those the user was a member of.
pub async fn remove_member(
    db: &impl ConnectionTrait,
    group_id: Uuid,
    user_id: Uuid,
) -> ApiResult<(Vec<Uuid>, Vec<Uuid>)> {
    group_members::Entity::delete_many()
        .filter(group_members::Column::GroupId.eq(group_id))
        .filter(group_members::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    let all: Vec<Uuid> = channels::Entity::find()
        .select_only()
        .column(channels::Column::Id)
        .filter(channels::Column::GroupId.eq(group_id))
        .into_tuple()
        .all(db)
        .await?;
    if all.is_empty() {
        return Ok((all, Vec::new()));
    }
    let left: Vec<Uuid> = channel_members::Entity::find()
        .select_only()
        .column(channel_members::Column::ChannelId)
        .filter(channel_members::Column::UserId.eq(user_id))
        .filter(channel_members::Column::ChannelId.is_in(all.clone()))
        .into_tuple()
        .all(db)
        .await?;
    channel_members::Entity::delete_many()
        .filter(channel_members::Column::UserId.eq(user_id))
        .filter(channel_members::Column::ChannelId.is_in(all.clone()))
        .exec(db)
        .await?;
    sender_keys::Entity::delete_many()
        .filter(sender_keys::Column::UserId.eq(user_id))
        .filter(sender_keys::Column::ChannelId.is_in(all.clone()))
        .exec(db)
        .await?;
    Ok((all, left))
}

/// The ids of a community's members (public groups add them all).
pub async fn community_member_ids(db: &impl ConnectionTrait, community_id: Uuid) -> ApiResult<Vec<Uuid>> {
    Ok(community_members::Entity::find()
        .select_only()
        .column(community_members::Column::UserId)
        .filter(community_members::Column::CommunityId.eq(community_id))
        .into_tuple()
        .all(db)
        .await?)
}

/// `SELECT group_id FROM group_members WHERE user_id = $user`.
pub fn groups_of(user: Uuid) -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .column(group_members::Column::GroupId)
        .from(group_members::Entity)
        .and_where(group_members::Column::UserId.eq(user))
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_rules() {
        let parse = |json: &str| NewGroup::parse(serde_json::from_str(json).unwrap());
        let cid = Uuid::nil();
        let g =
            parse(&format!(r#"{{"community_id": "{cid}", "name": " Team ", "description": " "}}"#)).unwrap();
        assert_eq!((g.name.as_str(), g.description, g.visibility), ("Team", None, "public"));
        let personal = parse(&format!(
            r#"{{"community_id": "{cid}", "name": "p", "visibility": "public", "assigned_member_id": "{cid}"}}"#
        ))
        .unwrap();
        assert_eq!(personal.visibility, "private");
        assert!(parse(&format!(r#"{{"community_id": "{cid}", "name": "  "}}"#)).is_err());
        assert!(parse(&format!(r#"{{"community_id": "{cid}", "name": "{}"}}"#, "x".repeat(65))).is_err());
        assert!(
            parse(&format!(r#"{{"community_id": "{cid}", "name": "a", "visibility": "secret"}}"#)).is_err()
        );
        assert!(
            parse(&format!(
                r#"{{"community_id": "{cid}", "name": "a", "description": "{}"}}"#,
                "x".repeat(2049)
            ))
            .is_err()
        );
    }

    #[test]
    fn update_rules() {
        let parse = |json: &str| GroupUpdate::parse(serde_json::from_str(json).unwrap());
        let u = parse(r##"{"description": "", "icon_url": "", "accent_color": "#A1b2C3"}"##).unwrap();
        assert_eq!(u.description, Some(None));
        assert_eq!(u.icon_url, Some(None));
        assert_eq!(u.accent_color.as_deref(), Some("#A1b2C3"));
        assert!(parse("{}").unwrap().is_empty());
        for bad in [
            r##"{"accent_color": "red"}"##,
            r##"{"accent_color": "#12"}"##,
            r##"{"accent_color": "#123456789"}"##,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse(r#"{"icon_url": "javascript:alert(1)"}"#).is_err());
        assert!(parse(r#"{"visibility": "hidden"}"#).is_err());
    }

    #[test]
    fn policies() {
        assert!(meets_policy(Level::Member, "everyone"));
        assert!(!meets_policy(Level::Member, "moderator"));
        assert!(meets_policy(Level::Moderator, "moderator"));
        assert!(!meets_policy(Level::Moderator, "admin"));
        assert!(!meets_policy(Level::Moderator, "nonsense"));
        assert!(meets_policy(Level::InstanceOwner, "admin"));
    }
}
