//! `audit_log` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Security/admin audit trail; rows outlive the user they mention.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "audit_log")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Set to NULL when the user is deleted, so the entry survives.
    pub user_id: Option<Uuid>,
    pub action: String,
    pub ip_address: Option<String>,
    #[sea_orm(column_type = "Text")]
    pub user_agent: Option<String>,
    /// Serialized JSON with action-specific details.
    #[sea_orm(column_type = "Text")]
    pub metadata: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
