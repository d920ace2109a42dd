//! `blocked_hashes` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// File hashes that may not be uploaded.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "blocked_hashes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Hex SHA-256, compared with `files.checksum`.
    #[sea_orm(unique)]
    pub hash: String,
    #[sea_orm(column_type = "Text")]
    pub reason: Option<String>,
    pub blocked_by: Option<Uuid>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
