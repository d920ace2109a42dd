//! Database work the actors do, kept out of their message handlers so those read as rules.

use palaver_entity::{
    blocked_users, channel_members, channel_timeouts, channels, community_members, dm_pairs, groups, messages,
};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QuerySelect, QueryTrait,
};
use std::collections::HashMap;
use uuid::Uuid;

/// Everything a channel actor needs when it starts (or restarts after a crash).
pub struct ChannelSnapshot {
    pub channel: channels::Model,
    /// The community the channel's group belongs to, if any.
    pub community_id: Option<Uuid>,
    /// member → channel role.
    pub members: HashMap<Uuid, String>,
    /// member → end of an active timeout.
    pub timeouts: HashMap<Uuid, chrono::DateTime<chrono::Utc>>,
    /// For DM channels: the two participants.
    pub dm_pair: Option<(Uuid, Uuid)>,
    /// Whether the channel has any message yet (a DM's first message announces the DM).
    pub has_messages: bool,
}

pub async fn load_channel(
    db: &DatabaseConnection,
    channel_id: Uuid,
) -> Result<Option<ChannelSnapshot>, DbErr> {
    let Some(channel) = channels::Entity::find_by_id(channel_id).one(db).await? else {
        return Ok(None);
    };
    let community_id = match channel.group_id {
        Some(group_id) => groups::Entity::find_by_id(group_id).one(db).await?.map(|g| g.community_id),
        None => None,
    };
    let members = channel_members::Entity::find()
        .filter(channel_members::Column::ChannelId.eq(channel_id))
        .all(db)
        .await?
        .into_iter()
        .map(|m| (m.user_id, m.role))
        .collect();
    let now = palaver_entity::now();
    let mut timeouts = HashMap::new();
    for t in channel_timeouts::Entity::find()
        .filter(channel_timeouts::Column::ChannelId.eq(channel_id))
        .filter(channel_timeouts::Column::ExpiresAt.gt(now))
        .all(db)
        .await?
    {
        let entry = timeouts.entry(t.user_id).or_insert(t.expires_at);
        if t.expires_at > *entry {
            *entry = t.expires_at;
        }
    }
    let dm_pair = dm_pairs::Entity::find_by_id(channel_id).one(db).await?.map(|p| (p.user_a, p.user_b));
    let has_messages = messages::Entity::find()
        .filter(messages::Column::ChannelId.eq(channel_id))
        .limit(1)
        .count(db)
        .await?
        > 0;
    Ok(Some(ChannelSnapshot { channel, community_id, members, timeouts, dm_pair, has_messages }))
}

/// Whether either user blocks the other.
pub async fn blocked_either_way(db: &impl ConnectionTrait, a: Uuid, b: Uuid) -> Result<bool, DbErr> {
    let n = blocked_users::Entity::find()
        .filter(
            Condition::any()
                .add(blocked_users::Column::BlockerId.eq(a).and(blocked_users::Column::BlockedId.eq(b)))
                .add(blocked_users::Column::BlockerId.eq(b).and(blocked_users::Column::BlockedId.eq(a))),
        )
        .count(db)
        .await?;
    Ok(n > 0)
}

/// Whether the two users share at least one community.
pub async fn share_community(db: &impl ConnectionTrait, a: Uuid, b: Uuid) -> Result<bool, DbErr> {
    let of_a: Vec<Uuid> = community_members::Entity::find()
        .select_only()
        .column(community_members::Column::CommunityId)
        .filter(community_members::Column::UserId.eq(a))
        .into_tuple()
        .all(db)
        .await?;
    if of_a.is_empty() {
        return Ok(false);
    }
    let n = community_members::Entity::find()
        .filter(community_members::Column::UserId.eq(b))
        .filter(community_members::Column::CommunityId.is_in(of_a))
        .count(db)
        .await?;
    Ok(n > 0)
}

/// Looks up a live (not deleted, not quarantined) message.
pub async fn live_message(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<messages::Model>, DbErr> {
    messages::Entity::find_by_id(id)
        .filter(messages::Column::DeletedAt.is_null())
        .filter(messages::Column::QuarantinedAt.is_null())
        .one(db)
        .await
}

/// The live message `sender_id` sent to `channel_id` with idempotency key `client_nonce`,
/// created at or after `since` (a repeated send's original, when memory no longer has it).
pub async fn sent_with_client_nonce(
    db: &impl ConnectionTrait,
    channel_id: Uuid,
    sender_id: Uuid,
    client_nonce: &str,
    since: chrono::DateTime<chrono::Utc>,
) -> Result<Option<messages::Model>, DbErr> {
    messages::Entity::find()
        .filter(messages::Column::ChannelId.eq(channel_id))
        .filter(messages::Column::SenderId.eq(sender_id))
        .filter(messages::Column::ClientNonce.eq(client_nonce))
        .filter(messages::Column::CreatedAt.gte(since))
        .filter(messages::Column::DeletedAt.is_null())
        .one(db)
        .await
}

/// Which channel a message is in (for frames that name only the message).
pub async fn channel_of_message(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<Uuid>, DbErr> {
    messages::Entity::find_by_id(id)
        .select_only()
        .column(messages::Column::ChannelId)
        .into_tuple()
        .one(db)
        .await
}

/// Soft-deletes a message.
pub async fn soft_delete(db: &impl ConnectionTrait, id: Uuid) -> Result<bool, DbErr> {
    let res = messages::Entity::update_many()
        .col_expr(messages::Column::DeletedAt, Expr::value(palaver_entity::now()))
        .filter(messages::Column::Id.eq(id))
        .filter(messages::Column::DeletedAt.is_null())
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}

/// Saves the previous payload to the edit history and stores the new one, atomically (and,
/// for a cluster owner, only while its fence holds).
pub async fn record_edit(
    db: &DatabaseConnection,
    message: &messages::Model,
    ciphertext: Vec<u8>,
    nonce: Vec<u8>,
    edited_at: chrono::DateTime<chrono::Utc>,
    fence: Option<Fence>,
) -> Result<(), DbErr> {
    use palaver_entity::message_edits;
    use sea_orm::ActiveValue::Set;
    let txn = crate::db::begin_write(db).await?;
    if let Some(fence) = fence {
        fence.check(&txn).await?;
    }
    message_edits::Entity::insert(message_edits::ActiveModel {
        id: Set(Uuid::now_v7()),
        message_id: Set(message.id),
        old_ciphertext: Set(message.ciphertext.clone()),
        old_nonce: Set(message.nonce.clone()),
        edited_at: Set(edited_at),
    })
    .exec_without_returning(&txn)
    .await?;
    messages::Entity::update_many()
        .col_expr(messages::Column::Ciphertext, Expr::value(ciphertext))
        .col_expr(messages::Column::Nonce, Expr::value(nonce))
        .col_expr(messages::Column::EditedAt, Expr::value(edited_at))
        .filter(messages::Column::Id.eq(message.id))
        .exec(&txn)
        .await?;
    txn.commit().await
}

pub enum ReactionOutcome {
    Changed,
    AlreadyThere,
    TooManyEmoji,
    NothingToRemove,
}

pub async fn add_reaction(
    db: &impl ConnectionTrait,
    message_id: Uuid,
    user_id: Uuid,
    emoji: &str,
    max_distinct: u64,
) -> Result<ReactionOutcome, DbErr> {
    use palaver_entity::reactions;
    use sea_orm::ActiveValue::Set;
    let existing: Vec<String> = reactions::Entity::find()
        .select_only()
        .column(reactions::Column::Emoji)
        .filter(reactions::Column::MessageId.eq(message_id))
        .distinct()
        .into_tuple()
        .all(db)
        .await?;
    if !existing.iter().any(|e| e == emoji) && existing.len() as u64 >= max_distinct {
        return Ok(ReactionOutcome::TooManyEmoji);
    }
    let inserted = reactions::Entity::insert(reactions::ActiveModel {
        message_id: Set(message_id),
        user_id: Set(user_id),
        emoji: Set(emoji.to_string()),
        created_at: Set(palaver_entity::now()),
    })
    .on_conflict(
        sea_orm::sea_query::OnConflict::columns([
            reactions::Column::MessageId,
            reactions::Column::UserId,
            reactions::Column::Emoji,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(if inserted > 0 { ReactionOutcome::Changed } else { ReactionOutcome::AlreadyThere })
}

pub async fn remove_reaction(
    db: &impl ConnectionTrait,
    message_id: Uuid,
    user_id: Uuid,
    emoji: &str,
) -> Result<ReactionOutcome, DbErr> {
    use palaver_entity::reactions;
    let res = reactions::Entity::delete_many()
        .filter(reactions::Column::MessageId.eq(message_id))
        .filter(reactions::Column::UserId.eq(user_id))
        .filter(reactions::Column::Emoji.eq(emoji))
        .exec(db)
        .await?;
    Ok(if res.rows_affected > 0 { ReactionOutcome::Changed } else { ReactionOutcome::NothingToRemove })
}

/// Moves the user's read cursors to the newest message of every channel they belong to.
/// Moves the user's read cursor to the newest live message of every channel they belong to,
/// in one statement whatever their channel count (`INSERT … SELECT … ON CONFLICT`; both
/// databases). Channels without messages get no cursor, as before.
pub async fn mark_all_read(db: &DatabaseConnection, user_id: Uuid) -> Result<(), DbErr> {
    use palaver_entity::read_cursors;
    use sea_orm::sea_query::{OnConflict, Order, Query};
    let member_channel = (channel_members::Entity, channel_members::Column::ChannelId);
    let newest = Query::select()
        .column((messages::Entity, messages::Column::Id))
        .from(messages::Entity)
        .and_where(Expr::col((messages::Entity, messages::Column::ChannelId)).equals(member_channel))
        .and_where(Expr::col((messages::Entity, messages::Column::DeletedAt)).is_null())
        .order_by((messages::Entity, messages::Column::Id), Order::Desc)
        .limit(1)
        .to_owned();
    let rows = Query::select()
        .column(member_channel)
        .expr(Expr::val(user_id))
        .expr(Expr::from(newest.clone()))
        .expr(Expr::val(palaver_entity::now()))
        .from(channel_members::Entity)
        .and_where(Expr::col((channel_members::Entity, channel_members::Column::UserId)).eq(user_id))
        .and_where(Expr::exists(newest))
        .to_owned();
    let upsert = Query::insert()
        .into_table(read_cursors::Entity)
        .columns([
            read_cursors::Column::ChannelId,
            read_cursors::Column::UserId,
            read_cursors::Column::LastReadMessageId,
            read_cursors::Column::LastReadAt,
        ])
        .select_from(rows)
        .map_err(|e| DbErr::Custom(e.to_string()))?
        .on_conflict(
            OnConflict::columns([read_cursors::Column::ChannelId, read_cursors::Column::UserId])
                .update_columns([read_cursors::Column::LastReadMessageId, read_cursors::Column::LastReadAt])
                .to_owned(),
        )
        .to_owned();
    db.execute(&upsert).await?;
    Ok(())
}

/// The user ids of a community's members.
pub async fn community_member_ids(db: &impl ConnectionTrait, community_id: Uuid) -> Result<Vec<Uuid>, DbErr> {
    community_members::Entity::find()
        .select_only()
        .column(community_members::Column::UserId)
        .filter(community_members::Column::CommunityId.eq(community_id))
        .into_tuple::<Uuid>()
        .all(db)
        .await
}

/// In a cluster: the shard a channel's owner writes under and the fencing epoch it took it
/// with (`channel_shards`). A write checks it first, in its own transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fence {
    pub shard: i16,
    pub epoch: i64,
}

/// The error text of a write refused by its fence: another node owns the shard now.
pub const FENCED: &str = "fenced: another node owns this channel's shard now";

impl Fence {
    /// Holds the shard row under `FOR SHARE` until the transaction ends, if its epoch is
    /// still this one: a new owner's epoch bump (an `UPDATE`) waits for this transaction, or
    /// this one sees the new epoch and is refused. PostgreSQL only (clusters need it).
    pub async fn check(self, txn: &impl ConnectionTrait) -> Result<(), DbErr> {
        let held = txn
            .query_one_raw(sea_orm::Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                "SELECT 1 AS held FROM channel_shards WHERE shard = $1 AND shard_epoch = $2 FOR SHARE",
                [self.shard.into(), self.epoch.into()],
            ))
            .await?;
        match held {
            Some(_) => Ok(()),
            None => Err(DbErr::Custom(FENCED.into())),
        }
    }

    /// `insert` (a plain multi-row `INSERT … VALUES …`) as one statement that inserts only
    /// while the fence holds: the shard row is locked `FOR SHARE` in a `WITH` clause of the
    /// same statement, so a group commit costs one round trip instead of four (`BEGIN`, the
    /// check, the insert, `COMMIT`) with the same guarantee as [`Fence::check`]. Fewer rows
    /// than given inserted means the fence did not hold (nothing was inserted).
    pub fn guard_insert(self, insert: sea_orm::Statement) -> Result<sea_orm::Statement, DbErr> {
        let sea_orm::Statement { sql, values, db_backend } = insert;
        let Some(split) = sql.find(" VALUES (") else {
            return Err(DbErr::Custom(format!("not a plain INSERT … VALUES: {sql}")));
        };
        let mut values = values.map(|v| v.0).unwrap_or_default();
        let (shard, epoch) = (values.len() + 1, values.len() + 2);
        values.push(self.shard.into());
        values.push(self.epoch.into());
        let (head, rows) = sql.split_at(split);
        let sql = format!(
            "WITH fence AS (SELECT 1 FROM channel_shards WHERE shard = ${shard} AND shard_epoch = ${epoch} FOR SHARE) \
             {head} SELECT * FROM ({rows}) AS rows WHERE EXISTS (SELECT 1 FROM fence)",
            rows = rows.trim_start(),
        );
        Ok(sea_orm::Statement::from_sql_and_values(db_backend, sql, values))
    }
}

/// Runs one of a channel owner's writes: on a single node (`fence` is `None`) straight on
/// `db`; in a cluster inside a transaction that first checks the fence, so a stale owner
/// changes nothing (the write fails with `FENCED`). `$conn` names the connection to use.
macro_rules! owner_write {
    ($db:expr, $fence:expr, |$conn:ident| $write:expr) => {
        async {
            match $fence {
                None => {
                    let $conn = $db;
                    $write.await
                }
                Some(fence) => {
                    let txn = $crate::db::begin_write($db).await?;
                    fence.check(&txn).await?;
                    let $conn = &txn;
                    let out = $write.await?;
                    txn.commit().await?;
                    Ok(out)
                }
            }
        }
        .await
    };
}
pub(crate) use owner_write;

/// Whether a write failed because its fence no longer holds (another node owns the shard).
pub fn is_fenced(err: &DbErr) -> bool {
    matches!(err, DbErr::Custom(text) if text == FENCED)
}

/// Stores a group commit. Without claims: one multi-row insert (in a cluster, guarded by the
/// fence in the same statement, see [`Fence::guard_insert`]). Otherwise one transaction that
/// first checks the fence (a cluster owner's writes), then sets each claimed
/// row's `delivered_at` where it is still null (scheduled messages being delivered), then
/// inserts every message whose claim held. Returns the batch positions whose claim was lost
/// (already delivered; not stored).
pub async fn insert_messages(
    db: &DatabaseConnection,
    rows: Vec<messages::Model>,
    claims: &[(usize, Uuid)],
    fence: Option<Fence>,
) -> Result<Vec<usize>, DbErr> {
    use palaver_entity::scheduled_messages;
    use sea_orm::IntoActiveModel;
    let active = |rows: Vec<messages::Model>| rows.into_iter().map(IntoActiveModel::into_active_model);
    if claims.is_empty() {
        match fence {
            None => {
                messages::Entity::insert_many(active(rows)).exec_without_returning(db).await?;
            }
            Some(fence) => {
                let expected = rows.len() as u64;
                let insert = messages::Entity::insert_many(active(rows)).build(db.get_database_backend());
                let inserted = db.execute_raw(fence.guard_insert(insert)?).await?.rows_affected();
                if inserted != expected {
                    return Err(DbErr::Custom(FENCED.into()));
                }
            }
        }
        return Ok(Vec::new());
    }
    let txn = crate::db::begin_write(db).await?;
    if let Some(fence) = fence {
        fence.check(&txn).await?;
    }
    let now = palaver_entity::now();
    let mut lost = Vec::new();
    for (position, scheduled_id) in claims {
        let claimed = scheduled_messages::Entity::update_many()
            .col_expr(scheduled_messages::Column::DeliveredAt, Expr::value(now))
            .filter(scheduled_messages::Column::Id.eq(*scheduled_id))
            .filter(scheduled_messages::Column::DeliveredAt.is_null())
            .exec(&txn)
            .await?;
        if claimed.rows_affected == 0 {
            lost.push(*position);
        }
    }
    let keep: Vec<messages::Model> =
        rows.into_iter().enumerate().filter(|(i, _)| !lost.contains(i)).map(|(_, r)| r).collect();
    if !keep.is_empty() {
        messages::Entity::insert_many(active(keep)).exec_without_returning(&txn).await?;
    }
    txn.commit().await?;
    Ok(lost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{DbBackend, IntoActiveModel};

    fn message() -> messages::Model {
        messages::Model {
            id: Uuid::new_v4(),
            channel_id: Uuid::new_v4(),
            sender_id: None,
            ciphertext: vec![1, 2],
            nonce: vec![3],
            message_type: "text".into(),
            reply_to_id: None,
            sender_key_id: None,
            thread_id: None,
            edited_at: None,
            deleted_at: None,
            quarantined_at: None,
            expires_at: None,
            webhook_content: None,
            created_at: palaver_entity::now(),
            client_nonce: None,
        }
    }

    #[test]
    fn a_guarded_insert_is_one_statement_conditioned_on_the_fence() {
        let rows = [message(), message()].map(IntoActiveModel::into_active_model);
        let insert = messages::Entity::insert_many(rows).build(DbBackend::Postgres);
        let given = insert.values.as_ref().map_or(0, |v| v.0.len());
        let guarded = Fence { shard: 7, epoch: 42 }.guard_insert(insert).unwrap();
        let values = guarded.values.unwrap().0;
        assert_eq!(values.len(), given + 2);
        assert_eq!(values[given..], [7i16.into(), 42i64.into()]);
        let sql = guarded.sql;
        assert!(sql.starts_with(&format!(
            "WITH fence AS (SELECT 1 FROM channel_shards WHERE shard = ${} AND shard_epoch = ${} FOR SHARE) INSERT INTO \"messages\"",
            given + 1,
            given + 2
        )), "{sql}");
        assert!(sql.contains(" SELECT * FROM (VALUES ($1, "), "{sql}");
        assert!(sql.ends_with(") AS rows WHERE EXISTS (SELECT 1 FROM fence)"), "{sql}");
        assert!(!sql.contains("RETURNING"), "{sql}");
    }

    #[test]
    fn anything_but_a_plain_insert_is_refused() {
        let statement = sea_orm::Statement::from_string(DbBackend::Postgres, "DELETE FROM messages");
        assert!(Fence { shard: 1, epoch: 1 }.guard_insert(statement).is_err());
    }
}
