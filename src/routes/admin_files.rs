//! Seed section "Admin", file management (rest-admin.md "Files" and the blocked hashes of
//! "Content moderation"): `/admin/files`, `/admin/files/{id}` (delete),
//! `/admin/files/{id}/quarantine|unquarantine`, `/admin/storage-stats`,
//! `/admin/blocked-hashes`. Instance admin or owner only (403). Every change is audited.
//!
//! Kept apart from routes/admin.rs so the two grow without stepping on each other.

use chrono::{DateTime, Utc};
use palaver_entity::{blocked_hashes, files};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, LikeExpr};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::audit;
use crate::auth::{Caller, admin_only};
use crate::domain::admin;
use crate::domain::file::{self, AdminFileView, BlockedHashView, find_file};
use crate::domain::search::{like_contains, like_escape};
use crate::error::{ApiError, ApiResult};
use crate::http::query::QueryParams;
use crate::http::{ClientInfo, PathId, Reply, ok_empty, ok_json};
use crate::state::AppState;

// ---------------------------------------------------------------------------------------
// Files

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct FilePage {
    files: Vec<AdminFileView>,
    total: u64,
    page: u64,
    per_page: u64,
}

/// GET /api/admin/files
pub(crate) async fn list_files(state: AppState, caller: Caller, query: QueryParams) -> Reply {
    admin_only(&caller)?;
    let admin::Page { page, per_page } = admin::Page::from_query(&query)?;
    let mut select = files::Entity::find();
    if let Some(raw) = query.text("user_id") {
        let user_id = Uuid::parse_str(raw).map_err(|_| ApiError::validation("user_id must be a UUID"))?;
        select = select.filter(files::Column::UploaderId.eq(user_id));
    }
    if let Some(search) = query.text("search") {
        let pattern = like_contains(&search.to_lowercase());
        select = select.filter(
            Expr::expr(Func::lower(Expr::col((files::Entity, files::Column::EncryptedName))))
                .like(LikeExpr::new(pattern).escape('\\')),
        );
    }
    if let Some(prefix) = query.text("content_type") {
        let pattern = format!("{}%", like_escape(&prefix.to_ascii_lowercase()));
        select = select.filter(
            Expr::expr(Func::lower(Expr::col((files::Entity, files::Column::ContentType))))
                .like(LikeExpr::new(pattern).escape('\\')),
        );
    }
    if let Some(from) = query.time("date_from") {
        select = select.filter(files::Column::CreatedAt.gte(from));
    }
    if let Some(to) = query.time("date_to") {
        select = select.filter(files::Column::CreatedAt.lte(to));
    }
    let total = select.clone().count(&state.db).await?;
    if query.text("sort") == Some("size") {
        select = select.order_by_desc(files::Column::SizeBytes);
    }
    let rows = select
        .order_by_desc(files::Column::CreatedAt)
        .order_by_desc(files::Column::Id)
        .offset((page - 1) * per_page)
        .limit(per_page)
        .all(&state.db)
        .await?;
    ok_json(&FilePage { files: rows.iter().map(AdminFileView::from).collect(), total, page, per_page })
}

/// DELETE /api/admin/files/{id}?block_hashes=
pub(crate) async fn delete_file(
    id: PathId,
    state: AppState,
    caller: Caller,
    client: ClientInfo,
    query: QueryParams,
) -> Reply {
    admin_only(&caller)?;
    let id = id.get()?;
    let block = query.flag("block_hashes")?;
    let txn = crate::db::begin_write(&state.db).await?;
    let file = find_file(&txn, id).await?;
    let deleted = files::Entity::delete_by_id(id).exec(&txn).await?;
    if deleted.rows_affected == 0 {
        return Err(ApiError::not_found("file"));
    }
    let hash_blocked = if block {
        let reason = format!("blocked when file {id} was deleted");
        block_hash(&txn, &file.checksum, Some(reason), caller.user_id, false).await?.1
    } else {
        false
    };
    txn.commit().await?;
    state.uploads.store.remove_blobs(&[(file.storage_path.clone(), file.thumbnail_path.clone())]).await;
    audit::record(
        &state.db,
        Some(caller.user_id),
        "admin_delete_file",
        Some(&client),
        Some(json!({"file_id": id, "uploader_id": file.uploader_id, "size_bytes": file.size_bytes,
            "checksum": file.checksum, "hash_blocked": hash_blocked})),
    )
    .await;
    ok_empty()
}

/// POST /api/admin/files/{id}/quarantine · POST /api/admin/files/{id}/unquarantine
pub(crate) async fn set_quarantine(
    id: PathId,
    state: AppState,
    caller: Caller,
    client: ClientInfo,
    quarantine: bool,
) -> Reply {
    admin_only(&caller)?;
    let id = id.get()?;
    // One conditional update: "already in the requested state" and "missing" are both 404.
    let mut update = files::Entity::update_many().filter(files::Column::Id.eq(id));
    update = if quarantine {
        update
            .col_expr(files::Column::QuarantinedAt, Expr::value(palaver_entity::now()))
            .col_expr(files::Column::QuarantinedBy, Expr::value(caller.user_id))
            .filter(files::Column::QuarantinedAt.is_null())
    } else {
        update
            .col_expr(files::Column::QuarantinedAt, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(files::Column::QuarantinedBy, Expr::value(Option::<Uuid>::None))
            .filter(files::Column::QuarantinedAt.is_not_null())
    };
    if update.exec(&state.db).await?.rows_affected == 0 {
        let what = if quarantine { "unquarantined file" } else { "quarantined file" };
        return Err(ApiError::not_found(what));
    }
    let action = if quarantine { "admin_quarantine_file" } else { "admin_unquarantine_file" };
    audit::record(&state.db, Some(caller.user_id), action, Some(&client), Some(json!({"file_id": id}))).await;
    ok_empty()
}

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct UserUsage {
    user_id: Uuid,
    file_count: i64,
    total_bytes: i64,
}

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct StorageStats {
    total_files: i64,
    total_bytes: i64,
    per_user: Vec<UserUsage>,
}

/// GET /api/admin/storage-stats
pub(crate) async fn storage_stats(state: AppState, caller: Caller) -> Reply {
    admin_only(&caller)?;
    let bigint = || Alias::new("BIGINT");
    let per_user: Vec<(Uuid, i64, i64)> = files::Entity::find()
        .select_only()
        .column(files::Column::UploaderId)
        .expr_as(Expr::col(files::Column::Id).count().cast_as(bigint()), "file_count")
        .expr_as(Expr::col(files::Column::SizeBytes).sum().cast_as(bigint()), "total_bytes")
        .group_by(files::Column::UploaderId)
        .into_tuple()
        .all(&state.db)
        .await?;
    let mut per_user: Vec<UserUsage> = per_user
        .into_iter()
        .map(|(user_id, file_count, total_bytes)| UserUsage { user_id, file_count, total_bytes })
        .collect();
    per_user.sort_by(|a, b| b.total_bytes.cmp(&a.total_bytes).then(b.file_count.cmp(&a.file_count)));
    let stats = StorageStats {
        total_files: per_user.iter().map(|u| u.file_count).sum(),
        total_bytes: per_user.iter().map(|u| u.total_bytes).sum(),
        per_user,
    };
    ok_json(&stats)
}

// ---------------------------------------------------------------------------------------
// Blocked hashes

/// GET /api/admin/blocked-hashes
pub(crate) async fn list_blocked_hashes(state: AppState, caller: Caller, query: QueryParams) -> Reply {
    admin_only(&caller)?;
    let admin::Page { page, per_page } = admin::Page::from_query(&query)?;
    let rows = blocked_hashes::Entity::find()
        .order_by_desc(blocked_hashes::Column::CreatedAt)
        .order_by_desc(blocked_hashes::Column::Id)
        .offset((page - 1) * per_page)
        .limit(per_page)
        .all(&state.db)
        .await?;
    ok_json(&rows.iter().map(BlockedHashView::from).collect::<Vec<_>>())
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct BlockHashRequest {
    hash: String,
    #[serde(default)]
    reason: Option<String>,
}

/// POST /api/admin/blocked-hashes
pub(crate) async fn add_blocked_hash(
    state: AppState,
    caller: Caller,
    client: ClientInfo,
    body: ApiResult<BlockHashRequest>,
) -> Reply {
    admin_only(&caller)?;
    let body = body?;
    let hash = file::sha256_hex(&body.hash)?;
    let reason = file::block_reason(body.reason.as_deref())?;
    let txn = crate::db::begin_write(&state.db).await?;
    let (row, _) = block_hash(&txn, &hash, reason, caller.user_id, true).await?;
    txn.commit().await?;
    audit::record(
        &state.db,
        Some(caller.user_id),
        "admin_block_hash",
        Some(&client),
        Some(json!({"blocked_hash_id": row.id, "hash": row.hash, "reason": row.reason})),
    )
    .await;
    ok_json(&BlockedHashView::from(&row))
}

/// Puts `hash` on the blocklist. An existing entry keeps its id; its reason is replaced when
/// `update_reason`. Returns the row and whether it is new.
async fn block_hash(
    db: &impl ConnectionTrait,
    hash: &str,
    reason: Option<String>,
    by: Uuid,
    update_reason: bool,
) -> ApiResult<(blocked_hashes::Model, bool)> {
    let existing =
        blocked_hashes::Entity::find().filter(blocked_hashes::Column::Hash.eq(hash)).one(db).await?;
    match existing {
        Some(row) if update_reason => {
            let mut active: blocked_hashes::ActiveModel = row.into();
            active.reason = Set(reason);
            Ok((active.update(db).await?, false))
        }
        Some(row) => Ok((row, false)),
        None => {
            let row = blocked_hashes::ActiveModel {
                id: Set(Uuid::now_v7()),
                hash: Set(hash.to_string()),
                reason: Set(reason),
                blocked_by: Set(Some(by)),
                created_at: Set(palaver_entity::now()),
            }
            .insert(db)
            .await?;
            Ok((row, true))
        }
    }
}

/// DELETE /api/admin/blocked-hashes/{id}
pub(crate) async fn remove_blocked_hash(
    id: PathId,
    state: AppState,
    caller: Caller,
    client: ClientInfo,
) -> Reply {
    admin_only(&caller)?;
    let id = id.get()?;
    let row = blocked_hashes::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("blocked hash"))?;
    if blocked_hashes::Entity::delete_by_id(id).exec(&state.db).await?.rows_affected == 0 {
        return Err(ApiError::not_found("blocked hash"));
    }
    audit::record(
        &state.db,
        Some(caller.user_id),
        "admin_unblock_hash",
        Some(&client),
        Some(json!({"blocked_hash_id": id, "hash": row.hash})),
    )
    .await;
    ok_empty()
}
