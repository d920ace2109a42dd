//! Seed section "E2E Encryption Keys": `/keys/{user_id}/bundle`, `/keys/register`,
//! `/keys/prekeys/signed`, `/keys/prekeys/one-time`, `/keys/prekeys/count` (Bearer).
//!
//! A one-time prekey is handed out at most once, also under concurrent bundle fetches on
//! either database: it is claimed by deleting it by id and checking that this very request
//! deleted the row (PostgreSQL additionally skips rows another fetch has locked).

use palaver_actors::protocol::ServerFrame;
use palaver_entity::{identity_keys, one_time_prekeys, signed_prekeys};
use sea_orm::sea_query::{LockBehavior, LockType, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::domain::keys::{self, OneTimePrekeyInput, SignedPrekeyInput};
use crate::error::{ApiError, ApiResult};
use crate::http::{PathId, ok_empty, ok_json};
use crate::state::AppState;

/// Below this many unused one-time prekeys the owner is told to upload more (`keys_low`).
pub const KEYS_LOW_THRESHOLD: u64 = 25;
/// Lost races tolerated while claiming a one-time prekey before serving the bundle without one.
const CLAIM_ATTEMPTS: usize = 100;

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct SignedPrekeyView {
    key_id: i32,
    public_key: Vec<u8>,
    signature: Vec<u8>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct KeyBundle {
    identity_key: Vec<u8>,
    signed_prekey: SignedPrekeyView,
    one_time_prekey: Option<OneTimePrekeyInput>,
}

/// GET /api/keys/{user_id}/bundle
pub(crate) async fn key_bundle(
    id: PathId,
    state: AppState,
    _caller: Caller,
) -> ApiResult<warp::reply::Response> {
    let owner = id.get()?;
    let identity = identity_keys::Entity::find_by_id(owner)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("keys"))?;
    let signed = signed_prekeys::Entity::find()
        .filter(signed_prekeys::Column::UserId.eq(owner))
        .order_by_desc(signed_prekeys::Column::CreatedAt)
        .order_by_desc(signed_prekeys::Column::Id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("keys"))?;
    let one_time = claim_one_time_prekey(&state.db, owner).await?;

    let remaining = count_one_time_prekeys(&state.db, owner).await?;
    if remaining < KEYS_LOW_THRESHOLD {
        state.hub.send_to_user(owner, &ServerFrame::KeysLow { remaining: remaining as i64 });
    }
    ok_json(&KeyBundle {
        identity_key: identity.identity_key,
        signed_prekey: SignedPrekeyView {
            key_id: signed.key_id,
            public_key: signed.public_key,
            signature: signed.signature,
        },
        one_time_prekey: one_time.map(|k| OneTimePrekeyInput { key_id: k.key_id, public_key: k.public_key }),
    })
}

/// Takes the owner's oldest unused one-time prekey out of the store, or `None` when none is
/// left. Each prekey is returned to at most one caller: the claim is the `DELETE` of that row
/// by id, and only the request whose delete removed the row (rows_affected == 1) keeps it; a
/// request that lost the race moves on to the next one.
async fn claim_one_time_prekey(
    db: &DatabaseConnection,
    owner: Uuid,
) -> ApiResult<Option<one_time_prekeys::Model>> {
    let oldest_first = || {
        one_time_prekeys::Entity::find()
            .filter(one_time_prekeys::Column::UserId.eq(owner))
            .order_by_asc(one_time_prekeys::Column::CreatedAt)
            .order_by_asc(one_time_prekeys::Column::Id)
    };
    // Every lost race means another fetch took a prekey, so this ends quickly; the bound only
    // guards against a pathological stream of concurrent fetches.
    for _ in 0..CLAIM_ATTEMPTS {
        if db.get_database_backend() == DatabaseBackend::Postgres {
            // Row locks let concurrent fetches take different prekeys instead of queueing
            // on the same one.
            let txn = crate::db::begin_write(db).await?;
            let candidate = oldest_first()
                .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
                .one(&txn)
                .await?;
            let Some(candidate) = candidate else {
                // Nothing, or only rows other fetches hold: those are being handed out.
                txn.commit().await?;
                return Ok(None);
            };
            let deleted = one_time_prekeys::Entity::delete_by_id(candidate.id).exec(&txn).await?;
            txn.commit().await?;
            if deleted.rows_affected == 1 {
                return Ok(Some(candidate));
            }
        } else {
            // SQLite serializes writers: a plain delete by id is the atomic claim. (No
            // transaction around the read: upgrading a read transaction to a write one
            // fails at once in WAL mode when another writer got in between.)
            let Some(candidate) = oldest_first().one(db).await? else {
                return Ok(None);
            };
            let deleted = one_time_prekeys::Entity::delete_by_id(candidate.id).exec(db).await?;
            if deleted.rows_affected == 1 {
                return Ok(Some(candidate));
            }
        }
    }
    tracing::warn!(%owner, "gave up claiming a one-time prekey after {CLAIM_ATTEMPTS} lost races");
    Ok(None)
}

async fn count_one_time_prekeys(db: &impl ConnectionTrait, owner: Uuid) -> ApiResult<u64> {
    Ok(one_time_prekeys::Entity::find().filter(one_time_prekeys::Column::UserId.eq(owner)).count(db).await?)
}

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct Count {
    count: u64,
}

/// GET /api/keys/prekeys/count
pub(crate) async fn prekey_count(state: AppState, caller: Caller) -> ApiResult<warp::reply::Response> {
    ok_json(&Count { count: count_one_time_prekeys(&state.db, caller.user_id).await? })
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct RegisterKeys {
    identity_key: Vec<u8>,
    signed_prekey: SignedPrekeyInput,
    one_time_prekeys: Vec<OneTimePrekeyInput>,
}

/// POST /api/keys/register
pub(crate) async fn register_keys(
    state: AppState,
    caller: Caller,
    body: ApiResult<RegisterKeys>,
) -> ApiResult<warp::reply::Response> {
    let body = body?;
    let identity = keys::identity_key(&body.identity_key)?;
    keys::verify_signed_prekey(&identity, &body.signed_prekey)?;
    let one_time = keys::one_time_prekeys(body.one_time_prekeys)?;

    let now = palaver_entity::now();
    let txn = crate::db::begin_write(&state.db).await?;
    let identity_row = identity_keys::ActiveModel {
        user_id: Set(caller.user_id),
        identity_key: Set(identity.to_bytes().to_vec()),
        updated_at: Set(now),
    };
    identity_keys::Entity::insert(identity_row)
        .on_conflict(
            OnConflict::column(identity_keys::Column::UserId)
                .update_columns([identity_keys::Column::IdentityKey, identity_keys::Column::UpdatedAt])
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
    // A full re-registration: prekeys signed by a previous identity key are worthless now.
    signed_prekeys::Entity::delete_many()
        .filter(signed_prekeys::Column::UserId.eq(caller.user_id))
        .exec(&txn)
        .await?;
    signed_prekeys::Entity::insert(signed_row(caller.user_id, body.signed_prekey, now))
        .exec_without_returning(&txn)
        .await?;
    if !one_time.is_empty() {
        one_time_prekeys::Entity::delete_many()
            .filter(one_time_prekeys::Column::UserId.eq(caller.user_id))
            .exec(&txn)
            .await?;
        insert_one_time(&txn, caller.user_id, one_time).await?;
    }
    txn.commit().await?;
    ok_empty()
}

/// POST /api/keys/prekeys/signed
pub(crate) async fn upload_signed_prekey(
    state: AppState,
    caller: Caller,
    body: ApiResult<SignedPrekeyInput>,
) -> ApiResult<warp::reply::Response> {
    let body = body?;
    let stored = identity_keys::Entity::find_by_id(caller.user_id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::validation("register an identity key first"))?;
    let identity = keys::identity_key(&stored.identity_key)?;
    keys::verify_signed_prekey(&identity, &body)?;
    // Re-uploading a key id replaces it and makes it the newest (the one bundles serve).
    signed_prekeys::Entity::insert(signed_row(caller.user_id, body, palaver_entity::now()))
        .on_conflict(
            OnConflict::columns([signed_prekeys::Column::UserId, signed_prekeys::Column::KeyId])
                .update_columns([
                    signed_prekeys::Column::PublicKey,
                    signed_prekeys::Column::Signature,
                    signed_prekeys::Column::CreatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(&state.db)
        .await?;
    ok_empty()
}

/// POST /api/keys/prekeys/one-time
pub(crate) async fn upload_one_time_prekeys(
    state: AppState,
    caller: Caller,
    body: ApiResult<Vec<OneTimePrekeyInput>>,
) -> ApiResult<warp::reply::Response> {
    let batch = keys::one_time_prekeys(body?)?;
    insert_one_time(&state.db, caller.user_id, batch).await?;
    ok_empty()
}

fn signed_row(
    user_id: Uuid,
    key: SignedPrekeyInput,
    now: chrono::DateTime<chrono::Utc>,
) -> signed_prekeys::ActiveModel {
    signed_prekeys::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        key_id: Set(key.key_id),
        public_key: Set(key.public_key),
        signature: Set(key.signature),
        created_at: Set(now),
    }
}

/// Inserts one-time prekeys in one statement; key ids the user already has are skipped.
async fn insert_one_time(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    batch: Vec<OneTimePrekeyInput>,
) -> ApiResult<()> {
    let now = palaver_entity::now();
    let rows = batch.into_iter().map(|k| one_time_prekeys::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        key_id: Set(k.key_id),
        public_key: Set(k.public_key),
        created_at: Set(now),
    });
    one_time_prekeys::Entity::insert_many(rows)
        .on_conflict_do_nothing_on([one_time_prekeys::Column::UserId, one_time_prekeys::Column::KeyId])
        .exec_without_returning(db)
        .await?;
    Ok(())
}
