//! `communities` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A community (server-like space) containing groups and their channels.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "communities")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub name: String,
    #[sea_orm(column_type = "Text")]
    pub description: Option<String>,
    pub icon_url: Option<String>,
    pub banner_url: Option<String>,
    /// Foreign key with ON DELETE RESTRICT: ownership must be transferred before the owner's account can be deleted.
    pub owner_id: Uuid,
    /// Minimum community role allowed to create groups (DB default `admin`).
    pub who_can_create_groups: String,
    /// Minimum community role allowed to create invites (DB default `admin`).
    pub who_can_create_invites: String,
    /// Listed in the public community directory.
    pub discoverable: bool,
    /// Serialized JSON theme; opaque to the server.
    #[sea_orm(column_type = "Text")]
    pub community_theme: Option<String>,
    #[sea_orm(column_type = "Text")]
    pub welcome_message: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
