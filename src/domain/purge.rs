//! Admin purges in one transaction: messages in a scope (with the newest per channel read
//! first, for live `message_deleted` frames), files in a scope, and optionally their hashes
//! blocked. The caller announces the deletions and removes the blobs once committed.

use std::collections::{BTreeSet, HashMap};

use palaver_entity::{blocked_hashes, channels, files, messages, users};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use uuid::Uuid;

use crate::auth::Caller;
use crate::domain::admin::PurgeResult;
use crate::error::{ApiError, ApiResult};

/// Most `message_deleted` frames one purge sends to a channel (the newest purged messages,
/// which are the ones clients have loaded); kept well below the per-socket outbound queue.
pub const LIVE_DELETIONS_PER_CHANNEL: u64 = 500;
/// Most purged messages looked at for live frames in one purge (bounds memory).
pub const LIVE_DELETIONS_SCAN: u64 = 5_000;
/// Reason stored on hashes a purge blocks.
const PURGE_BLOCK_REASON: &str = "blocked by an admin purge";

/// Deletes the file rows matching `condition` and (when `block`) adds their checksums to the
/// blocklist. Returns the blobs to remove once committed, and how many hashes were new.
async fn purge_files(
    txn: &impl ConnectionTrait,
    condition: Condition,
    block: bool,
    caller: &Caller,
) -> ApiResult<(Vec<(String, Option<String>)>, u64)> {
    let rows = files::Entity::find().filter(condition.clone()).all(txn).await?;
    if rows.is_empty() {
        return Ok((Vec::new(), 0));
    }
    files::Entity::delete_many().filter(condition).exec(txn).await?;
    let mut blocked = 0;
    if block {
        let checksums: BTreeSet<String> = rows.iter().map(|f| f.checksum.to_ascii_lowercase()).collect();
        let known: BTreeSet<String> = blocked_hashes::Entity::find()
            .select_only()
            .column(blocked_hashes::Column::Hash)
            .filter(blocked_hashes::Column::Hash.is_in(checksums.iter().cloned().collect::<Vec<_>>()))
            .into_tuple::<String>()
            .all(txn)
            .await?
            .into_iter()
            .collect();
        let now = palaver_entity::now();
        let new: Vec<blocked_hashes::ActiveModel> = checksums
            .difference(&known)
            .map(|hash| blocked_hashes::ActiveModel {
                id: Set(Uuid::now_v7()),
                hash: Set(hash.clone()),
                reason: Set(Some(PURGE_BLOCK_REASON.into())),
                blocked_by: Set(Some(caller.user_id)),
                created_at: Set(now),
            })
            .collect();
        blocked = new.len() as u64;
        if !new.is_empty() {
            blocked_hashes::Entity::insert_many(new).exec_without_returning(txn).await?;
        }
    }
    let blobs = rows.into_iter().map(|f| (f.storage_path, f.thumbnail_path)).collect();
    Ok((blobs, blocked))
}

/// The newest purged messages per channel (at most [`LIVE_DELETIONS_PER_CHANNEL`] each), read
/// before the delete so subscribers can be told afterwards.
async fn live_deletions(
    txn: &impl ConnectionTrait,
    condition: Condition,
) -> ApiResult<HashMap<Uuid, Vec<Uuid>>> {
    let rows: Vec<(Uuid, Uuid)> = messages::Entity::find()
        .select_only()
        .column(messages::Column::Id)
        .column(messages::Column::ChannelId)
        .filter(condition)
        .filter(messages::Column::DeletedAt.is_null())
        .order_by_desc(messages::Column::Id)
        .limit(LIVE_DELETIONS_SCAN)
        .into_tuple()
        .all(txn)
        .await?;
    let mut per_channel: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for (id, channel) in rows {
        let list = per_channel.entry(channel).or_default();
        if (list.len() as u64) < LIVE_DELETIONS_PER_CHANNEL {
            list.push(id);
        }
    }
    Ok(per_channel)
}

/// Whose messages and files a bulk purge removes.
#[derive(Clone, Copy)]
pub(crate) enum PurgeTarget {
    /// Everything a user sent or uploaded.
    User,
    /// Everything in a channel.
    Channel,
}

/// What a bulk purge deletes and how its audit entry names the target.
pub(crate) struct PurgeScope {
    /// The messages to delete.
    pub messages: Condition,
    /// The files to delete.
    pub files: Condition,
    /// The audit action recorded.
    pub audit_action: &'static str,
    /// The audit metadata key naming the target.
    pub audit_id_key: &'static str,
}

impl PurgeTarget {
    /// The scope of purging `id`; 404 when there is no such user or channel.
    pub(crate) async fn scope(self, db: &DatabaseConnection, id: Uuid) -> ApiResult<PurgeScope> {
        match self {
            Self::User => {
                if users::Entity::find_by_id(id).one(db).await?.is_none() {
                    return Err(ApiError::not_found("user"));
                }
                Ok(PurgeScope {
                    messages: Condition::all().add(messages::Column::SenderId.eq(id)),
                    files: Condition::all().add(files::Column::UploaderId.eq(id)),
                    audit_action: "admin_purge_user_messages",
                    audit_id_key: "target_user_id",
                })
            }
            Self::Channel => {
                if channels::Entity::find_by_id(id).one(db).await?.is_none() {
                    return Err(ApiError::not_found("channel"));
                }
                Ok(PurgeScope {
                    messages: Condition::all().add(messages::Column::ChannelId.eq(id)),
                    files: Condition::all().add(files::Column::ChannelId.eq(id)),
                    audit_action: "admin_purge_channel",
                    audit_id_key: "channel_id",
                })
            }
        }
    }
}

/// A purge's counts, live deletions per channel and blobs to remove.
pub(crate) type PurgeOutcome = (PurgeResult, HashMap<Uuid, Vec<Uuid>>, Vec<(String, Option<String>)>);

/// One transaction: messages in `scope`, files in `file_scope` (and their hashes when
/// `block`). Returns the counts, the live deletions to announce and the blobs to remove.
pub(crate) async fn purge(
    db: &DatabaseConnection,
    caller: &Caller,
    scope: Condition,
    file_scope: Condition,
    block: bool,
) -> ApiResult<PurgeOutcome> {
    let txn = crate::db::begin_write(db).await?;
    let live = live_deletions(&txn, scope.clone()).await?;
    let deleted = messages::Entity::delete_many().filter(scope).exec(&txn).await?;
    let (blobs, hashes_blocked) = purge_files(&txn, file_scope, block, caller).await?;
    txn.commit().await?;
    let result = PurgeResult {
        messages_deleted: deleted.rows_affected,
        files_deleted: blobs.len() as u64,
        hashes_blocked,
    };
    Ok((result, live, blobs))
}
