//! `identity_keys` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A user's long-term public E2E identity key.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "identity_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: Uuid,
    /// Public key bytes, as uploaded by the client.
    #[sea_orm(column_type = "Blob")]
    pub identity_key: Vec<u8>,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
