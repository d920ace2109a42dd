//! `push_subscriptions` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Web Push subscriptions of a user's devices.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "push_subscriptions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    #[sea_orm(column_type = "Text")]
    pub endpoint: String,
    /// Client ECDH public key (base64url) from the subscription.
    pub p256dh_key: String,
    /// Client auth secret (base64url) from the subscription.
    pub auth_key: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
