//! The database side of the group routes: creating a group with its first members and its
//! `general` channel, group views with member counts, settings, deletion, ownership, member
//! listings, the group's channels and accepting invites.

use palaver_actors::kinds::ChannelType;
use palaver_entity::{channel_members, channels, communities, group_invites, group_members, groups};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, DatabaseConnection, EntityTrait,
    IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use crate::auth::Caller;
use crate::domain::channel::ChannelMemberView;
use crate::domain::group::{self, ChannelScope, GroupUpdate, GroupView, NewGroup};
use crate::domain::user::users_by_id;
use crate::domain::visibility::communities_of;
use crate::error::{ApiError, ApiResult};

/// Group objects for rows, with their member counts.
pub(crate) async fn views(db: &DatabaseConnection, rows: &[groups::Model]) -> ApiResult<Vec<GroupView>> {
    let ids: Vec<Uuid> = rows.iter().map(|g| g.id).collect();
    let counts = group::member_counts(db, &ids).await?;
    Ok(rows.iter().map(|g| GroupView::new(g, counts.get(&g.id).copied().unwrap_or(0))).collect())
}

/// The Group object of a row, with its member count.
pub(crate) async fn view(db: &DatabaseConnection, row: &groups::Model) -> ApiResult<GroupView> {
    Ok(GroupView::new(row, group::member_count(db, row.id).await?))
}

/// Stores a new group, its `general` channel and its first members in one transaction;
/// 400 when the community already has as many groups as allowed.
pub(crate) async fn insert_group(
    db: &DatabaseConnection,
    community: &communities::Model,
    new: NewGroup,
    creator: Uuid,
    members: &[InitialMember],
) -> ApiResult<groups::Model> {
    let now = palaver_entity::now();
    let row = groups::Model {
        id: Uuid::now_v7(),
        community_id: community.id,
        name: new.name,
        description: new.description,
        icon_url: None,
        banner_url: None,
        accent_color: None,
        owner_id: creator,
        visibility: new.visibility.to_string(),
        discoverable: true,
        assigned_member_id: new.assigned_member_id,
        allow_invites: true,
        created_at: now,
    };
    let general = channels::Model {
        id: Uuid::now_v7(),
        name: Some("general".into()),
        channel_type: ChannelType::Text.as_str().into(),
        topic: None,
        created_by: Some(new.assigned_member_id.unwrap_or(creator)),
        group_id: Some(row.id),
        read_only: false,
        slow_mode_seconds: 0,
        discoverable: true,
        archived: false,
        voice_background: None,
        message_ttl_seconds: None,
        created_at: now,
    };
    let txn = crate::db::begin_write(db).await?;
    // Counted under the community row's lock: concurrent creations cannot pass the limit together.
    crate::db::lock_row::<communities::Entity>(&txn, community.id)
        .await?
        .ok_or_else(|| ApiError::not_found("community"))?;
    let existing =
        groups::Entity::find().filter(groups::Column::CommunityId.eq(community.id)).count(&txn).await?;
    if existing >= group::MAX_GROUPS_PER_COMMUNITY {
        return Err(ApiError::validation(format!(
            "a community can have at most {} groups",
            group::MAX_GROUPS_PER_COMMUNITY
        )));
    }
    groups::Entity::insert(row.clone().into_active_model()).exec_without_returning(&txn).await?;
    channels::Entity::insert(general.clone().into_active_model()).exec_without_returning(&txn).await?;
    group_members::Entity::insert_many(members.iter().map(|m| group_members::ActiveModel {
        group_id: Set(row.id),
        user_id: Set(m.user_id),
        role: Set(m.group_role.into()),
        joined_at: Set(now),
    }))
    .exec_without_returning(&txn)
    .await?;
    channel_members::Entity::insert_many(members.iter().map(|m| channel_members::ActiveModel {
        channel_id: Set(general.id),
        user_id: Set(m.user_id),
        role: Set(if Some(m.user_id) == general.created_by { "owner" } else { "member" }.into()),
        joined_at: Set(now),
    }))
    .exec_without_returning(&txn)
    .await?;
    txn.commit().await?;
    Ok(row)
}

/// A first member of a new group.
pub(crate) struct InitialMember {
    /// The member.
    pub user_id: Uuid,
    /// Their group role.
    pub group_role: &'static str,
}

/// Who a new group starts with: the creator (owner); for a personal group the assigned
/// member; for a public group every community member; for a private one the community owner.
pub(crate) async fn initial_members(
    db: &DatabaseConnection,
    community: &communities::Model,
    new: &NewGroup,
    creator: Uuid,
) -> ApiResult<Vec<InitialMember>> {
    let mut others: Vec<Uuid> = match (new.assigned_member_id, new.visibility) {
        (Some(assigned), _) => vec![assigned],
        (None, "public") => {
            let ids = group::community_member_ids(db, community.id).await?;
            if ids.len() > group::PUBLIC_AUTOJOIN_MAX {
                return Err(ApiError::validation(
                    "this community is too large for a public group; create a private group and use invites",
                ));
            }
            ids
        }
        (None, _) => vec![community.owner_id],
    };
    others.retain(|u| *u != creator);
    others.sort();
    others.dedup();
    let mut members = vec![InitialMember { user_id: creator, group_role: "owner" }];
    members.extend(others.into_iter().map(|user_id| InitialMember { user_id, group_role: "member" }));
    Ok(members)
}

/// The groups `caller` may discover: open groups of their communities and their own (all
/// of them for the instance owner), by name.
pub(crate) async fn discoverable(db: &DatabaseConnection, caller: &Caller) -> ApiResult<Vec<groups::Model>> {
    let mut query = groups::Entity::find();
    if !caller.is_owner {
        let open = Condition::all()
            .add(groups::Column::CommunityId.in_subquery(communities_of(caller.user_id)))
            .add(groups::Column::Visibility.eq("public"))
            .add(groups::Column::Discoverable.eq(true));
        let mine = groups::Column::Id.in_subquery(group::groups_of(caller.user_id));
        query = query.filter(Condition::any().add(open).add(mine));
    }
    Ok(query.order_by_asc(groups::Column::Name).order_by_asc(groups::Column::Id).all(db).await?)
}

/// Applies a parsed change to a group row; only the settings columns are written.
pub(crate) async fn save_update(
    db: &DatabaseConnection,
    mut row: groups::Model,
    update: GroupUpdate,
) -> ApiResult<groups::Model> {
    update.apply(&mut row);
    let mut active = row.clone().into_active_model();
    for col in [
        groups::Column::Name,
        groups::Column::Description,
        groups::Column::Visibility,
        groups::Column::Discoverable,
        groups::Column::AllowInvites,
        groups::Column::IconUrl,
        groups::Column::BannerUrl,
        groups::Column::AccentColor,
    ] {
        active.reset(col);
    }
    Ok(active.update(db).await?)
}

/// Deletes a group with its channels, memberships and invites; answers the channels' ids.
pub(crate) async fn delete(db: &DatabaseConnection, group_id: Uuid) -> ApiResult<Vec<Uuid>> {
    let channel_ids: Vec<Uuid> = channels::Entity::find()
        .select_only()
        .column(channels::Column::Id)
        .filter(channels::Column::GroupId.eq(group_id))
        .into_tuple()
        .all(db)
        .await?;
    // Channels, memberships and invites go with the group (ON DELETE CASCADE), atomically.
    groups::Entity::delete_by_id(group_id).exec(db).await?;
    Ok(channel_ids)
}

/// Makes `target` the group's owner and `from` an admin, in one transaction.
pub(crate) async fn transfer(db: &DatabaseConnection, id: Uuid, from: Uuid, target: Uuid) -> ApiResult<()> {
    let set_role = |user: Uuid, role: &'static str| {
        group_members::Entity::update_many()
            .col_expr(group_members::Column::Role, Expr::value(role))
            .filter(group_members::Column::GroupId.eq(id))
            .filter(group_members::Column::UserId.eq(user))
    };
    let txn = crate::db::begin_write(db).await?;
    set_role(from, "admin").exec(&txn).await?;
    set_role(target, "owner").exec(&txn).await?;
    groups::Entity::update_many()
        .col_expr(groups::Column::OwnerId, Expr::value(target))
        .filter(groups::Column::Id.eq(id))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(())
}

/// One page of a group's members, in joined order.
pub(crate) async fn member_views(
    db: &DatabaseConnection,
    id: Uuid,
    limit: u64,
    offset: u64,
) -> ApiResult<Vec<ChannelMemberView>> {
    let page = group_members::Entity::find()
        .filter(group_members::Column::GroupId.eq(id))
        .order_by_asc(group_members::Column::JoinedAt)
        .order_by_asc(group_members::Column::UserId)
        .limit(limit)
        .offset(offset)
        .all(db)
        .await?;
    let ids: Vec<Uuid> = page.iter().map(|m| m.user_id).collect();
    let people = users_by_id(db, ids).await?;
    let views: Vec<ChannelMemberView> = page
        .iter()
        .filter_map(|m| people.get(&m.user_id).map(|u| ChannelMemberView::new(u, &m.role, &m.joined_at)))
        .collect();
    Ok(views)
}

/// The group's channels `user_id` sees: discoverable ones and those they joined.
pub(crate) async fn visible_channels(
    db: &DatabaseConnection,
    group_id: Uuid,
    user_id: Uuid,
) -> ApiResult<Vec<channels::Model>> {
    let mine = Query::select()
        .column(channel_members::Column::ChannelId)
        .from(channel_members::Entity)
        .and_where(channel_members::Column::UserId.eq(user_id))
        .to_owned();
    Ok(channels::Entity::find()
        .filter(channels::Column::GroupId.eq(group_id))
        .filter(
            Condition::any()
                .add(channels::Column::Discoverable.eq(true))
                .add(channels::Column::Id.in_subquery(mine)),
        )
        .order_by_asc(channels::Column::CreatedAt)
        .order_by_asc(channels::Column::Id)
        .all(db)
        .await?)
}

/// Stores a new group channel with every group member (the creator as owner), under the
/// group row's lock; 400 when the group has no room for another channel.
pub(crate) async fn insert_channel(
    db: &DatabaseConnection,
    channel: &channels::Model,
    group_id: Uuid,
    creator: Uuid,
) -> ApiResult<()> {
    let mut members: Vec<Uuid> = group_members::Entity::find()
        .select_only()
        .column(group_members::Column::UserId)
        .filter(group_members::Column::GroupId.eq(group_id))
        .filter(group_members::Column::UserId.ne(creator))
        .into_tuple()
        .all(db)
        .await?;
    members.insert(0, creator);
    let txn = crate::db::begin_write(db).await?;
    // Counted under the group row's lock: concurrent creations cannot pass the limit together.
    crate::db::lock_row::<groups::Entity>(&txn, group_id)
        .await?
        .ok_or_else(|| ApiError::not_found("group"))?;
    group::check_channel_room(&txn, group_id).await?;
    channels::Entity::insert(channel.clone().into_active_model()).exec_without_returning(&txn).await?;
    channel_members::Entity::insert_many(members.iter().map(|user_id| channel_members::ActiveModel {
        channel_id: Set(channel.id),
        user_id: Set(*user_id),
        role: Set(if *user_id == creator { "owner" } else { "member" }.into()),
        joined_at: Set(channel.created_at),
    }))
    .exec_without_returning(&txn)
    .await?;
    txn.commit().await?;
    Ok(())
}

/// Spends one use of the invite and adds `user_id` to the group, in one transaction.
pub(crate) async fn accept(
    db: &DatabaseConnection,
    invite_id: Uuid,
    group_id: Uuid,
    user_id: Uuid,
) -> ApiResult<group::Joined> {
    let txn = crate::db::begin_write(db).await?;
    // Counted atomically: two accepts of the last use cannot both pass.
    let counted =
        group_invites::Entity::update_many()
            .col_expr(group_invites::Column::UsedCount, Expr::col(group_invites::Column::UsedCount).add(1))
            .filter(group_invites::Column::Id.eq(invite_id))
            .filter(Condition::any().add(group_invites::Column::MaxUses.is_null()).add(
                Expr::col(group_invites::Column::UsedCount).lt(Expr::col(group_invites::Column::MaxUses)),
            ))
            .exec(&txn)
            .await?
            .rows_affected;
    if counted == 0 {
        return Err(ApiError::validation("this invite has been used up"));
    }
    let joined = group::add_member(&txn, group_id, user_id, "member", ChannelScope::All).await?;
    if !joined.new_member {
        // Joined concurrently through another path; the use is not counted.
        return Err(ApiError::conflict("you are already a member of this group"));
    }
    txn.commit().await?;
    Ok(joined)
}
