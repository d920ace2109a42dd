//! Idempotent sends (docs/wire/resume.md, "Idempotent sends"): a message keeps the
//! `client_nonce` its sender chose, so a repeat of the send is recognised even after the
//! channel's actor or the server restarted. The index serves that lookup (channel, sender,
//! key); it is partial because most messages carry no key.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::ConnectionTrait;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The index name, `idx_<table>_<cols>` like the others.
pub const INDEX: &str = "idx_messages_channel_id_sender_id_client_nonce";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("messages")
                    .add_column(ColumnDef::new("client_nonce").text().null())
                    .to_owned(),
            )
            .await?;
        // Same SQL on SQLite and PostgreSQL (both have partial indexes).
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "CREATE INDEX {INDEX} ON messages (channel_id, sender_id, client_nonce) \
                 WHERE client_nonce IS NOT NULL"
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name(INDEX).table("messages").to_owned()).await?;
        manager.alter_table(Table::alter().table("messages").drop_column("client_nonce").to_owned()).await
    }
}
