//! Encrypted messages and everything hanging off a message.

use sea_orm_migration::{prelude::*, schema::*};

use crate::util::{create_all, drop_all, fk, index, pk, table, unique};

#[derive(DeriveMigrationName)]
pub struct Migration;

use ForeignKeyAction::{Cascade, SetNull};

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let tables = vec![
            table("messages")
                // UUIDv7: time-ordered, so history pages order by id.
                .col(pk_uuid("id"))
                .col(uuid("channel_id"))
                .col(uuid_null("sender_id"))
                .col(blob("ciphertext"))
                .col(blob("nonce"))
                .col(string("message_type"))
                .col(uuid_null("reply_to_id"))
                .col(uuid_null("sender_key_id"))
                .col(uuid_null("thread_id"))
                .col(timestamp_with_time_zone_null("edited_at"))
                .col(timestamp_with_time_zone_null("deleted_at"))
                .col(timestamp_with_time_zone_null("quarantined_at"))
                .col(timestamp_with_time_zone_null("expires_at"))
                .col(text_null("webhook_content"))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(&mut fk("messages", "channel_id", "channels", Cascade))
                .foreign_key(&mut fk("messages", "sender_id", "users", SetNull))
                .take(),
            table("message_edits")
                .col(pk_uuid("id"))
                .col(uuid("message_id"))
                .col(blob("old_ciphertext"))
                .col(blob("old_nonce"))
                .col(timestamp_with_time_zone("edited_at"))
                .foreign_key(&mut fk("message_edits", "message_id", "messages", Cascade))
                .take(),
            table("reactions")
                .col(uuid("message_id"))
                .col(uuid("user_id"))
                .col(string("emoji"))
                .col(timestamp_with_time_zone("created_at"))
                .primary_key(&mut pk(&["message_id", "user_id", "emoji"]))
                .foreign_key(&mut fk("reactions", "message_id", "messages", Cascade))
                .foreign_key(&mut fk("reactions", "user_id", "users", Cascade))
                .take(),
            table("pins")
                .col(uuid("channel_id"))
                .col(uuid("message_id"))
                .col(uuid_null("pinned_by"))
                .col(timestamp_with_time_zone("pinned_at"))
                .primary_key(&mut pk(&["channel_id", "message_id"]))
                .foreign_key(&mut fk("pins", "channel_id", "channels", Cascade))
                .foreign_key(&mut fk("pins", "message_id", "messages", Cascade))
                .take(),
            table("sender_keys")
                .col(pk_uuid("id"))
                .col(uuid("channel_id"))
                .col(uuid("user_id"))
                .col(big_integer("chain_id"))
                .col(text("distribution"))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(&mut fk("sender_keys", "channel_id", "channels", Cascade))
                .foreign_key(&mut fk("sender_keys", "user_id", "users", Cascade))
                .take(),
        ];
        let indexes = vec![
            index("messages", &["channel_id", "id"]),
            index("messages", &["thread_id"]),
            index("messages", &["sender_id"]),
            index("message_edits", &["message_id"]),
            unique("sender_keys", &["channel_id", "user_id"]),
        ];
        create_all(manager, tables, indexes).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_all(manager, &["sender_keys", "pins", "reactions", "message_edits", "messages"]).await
    }
}
