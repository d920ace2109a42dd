//! `polls` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A poll posted in a channel.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "polls")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub channel_id: Uuid,
    pub created_by: Option<Uuid>,
    #[sea_orm(column_type = "Text")]
    pub question: String,
    /// Serialized JSON array of option strings; `poll_votes.option_index` indexes it.
    #[sea_orm(column_type = "Text")]
    pub options: String,
    pub multi_select: bool,
    /// Voter identities are not revealed to other users.
    pub anonymous: bool,
    pub closed: bool,
    pub expires_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
