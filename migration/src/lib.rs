//! Portable (SQLite + PostgreSQL) schema migrations for Palaver.
//!
//! Run with `Migrator::up(&db, None)`. Entities matching these tables live in
//! the `palaver-entity` crate.

pub use sea_orm_migration::prelude::*;

mod m20261128_000001_identity;
mod m20261128_000002_communities_channels;
mod m20261128_000003_messages;
mod m20261128_000004_content;
mod m20261205_000008_usernames_unique_ignoring_case;
mod m20261205_000009_messages_client_nonce;
mod m20261206_000010_cluster;
mod m20261207_000011_channel_handoffs;
mod util;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261128_000001_identity::Migration),
            Box::new(m20261128_000002_communities_channels::Migration),
            Box::new(m20261128_000003_messages::Migration),
            Box::new(m20261128_000004_content::Migration),
            Box::new(m20261205_000008_usernames_unique_ignoring_case::Migration),
            Box::new(m20261205_000009_messages_client_nonce::Migration),
            Box::new(m20261206_000010_cluster::Migration),
            Box::new(m20261207_000011_channel_handoffs::Migration),
        ]
    }
}
