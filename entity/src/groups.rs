//! `groups` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A group inside a community: a set of members sharing channels.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "groups")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub community_id: Uuid,
    pub name: String,
    #[sea_orm(column_type = "Text")]
    pub description: Option<String>,
    pub icon_url: Option<String>,
    pub banner_url: Option<String>,
    pub accent_color: Option<String>,
    /// Foreign key with ON DELETE RESTRICT, as for communities.
    pub owner_id: Uuid,
    /// DB default `public`.
    pub visibility: String,
    pub discoverable: bool,
    /// Member the group is assigned to, if any.
    pub assigned_member_id: Option<Uuid>,
    pub allow_invites: bool,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
