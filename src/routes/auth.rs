//! Seed section "Authentication": `GET /auth/config`, `POST /auth/register`, `/auth/login`,
//! `/auth/refresh`, `/auth/recover` (public; the stricter `/auth/*` rate limiter applies in
//! the front server). Sessions live in `auth::sessions`, account creation in `auth::signup`.

use palaver_actors::registry::Logins;
use palaver_entity::users;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::audit;
use crate::auth::password;
use crate::auth::sessions::{
    AuthResponse, access_token, dummy_password_check, end_logins, find_by_username, issue_refresh_token,
    revoke_all_refresh_tokens, rotate,
};
use crate::auth::signup::{Account, create_account};
use crate::auth::tokens::hash_token;
use crate::auth::totp;
use crate::config::RegistrationMode;
use crate::domain::registration::{
    RecoveryCodeResponse, RegisterRequest, Registration, Username, new_recovery_code, normalize_recovery_code,
};
use crate::domain::user::UserView;
use crate::error::{ApiError, ApiResult};
use crate::http::{ClientInfo, ok_json};
use crate::state::AppState;

/// Lockout purposes (see `auth::lockout`).
const LOGIN: &str = "login";
const RECOVER: &str = "recover";
/// The one answer for an unknown user or a wrong password (no user enumeration).
const BAD_LOGIN: &str = "invalid username or password";
const BAD_RECOVERY: &str = "invalid username or recovery code";

// ---------------------------------------------------------------------------------------------
// GET /auth/config

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct AuthConfig {
    registration_mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_url: Option<String>,
    /// From `PALAVER_ICE_SERVERS`, passed through; the key is omitted when empty (wire).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ice_servers: Vec<serde_json::Value>,
    max_messages_cache: i64,
    max_pins_per_channel: i64,
    e2e_enabled: bool,
}

/// GET /api/auth/config
pub(crate) async fn auth_config(state: AppState) -> ApiResult<warp::reply::Response> {
    ok_json(&AuthConfig {
        registration_mode: state.config.registration.as_str(),
        public_url: state.config.public_url.clone(),
        ice_servers: state.config.ice_servers.clone(),
        max_messages_cache: state.settings.max_messages_cache(),
        max_pins_per_channel: state.settings.max_pins_per_channel(),
        e2e_enabled: state.settings.e2e_enabled(),
    })
}

// ---------------------------------------------------------------------------------------------
// POST /auth/register

/// POST /api/auth/register
pub(crate) async fn register(
    state: AppState,
    client: ClientInfo,
    body: ApiResult<RegisterRequest>,
) -> ApiResult<warp::reply::Response> {
    let mode = state.config.registration;
    if mode == RegistrationMode::Closed {
        return Err(ApiError::validation("registration is closed on this server"));
    }
    let reg = Registration::parse(body?)?;
    let db = &state.db;
    let Account { user, first, login, refresh_token, recovery_code } =
        create_account(&state, &client, mode, reg).await?;
    audit::record(
        db,
        Some(user.id),
        "register",
        Some(&client),
        Some(serde_json::json!({"first_user": first})),
    )
    .await;
    ok_json(&AuthResponse {
        access_token: access_token(&state, &user, login)?,
        refresh_token,
        user: UserView::from(&user),
        recovery_code: Some(recovery_code),
    })
}

// ---------------------------------------------------------------------------------------------
// POST /auth/login

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct LoginRequest {
    username: String,
    password: String,
    #[serde(default)]
    totp_code: Option<String>,
}

/// POST /api/auth/login
pub(crate) async fn login(
    state: AppState,
    client: ClientInfo,
    body: ApiResult<LoginRequest>,
) -> ApiResult<warp::reply::Response> {
    let body = body?;
    let name = Username::lookup_name(&body.username)?;
    if let Some(seconds) = state.lockouts.locked_for(LOGIN, name) {
        return Err(locked(seconds));
    }
    let db = &state.db;
    let Some(user) = find_by_username(db, name).await? else {
        dummy_password_check(&state, body.password).await?;
        state.lockouts.record_failure(LOGIN, name);
        audit::record(db, None, "login_failed", Some(&client), Some(serde_json::json!({"username": name})))
            .await;
        return Err(ApiError::BadCredentials(BAD_LOGIN.into()));
    };
    if !state.hashing.verify(body.password, user.password_hash.clone()).await? {
        state.lockouts.record_failure(LOGIN, name);
        audit::record(db, Some(user.id), "login_failed", Some(&client), None).await;
        return Err(ApiError::BadCredentials(BAD_LOGIN.into()));
    }

    let second_factor =
        palaver_entity::user_totp::Entity::find_by_id(user.id).one(db).await?.filter(|t| t.enabled);
    if let Some(row) = second_factor {
        let code = body.totp_code.as_deref().map(str::trim).filter(|c| !c.is_empty());
        let Some(code) = code else {
            return Err(ApiError::validation("two-factor authentication code required"));
        };
        let accepted = if totp::looks_like_totp(code) {
            totp::accept_code(db, &state.totp_keys, &row, &user.username, code).await?
        } else if totp::accept_backup_code(db, &state.totp_keys, user.id, code).await? {
            audit::record(db, Some(user.id), "login_backup_code_used", Some(&client), None).await;
            true
        } else {
            false
        };
        if !accepted {
            state.lockouts.record_failure(LOGIN, name);
            audit::record(db, Some(user.id), "login_failed_2fa", Some(&client), None).await;
            return Err(ApiError::BadCredentials("invalid two-factor authentication code".into()));
        }
    }

    if user.suspended_at.is_some() {
        let reason = user.suspended_reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        return Err(ApiError::validation(format!("this account is suspended{reason}")));
    }
    state.lockouts.clear(LOGIN, name);

    // A login replaces every earlier session of the user (wire).
    let txn = crate::db::begin_write(db).await?;
    revoke_all_refresh_tokens(&txn, user.id).await?;
    let login = Uuid::new_v4();
    let refresh_token = issue_refresh_token(&txn, user.id, login, &client).await?;
    txn.commit().await?;
    audit::record(db, Some(user.id), "login", Some(&client), None).await;
    ok_json(&AuthResponse {
        access_token: access_token(&state, &user, login)?,
        refresh_token,
        user: UserView::from(&user),
        recovery_code: None,
    })
}

fn locked(seconds: u64) -> ApiError {
    ApiError::validation(format!(
        "too many failed attempts: temporarily locked, try again in {seconds} seconds"
    ))
}

// ---------------------------------------------------------------------------------------------
// POST /auth/refresh

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct RefreshRequest {
    refresh_token: String,
}

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct RefreshResponse {
    access_token: String,
    refresh_token: String,
}

/// POST /api/auth/refresh
pub(crate) async fn refresh(
    state: AppState,
    client: ClientInfo,
    body: ApiResult<RefreshRequest>,
) -> ApiResult<warp::reply::Response> {
    let presented = body?.refresh_token.trim().to_ascii_lowercase();
    if presented.len() != 64 || !presented.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::Unauthorized);
    }
    let (user, row, refresh_token) = rotate(&state, &client, &presented).await?;
    ok_json(&RefreshResponse { access_token: access_token(&state, &user, row.family_id)?, refresh_token })
}

// ---------------------------------------------------------------------------------------------
// POST /auth/recover

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct RecoverRequest {
    username: String,
    recovery_code: String,
    new_password: String,
}

/// POST /api/auth/recover
pub(crate) async fn recover(
    state: AppState,
    client: ClientInfo,
    body: ApiResult<RecoverRequest>,
) -> ApiResult<warp::reply::Response> {
    let body = body?;
    let name = Username::lookup_name(&body.username)?;
    if let Some(seconds) = state.lockouts.locked_for(RECOVER, name) {
        return Err(locked(seconds));
    }
    let code = normalize_recovery_code(&body.recovery_code)?;
    password::check_rules(&body.new_password)?;
    let db = &state.db;
    let user = find_by_username(db, name).await?;
    let presented_hash = hash_token(&code);
    let Some(user) = user.filter(|u| {
        u.recovery_code_hash
            .as_deref()
            .is_some_and(|stored| totp::constant_time_eq(stored.as_bytes(), presented_hash.as_bytes()))
    }) else {
        state.lockouts.record_failure(RECOVER, name);
        return Err(ApiError::validation(BAD_RECOVERY));
    };

    let password_hash = state.hashing.hash(body.new_password).await?;
    let new_code = new_recovery_code();
    let txn = crate::db::begin_write(db).await?;
    // Conditional on the old code: two racing recoveries cannot both spend it.
    let updated = users::Entity::update_many()
        .col_expr(users::Column::PasswordHash, Expr::value(password_hash))
        .col_expr(users::Column::RecoveryCodeHash, Expr::value(hash_token(&new_code)))
        .col_expr(users::Column::UpdatedAt, Expr::value(palaver_entity::now()))
        .filter(users::Column::Id.eq(user.id))
        .filter(users::Column::RecoveryCodeHash.eq(presented_hash))
        .exec(&txn)
        .await?;
    if updated.rows_affected != 1 {
        return Err(ApiError::validation(BAD_RECOVERY));
    }
    revoke_all_refresh_tokens(&txn, user.id).await?;
    txn.commit().await?;
    end_logins(&state, user.id, Logins::All).await;
    state.lockouts.clear(RECOVER, name);
    state.lockouts.clear(LOGIN, name);
    audit::record(db, Some(user.id), "account_recovered", Some(&client), None).await;
    ok_json(&RecoveryCodeResponse { recovery_code: new_code })
}
