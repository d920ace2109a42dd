//! Several nodes on one PostgreSQL (docs: "Running several nodes"). `channel_shards` holds
//! each of the 1024 shards' fencing epoch: a node that takes a shard bumps it, and every
//! owner write checks it, so a node that lost a shard cannot commit. `cluster_nodes` is
//! how a node cut off from NATS tells "only me" from "everyone". Created on SQLite too (the
//! schema stays one), where nothing uses them.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::ConnectionTrait;

use crate::util::table;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Shards are fixed forever (the placement hash depends on it).
const SHARDS: i32 = 1024;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                table("channel_shards")
                    .col(ColumnDef::new("shard").small_integer().not_null().primary_key())
                    .col(ColumnDef::new("shard_epoch").big_integer().not_null().default(0))
                    .col(ColumnDef::new("node").text().null())
                    .col(ColumnDef::new("acquired_at").timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await?;
        // One multi-row insert: 1024 rows, seeded once.
        let rows: Vec<String> = (0..SHARDS).map(|s| format!("({s}, 0)")).collect();
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "INSERT INTO channel_shards (shard, shard_epoch) VALUES {}",
                rows.join(", ")
            ))
            .await?;
        manager
            .create_table(
                table("cluster_nodes")
                    .col(ColumnDef::new("node_id").text().not_null().primary_key())
                    .col(ColumnDef::new("boot_id").text().not_null())
                    .col(ColumnDef::new("key_fingerprint").text().not_null())
                    .col(ColumnDef::new("started_at").timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new("last_seen").timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new("nats_ok").boolean().not_null())
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table("cluster_nodes").to_owned()).await?;
        manager.drop_table(Table::drop().table("channel_shards").to_owned()).await
    }
}
