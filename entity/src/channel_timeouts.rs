//! `channel_timeouts` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Temporary mutes of a user in a channel.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "channel_timeouts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub channel_id: Uuid,
    pub user_id: Uuid,
    pub issued_by: Option<Uuid>,
    #[sea_orm(column_type = "Text")]
    pub reason: Option<String>,
    /// The timeout is in force until this time.
    pub expires_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
