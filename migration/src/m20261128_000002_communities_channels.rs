//! Communities, their groups, channels (group channels and DMs) and
//! per-channel membership/moderation state.

use sea_orm_migration::{prelude::*, schema::*};

use crate::util::{create_all, drop_all, fk, index, pk, table, unique};

#[derive(DeriveMigrationName)]
pub struct Migration;

use ForeignKeyAction::{Cascade, Restrict, SetNull};

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let tables = vec![
            table("communities")
                .col(pk_uuid("id"))
                .col(string("name"))
                .col(text_null("description"))
                .col(string_null("icon_url"))
                .col(string_null("banner_url"))
                .col(uuid("owner_id"))
                .col(string("who_can_create_groups").default("admin"))
                .col(string("who_can_create_invites").default("admin"))
                .col(boolean("discoverable").default(true))
                .col(text_null("community_theme"))
                .col(text_null("welcome_message"))
                .col(timestamp_with_time_zone("created_at"))
                // Restrict: ownership must be transferred before the owner's
                // account can be deleted.
                .foreign_key(&mut fk("communities", "owner_id", "users", Restrict))
                .take(),
            table("community_members")
                .col(uuid("community_id"))
                .col(uuid("user_id"))
                .col(string("role").default("member"))
                .col(string_null("nickname"))
                .col(timestamp_with_time_zone("joined_at"))
                .primary_key(&mut pk(&["community_id", "user_id"]))
                .foreign_key(&mut fk("community_members", "community_id", "communities", Cascade))
                .foreign_key(&mut fk("community_members", "user_id", "users", Cascade))
                .take(),
            table("community_bans")
                .col(uuid("community_id"))
                .col(uuid("user_id"))
                .col(text_null("reason"))
                .col(uuid_null("banned_by"))
                .col(timestamp_with_time_zone("created_at"))
                .primary_key(&mut pk(&["community_id", "user_id"]))
                .foreign_key(&mut fk("community_bans", "community_id", "communities", Cascade))
                .foreign_key(&mut fk("community_bans", "user_id", "users", Cascade))
                .take(),
            table("community_invites")
                .col(pk_uuid("id"))
                .col(uuid("community_id"))
                .col(string_uniq("code"))
                .col(uuid_null("created_by"))
                .col(integer_null("max_uses"))
                .col(integer("used_count").default(0))
                .col(timestamp_with_time_zone_null("expires_at"))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(&mut fk("community_invites", "community_id", "communities", Cascade))
                .take(),
            table("custom_emojis")
                .col(pk_uuid("id"))
                .col(uuid("community_id"))
                .col(string("shortcode"))
                .col(string("content_type"))
                .col(uuid_null("uploaded_by"))
                .col(integer("size_bytes"))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(&mut fk("custom_emojis", "community_id", "communities", Cascade))
                .take(),
            table("groups")
                .col(pk_uuid("id"))
                .col(uuid("community_id"))
                .col(string("name"))
                .col(text_null("description"))
                .col(string_null("icon_url"))
                .col(string_null("banner_url"))
                .col(string_null("accent_color"))
                .col(uuid("owner_id"))
                .col(string("visibility").default("public"))
                .col(boolean("discoverable").default(true))
                .col(uuid_null("assigned_member_id"))
                .col(boolean("allow_invites").default(true))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(&mut fk("groups", "community_id", "communities", Cascade))
                // Restrict, as for communities: reassign before deleting the owner.
                .foreign_key(&mut fk("groups", "owner_id", "users", Restrict))
                .take(),
            table("group_members")
                .col(uuid("group_id"))
                .col(uuid("user_id"))
                .col(string("role"))
                .col(timestamp_with_time_zone("joined_at"))
                .primary_key(&mut pk(&["group_id", "user_id"]))
                .foreign_key(&mut fk("group_members", "group_id", "groups", Cascade))
                .foreign_key(&mut fk("group_members", "user_id", "users", Cascade))
                .take(),
            table("group_invites")
                .col(pk_uuid("id"))
                .col(uuid("group_id"))
                .col(string_uniq("code"))
                .col(uuid_null("created_by"))
                .col(integer_null("max_uses"))
                .col(integer("used_count").default(0))
                .col(timestamp_with_time_zone_null("expires_at"))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(&mut fk("group_invites", "group_id", "groups", Cascade))
                .take(),
            table("channels")
                .col(pk_uuid("id"))
                .col(string_null("name"))
                .col(string("channel_type"))
                .col(text_null("topic"))
                .col(uuid_null("created_by"))
                .col(uuid_null("group_id"))
                .col(boolean("read_only").default(false))
                .col(integer("slow_mode_seconds").default(0))
                .col(boolean("discoverable").default(true))
                .col(boolean("archived").default(false))
                .col(string_null("voice_background"))
                .col(integer_null("message_ttl_seconds"))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(&mut fk("channels", "created_by", "users", SetNull))
                .foreign_key(&mut fk("channels", "group_id", "groups", Cascade))
                .take(),
            table("channel_members")
                .col(uuid("channel_id"))
                .col(uuid("user_id"))
                .col(string("role").default("member"))
                .col(timestamp_with_time_zone("joined_at"))
                .primary_key(&mut pk(&["channel_id", "user_id"]))
                .foreign_key(&mut fk("channel_members", "channel_id", "channels", Cascade))
                .foreign_key(&mut fk("channel_members", "user_id", "users", Cascade))
                .take(),
            table("channel_bans")
                .col(uuid("channel_id"))
                .col(uuid("user_id"))
                .col(text_null("reason"))
                .col(uuid_null("banned_by"))
                .col(timestamp_with_time_zone("created_at"))
                .primary_key(&mut pk(&["channel_id", "user_id"]))
                .foreign_key(&mut fk("channel_bans", "channel_id", "channels", Cascade))
                .foreign_key(&mut fk("channel_bans", "user_id", "users", Cascade))
                .take(),
            table("dm_pairs")
                .col(pk_uuid("channel_id"))
                .col(uuid("user_a"))
                .col(uuid("user_b"))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(&mut fk("dm_pairs", "channel_id", "channels", Cascade))
                .foreign_key(&mut fk("dm_pairs", "user_a", "users", Cascade))
                .foreign_key(&mut fk("dm_pairs", "user_b", "users", Cascade))
                .take(),
            table("read_cursors")
                .col(uuid("channel_id"))
                .col(uuid("user_id"))
                .col(uuid_null("last_read_message_id"))
                .col(timestamp_with_time_zone("last_read_at"))
                .primary_key(&mut pk(&["channel_id", "user_id"]))
                .foreign_key(&mut fk("read_cursors", "channel_id", "channels", Cascade))
                .foreign_key(&mut fk("read_cursors", "user_id", "users", Cascade))
                .take(),
            table("channel_timeouts")
                .col(pk_uuid("id"))
                .col(uuid("channel_id"))
                .col(uuid("user_id"))
                .col(uuid_null("issued_by"))
                .col(text_null("reason"))
                .col(timestamp_with_time_zone("expires_at"))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(&mut fk("channel_timeouts", "channel_id", "channels", Cascade))
                .foreign_key(&mut fk("channel_timeouts", "user_id", "users", Cascade))
                .take(),
            table("channel_warnings")
                .col(pk_uuid("id"))
                .col(uuid("channel_id"))
                .col(uuid("user_id"))
                .col(uuid_null("issued_by"))
                .col(text("reason"))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(&mut fk("channel_warnings", "channel_id", "channels", Cascade))
                .foreign_key(&mut fk("channel_warnings", "user_id", "users", Cascade))
                .take(),
        ];
        let indexes = vec![
            index("community_members", &["user_id"]),
            unique("custom_emojis", &["community_id", "shortcode"]),
            index("groups", &["community_id"]),
            index("group_members", &["user_id"]),
            index("channels", &["group_id"]),
            index("channel_members", &["user_id"]),
            unique("dm_pairs", &["user_a", "user_b"]),
            index("channel_timeouts", &["channel_id", "user_id"]),
            index("channel_warnings", &["channel_id", "user_id"]),
        ];
        create_all(manager, tables, indexes).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_all(
            manager,
            &[
                "channel_warnings",
                "channel_timeouts",
                "read_cursors",
                "dm_pairs",
                "channel_bans",
                "channel_members",
                "channels",
                "group_invites",
                "group_members",
                "groups",
                "custom_emojis",
                "community_invites",
                "community_bans",
                "community_members",
                "communities",
            ],
        )
        .await
    }
}
