//! Community membership and the caller's standing in a community (wire README, "Roles";
//! rest-communities-groups-channels.md, "Gates"). Shared by the community, group, channel,
//! image and moderation routes so every gate reads the same way.

use palaver_actors::roles::Level;
use palaver_entity::{communities, community_bans, community_members};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect};
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
    /// The community owner (or the instance owner).
    pub fn is_owner(&self) -> bool {
        self.level >= Level::Owner && self.level != Level::InstanceAdmin
    }
}

/// The gate of every `/communities/{cid}/…` route: 404 when the community does not exist,
/// 403 for a non-member or a banned user; instance admins and the instance owner pass.
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
