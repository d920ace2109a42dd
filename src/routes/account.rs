//! Seed section "Account" (Bearer): `/account/me`, profile, password, recovery code, account
//! deletion, sessions and preferences. Seed and client paths for the same action share one
//! handler: `PATCH|PUT /account/profile`, `POST /account/change-password` | `PUT
//! /account/password`, `DELETE /account/delete` | `DELETE /account`. `POST
//! /account/logout-all` (client) revokes every session; `POST /account/sessions/revoke-all`
//! (seed) keeps the current one. Avatar/banner uploads come with the image pipeline;
//! `/account/announcements*` live in `announcements.rs`.

use palaver_actors::registry::Logins;
use palaver_entity::{communities, groups, refresh_tokens, users};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::audit;
use crate::auth::Caller;
use crate::auth::password;
use crate::auth::sessions::{current_user, end_logins, revoke_all_refresh_tokens};
use crate::auth::tokens::hash_token;
use crate::domain::preferences::{self, Preferences};
use crate::domain::profile::{ProfileRequest, ProfileUpdate};
use crate::domain::registration::RecoveryCodeResponse;
use crate::domain::registration::new_recovery_code;
use crate::domain::session::SessionView;
use crate::domain::user::{UserView, profile_updated_frame};
use crate::error::{ApiError, ApiResult};
use crate::http::{ClientInfo, PathId, ok_empty, ok_json};
use crate::state::AppState;

/// GET /api/account/me
pub(crate) async fn get_me(state: AppState, caller: Caller) -> ApiResult<warp::reply::Response> {
    let user = current_user(&state, &caller).await?;
    ok_json(&UserView::from(&user))
}

/// PUT /api/account/profile · PATCH /api/account/profile
pub(crate) async fn update_profile(
    state: AppState,
    caller: Caller,
    body: ApiResult<ProfileRequest>,
) -> ApiResult<warp::reply::Response> {
    let update = ProfileUpdate::parse(body?)?;
    let user = current_user(&state, &caller).await?;
    if update.is_empty() {
        return ok_json(&UserView::from(&user));
    }
    let mut row: users::ActiveModel = user.into();
    if let Some(name) = update.display_name {
        row.display_name = Set(name);
    }
    if let Some(v) = update.avatar_url {
        row.avatar_url = Set(v);
    }
    if let Some(v) = update.banner_url {
        row.banner_url = Set(v);
    }
    if let Some(v) = update.custom_status {
        row.custom_status = Set(v);
    }
    if let Some(v) = update.bio {
        row.bio = Set(v);
    }
    if let Some(v) = update.pronouns {
        row.pronouns = Set(v);
    }
    row.updated_at = Set(palaver_entity::now());
    let user = row.update(&state.db).await?;
    state.hub.send_to_everyone(&profile_updated_frame(&user));
    ok_json(&UserView::from(&user))
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct ChangePasswordRequest {
    current_password: String,
    new_password: String,
}

/// PUT /api/account/password · POST /api/account/change-password
pub(crate) async fn change_password(
    state: AppState,
    caller: Caller,
    client: ClientInfo,
    body: ApiResult<ChangePasswordRequest>,
) -> ApiResult<warp::reply::Response> {
    let body = body?;
    let user = current_user(&state, &caller).await?;
    if !state.hashing.verify(body.current_password, user.password_hash.clone()).await? {
        return Err(ApiError::validation("current password is incorrect"));
    }
    password::check_rules(&body.new_password)?;
    let hash = state.hashing.hash(body.new_password).await?;
    let txn = crate::db::begin_write(&state.db).await?;
    // Conditional on the hash we verified against: of two concurrent changes (or a change
    // racing a recovery) only the first wins, the other is told to retry.
    let updated = users::Entity::update_many()
        .col_expr(users::Column::PasswordHash, Expr::value(hash))
        .col_expr(users::Column::UpdatedAt, Expr::value(palaver_entity::now()))
        .filter(users::Column::Id.eq(user.id))
        .filter(users::Column::PasswordHash.eq(user.password_hash.as_str()))
        .exec(&txn)
        .await?;
    if updated.rows_affected != 1 {
        return Err(ApiError::conflict("the password was changed meanwhile: try again"));
    }
    revoke_all_refresh_tokens(&txn, user.id).await?;
    txn.commit().await?;
    // Every login is revoked, this one included: so are the sockets they opened.
    end_logins(&state, user.id, Logins::All).await;
    audit::record(&state.db, Some(user.id), "password_changed", Some(&client), None).await;
    ok_empty()
}

/// POST /api/account/regenerate-recovery-code
pub(crate) async fn regenerate_recovery_code(
    state: AppState,
    caller: Caller,
    client: ClientInfo,
) -> ApiResult<warp::reply::Response> {
    let code = new_recovery_code();
    let updated = users::Entity::update_many()
        .col_expr(users::Column::RecoveryCodeHash, Expr::value(hash_token(&code)))
        .col_expr(users::Column::UpdatedAt, Expr::value(palaver_entity::now()))
        .filter(users::Column::Id.eq(caller.user_id))
        .exec(&state.db)
        .await?;
    if updated.rows_affected != 1 {
        return Err(ApiError::Unauthorized);
    }
    audit::record(&state.db, Some(caller.user_id), "recovery_code_regenerated", Some(&client), None).await;
    ok_json(&RecoveryCodeResponse { recovery_code: code })
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct DeleteAccountRequest {
    password: String,
}

/// DELETE /api/account · DELETE /api/account/delete
pub(crate) async fn delete_account(
    state: AppState,
    caller: Caller,
    client: ClientInfo,
    body: ApiResult<DeleteAccountRequest>,
) -> ApiResult<warp::reply::Response> {
    let body = body?;
    let user = current_user(&state, &caller).await?;
    if !state.hashing.verify(body.password, user.password_hash.clone()).await? {
        return Err(ApiError::validation("password is incorrect"));
    }
    let owns_group =
        groups::Entity::find().filter(groups::Column::OwnerId.eq(user.id)).count(&state.db).await? > 0;
    let owns_community =
        communities::Entity::find().filter(communities::Column::OwnerId.eq(user.id)).count(&state.db).await?
            > 0;
    if owns_group || owns_community {
        return Err(still_owner());
    }
    // Memberships, tokens, keys … cascade. Ownership is ON DELETE RESTRICT, so a group or
    // community that became ours since the check above still stops the delete.
    match users::Entity::delete_by_id(user.id).exec(&state.db).await {
        Ok(_) => {}
        Err(err) if matches!(err.sql_err(), Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_))) => {
            return Err(still_owner());
        }
        Err(err) => return Err(err.into()),
    }
    // Access tokens of a deleted user die now, and so do its sockets and memberships.
    state.hub.bar_user(user.id);
    // Their messages now show no sender and their reactions are gone.
    state.hub.all_history_changed();
    state.hub.shared.roster.user_deleted(user.id);
    state.hub.forget_instance_role(user.id);
    audit::record(
        &state.db,
        None,
        "account_deleted",
        Some(&client),
        Some(serde_json::json!({"user_id": user.id, "username": user.username})),
    )
    .await;
    ok_empty()
}

fn still_owner() -> ApiError {
    ApiError::validation("you still own a group or community: transfer or delete it first")
}

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct RevokedCount {
    revoked_count: u64,
}

/// POST /api/account/logout-all (client: every session, this one included)
pub(crate) async fn logout_all(
    state: AppState,
    caller: Caller,
    client: ClientInfo,
) -> ApiResult<warp::reply::Response> {
    let revoked_count = revoke_all_refresh_tokens(&state.db, caller.user_id).await?;
    end_logins(&state, caller.user_id, Logins::All).await;
    audit::record(
        &state.db,
        Some(caller.user_id),
        "logout_all",
        Some(&client),
        Some(serde_json::json!({"revoked_count": revoked_count})),
    )
    .await;
    ok_json(&RevokedCount { revoked_count })
}

#[derive(Deserialize, Default, schemars::JsonSchema)]
pub(crate) struct RevokeOthersRequest {
    #[serde(default)]
    refresh_token: Option<String>,
}

/// POST /api/account/sessions/revoke-all (seed: every session except the current one)
///
/// The current session is the one whose `refresh_token` the body carries, else the active
/// session of the login the caller's access token names, else the most recently created
/// active session: right after a login or refresh that is the caller's own. Sockets of every
/// other login close.
pub(crate) async fn revoke_other_sessions(
    state: AppState,
    caller: Caller,
    client: ClientInfo,
    body: ApiResult<RevokeOthersRequest>,
) -> ApiResult<warp::reply::Response> {
    let body = body?;
    let db = &state.db;
    let active = || {
        refresh_tokens::Entity::find()
            .filter(refresh_tokens::Column::UserId.eq(caller.user_id))
            .filter(refresh_tokens::Column::RevokedAt.is_null())
            .filter(refresh_tokens::Column::ExpiresAt.gt(palaver_entity::now()))
    };
    let keep = match body.refresh_token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        Some(token) => Some(
            active()
                .filter(refresh_tokens::Column::TokenHash.eq(hash_token(&token.to_ascii_lowercase())))
                .one(db)
                .await?
                .ok_or_else(|| ApiError::validation("refresh_token is not one of your active sessions"))?,
        ),
        None => {
            let mine = match caller.login {
                Some(login) => active().filter(refresh_tokens::Column::FamilyId.eq(login)).one(db).await?,
                None => None,
            };
            match mine {
                Some(row) => Some(row),
                None => {
                    active()
                        .order_by_desc(refresh_tokens::Column::CreatedAt)
                        .order_by_desc(refresh_tokens::Column::Id)
                        .one(db)
                        .await?
                }
            }
        }
    };
    let mut revoke = refresh_tokens::Entity::update_many()
        .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(palaver_entity::now()))
        .filter(refresh_tokens::Column::UserId.eq(caller.user_id))
        .filter(refresh_tokens::Column::RevokedAt.is_null());
    if let Some(keep) = &keep {
        revoke = revoke.filter(refresh_tokens::Column::Id.ne(keep.id));
    }
    let revoked_count = revoke.exec(db).await?.rows_affected;
    let others = match &keep {
        Some(kept) => Logins::AllBut(kept.family_id),
        None => Logins::All,
    };
    end_logins(&state, caller.user_id, others).await;
    audit::record(
        db,
        Some(caller.user_id),
        "logout_all",
        Some(&client),
        Some(serde_json::json!({"revoked_count": revoked_count, "kept_session": keep.map(|k| k.id)})),
    )
    .await;
    ok_json(&RevokedCount { revoked_count })
}

/// GET /api/account/sessions
pub(crate) async fn list_sessions(state: AppState, caller: Caller) -> ApiResult<warp::reply::Response> {
    let rows = refresh_tokens::Entity::find()
        .filter(refresh_tokens::Column::UserId.eq(caller.user_id))
        .filter(refresh_tokens::Column::RevokedAt.is_null())
        .filter(refresh_tokens::Column::ExpiresAt.gt(palaver_entity::now()))
        .order_by_desc(refresh_tokens::Column::CreatedAt)
        .order_by_desc(refresh_tokens::Column::Id)
        .all(&state.db)
        .await?;
    ok_json(&rows.iter().map(SessionView::from).collect::<Vec<_>>())
}

/// DELETE /api/account/sessions/{id}
pub(crate) async fn revoke_session(
    id: PathId,
    state: AppState,
    caller: Caller,
    client: ClientInfo,
) -> ApiResult<warp::reply::Response> {
    let id: Uuid = id.get()?;
    let not_found = || ApiError::not_found("session");
    // The family (login) the session belongs to; its sockets close with it.
    let login: Uuid = refresh_tokens::Entity::find_by_id(id)
        .select_only()
        .column(refresh_tokens::Column::FamilyId)
        .filter(refresh_tokens::Column::UserId.eq(caller.user_id))
        .into_tuple()
        .one(&state.db)
        .await?
        .ok_or_else(not_found)?;
    let revoked = refresh_tokens::Entity::update_many()
        .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(palaver_entity::now()))
        .filter(refresh_tokens::Column::Id.eq(id))
        .filter(refresh_tokens::Column::UserId.eq(caller.user_id))
        .filter(refresh_tokens::Column::RevokedAt.is_null())
        .filter(refresh_tokens::Column::ExpiresAt.gt(palaver_entity::now()))
        .exec(&state.db)
        .await?;
    if revoked.rows_affected == 0 {
        return Err(not_found());
    }
    end_logins(&state, caller.user_id, Logins::Only(login)).await;
    audit::record(
        &state.db,
        Some(caller.user_id),
        "session_revoked",
        Some(&client),
        Some(serde_json::json!({"session_id": id})),
    )
    .await;
    ok_empty()
}

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct PreferencesResponse {
    preferences: Preferences,
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct PreferencesRequest {
    preferences: serde_json::Value,
}

/// GET /api/account/preferences
pub(crate) async fn get_preferences(state: AppState, caller: Caller) -> ApiResult<warp::reply::Response> {
    let user = current_user(&state, &caller).await?;
    ok_json(&PreferencesResponse { preferences: preferences::stored(&user) })
}

/// PUT /api/account/preferences (shallow merge)
pub(crate) async fn put_preferences(
    state: AppState,
    caller: Caller,
    body: ApiResult<PreferencesRequest>,
) -> ApiResult<warp::reply::Response> {
    let preferences = preferences::merge(&state.db, caller.user_id, body?.preferences).await?;
    ok_json(&PreferencesResponse { preferences })
}
