//! `refresh_tokens` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A refresh token issued at login (stored hashed), rotated on every use.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "refresh_tokens")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    /// Hex SHA-256 of the opaque token; the token itself is never stored.
    #[sea_orm(unique)]
    pub token_hash: String,
    /// Shared by all rotations of one login. Presenting an already-revoked token revokes the whole family (theft detection).
    pub family_id: Uuid,
    pub device_name: Option<String>,
    pub ip_address: Option<String>,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    /// Set when rotated or logged out; a revoked token is never valid again.
    pub revoked_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
