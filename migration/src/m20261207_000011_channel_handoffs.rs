//! A planned handoff between cluster nodes (docs: "Running several nodes"): the node giving a
//! shard up writes where each of its channels' streams ended, under the shard's fencing epoch,
//! before unlocking it; the next owner reads and deletes the rows when it takes the shard and
//! continues those epochs and positions, so clients resume without a resync. Created on SQLite
//! too (the schema stays one), where nothing uses it.

use sea_orm_migration::prelude::*;

use crate::util::table;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                table("channel_handoffs")
                    // Text, as the lock connection binds it (no uuid codec needed there).
                    .col(ColumnDef::new("channel_id").text().not_null().primary_key())
                    .col(ColumnDef::new("shard").small_integer().not_null())
                    .col(ColumnDef::new("shard_epoch").big_integer().not_null())
                    .col(ColumnDef::new("epoch").text().not_null())
                    .col(ColumnDef::new("cseq").big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("channel_handoffs_shard")
                    .table("channel_handoffs")
                    .col("shard")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table("channel_handoffs").to_owned()).await
    }
}
