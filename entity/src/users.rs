//! `users` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A user account: login credentials, profile and instance-level role.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub username: String,
    #[sea_orm(unique)]
    pub email: String,
    /// Password hash (never the password itself).
    pub password_hash: String,
    pub display_name: String,
    pub avatar_url: Option<String>,
    pub banner_url: Option<String>,
    pub voice_background_url: Option<String>,
    /// Presence status; DB default `offline`.
    pub status: String,
    pub custom_status: Option<String>,
    #[sea_orm(column_type = "Text")]
    pub bio: Option<String>,
    pub pronouns: Option<String>,
    pub is_admin: bool,
    /// The instance owner (distinct from ordinary admins).
    pub is_owner: bool,
    /// Set while the account is suspended; `None` = active.
    pub suspended_at: Option<DateTimeUtc>,
    #[sea_orm(column_type = "Text")]
    pub suspended_reason: Option<String>,
    /// Hash of the account recovery code (the code is shown once to the user).
    pub recovery_code_hash: Option<String>,
    /// Serialized JSON object of client preferences (DB default `{}`); opaque to the server.
    #[sea_orm(column_type = "Text")]
    pub preferences: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
