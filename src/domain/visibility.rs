//! Who may see whom (rest-auth-account-users.md, "Users"): a user is visible to the caller if
//! it is the caller, the caller is the instance owner, or the two share at least one
//! community. Invisible users look exactly like missing ones (404). Instance admins get no
//! exemption. Used by `/users/*` and by everything else that resolves another user.

use palaver_entity::community_members;
use sea_orm::sea_query::{Query, SelectStatement};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiResult;

/// True when `caller` may see `target` (self, instance owner, or a shared community).
/// Says nothing about whether `target` exists.
pub async fn can_see_user(db: &impl ConnectionTrait, caller: &Caller, target: Uuid) -> ApiResult<bool> {
    if caller.user_id == target || caller.is_owner {
        return Ok(true);
    }
    shares_community(db, caller.user_id, target).await
}

/// True when `a` and `b` are both members of at least one community.
pub async fn shares_community(db: &impl ConnectionTrait, a: Uuid, b: Uuid) -> ApiResult<bool> {
    let shared = community_members::Entity::find()
        .filter(community_members::Column::UserId.eq(b))
        .filter(community_members::Column::CommunityId.in_subquery(communities_of(a)))
        .count(db)
        .await?;
    Ok(shared > 0)
}

/// `SELECT community_id FROM community_members WHERE user_id = $user`.
pub fn communities_of(user: Uuid) -> SelectStatement {
    Query::select()
        .column(community_members::Column::CommunityId)
        .from(community_members::Entity)
        .and_where(community_members::Column::UserId.eq(user))
        .to_owned()
}

/// The ids of every user sharing a community with `user` (including `user` when they are a
/// member of any community): use as `users::Column::Id.in_subquery(...)`.
pub fn community_peers_of(user: Uuid) -> SelectStatement {
    Query::select()
        .distinct()
        .column(community_members::Column::UserId)
        .from(community_members::Entity)
        .and_where(community_members::Column::CommunityId.in_subquery(communities_of(user)))
        .to_owned()
}
