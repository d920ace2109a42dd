//! Write transactions that cannot lose a read-then-write race, on both databases.
//!
//! SQLite: a plain `BEGIN` is deferred; a transaction that reads first holds a read snapshot
//! and, when it then writes while another connection writes, gets `SQLITE_BUSY` at once (the
//! busy timeout is not used for a snapshot that has gone stale). `BEGIN IMMEDIATE` takes the
//! single write lock up front, waiting with the busy timeout, so every write transaction sees
//! the latest data and runs alone. PostgreSQL: a plain `BEGIN`; rows that a check reads
//! before writing are locked with [`lock_row`].

use std::time::Duration;

use sea_orm::{
    DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait, PrimaryKeyTrait, QuerySelect, RuntimeErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait, sqlx,
};
use uuid::Uuid;

/// How often `BEGIN IMMEDIATE` is tried when SQLite stays busy past its busy timeout.
const BEGIN_ATTEMPTS: u32 = 4;
/// First pause between attempts; doubled each time.
const BEGIN_BACKOFF: Duration = Duration::from_millis(50);

/// Begins a transaction that will write (and may read first): `BEGIN IMMEDIATE` on SQLite,
/// retried with backoff while the database is busy; a plain `BEGIN` on PostgreSQL.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    let options = TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    };
    let mut pause = BEGIN_BACKOFF;
    let mut attempt = 1;
    loop {
        match db.begin_with_options(options).await {
            Err(err) if is_busy(&err) && attempt < BEGIN_ATTEMPTS => {
                tracing::debug!(attempt, "database busy, retrying BEGIN");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Locks the row `id` of `E` for the rest of `txn` and returns it (`None`: no such row).
/// PostgreSQL: `SELECT … FOR UPDATE`; SQLite: a plain read, the write transaction already runs
/// alone. Taken on the parent row before counting or reading what a write depends on (pins
/// of a channel, votes of a poll, emojis of a community), so concurrent requests decide one
/// after another.
pub async fn lock_row<E>(txn: &DatabaseTransaction, id: Uuid) -> Result<Option<E::Model>, DbErr>
where
    E: EntityTrait,
    <E::PrimaryKey as PrimaryKeyTrait>::ValueType: From<Uuid>,
{
    E::find_by_id(id).lock_exclusive().one(txn).await
}

/// True for SQLite's "database is busy / locked" (`SQLITE_BUSY`, `SQLITE_LOCKED` and their
/// extended codes): another writer held the lock for longer than we waited.
pub fn is_busy(err: &DbErr) -> bool {
    database_code(err)
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| matches!(code & 0xff, 5 | 6))
}

/// True when the database refused a statement only because of concurrent transactions:
/// SQLite busy/locked, PostgreSQL serialization failure (`40001`) or deadlock (`40P01`).
/// Retrying later succeeds, so callers answer "unavailable", never "internal error".
pub fn is_contention(err: &DbErr) -> bool {
    is_busy(err) || database_code(err).is_some_and(|code| code == "40001" || code == "40P01")
}

fn database_code(err: &DbErr) -> Option<String> {
    match err {
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => match e.as_ref() {
            sqlx::Error::Database(db_err) => db_err.code().map(|c| c.into_owned()),
            _ => None,
        },
        _ => None,
    }
}
