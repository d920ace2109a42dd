//! Files, webhooks, polls, scheduled messages, bookmarks, push subscriptions
//! and feedback.

use sea_orm_migration::{prelude::*, schema::*};

use crate::util::{create_all, drop_all, fk, index, pk, table, unique};

#[derive(DeriveMigrationName)]
pub struct Migration;

use ForeignKeyAction::{Cascade, SetNull};

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let tables = vec![
            table("files")
                .col(pk_uuid("id"))
                .col(uuid("uploader_id"))
                .col(uuid_null("channel_id"))
                .col(string("encrypted_name"))
                .col(big_integer("size_bytes"))
                .col(string_null("content_type"))
                .col(string("checksum"))
                .col(string("storage_path"))
                .col(string_null("thumbnail_path"))
                .col(timestamp_with_time_zone_null("quarantined_at"))
                .col(uuid_null("quarantined_by"))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(&mut fk("files", "uploader_id", "users", Cascade))
                .foreign_key(&mut fk("files", "channel_id", "channels", SetNull))
                .take(),
            table("blocked_hashes")
                .col(pk_uuid("id"))
                .col(string_uniq("hash"))
                .col(text_null("reason"))
                .col(uuid_null("blocked_by"))
                .col(timestamp_with_time_zone("created_at"))
                .take(),
            table("webhooks")
                .col(pk_uuid("id"))
                .col(uuid("channel_id"))
                .col(string("name"))
                .col(string_uniq("token_hash"))
                .col(string_null("avatar_url"))
                .col(boolean("active").default(true))
                .col(uuid_null("created_by"))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(&mut fk("webhooks", "channel_id", "channels", Cascade))
                .foreign_key(&mut fk("webhooks", "created_by", "users", SetNull))
                .take(),
            table("polls")
                .col(pk_uuid("id"))
                .col(uuid("channel_id"))
                .col(uuid_null("created_by"))
                .col(text("question"))
                .col(text("options"))
                .col(boolean("multi_select").default(false))
                .col(boolean("anonymous").default(false))
                .col(boolean("closed").default(false))
                .col(timestamp_with_time_zone_null("expires_at"))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(&mut fk("polls", "channel_id", "channels", Cascade))
                .foreign_key(&mut fk("polls", "created_by", "users", SetNull))
                .take(),
            table("poll_votes")
                .col(uuid("poll_id"))
                .col(uuid("user_id"))
                .col(integer("option_index"))
                .col(timestamp_with_time_zone("created_at"))
                .primary_key(&mut pk(&["poll_id", "user_id", "option_index"]))
                .foreign_key(&mut fk("poll_votes", "poll_id", "polls", Cascade))
                .foreign_key(&mut fk("poll_votes", "user_id", "users", Cascade))
                .take(),
            table("scheduled_messages")
                .col(pk_uuid("id"))
                .col(uuid("user_id"))
                .col(uuid("channel_id"))
                .col(text("ciphertext"))
                .col(text("nonce"))
                .col(timestamp_with_time_zone("scheduled_for"))
                .col(text_null("content_preview"))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone_null("delivered_at"))
                .foreign_key(&mut fk("scheduled_messages", "user_id", "users", Cascade))
                .foreign_key(&mut fk("scheduled_messages", "channel_id", "channels", Cascade))
                .take(),
            table("bookmarks")
                .col(pk_uuid("id"))
                .col(uuid("user_id"))
                .col(uuid("message_id"))
                .col(text_null("note"))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(&mut fk("bookmarks", "user_id", "users", Cascade))
                .foreign_key(&mut fk("bookmarks", "message_id", "messages", Cascade))
                .take(),
            table("push_subscriptions")
                .col(pk_uuid("id"))
                .col(uuid("user_id"))
                .col(text("endpoint"))
                .col(string("p256dh_key"))
                .col(string("auth_key"))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(&mut fk("push_subscriptions", "user_id", "users", Cascade))
                .take(),
            table("feedback")
                .col(pk_uuid("id"))
                .col(uuid_null("user_id"))
                .col(string("title"))
                .col(text("description"))
                .col(string("category"))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(&mut fk("feedback", "user_id", "users", SetNull))
                .take(),
        ];
        let indexes = vec![
            index("files", &["uploader_id"]),
            index("files", &["checksum"]),
            index("scheduled_messages", &["scheduled_for"]),
            unique("bookmarks", &["user_id", "message_id"]),
            unique("push_subscriptions", &["user_id", "endpoint"]),
        ];
        create_all(manager, tables, indexes).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_all(
            manager,
            &[
                "feedback",
                "push_subscriptions",
                "bookmarks",
                "scheduled_messages",
                "poll_votes",
                "polls",
                "webhooks",
                "blocked_hashes",
                "files",
            ],
        )
        .await
    }
}
