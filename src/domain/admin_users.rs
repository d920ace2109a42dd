//! The database side of user management (`/admin/users*`): searching users with their
//! memberships, and deleting an account (ownership to the heir, lonely DMs, blobs to remove).

use std::collections::{HashMap, HashSet};

use palaver_entity::{
    channel_members, channels, communities, community_members, dm_pairs, files, group_members, groups, users,
};
use sea_orm::sea_query::{Expr, ExprTrait, Func, LikeExpr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use uuid::Uuid;

use crate::domain::admin::{AdminUserView, Membership, sort_memberships};
use crate::domain::search::like_contains;
use crate::error::{ApiError, ApiResult};

/// The user `id`, or 404.
pub(crate) async fn find_user(db: &impl ConnectionTrait, id: Uuid) -> ApiResult<users::Model> {
    users::Entity::find_by_id(id).one(db).await?.ok_or_else(|| ApiError::not_found("user"))
}

/// One page of users, newest first, matching `search` (username, display name or email,
/// ignoring case), each with their groups and communities.
pub(crate) async fn search_users(
    db: &DatabaseConnection,
    search: Option<&str>,
    offset: u64,
    limit: u64,
) -> ApiResult<Vec<AdminUserView>> {
    let mut select = users::Entity::find();
    if let Some(search) = search {
        let pattern = like_contains(&search.to_lowercase());
        let matches = |column: users::Column| {
            Expr::expr(Func::lower(Expr::col((users::Entity, column))))
                .like(LikeExpr::new(pattern.clone()).escape('\\'))
        };
        select = select.filter(
            Condition::any()
                .add(matches(users::Column::Username))
                .add(matches(users::Column::DisplayName))
                .add(matches(users::Column::Email)),
        );
    }
    let rows = select
        .order_by_desc(users::Column::CreatedAt)
        .order_by_desc(users::Column::Id)
        .offset(offset)
        .limit(limit)
        .all(db)
        .await?;
    let ids: Vec<Uuid> = rows.iter().map(|u| u.id).collect();
    let (mut groups_of, mut communities_of) = memberships(db, &ids).await?;
    let views: Vec<AdminUserView> = rows
        .iter()
        .map(|u| {
            AdminUserView::new(
                u,
                groups_of.remove(&u.id).unwrap_or_default(),
                communities_of.remove(&u.id).unwrap_or_default(),
            )
        })
        .collect();
    Ok(views)
}

/// user → their groups or communities.
type MembershipMap = HashMap<Uuid, Vec<Membership>>;

/// user → groups and user → communities (`{id, name, role}`, by name) for `ids`.
async fn memberships(db: &impl ConnectionTrait, ids: &[Uuid]) -> ApiResult<(MembershipMap, MembershipMap)> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let group_rows = group_members::Entity::find()
        .filter(group_members::Column::UserId.is_in(ids.to_vec()))
        .all(db)
        .await?;
    let community_rows = community_members::Entity::find()
        .filter(community_members::Column::UserId.is_in(ids.to_vec()))
        .all(db)
        .await?;
    let group_names: HashMap<Uuid, String> = if group_rows.is_empty() {
        HashMap::new()
    } else {
        groups::Entity::find()
            .select_only()
            .column(groups::Column::Id)
            .column(groups::Column::Name)
            .filter(groups::Column::Id.is_in(group_rows.iter().map(|m| m.group_id).collect::<Vec<_>>()))
            .into_tuple::<(Uuid, String)>()
            .all(db)
            .await?
            .into_iter()
            .collect()
    };
    let community_names: HashMap<Uuid, String> = if community_rows.is_empty() {
        HashMap::new()
    } else {
        communities::Entity::find()
            .select_only()
            .column(communities::Column::Id)
            .column(communities::Column::Name)
            .filter(
                communities::Column::Id
                    .is_in(community_rows.iter().map(|m| m.community_id).collect::<Vec<_>>()),
            )
            .into_tuple::<(Uuid, String)>()
            .all(db)
            .await?
            .into_iter()
            .collect()
    };
    let mut groups_of = MembershipMap::new();
    for m in group_rows {
        if let Some(name) = group_names.get(&m.group_id) {
            groups_of.entry(m.user_id).or_default().push(Membership {
                id: m.group_id,
                name: name.clone(),
                role: m.role,
            });
        }
    }
    let mut communities_of = MembershipMap::new();
    for m in community_rows {
        if let Some(name) = community_names.get(&m.community_id) {
            communities_of.entry(m.user_id).or_default().push(Membership {
                id: m.community_id,
                name: name.clone(),
                role: m.role,
            });
        }
    }
    sort_memberships(&mut groups_of);
    sort_memberships(&mut communities_of);
    Ok((groups_of, communities_of))
}

/// What deleting an account committed, for the live side and the audit entry.
pub(crate) struct Deletion {
    /// The instance owner who inherited the user's communities and groups, if any.
    pub heir: Option<Uuid>,
    /// The communities that passed to the heir.
    pub owned_communities: Vec<Uuid>,
    /// How many groups passed to the heir.
    pub owned_groups: usize,
    /// The DMs deleted because nobody else was left in them.
    pub dm_deleted: HashSet<Uuid>,
    /// The channels the user was a member of.
    pub member_of: Vec<Uuid>,
    /// The user's file blobs, to remove from disk.
    pub blobs: Vec<(String, Option<String>)>,
}

/// Hands what the user owns to the oldest other instance owner, deletes their lonely DMs
/// and then the account (the rest cascades), in one transaction; 404 when already gone.
pub(crate) async fn delete_account(db: &DatabaseConnection, id: Uuid) -> ApiResult<Deletion> {
    let heir: Option<Uuid> = users::Entity::find()
        .select_only()
        .column(users::Column::Id)
        .filter(users::Column::IsOwner.eq(true))
        .filter(users::Column::Id.ne(id))
        .order_by_asc(users::Column::CreatedAt)
        .into_tuple()
        .one(db)
        .await?;

    let txn = crate::db::begin_write(db).await?;
    let (owned_communities, owned_groups) = reassign_ownership(&txn, id, heir).await?;
    let dm_deleted = delete_lonely_dms(&txn, id).await?;
    let member_of: Vec<Uuid> = channel_members::Entity::find()
        .select_only()
        .column(channel_members::Column::ChannelId)
        .filter(channel_members::Column::UserId.eq(id))
        .into_tuple()
        .all(&txn)
        .await?;
    let blobs: Vec<(String, Option<String>)> = files::Entity::find()
        .select_only()
        .column(files::Column::StoragePath)
        .column(files::Column::ThumbnailPath)
        .filter(files::Column::UploaderId.eq(id))
        .into_tuple()
        .all(&txn)
        .await?;
    let deleted = users::Entity::delete_by_id(id).exec(&txn).await?;
    if deleted.rows_affected != 1 {
        return Err(ApiError::not_found("user"));
    }
    txn.commit().await?;
    Ok(Deletion { heir, owned_communities, owned_groups, dm_deleted, member_of, blobs })
}

/// Hands the user's communities and groups to `heir` (made their `owner` member). Returns
/// the communities that moved and how many groups did.
async fn reassign_ownership(
    txn: &impl ConnectionTrait,
    user_id: Uuid,
    heir: Option<Uuid>,
) -> ApiResult<(Vec<Uuid>, usize)> {
    let owned_communities: Vec<Uuid> = communities::Entity::find()
        .select_only()
        .column(communities::Column::Id)
        .filter(communities::Column::OwnerId.eq(user_id))
        .into_tuple()
        .all(txn)
        .await?;
    let owned_groups: Vec<Uuid> = groups::Entity::find()
        .select_only()
        .column(groups::Column::Id)
        .filter(groups::Column::OwnerId.eq(user_id))
        .into_tuple()
        .all(txn)
        .await?;
    if owned_communities.is_empty() && owned_groups.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let Some(heir) = heir else {
        return Err(ApiError::validation(
            "the user owns communities or groups and there is no instance owner to take them over",
        ));
    };
    let now = palaver_entity::now();
    if !owned_communities.is_empty() {
        communities::Entity::update_many()
            .col_expr(communities::Column::OwnerId, Expr::value(heir))
            .filter(communities::Column::Id.is_in(owned_communities.clone()))
            .exec(txn)
            .await?;
        let rows = owned_communities.iter().map(|c| community_members::ActiveModel {
            community_id: Set(*c),
            user_id: Set(heir),
            role: Set("owner".into()),
            nickname: Set(None),
            joined_at: Set(now),
        });
        community_members::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::columns([
                    community_members::Column::CommunityId,
                    community_members::Column::UserId,
                ])
                .update_column(community_members::Column::Role)
                .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
    }
    if !owned_groups.is_empty() {
        groups::Entity::update_many()
            .col_expr(groups::Column::OwnerId, Expr::value(heir))
            .filter(groups::Column::Id.is_in(owned_groups.clone()))
            .exec(txn)
            .await?;
        let rows = owned_groups.iter().map(|g| group_members::ActiveModel {
            group_id: Set(*g),
            user_id: Set(heir),
            role: Set("owner".into()),
            joined_at: Set(now),
        });
        group_members::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::columns([group_members::Column::GroupId, group_members::Column::UserId])
                    .update_column(group_members::Column::Role)
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
    }
    Ok((owned_communities, owned_groups.len()))
}

/// Deletes the user's DM channels in which nobody else is a member any more; returns them.
async fn delete_lonely_dms(txn: &impl ConnectionTrait, user_id: Uuid) -> ApiResult<HashSet<Uuid>> {
    let dms: Vec<Uuid> = dm_pairs::Entity::find()
        .select_only()
        .column(dm_pairs::Column::ChannelId)
        .filter(
            Condition::any()
                .add(dm_pairs::Column::UserA.eq(user_id))
                .add(dm_pairs::Column::UserB.eq(user_id)),
        )
        .into_tuple()
        .all(txn)
        .await?;
    if dms.is_empty() {
        return Ok(HashSet::new());
    }
    let occupied: HashSet<Uuid> = channel_members::Entity::find()
        .select_only()
        .column(channel_members::Column::ChannelId)
        .filter(channel_members::Column::ChannelId.is_in(dms.clone()))
        .filter(channel_members::Column::UserId.ne(user_id))
        .into_tuple::<Uuid>()
        .all(txn)
        .await?
        .into_iter()
        .collect();
    let lonely: HashSet<Uuid> = dms.into_iter().filter(|c| !occupied.contains(c)).collect();
    if !lonely.is_empty() {
        channels::Entity::delete_many()
            .filter(channels::Column::Id.is_in(lonely.iter().copied().collect::<Vec<_>>()))
            .exec(txn)
            .await?;
    }
    Ok(lonely)
}
