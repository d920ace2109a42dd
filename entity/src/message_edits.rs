//! `message_edits` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Previous versions of edited messages.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "message_edits")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub message_id: Uuid,
    #[sea_orm(column_type = "Blob")]
    pub old_ciphertext: Vec<u8>,
    #[sea_orm(column_type = "Blob")]
    pub old_nonce: Vec<u8>,
    pub edited_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
