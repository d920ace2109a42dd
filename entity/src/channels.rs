//! `channels` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A channel: a group's text/voice channel, or a DM (then `group_id` is NULL and a `dm_pairs` row exists).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "channels")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// `None` for DMs.
    pub name: Option<String>,
    pub channel_type: String,
    #[sea_orm(column_type = "Text")]
    pub topic: Option<String>,
    pub created_by: Option<Uuid>,
    /// `None` for DMs and other group-less channels.
    pub group_id: Option<Uuid>,
    pub read_only: bool,
    /// Minimum seconds between two messages of one user; 0 = off.
    pub slow_mode_seconds: i32,
    pub discoverable: bool,
    pub archived: bool,
    pub voice_background: Option<String>,
    /// Disappearing messages: new messages get `expires_at = created_at + ttl`. `None` = keep forever.
    pub message_ttl_seconds: Option<i32>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
