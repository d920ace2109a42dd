//! `sender_keys` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A user's current sender-key distribution for a group channel (one per user and channel).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "sender_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub channel_id: Uuid,
    pub user_id: Uuid,
    /// Sender-key chain generation; bumped when the key is rotated.
    pub chain_id: i64,
    /// Serialized JSON distribution message (per-recipient encrypted copies); opaque to the server.
    #[sea_orm(column_type = "Text")]
    pub distribution: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
