//! Seed section "Authentication": `GET /auth/config`, `POST /auth/register`, `/auth/login`,
//! `/auth/refresh`, `/auth/recover` (public; the stricter `/auth/*` rate limiter applies in
//! the front server). Also the session (refresh-token) helpers `/account/*` shares.

use std::sync::OnceLock;

use palaver_actors::registry::Logins;
use palaver_actors::roles::InstanceRole;
use palaver_entity::{
    identity_keys, one_time_prekeys, refresh_tokens, registration_invites, signed_prekeys, users,
};
use sea_orm::sea_query::{Condition, Expr, ExprTrait, Func};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseBackend, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter, QuerySelect, SqlErr,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::audit;
use crate::auth::password;
use crate::auth::tokens::{
    ACCESS_TOKEN_SECS, LEEWAY_SECS, REFRESH_TOKEN_DAYS, hash_token, new_refresh_token,
};
use crate::auth::totp;
use crate::config::RegistrationMode;
use crate::domain::registration::{
    RegisterRequest, Registration, Username, new_recovery_code, normalize_recovery_code,
};
use crate::domain::session::device_name;
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
/// Key of the PostgreSQL advisory lock that serialises registrations (first-user decision).
const REGISTRATION_LOCK: i64 = 0x7061_6c61_7665_7201;

// ---------------------------------------------------------------------------------------------
// Shared session helpers (also used by `/account/*`).

/// What login and register answer.
#[derive(Serialize)]
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
                state.hub.revoked_logins.revoke(login, std::time::Duration::from_secs(token_life as u64));
            }
        }
        // The sockets are closed; only a reconnect with a still-valid token slips through.
        Err(err) => tracing::warn!(error = %err, user = %user_id, "could not list the revoked logins"),
    }
}

/// Revokes every token of a rotation family (theft detection on reuse).
async fn revoke_family(db: &impl ConnectionTrait, family_id: Uuid) -> ApiResult<u64> {
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
async fn find_by_username(db: &impl ConnectionTrait, name: &str) -> ApiResult<Option<users::Model>> {
    if let Some(user) = users::Entity::find().filter(users::Column::Username.eq(name)).one(db).await? {
        return Ok(Some(user));
    }
    Ok(users::Entity::find().filter(lower_eq(users::Column::Username, name)).one(db).await?)
}

fn lower_eq(col: users::Column, value: &str) -> sea_orm::sea_query::SimpleExpr {
    Expr::expr(Func::lower(Expr::col((users::Entity, col)))).eq(value.to_lowercase())
}

/// Verifies against a fixed hash so an unknown user costs as much time as a wrong password
/// (and the same place in the hashing pool: a full pool answers 503 either way).
async fn dummy_password_check(state: &AppState, password: String) -> ApiResult<()> {
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

// ---------------------------------------------------------------------------------------------
// GET /auth/config

#[derive(Serialize)]
struct AuthConfig {
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

/// How an invite-only instance lets this registration in.
enum InviteGate {
    /// Open registration: no code needed (a given code is ignored).
    Open,
    /// The instance had no users when we looked: allowed only if this is really the first.
    FirstUser,
    /// A code that looked valid; consumed inside the transaction.
    Code(String),
}

/// The unique indexes (username ignoring case, email) have the last word: a registration
/// that raced another past the checks above gets the same 409 the checks give.
fn already_registered(err: DbErr) -> ApiError {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(detail)) if detail.contains("username") => {
            ApiError::conflict("username is already taken")
        }
        Some(SqlErr::UniqueConstraintViolation(detail)) if detail.contains("email") => {
            ApiError::conflict("email is already registered")
        }
        _ => err.into(),
    }
}

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
    if users::Entity::find()
        .filter(lower_eq(users::Column::Username, reg.username.as_str()))
        .count(db)
        .await?
        > 0
    {
        return Err(ApiError::conflict("username is already taken"));
    }
    if users::Entity::find().filter(users::Column::Email.eq(reg.email.as_str())).count(db).await? > 0 {
        return Err(ApiError::conflict("email is already registered"));
    }
    let gate = match mode {
        RegistrationMode::InviteOnly if users::Entity::find().count(db).await? == 0 => InviteGate::FirstUser,
        RegistrationMode::InviteOnly => {
            let code = reg.invite_code.clone().ok_or_else(invite_required)?;
            let invite = registration_invites::Entity::find()
                .filter(registration_invites::Column::Code.eq(code.as_str()))
                .filter(invite_usable())
                .one(db)
                .await?;
            if invite.is_none() {
                return Err(invalid_invite());
            }
            InviteGate::Code(code)
        }
        _ => InviteGate::Open,
    };

    let password_hash = state.hashing.hash(reg.password.clone()).await?;
    let recovery_code = new_recovery_code();
    let now = palaver_entity::now();

    // The whole account in one transaction: a failure leaves nothing behind (and un-spends
    // the invite).
    let txn = crate::db::begin_write(db).await?;
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        // Serialises registrations so "first user" is decided once. (On SQLite the insert
        // below already takes the single write lock before the count.)
        txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({REGISTRATION_LOCK})")).await?;
    }
    let mut user = users::ActiveModel {
        id: Set(Uuid::now_v7()),
        username: Set(reg.username.as_str().to_string()),
        email: Set(reg.email.as_str().to_string()),
        password_hash: Set(password_hash),
        display_name: Set(reg.display_name.clone()),
        avatar_url: Set(None),
        banner_url: Set(None),
        voice_background_url: Set(None),
        status: Set("offline".into()),
        custom_status: Set(None),
        bio: Set(None),
        pronouns: Set(None),
        is_admin: Set(false),
        is_owner: Set(false),
        suspended_at: Set(None),
        suspended_reason: Set(None),
        recovery_code_hash: Set(Some(hash_token(&recovery_code))),
        preferences: Set("{}".into()),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&txn)
    .await
    .map_err(already_registered)?;
    let first = users::Entity::find().count(&txn).await? == 1;
    match &gate {
        InviteGate::FirstUser if !first => return Err(invite_required()),
        InviteGate::Code(code) => {
            let spent = registration_invites::Entity::update_many()
                .col_expr(
                    registration_invites::Column::UsedCount,
                    Expr::col(registration_invites::Column::UsedCount).add(1),
                )
                .filter(registration_invites::Column::Code.eq(code.as_str()))
                .filter(invite_usable())
                .exec(&txn)
                .await?;
            if spent.rows_affected != 1 {
                return Err(invalid_invite());
            }
        }
        _ => {}
    }
    if first {
        users::Entity::update_many()
            .col_expr(users::Column::IsAdmin, Expr::value(true))
            .col_expr(users::Column::IsOwner, Expr::value(true))
            .filter(users::Column::Id.eq(user.id))
            .exec(&txn)
            .await?;
        user.is_admin = true;
        user.is_owner = true;
    }
    identity_keys::Entity::insert(identity_keys::ActiveModel {
        user_id: Set(user.id),
        identity_key: Set(reg.identity_key.to_bytes().to_vec()),
        updated_at: Set(now),
    })
    .exec_without_returning(&txn)
    .await?;
    signed_prekeys::Entity::insert(signed_prekeys::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user.id),
        key_id: Set(reg.signed_prekey.key_id),
        public_key: Set(reg.signed_prekey.public_key.clone()),
        signature: Set(reg.signed_prekey.signature.clone()),
        created_at: Set(now),
    })
    .exec_without_returning(&txn)
    .await?;
    if !reg.one_time_prekeys.is_empty() {
        let rows = reg.one_time_prekeys.iter().map(|k| one_time_prekeys::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(user.id),
            key_id: Set(k.key_id),
            public_key: Set(k.public_key.clone()),
            created_at: Set(now),
        });
        one_time_prekeys::Entity::insert_many(rows).exec_without_returning(&txn).await?;
    }
    let login = Uuid::new_v4();
    let refresh_token = issue_refresh_token(&txn, user.id, login, &client).await?;
    txn.commit().await?;
    // The first account is staff from its first socket on.
    if first {
        state.hub.set_instance_role(user.id, InstanceRole { is_admin: true, is_owner: true });
    }

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

fn invite_required() -> ApiError {
    ApiError::validation("an invite code is required to register on this server")
}

fn invalid_invite() -> ApiError {
    ApiError::validation("invite code is invalid, expired or used up")
}

/// Not expired and not used up.
fn invite_usable() -> Condition {
    Condition::all()
        .add(
            Condition::any().add(registration_invites::Column::MaxUses.is_null()).add(
                Expr::col(registration_invites::Column::UsedCount)
                    .lt(Expr::col(registration_invites::Column::MaxUses)),
            ),
        )
        .add(
            Condition::any()
                .add(registration_invites::Column::ExpiresAt.is_null())
                .add(registration_invites::Column::ExpiresAt.gt(palaver_entity::now())),
        )
}

// ---------------------------------------------------------------------------------------------
// POST /auth/login

#[derive(Deserialize)]
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

#[derive(Deserialize)]
pub(crate) struct RefreshRequest {
    refresh_token: String,
}

#[derive(Serialize)]
struct RefreshResponse {
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
    let db = &state.db;
    let row = refresh_tokens::Entity::find()
        .filter(refresh_tokens::Column::TokenHash.eq(hash_token(&presented)))
        .one(db)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if row.revoked_at.is_some() {
        return Err(reuse_detected(&state, &client, &row).await);
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
        return Err(reuse_detected(&state, &client, &row).await);
    }
    let refresh_token = issue_refresh_token(&txn, user.id, row.family_id, &client).await?;
    txn.commit().await?;
    ok_json(&RefreshResponse { access_token: access_token(&state, &user, row.family_id)?, refresh_token })
}

/// A revoked token came back: whoever holds the family may have stolen it, so the whole
/// family dies (the legitimate device logs in again).
async fn reuse_detected(state: &AppState, client: &ClientInfo, row: &refresh_tokens::Model) -> ApiError {
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

// ---------------------------------------------------------------------------------------------
// POST /auth/recover

#[derive(Deserialize)]
pub(crate) struct RecoverRequest {
    username: String,
    recovery_code: String,
    new_password: String,
}

#[derive(Serialize)]
pub(crate) struct RecoveryCodeResponse {
    pub recovery_code: String,
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
