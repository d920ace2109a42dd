//! `scheduled_messages` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Messages queued by a user to be sent at a later time.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "scheduled_messages")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub channel_id: Uuid,
    /// Text-encoded ciphertext, as sent by the client (unlike `messages.ciphertext`, not a blob).
    #[sea_orm(column_type = "Text")]
    pub ciphertext: String,
    #[sea_orm(column_type = "Text")]
    pub nonce: String,
    pub scheduled_for: DateTimeUtc,
    #[sea_orm(column_type = "Text")]
    pub content_preview: Option<String>,
    pub created_at: DateTimeUtc,
    /// Set once delivered; delivery is exactly-once (claim by setting it conditionally).
    pub delivered_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
