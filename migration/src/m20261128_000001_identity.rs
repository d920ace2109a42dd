//! Accounts, authentication, E2E key material, moderation and instance-wide
//! tables.

use sea_orm_migration::{prelude::*, schema::*};

use crate::util::{create_all, drop_all, fk, index, pk, table, unique};

#[derive(DeriveMigrationName)]
pub struct Migration;

use ForeignKeyAction::{Cascade, SetNull};

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let tables = vec![
            table("users")
                .col(pk_uuid("id"))
                .col(string_uniq("username"))
                .col(string_uniq("email"))
                .col(string("password_hash"))
                .col(string("display_name"))
                .col(string_null("avatar_url"))
                .col(string_null("banner_url"))
                .col(string_null("voice_background_url"))
                .col(string("status").default("offline"))
                .col(string_null("custom_status"))
                .col(text_null("bio"))
                .col(string_null("pronouns"))
                .col(boolean("is_admin").default(false))
                .col(boolean("is_owner").default(false))
                .col(timestamp_with_time_zone_null("suspended_at"))
                .col(text_null("suspended_reason"))
                .col(string_null("recovery_code_hash"))
                .col(text("preferences").default("{}"))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone("updated_at"))
                .take(),
            table("refresh_tokens")
                .col(pk_uuid("id"))
                .col(uuid("user_id"))
                .col(string_uniq("token_hash"))
                .col(uuid("family_id"))
                .col(string_null("device_name"))
                .col(string_null("ip_address"))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone("expires_at"))
                .col(timestamp_with_time_zone_null("revoked_at"))
                .foreign_key(&mut fk("refresh_tokens", "user_id", "users", Cascade))
                .take(),
            table("user_totp")
                .col(pk_uuid("user_id"))
                .col(text("secret"))
                .col(boolean("enabled").default(false))
                .col(big_integer_null("last_used_step"))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone_null("enabled_at"))
                .foreign_key(&mut fk("user_totp", "user_id", "users", Cascade))
                .take(),
            table("totp_backup_codes")
                .col(pk_uuid("id"))
                .col(uuid("user_id"))
                .col(string("code_hash"))
                .col(timestamp_with_time_zone_null("used_at"))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(&mut fk("totp_backup_codes", "user_id", "users", Cascade))
                .take(),
            table("identity_keys")
                .col(pk_uuid("user_id"))
                .col(blob("identity_key"))
                .col(timestamp_with_time_zone("updated_at"))
                .foreign_key(&mut fk("identity_keys", "user_id", "users", Cascade))
                .take(),
            table("signed_prekeys")
                .col(pk_uuid("id"))
                .col(uuid("user_id"))
                .col(integer("key_id"))
                .col(blob("public_key"))
                .col(blob("signature"))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(&mut fk("signed_prekeys", "user_id", "users", Cascade))
                .take(),
            table("one_time_prekeys")
                .col(pk_uuid("id"))
                .col(uuid("user_id"))
                .col(integer("key_id"))
                .col(blob("public_key"))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(&mut fk("one_time_prekeys", "user_id", "users", Cascade))
                .take(),
            table("registration_invites")
                .col(pk_uuid("id"))
                .col(string_uniq("code"))
                .col(uuid_null("created_by"))
                .col(integer_null("max_uses"))
                .col(integer("used_count").default(0))
                .col(timestamp_with_time_zone_null("expires_at"))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(&mut fk("registration_invites", "created_by", "users", SetNull))
                .take(),
            table("blocked_users")
                .col(uuid("blocker_id"))
                .col(uuid("blocked_id"))
                .col(timestamp_with_time_zone("created_at"))
                .primary_key(&mut pk(&["blocker_id", "blocked_id"]))
                .foreign_key(&mut fk("blocked_users", "blocker_id", "users", Cascade))
                .foreign_key(&mut fk("blocked_users", "blocked_id", "users", Cascade))
                .take(),
            table("reports")
                .col(pk_uuid("id"))
                .col(uuid("reporter_id"))
                .col(string("report_type"))
                .col(uuid("target_id"))
                .col(text("reason"))
                .col(string("status").default("pending"))
                .col(uuid_null("reviewed_by"))
                .col(timestamp_with_time_zone_null("reviewed_at"))
                .col(text_null("admin_notes"))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(&mut fk("reports", "reporter_id", "users", Cascade))
                .foreign_key(&mut fk("reports", "reviewed_by", "users", SetNull))
                .take(),
            table("audit_log")
                .col(pk_uuid("id"))
                .col(uuid_null("user_id"))
                .col(string("action"))
                .col(string_null("ip_address"))
                .col(text_null("user_agent"))
                .col(text_null("metadata"))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(&mut fk("audit_log", "user_id", "users", SetNull))
                .take(),
            table("instance_settings")
                .col(string("key").primary_key())
                .col(text("value"))
                .col(timestamp_with_time_zone("updated_at"))
                .take(),
            table("announcements")
                .col(pk_uuid("id"))
                .col(string("title"))
                .col(text("body"))
                .col(uuid_null("created_by"))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(&mut fk("announcements", "created_by", "users", SetNull))
                .take(),
            table("announcement_dismissals")
                .col(uuid("announcement_id"))
                .col(uuid("user_id"))
                .col(timestamp_with_time_zone("dismissed_at"))
                .primary_key(&mut pk(&["announcement_id", "user_id"]))
                .foreign_key(&mut fk("announcement_dismissals", "announcement_id", "announcements", Cascade))
                .foreign_key(&mut fk("announcement_dismissals", "user_id", "users", Cascade))
                .take(),
        ];
        let indexes = vec![
            index("refresh_tokens", &["user_id"]),
            index("refresh_tokens", &["family_id"]),
            index("totp_backup_codes", &["user_id"]),
            unique("signed_prekeys", &["user_id", "key_id"]),
            unique("one_time_prekeys", &["user_id", "key_id"]),
            index("blocked_users", &["blocked_id"]),
            index("reports", &["status"]),
            index("audit_log", &["action"]),
            index("audit_log", &["user_id"]),
            index("audit_log", &["created_at"]),
        ];
        create_all(manager, tables, indexes).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_all(
            manager,
            &[
                "announcement_dismissals",
                "announcements",
                "instance_settings",
                "audit_log",
                "reports",
                "blocked_users",
                "registration_invites",
                "one_time_prekeys",
                "signed_prekeys",
                "identity_keys",
                "totp_backup_codes",
                "user_totp",
                "refresh_tokens",
                "users",
            ],
        )
        .await
    }
}
