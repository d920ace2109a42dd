//! `signed_prekeys` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Signed prekeys published by a user for E2E session setup.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "signed_prekeys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    /// Client-chosen key id, unique per user.
    pub key_id: i32,
    #[sea_orm(column_type = "Blob")]
    pub public_key: Vec<u8>,
    /// Signature over `public_key` by the user's identity key.
    #[sea_orm(column_type = "Blob")]
    pub signature: Vec<u8>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
