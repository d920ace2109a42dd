//! `read_cursors` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// How far a user has read in a channel (for unread counts).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "read_cursors")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub channel_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: Uuid,
    /// No foreign key: the message may be deleted; ids are time-ordered so comparison still works.
    pub last_read_message_id: Option<Uuid>,
    pub last_read_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
