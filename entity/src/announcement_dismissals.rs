//! `announcement_dismissals` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Which user dismissed which announcement.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "announcement_dismissals")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub announcement_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: Uuid,
    pub dismissed_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
