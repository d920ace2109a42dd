//! `messages` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// An end-to-end encrypted message; the server only sees ciphertext.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "messages")]
pub struct Model {
    /// UUIDv7 (time-ordered): history pages order by id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub channel_id: Uuid,
    /// Set to NULL if the sender's account is deleted; the message stays.
    pub sender_id: Option<Uuid>,
    #[sea_orm(column_type = "Blob")]
    pub ciphertext: Vec<u8>,
    #[sea_orm(column_type = "Blob")]
    pub nonce: Vec<u8>,
    /// `text`, `file`, `system` or `webhook`.
    pub message_type: String,
    /// No foreign key: replies survive deletion of the original.
    pub reply_to_id: Option<Uuid>,
    /// Which sender key (`sender_keys.id`) encrypted this message.
    pub sender_key_id: Option<Uuid>,
    /// Root message of the thread this message belongs to.
    pub thread_id: Option<Uuid>,
    pub edited_at: Option<DateTimeUtc>,
    /// Soft delete: set instead of removing the row.
    pub deleted_at: Option<DateTimeUtc>,
    /// Hidden by a moderator pending review.
    pub quarantined_at: Option<DateTimeUtc>,
    /// From the channel's `message_ttl_seconds`; expired messages are purged.
    pub expires_at: Option<DateTimeUtc>,
    /// For webhook messages (which are not E2E encrypted): serialized JSON `{content, webhook_name, webhook_avatar}`.
    #[sea_orm(column_type = "Text")]
    pub webhook_content: Option<String>,
    pub created_at: DateTimeUtc,
    /// The sender's idempotency key for this send (1–64 bytes), if it gave one: a repeat
    /// with the same key within 10 minutes gets this message's ack instead of a new message.
    #[sea_orm(column_type = "Text")]
    pub client_nonce: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
