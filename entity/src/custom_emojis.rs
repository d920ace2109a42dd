//! `custom_emojis` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Custom emojis uploaded to a community; `shortcode` is unique per community.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "custom_emojis")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub community_id: Uuid,
    pub shortcode: String,
    pub content_type: String,
    pub uploaded_by: Option<Uuid>,
    pub size_bytes: i32,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
