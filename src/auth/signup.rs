//! Registration: the whole new account (user row, keys, first refresh token) in one
//! transaction, with the invite-only and first-user rules of `POST /auth/register`.

use palaver_actors::roles::InstanceRole;
use palaver_entity::{identity_keys, one_time_prekeys, registration_invites, signed_prekeys, users};
use sea_orm::sea_query::{Condition, Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseBackend, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter, SqlErr,
};
use uuid::Uuid;

use crate::auth::sessions::{issue_refresh_token, lower_eq};
use crate::auth::tokens::hash_token;
use crate::config::RegistrationMode;
use crate::domain::registration::{Registration, new_recovery_code};
use crate::error::{ApiError, ApiResult};
use crate::http::ClientInfo;
use crate::state::AppState;

/// Key of the PostgreSQL advisory lock that serialises registrations (first-user decision).
const REGISTRATION_LOCK: i64 = 0x7061_6c61_7665_7201;

/// A committed new account.
pub(crate) struct Account {
    /// The stored user (admin and owner when it is the first).
    pub user: users::Model,
    /// Whether it is the instance's first account.
    pub first: bool,
    /// The login (refresh-token family) it starts with.
    pub login: Uuid,
    /// That login's refresh token.
    pub refresh_token: String,
    /// The recovery code, shown once.
    pub recovery_code: String,
}

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

/// Checks the name, the email and the invite, then creates the account in one transaction
/// (a failure leaves nothing behind and un-spends the invite).
pub(crate) async fn create_account(
    state: &AppState,
    client: &ClientInfo,
    mode: RegistrationMode,
    reg: Registration,
) -> ApiResult<Account> {
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
    let refresh_token = issue_refresh_token(&txn, user.id, login, client).await?;
    txn.commit().await?;
    // The first account is staff from its first socket on.
    if first {
        state.hub.set_instance_role(user.id, InstanceRole { is_admin: true, is_owner: true });
    }

    Ok(Account { user, first, login, refresh_token, recovery_code })
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
