//! `reports` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Abuse reports filed by users, reviewed by admins.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "reports")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub reporter_id: Uuid,
    /// What `target_id` refers to (e.g. `user`, `message`, `community`).
    pub report_type: String,
    /// Id of the reported object; no foreign key since it depends on `report_type`.
    pub target_id: Uuid,
    #[sea_orm(column_type = "Text")]
    pub reason: String,
    /// Review state; DB default `pending`.
    pub status: String,
    pub reviewed_by: Option<Uuid>,
    pub reviewed_at: Option<DateTimeUtc>,
    #[sea_orm(column_type = "Text")]
    pub admin_notes: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
