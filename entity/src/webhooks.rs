//! `webhooks` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Incoming webhooks that post (unencrypted) messages into a channel.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "webhooks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub channel_id: Uuid,
    pub name: String,
    /// Hex SHA-256 of the secret token; the token is shown once at creation.
    #[sea_orm(unique)]
    pub token_hash: String,
    pub avatar_url: Option<String>,
    pub active: bool,
    pub created_by: Option<Uuid>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
