//! Sessions: the refresh-token rows behind each login, the access tokens minted from them,
//! and ending logins (revoking their tokens and closing their sockets). Used by `/auth/*`,
//! `/account/*` and the admin routes that suspend or delete users.

use std::sync::OnceLock;

use palaver_actors::registry::Logins;
use palaver_entity::{refresh_tokens, users};
use sea_orm::sea_query::{Expr, ExprTrait, Func};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};
use serde::Serialize;
use uuid::Uuid;

use crate::audit;
use crate::auth::Caller;
use crate::auth::tokens::{
    ACCESS_TOKEN_SECS, LEEWAY_SECS, REFRESH_TOKEN_DAYS, hash_token, new_refresh_token,
};
use crate::domain::session::device_name;
use crate::domain::user::UserView;
use crate::error::{ApiError, ApiResult};
use crate::http::ClientInfo;
use crate::state::AppState;

/// The caller's own row; 401 when the account no longer exists.
pub(crate) async fn current_user(state: &AppState, caller: &Caller) -> ApiResult<users::Model> {
    users::Entity::find_by_id(caller.user_id).one(&state.db).await?.ok_or(ApiError::Unauthorized)
}

/// What login and register answer.
#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct AuthResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub user: UserView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_code: Option<String>,
}

/// A signed access token carrying the user's current flags and the login it belongs to.
pub(crate) fn access_token(state: &AppState, user: &users::Model, login: Uuid) -> ApiResult<String> {
    state
        .tokens
        .issue_for_login(user.id, &user.username, user.is_admin, user.is_owner, Some(login))
        .map_err(ApiError::internal)
}

/// Stores a new refresh token (hashed) in `family_id` and returns the token itself.
pub(crate) async fn issue_refresh_token(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    family_id: Uuid,
    client: &ClientInfo,
) -> ApiResult<String> {
    let token = new_refresh_token();
    let now = palaver_entity::now();
    let row = refresh_tokens::ActiveModel {
        id: Set(Uuid::new_v4()),
        user_id: Set(user_id),
        token_hash: Set(hash_token(&token)),
        family_id: Set(family_id),
        device_name: Set(device_name(client.user_agent.as_deref())),
        ip_address: Set(client.ip.map(|ip| ip.to_string())),
        created_at: Set(now),
        expires_at: Set(now + chrono::Duration::days(REFRESH_TOKEN_DAYS)),
        revoked_at: Set(None),
    };
    refresh_tokens::Entity::insert(row).exec_without_returning(db).await?;
    Ok(token)
}

/// Revokes every still-valid refresh token of the user; returns how many.
pub(crate) async fn revoke_all_refresh_tokens(db: &impl ConnectionTrait, user_id: Uuid) -> ApiResult<u64> {
    let res = refresh_tokens::Entity::update_many()
        .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(palaver_entity::now()))
        .filter(refresh_tokens::Column::UserId.eq(user_id))
        .filter(refresh_tokens::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(res.rows_affected)
}

/// The live side of revoking `logins` of a user (already committed): their sockets close
/// with 4001, and while access tokens of theirs may still be valid, none opens a socket again.
pub(crate) async fn end_logins(state: &AppState, user_id: Uuid, logins: Logins) {
    state.hub.end_logins(user_id, logins);
    let token_life = ACCESS_TOKEN_SECS + LEEWAY_SECS;
    let families = match logins {
        Logins::Only(login) => Ok(vec![login]),
        // Every access token that may still be valid was issued with a refresh row of its
        // login, so the logins with a row that young are all there is to remember.
        Logins::All | Logins::AllBut(_) => {
            refresh_tokens::Entity::find()
                .select_only()
                .column(refresh_tokens::Column::FamilyId)
                .distinct()
                .filter(refresh_tokens::Column::UserId.eq(user_id))
                .filter(
                    refresh_tokens::Column::CreatedAt
                        .gte(palaver_entity::now() - chrono::Duration::seconds(token_life)),
                )
                .into_tuple::<Uuid>()
                .all(&state.db)
                .await
        }
    };
    match families {
        Ok(families) => {
            for login in families.into_iter().filter(|login| logins.includes(Some(*login))) {
                state.hub.revoke_login(login, std::time::Duration::from_secs(token_life as u64));
            }
        }
        // The sockets are closed; only a reconnect with a still-valid token slips through.
        Err(err) => tracing::warn!(error = %err, user = %user_id, "could not list the revoked logins"),
    }
}

/// Revokes every token of a rotation family (theft detection on reuse).
pub(crate) async fn revoke_family(db: &impl ConnectionTrait, family_id: Uuid) -> ApiResult<u64> {
    let res = refresh_tokens::Entity::update_many()
        .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(palaver_entity::now()))
        .filter(refresh_tokens::Column::FamilyId.eq(family_id))
        .filter(refresh_tokens::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(res.rows_affected)
}

/// The user named `name`: the exact name first (indexed), then ignoring case (names are
/// unique regardless of case, so at most one matches).
pub(crate) async fn find_by_username(
    db: &impl ConnectionTrait,
    name: &str,
) -> ApiResult<Option<users::Model>> {
    if let Some(user) = users::Entity::find().filter(users::Column::Username.eq(name)).one(db).await? {
        return Ok(Some(user));
    }
    Ok(users::Entity::find().filter(lower_eq(users::Column::Username, name)).one(db).await?)
}

pub(crate) fn lower_eq(col: users::Column, value: &str) -> sea_orm::sea_query::SimpleExpr {
    Expr::expr(Func::lower(Expr::col((users::Entity, col)))).eq(value.to_lowercase())
}

/// Verifies against a fixed hash so an unknown user costs as much time as a wrong password
/// (and the same place in the hashing pool: a full pool answers 503 either way).
pub(crate) async fn dummy_password_check(state: &AppState, password: String) -> ApiResult<()> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let stored = match DUMMY.get() {
        Some(hash) => hash.clone(),
        None => {
            let hash = state.hashing.hash("palaver-dummy-Passw0rd!".into()).await?;
            DUMMY.get_or_init(|| hash).clone()
        }
    };
    state.hashing.verify(password, stored).await.map(|_| ())
}

/// A revoked token came back: whoever holds the family may have stolen it, so the whole
/// family dies (the legitimate device logs in again).
pub(crate) async fn reuse_detected(
    state: &AppState,
    client: &ClientInfo,
    row: &refresh_tokens::Model,
) -> ApiError {
    match revoke_family(&state.db, row.family_id).await {
        Ok(revoked) => {
            if revoked > 0 {
                // Whoever holds the stolen token may hold a socket of that login too. (A family
                // already wholly revoked, e.g. by a suspension since lifted, is left as it was.)
                end_logins(state, row.user_id, Logins::Only(row.family_id)).await;
                audit::record(
                    &state.db,
                    Some(row.user_id),
                    "refresh_token_reuse",
                    Some(client),
                    Some(serde_json::json!({"family_id": row.family_id, "revoked": revoked})),
                )
                .await;
            }
            ApiError::Unauthorized
        }
        Err(err) => err,
    }
}

/// Spends the presented refresh token (already checked to be 64 hex digits) and stores its
/// successor in the same family: the user, the spent row and the new token. 401 when the
/// token is unknown, expired or its user suspended; a token used twice ends its family.
pub(crate) async fn rotate(
    state: &AppState,
    client: &ClientInfo,
    presented: &str,
) -> ApiResult<(users::Model, refresh_tokens::Model, String)> {
    let db = &state.db;
    let row = refresh_tokens::Entity::find()
        .filter(refresh_tokens::Column::TokenHash.eq(hash_token(presented)))
        .one(db)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if row.revoked_at.is_some() {
        return Err(reuse_detected(state, client, &row).await);
    }
    if row.expires_at <= palaver_entity::now() {
        return Err(ApiError::Unauthorized);
    }
    let user = users::Entity::find_by_id(row.user_id).one(db).await?.ok_or(ApiError::Unauthorized)?;
    if user.suspended_at.is_some() {
        return Err(ApiError::Unauthorized);
    }

    // Rotation: spend the presented token (only one request can), issue its successor.
    let txn = crate::db::begin_write(db).await?;
    let spent = refresh_tokens::Entity::update_many()
        .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(palaver_entity::now()))
        .filter(refresh_tokens::Column::Id.eq(row.id))
        .filter(refresh_tokens::Column::RevokedAt.is_null())
        .exec(&txn)
        .await?;
    if spent.rows_affected != 1 {
        // Someone else rotated it a moment ago: the token was used twice.
        drop(txn);
        return Err(reuse_detected(state, client, &row).await);
    }
    let refresh_token = issue_refresh_token(&txn, user.id, row.family_id, client).await?;
    txn.commit().await?;
    Ok((user, row, refresh_token))
}
