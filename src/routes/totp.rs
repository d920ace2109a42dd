//! Seed section "TOTP (Two-Factor Authentication)" (Bearer): `/totp/setup`, `/totp/verify`,
//! `/totp/disable` (current code or password), `/totp/regenerate-backup-codes` (client) and
//! `GET /totp/backup-codes` (seed: how many unused codes are left).
//!
//! Wrong codes here count toward a per-user lockout so a stolen access token cannot be used
//! to brute-force the second factor.

use palaver_entity::{totp_backup_codes, user_totp};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde::{Deserialize, Serialize};

use crate::audit;
use crate::auth::sessions::current_user;
use crate::auth::{Caller, totp};
use crate::error::{ApiError, ApiResult};
use crate::http::{ClientInfo, ok_json};
use crate::state::AppState;

/// Lockout purpose for wrong codes on these endpoints (keyed by user id).
const TOTP_LOCK: &str = "totp";

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct SetupResponse {
    otpauth_url: String,
    secret: String,
}

/// POST /api/totp/setup
pub(crate) async fn setup(state: AppState, caller: Caller) -> ApiResult<warp::reply::Response> {
    let user = current_user(&state, &caller).await?;
    let secret = totp::new_secret();
    let generator = totp::totp_for(secret.clone(), &user.username)?;
    let otpauth_url = generator.to_url().map_err(|e| ApiError::internal(format!("totp url: {e}")))?;
    let encrypted = state.totp_keys.encrypt(user.id, &secret)?;
    let now = palaver_entity::now();

    let txn = crate::db::begin_write(&state.db).await?;
    match user_totp::Entity::find_by_id(user.id).one(&txn).await? {
        Some(row) if row.enabled => {
            return Err(ApiError::conflict("two-factor authentication is already enabled"));
        }
        Some(_) => {
            // A new setup replaces an unfinished one; never an enabled one (the filter).
            let replaced = user_totp::Entity::update_many()
                .col_expr(user_totp::Column::Secret, Expr::value(encrypted))
                .col_expr(user_totp::Column::LastUsedStep, Expr::value(Option::<i64>::None))
                .col_expr(user_totp::Column::CreatedAt, Expr::value(now))
                .filter(user_totp::Column::UserId.eq(user.id))
                .filter(user_totp::Column::Enabled.eq(false))
                .exec(&txn)
                .await?;
            if replaced.rows_affected != 1 {
                return Err(ApiError::conflict("two-factor authentication is already enabled"));
            }
        }
        None => {
            user_totp::Entity::insert(user_totp::ActiveModel {
                user_id: Set(user.id),
                secret: Set(encrypted),
                enabled: Set(false),
                last_used_step: Set(None),
                created_at: Set(now),
                enabled_at: Set(None),
            })
            .exec_without_returning(&txn)
            .await?;
        }
    }
    txn.commit().await?;
    ok_json(&SetupResponse { otpauth_url, secret: generator.secret().to_base32() })
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct CodeRequest {
    code: String,
}

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct EnabledResponse {
    enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    backup_codes: Option<Vec<String>>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct BackupCodesResponse {
    backup_codes: Vec<String>,
}

/// The caller's account, refused while they are locked out of code attempts.
async fn unlocked_user(state: &AppState, caller: &Caller) -> ApiResult<palaver_entity::users::Model> {
    if let Some(seconds) = state.lockouts.locked_for(TOTP_LOCK, &caller.user_id.to_string()) {
        return Err(ApiError::validation(format!("too many wrong codes: try again in {seconds} seconds")));
    }
    current_user(state, caller).await
}

/// Checks a current TOTP code (each step once); a wrong one counts toward the lockout.
async fn require_code(
    state: &AppState,
    caller: &Caller,
    row: &user_totp::Model,
    username: &str,
    code: &str,
) -> ApiResult<()> {
    if totp::accept_code(&state.db, &state.totp_keys, row, username, code).await? {
        state.lockouts.clear(TOTP_LOCK, &caller.user_id.to_string());
        Ok(())
    } else {
        state.lockouts.record_failure(TOTP_LOCK, &caller.user_id.to_string());
        Err(ApiError::validation("invalid two-factor authentication code"))
    }
}

/// The user's enabled TOTP row, or 400.
async fn enabled_row(state: &AppState, caller: &Caller) -> ApiResult<user_totp::Model> {
    user_totp::Entity::find_by_id(caller.user_id)
        .one(&state.db)
        .await?
        .filter(|row| row.enabled)
        .ok_or_else(|| ApiError::validation("two-factor authentication is not enabled"))
}

/// POST /api/totp/verify
pub(crate) async fn verify(
    state: AppState,
    caller: Caller,
    client: ClientInfo,
    body: ApiResult<CodeRequest>,
) -> ApiResult<warp::reply::Response> {
    let body = body?;
    let user = unlocked_user(&state, &caller).await?;
    let row = match user_totp::Entity::find_by_id(user.id).one(&state.db).await? {
        None => return Err(ApiError::validation("no pending two-factor setup: call /totp/setup first")),
        Some(row) if row.enabled => {
            return Err(ApiError::conflict("two-factor authentication is already enabled"));
        }
        Some(row) => row,
    };
    require_code(&state, &caller, &row, &user.username, &body.code).await?;

    let txn = crate::db::begin_write(&state.db).await?;
    let enabled = user_totp::Entity::update_many()
        .col_expr(user_totp::Column::Enabled, Expr::value(true))
        .col_expr(user_totp::Column::EnabledAt, Expr::value(palaver_entity::now()))
        .filter(user_totp::Column::UserId.eq(user.id))
        .filter(user_totp::Column::Secret.eq(row.secret.clone()))
        .filter(user_totp::Column::Enabled.eq(false))
        .exec(&txn)
        .await?;
    if enabled.rows_affected != 1 {
        // A concurrent setup replaced the secret this code was for.
        return Err(ApiError::validation("two-factor setup changed meanwhile: start again"));
    }
    let backup_codes = totp::replace_backup_codes(&txn, &state.totp_keys, user.id).await?;
    txn.commit().await?;
    audit::record(&state.db, Some(user.id), "totp_enabled", Some(&client), None).await;
    ok_json(&EnabledResponse { enabled: true, backup_codes: Some(backup_codes) })
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct DisableRequest {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// POST /api/totp/disable — a current TOTP `code` (client) or the account `password` (seed).
pub(crate) async fn disable(
    state: AppState,
    caller: Caller,
    client: ClientInfo,
    body: ApiResult<DisableRequest>,
) -> ApiResult<warp::reply::Response> {
    let body = body?;
    let user = unlocked_user(&state, &caller).await?;
    let row = enabled_row(&state, &caller).await?;
    let code = body.code.as_deref().map(str::trim).filter(|c| !c.is_empty());
    match (code, body.password) {
        (Some(code), _) => require_code(&state, &caller, &row, &user.username, code).await?,
        (None, Some(password)) => {
            if !state.hashing.verify(password, user.password_hash.clone()).await? {
                state.lockouts.record_failure(TOTP_LOCK, &caller.user_id.to_string());
                return Err(ApiError::validation("password is incorrect"));
            }
        }
        (None, None) => {
            return Err(ApiError::validation("a current code or the account password is required"));
        }
    }
    let txn = crate::db::begin_write(&state.db).await?;
    user_totp::Entity::delete_by_id(user.id).exec(&txn).await?;
    totp_backup_codes::Entity::delete_many()
        .filter(totp_backup_codes::Column::UserId.eq(user.id))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    audit::record(&state.db, Some(user.id), "totp_disabled", Some(&client), None).await;
    ok_json(&EnabledResponse { enabled: false, backup_codes: None })
}

/// POST /api/totp/regenerate-backup-codes
pub(crate) async fn regenerate_backup_codes(
    state: AppState,
    caller: Caller,
    client: ClientInfo,
    body: ApiResult<CodeRequest>,
) -> ApiResult<warp::reply::Response> {
    let body = body?;
    let user = unlocked_user(&state, &caller).await?;
    let row = enabled_row(&state, &caller).await?;
    require_code(&state, &caller, &row, &user.username, &body.code).await?;
    let txn = crate::db::begin_write(&state.db).await?;
    let backup_codes = totp::replace_backup_codes(&txn, &state.totp_keys, user.id).await?;
    txn.commit().await?;
    audit::record(&state.db, Some(user.id), "totp_backup_codes_regenerated", Some(&client), None).await;
    ok_json(&BackupCodesResponse { backup_codes })
}

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct RemainingResponse {
    remaining: u64,
}

/// GET /api/totp/backup-codes
pub(crate) async fn remaining_backup_codes(
    state: AppState,
    caller: Caller,
) -> ApiResult<warp::reply::Response> {
    enabled_row(&state, &caller).await?;
    let remaining = totp_backup_codes::Entity::find()
        .filter(totp_backup_codes::Column::UserId.eq(caller.user_id))
        .filter(totp_backup_codes::Column::UsedAt.is_null())
        .count(&state.db)
        .await?;
    ok_json(&RemainingResponse { remaining })
}
