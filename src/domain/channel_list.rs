//! Reads and inserts behind the channel routes that touch no live state: the caller's
//! channels, a new channel with its owner, member listings, unread counts, read cursors and
//! sender keys.

use std::collections::HashSet;

use palaver_actors::protocol::rfc3339;
use palaver_entity::{channel_members, channels, group_members, messages, read_cursors, sender_keys};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, JoinType, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder,
};
use serde::Serialize;
use uuid::Uuid;

use crate::domain::channel::ChannelMemberView;
use crate::domain::user::users_by_id;
use crate::error::ApiResult;

/// The channels `user_id` is a member of, oldest first.
pub async fn channels_of(db: &DatabaseConnection, user_id: Uuid) -> ApiResult<Vec<channels::Model>> {
    let mine = Query::select()
        .column(channel_members::Column::ChannelId)
        .from(channel_members::Entity)
        .and_where(channel_members::Column::UserId.eq(user_id))
        .to_owned();
    Ok(channels::Entity::find()
        .filter(channels::Column::Id.in_subquery(mine))
        .order_by_asc(channels::Column::CreatedAt)
        .order_by_asc(channels::Column::Id)
        .all(db)
        .await?)
}

/// Stores a new channel and its creator as owner, in one transaction.
pub async fn insert_channel(
    db: &DatabaseConnection,
    channel: &channels::Model,
    owner: Uuid,
) -> ApiResult<()> {
    let txn = crate::db::begin_write(db).await?;
    channels::Entity::insert(channel.clone().into_active_model()).exec_without_returning(&txn).await?;
    channel_members::Entity::insert(channel_members::ActiveModel {
        channel_id: Set(channel.id),
        user_id: Set(owner),
        role: Set("owner".into()),
        joined_at: Set(channel.created_at),
    })
    .exec_without_returning(&txn)
    .await?;
    txn.commit().await?;
    Ok(())
}

/// One page of a channel's members (joined order), followed, for a discoverable group
/// channel (`open_group`), by the group's members who have not joined it.
pub async fn member_views(
    db: &DatabaseConnection,
    id: Uuid,
    open_group: Option<Uuid>,
    offset: u64,
    limit: u64,
) -> ApiResult<Vec<ChannelMemberView>> {
    let mut entries: Vec<(Uuid, String, chrono::DateTime<chrono::Utc>)> = channel_members::Entity::find()
        .filter(channel_members::Column::ChannelId.eq(id))
        .order_by_asc(channel_members::Column::JoinedAt)
        .order_by_asc(channel_members::Column::UserId)
        .all(db)
        .await?
        .into_iter()
        .map(|m| (m.user_id, m.role, m.joined_at))
        .collect();
    if let Some(group_id) = open_group {
        let joined: HashSet<Uuid> = entries.iter().map(|(u, _, _)| *u).collect();
        let rest = group_members::Entity::find()
            .filter(group_members::Column::GroupId.eq(group_id))
            .order_by_asc(group_members::Column::JoinedAt)
            .order_by_asc(group_members::Column::UserId)
            .all(db)
            .await?;
        entries.extend(
            rest.into_iter()
                .filter(|g| !joined.contains(&g.user_id))
                .map(|g| (g.user_id, "member".into(), g.joined_at)),
        );
    }
    let page: Vec<_> = entries.into_iter().skip(offset as usize).take(limit as usize).collect();
    let ids: Vec<Uuid> = page.iter().map(|(u, _, _)| *u).collect();
    let people = users_by_id(db, ids).await?;
    let views: Vec<ChannelMemberView> = page
        .iter()
        .filter_map(|(user_id, role, joined_at)| {
            people.get(user_id).map(|u| ChannelMemberView::new(u, role, joined_at))
        })
        .collect();
    Ok(views)
}

#[derive(Serialize, schemars::JsonSchema)]
/// A channel with messages the caller has not read.
pub struct UnreadView {
    /// The channel.
    pub channel_id: Uuid,
    /// Messages after the caller's read cursor, not sent by the caller.
    pub unread_count: i64,
}

/// Per channel of `me`, how many visible messages from others follow `me`'s read cursor
/// (channels with none left out), by channel id.
pub async fn unread_counts_of(db: &DatabaseConnection, me: Uuid) -> ApiResult<Vec<UnreadView>> {
    let m = Alias::new("m");
    let cm = Alias::new("cm");
    let rc = Alias::new("rc");
    let col = |table: &Alias, c: &str| Expr::col((table.clone(), Alias::new(c)));
    let mut stmt = Query::select();
    stmt.expr_as(col(&m, "channel_id"), Alias::new("channel_id"))
        .expr_as(col(&m, "id").count(), Alias::new("unread_count"))
        .from_as(messages::Entity, m.clone())
        .join_as(
            JoinType::InnerJoin,
            channel_members::Entity,
            cm.clone(),
            col(&cm, "channel_id")
                .equals((m.clone(), Alias::new("channel_id")))
                .and(col(&cm, "user_id").eq(me)),
        )
        .join_as(
            JoinType::LeftJoin,
            read_cursors::Entity,
            rc.clone(),
            col(&rc, "channel_id")
                .equals((m.clone(), Alias::new("channel_id")))
                .and(col(&rc, "user_id").eq(me)),
        )
        .and_where(
            col(&rc, "last_read_message_id").is_null().or(col(&m, "id").gt(col(&rc, "last_read_message_id"))),
        )
        .and_where(col(&m, "sender_id").is_null().or(col(&m, "sender_id").ne(me)))
        .and_where(col(&m, "deleted_at").is_null())
        .and_where(col(&m, "quarantined_at").is_null())
        .and_where(col(&m, "expires_at").is_null().or(col(&m, "expires_at").gt(palaver_entity::now())))
        .group_by_col((m.clone(), Alias::new("channel_id")));
    let rows = db.query_all(&stmt).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let channel_id: Uuid = row.try_get("", "channel_id")?;
        let unread_count: i64 = row.try_get("", "unread_count")?;
        if unread_count > 0 {
            out.push(UnreadView { channel_id, unread_count });
        }
    }
    out.sort_by_key(|u| u.channel_id);
    Ok(out)
}

#[derive(Serialize, schemars::JsonSchema)]
/// The wire's read cursor of one member.
pub struct ReadCursorView {
    /// The member.
    pub user_id: Uuid,
    /// The last message they read.
    pub last_read_message_id: Option<Uuid>,
    /// When they read it (RFC 3339).
    pub last_read_at: String,
}

/// The read cursors of a channel, oldest first.
pub async fn read_cursors_of(db: &DatabaseConnection, id: Uuid) -> ApiResult<Vec<ReadCursorView>> {
    let rows = read_cursors::Entity::find()
        .filter(read_cursors::Column::ChannelId.eq(id))
        .order_by_asc(read_cursors::Column::LastReadAt)
        .order_by_asc(read_cursors::Column::UserId)
        .all(db)
        .await?;
    let views: Vec<ReadCursorView> = rows
        .iter()
        .map(|c| ReadCursorView {
            user_id: c.user_id,
            last_read_message_id: c.last_read_message_id,
            last_read_at: rfc3339(&c.last_read_at),
        })
        .collect();
    Ok(views)
}

/// The sender keys of a channel, oldest first.
pub async fn sender_keys_of(db: &DatabaseConnection, id: Uuid) -> ApiResult<Vec<sender_keys::Model>> {
    Ok(sender_keys::Entity::find()
        .filter(sender_keys::Column::ChannelId.eq(id))
        .order_by_asc(sender_keys::Column::CreatedAt)
        .order_by_asc(sender_keys::Column::UserId)
        .all(db)
        .await?)
}
