//! `group_invites` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Invite codes for joining a group.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "group_invites")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub group_id: Uuid,
    #[sea_orm(unique)]
    pub code: String,
    pub created_by: Option<Uuid>,
    /// `None` = unlimited.
    pub max_uses: Option<i32>,
    pub used_count: i32,
    /// `None` = never expires.
    pub expires_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
