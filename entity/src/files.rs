//! `files` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// An uploaded (client-side encrypted) file stored on disk.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "files")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub uploader_id: Uuid,
    /// Set to NULL if the channel is deleted.
    pub channel_id: Option<Uuid>,
    /// File name encrypted by the client.
    pub encrypted_name: String,
    pub size_bytes: i64,
    pub content_type: Option<String>,
    /// Hex SHA-256 of the stored bytes; matched against `blocked_hashes`.
    pub checksum: String,
    /// Path relative to the storage directory.
    pub storage_path: String,
    pub thumbnail_path: Option<String>,
    /// Set when a moderator quarantines the file; it is no longer served.
    pub quarantined_at: Option<DateTimeUtc>,
    pub quarantined_by: Option<Uuid>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
