//! `user_totp` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A user's TOTP (authenticator app) second factor; at most one per user.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "user_totp")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: Uuid,
    /// The TOTP secret, encrypted at rest by the application.
    #[sea_orm(column_type = "Text")]
    pub secret: String,
    /// False between enrolment and the first successful verification.
    pub enabled: bool,
    /// Last accepted TOTP time step; a code for a step <= this is rejected (replay protection).
    pub last_used_step: Option<i64>,
    pub created_at: DateTimeUtc,
    pub enabled_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
