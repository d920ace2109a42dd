//! The database side of the community routes that do not go through the community actor:
//! listings (communities, groups, members, bans), a new community with its owner, and
//! looking up a usable invite.

use palaver_entity::{
    communities, community_bans, community_invites, community_members, group_members, groups,
};
use sea_orm::sea_query::Query;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect,
};
use uuid::Uuid;

use crate::domain::community::{self, BanView, CommunityMemberView, CommunityView};
use crate::domain::user::users_by_id;
use crate::error::{ApiError, ApiResult};

/// One page of the communities `user_id` belongs to (oldest first), with member counts.
pub(crate) async fn views_of_member(
    db: &DatabaseConnection,
    user_id: Uuid,
    limit: u64,
    offset: u64,
) -> ApiResult<Vec<CommunityView>> {
    let mine = Query::select()
        .column(community_members::Column::CommunityId)
        .from(community_members::Entity)
        .and_where(community_members::Column::UserId.eq(user_id))
        .to_owned();
    let rows = communities::Entity::find()
        .filter(communities::Column::Id.in_subquery(mine))
        .order_by_asc(communities::Column::CreatedAt)
        .order_by_asc(communities::Column::Id)
        .limit(limit)
        .offset(offset)
        .all(db)
        .await?;
    let ids: Vec<Uuid> = rows.iter().map(|c| c.id).collect();
    let counts = community::member_counts(db, &ids).await?;
    let views: Vec<CommunityView> =
        rows.iter().map(|c| CommunityView::new(c, counts.get(&c.id).copied().unwrap_or(0))).collect();
    Ok(views)
}

/// Stores a new community with its owner as first member, in one transaction.
pub(crate) async fn insert_community(
    db: &DatabaseConnection,
    community: &communities::Model,
) -> ApiResult<()> {
    let txn = crate::db::begin_write(db).await?;
    communities::Entity::insert(community.clone().into_active_model()).exec_without_returning(&txn).await?;
    community_members::Entity::insert(community_members::ActiveModel {
        community_id: Set(community.id),
        user_id: Set(community.owner_id),
        role: Set("owner".into()),
        nickname: Set(None),
        joined_at: Set(community.created_at),
    })
    .exec_without_returning(&txn)
    .await?;
    txn.commit().await?;
    Ok(())
}

/// The groups of a community `user_id` belongs to, by name.
pub(crate) async fn groups_of_member(
    db: &DatabaseConnection,
    community_id: Uuid,
    user_id: Uuid,
) -> ApiResult<Vec<groups::Model>> {
    let mine = Query::select()
        .column(group_members::Column::GroupId)
        .from(group_members::Entity)
        .and_where(group_members::Column::UserId.eq(user_id))
        .to_owned();
    Ok(groups::Entity::find()
        .filter(groups::Column::CommunityId.eq(community_id))
        .filter(groups::Column::Id.in_subquery(mine))
        .order_by_asc(groups::Column::Name)
        .order_by_asc(groups::Column::Id)
        .all(db)
        .await?)
}

/// One page of a community's members, in joined order.
pub(crate) async fn member_views(
    db: &DatabaseConnection,
    community_id: Uuid,
    limit: u64,
    offset: u64,
) -> ApiResult<Vec<CommunityMemberView>> {
    let rows = community_members::Entity::find()
        .filter(community_members::Column::CommunityId.eq(community_id))
        .order_by_asc(community_members::Column::JoinedAt)
        .order_by_asc(community_members::Column::UserId)
        .limit(limit)
        .offset(offset)
        .all(db)
        .await?;
    let people = users_by_id(db, rows.iter().map(|m| m.user_id).collect()).await?;
    let views: Vec<CommunityMemberView> =
        rows.iter().filter_map(|m| people.get(&m.user_id).map(|u| CommunityMemberView::new(m, u))).collect();
    Ok(views)
}

/// A community's bans, oldest first.
pub(crate) async fn ban_views(db: &DatabaseConnection, community_id: Uuid) -> ApiResult<Vec<BanView>> {
    let rows = community_bans::Entity::find()
        .filter(community_bans::Column::CommunityId.eq(community_id))
        .order_by_asc(community_bans::Column::CreatedAt)
        .order_by_asc(community_bans::Column::UserId)
        .all(db)
        .await?;
    let people = users_by_id(db, rows.iter().map(|b| b.user_id).collect()).await?;
    let views: Vec<BanView> =
        rows.iter().filter_map(|b| people.get(&b.user_id).map(|u| BanView::new(b, u))).collect();
    Ok(views)
}

/// The invite behind a code: 400 when the code is over-long, 404 when unknown, 400 when
/// expired or used up.
pub(crate) async fn usable_invite(
    db: &DatabaseConnection,
    code: &str,
) -> ApiResult<community_invites::Model> {
    if code.len() > community::INVITE_CODE_MAX {
        return Err(ApiError::validation("invite code is too long"));
    }
    let invite = community_invites::Entity::find()
        .filter(community_invites::Column::Code.eq(code))
        .one(db)
        .await?
        .ok_or_else(|| ApiError::not_found("invite"))?;
    if !community::invite_usable(&invite) {
        return Err(ApiError::validation("this invite has expired or been used up"));
    }
    Ok(invite)
}
