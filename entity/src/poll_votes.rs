//! `poll_votes` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One row per (poll, user, chosen option).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "poll_votes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub poll_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: Uuid,
    /// Index into `polls.options`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub option_index: i32,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
