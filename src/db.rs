//! Opening the database (SQLite or PostgreSQL, chosen by URL) and migrating it.

use std::time::Duration;

use palaver_migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, Database, DatabaseConnection};

pub async fn connect(url: &str) -> Result<DatabaseConnection, sea_orm::DbErr> {
    let sqlite = url.starts_with("sqlite:");
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(if sqlite { 8 } else { 32 })
        .min_connections(1)
        .connect_timeout(Duration::from_secs(5))
        // Short: when the database is down a request should learn it fast (503), and the
        // pool reconnects by itself as soon as it is back.
        .acquire_timeout(Duration::from_secs(3))
        .sqlx_logging(false);
    if sqlite {
        // A local file's connection does not go stale: no ping per checkout.
        options.test_before_acquire(false);
    } else {
        // sqlx pings on every checkout by default: one more network round trip before each
        // statement (a commit's ack waited for it). Only a connection idle this long, which a
        // server restart, proxy or firewall may have dropped, is pinged first now; one that
        // breaks while in use fails its statement (503 `unavailable`) and is discarded.
        options.test_before_acquire_if_idle_for(Duration::from_secs(2));
    }
    if sqlite {
        options.map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                // NORMAL in WAL mode survives a process crash (an acked message stays);
                // only an OS crash or power cut may lose the last transactions.
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
    }
    Database::connect(options).await
}

/// Advisory lock key held while migrating PostgreSQL ('PALM').
const MIGRATION_LOCK: i64 = 1346456653;

/// Connects and brings the schema up to date. On PostgreSQL the migration runs under an
/// advisory lock, so nodes starting together on an empty database migrate one at a time
/// (the later ones then find nothing to do).
pub async fn connect_and_migrate(url: &str) -> Result<DatabaseConnection, sea_orm::DbErr> {
    use sea_orm::sqlx::{Connection, PgConnection};
    let db = connect(url).await?;
    if url.starts_with("sqlite:") {
        Migrator::up(&db, None).await?;
        return Ok(db);
    }
    let sqlx_err = |e: sea_orm::sqlx::Error| sea_orm::DbErr::Custom(format!("migration lock: {e}"));
    let mut lock = PgConnection::connect(url).await.map_err(sqlx_err)?;
    sea_orm::sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut lock)
        .await
        .map_err(sqlx_err)?;
    let migrated = Migrator::up(&db, None).await;
    // Closing the connection frees the lock even if the unlock fails.
    let _ = lock.close().await;
    migrated.map(|()| db)
}

/// Every write transaction starts here (see `palaver_actors::db`): on SQLite it takes the write
/// lock up front, so a read-then-write inside it is never refused as busy and never races.
pub use palaver_actors::db::{begin_write, lock_row};
