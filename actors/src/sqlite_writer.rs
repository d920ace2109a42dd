//! The SQLite commit path: every channel's group commits, without sqlx's worker thread.
//!
//! Why: through sqlx every statement is a hop to the connection's worker thread and back
//! (pool acquire, `BEGIN`, `INSERT`, `COMMIT`); under load those thread wake-ups, not SQLite,
//! made the ack latency (issue 15, part 5). SQLite has a single writer anyway. Two
//! connections:
//! - the **inline** one: a commit runs right where it is asked for (on the calling tokio
//!   worker) when this connection is free and nobody else holds the write lock. It never
//!   waits (busy timeout 0) and never checkpoints, so it costs the worker SQLite's own work
//!   only: tens to a few hundred µs, no fsync (WAL, `synchronous = NORMAL`). At 100 senders
//!   this took the commit from 4.3 ms (mean, the thread's wake-ups) to under 0.5 ms for 97 %.
//! - the **writer thread**: takes every commit the inline connection could not (busy, or in
//!   use by another channel), waits for the lock with the pool's busy timeout, stores all
//!   queued batches in one transaction (a savepoint per batch, so one failing batch fails
//!   alone), and checkpoints the WAL every second.
//!
//! Durability is the pool's, set explicitly on both connections: WAL with
//! `synchronous = NORMAL`. A commit survives a crash of the process (kill -9: the WAL is in
//! the OS's page cache); only an OS crash or power cut may lose the last transactions.
//!
//! Values are encoded exactly as sqlx encodes them for SQLite (UUIDs as 16-byte blobs,
//! timestamps as RFC 3339 text with `+00:00`), so rows read back through sea-orm alike; the
//! tests below compare the stored bytes of both paths.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use chrono::SecondsFormat;
use palaver_entity::messages;
use rusqlite::{Connection, TransactionBehavior, params};
use uuid::Uuid;

/// Most batches one transaction takes (each is one channel's group commit).
const MAX_JOBS_PER_TRANSACTION: usize = 64;
/// How long a `BEGIN IMMEDIATE` waits for another writer (the pool's busy timeout).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the thread checkpoints the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Why a batch was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteFailure {
    /// The database is busy past the timeout, full, or unreadable: retrying later may work.
    Unavailable(String),
    /// Anything else (a constraint, a bug).
    Internal(String),
}

/// One channel's group commit.
struct Batch {
    /// The rows to insert, in order.
    rows: Vec<messages::Model>,
    /// (position in `rows`, scheduled message) pairs: a row is stored only if it sets its
    /// scheduled message's `delivered_at` first (the claim).
    claims: Vec<(usize, Uuid)>,
}

/// A batch waiting for the writer thread.
struct Job {
    batch: Batch,
    /// Where the outcome goes: the positions whose claim was lost, or the failure.
    reply: tokio::sync::oneshot::Sender<Result<Vec<usize>, WriteFailure>>,
}

/// The handle the channel actors commit through. The thread ends when the last handle is
/// dropped (after storing what was queued).
#[derive(Clone)]
pub struct SqliteWriter {
    /// The connection a commit uses right where it is asked for, when nobody else writes:
    /// it never waits for the lock (busy timeout 0) and never checkpoints (the thread does),
    /// so it costs the calling worker only SQLite's own work (no fsync: WAL, NORMAL).
    inline: Arc<Mutex<Connection>>,
    /// Unbounded: each channel actor has at most one commit in flight, so the queue holds at
    /// most one job per live channel.
    jobs: mpsc::Sender<Job>,
}

impl SqliteWriter {
    /// A writer for the database file behind `db`, if it is a SQLite file (not PostgreSQL, not
    /// an in-memory database, which another connection could not see).
    pub fn for_database(db: &sea_orm::DatabaseConnection) -> Option<Self> {
        if db.get_database_backend() != sea_orm::DbBackend::Sqlite {
            return None;
        }
        let path = db.get_sqlite_connection_pool().connect_options().get_filename().to_path_buf();
        if !path.is_file() {
            return None;
        }
        match Self::open(&path) {
            Ok(writer) => Some(writer),
            Err(err) => {
                tracing::warn!(path = %path.display(), %err, "no SQLite writer thread; commits go through the pool");
                None
            }
        }
    }

    /// Opens the connection and starts the thread.
    pub fn open(path: &Path) -> Result<Self, String> {
        let opened = |busy| open_connection(path, busy).map_err(|e| format!("open {}: {e}", path.display()));
        let connection = opened(BUSY_TIMEOUT)?;
        let inline = opened(Duration::ZERO)?;
        inline.pragma_update(None, "wal_autocheckpoint", 0).map_err(|e| e.to_string())?;
        let (jobs, queue) = mpsc::channel();
        let path: PathBuf = path.to_path_buf();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(connection, queue, &path))
            .map_err(|e| format!("spawn the writer thread: {e}"))?;
        Ok(Self { inline: Arc::new(Mutex::new(inline)), jobs })
    }

    /// Stores `rows` (with their claims) and returns the positions whose claim was already
    /// taken (those rows are not stored). Nothing is stored if it fails.
    pub async fn insert_messages(
        &self,
        rows: Vec<messages::Model>,
        claims: Vec<(usize, Uuid)>,
    ) -> Result<Vec<usize>, WriteFailure> {
        let batch = Batch { rows, claims };
        if let Ok(mut connection) = self.inline.try_lock() {
            match store(&mut connection, std::slice::from_ref(&batch)).pop() {
                // Another connection holds the write lock: the thread waits for it instead.
                Some(Err(WriteFailure::Unavailable(_))) => {}
                Some(outcome) => return outcome,
                None => {}
            }
        }
        let (reply, outcome) = tokio::sync::oneshot::channel();
        let stopped = || WriteFailure::Unavailable("the SQLite writer thread has stopped".into());
        self.jobs.send(Job { batch, reply }).map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

fn open_connection(path: &Path, busy_timeout: Duration) -> Result<Connection, rusqlite::Error> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(busy_timeout)?;
    // Per connection, so set here as on the pool's connections (see `src/db.rs`).
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    Ok(connection)
}

/// The thread: waits for a job, takes whatever else is queued, stores them all in one
/// transaction (each job under its own savepoint, so one failing job fails alone), answers.
/// Between jobs, at most every `CHECKPOINT_EVERY`, it checkpoints the WAL (the inline
/// connection never does).
fn run(mut connection: Connection, queue: mpsc::Receiver<Job>, path: &Path) {
    let mut last_checkpoint = Instant::now();
    loop {
        let first = match queue.recv_timeout(CHECKPOINT_EVERY) {
            Ok(job) => Some(job),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if let Some(first) = first {
            let mut jobs = vec![first];
            while jobs.len() < MAX_JOBS_PER_TRANSACTION
                && let Ok(next) = queue.try_recv()
            {
                jobs.push(next);
            }
            let (batches, replies): (Vec<Batch>, Vec<_>) =
                jobs.into_iter().map(|j| (j.batch, j.reply)).unzip();
            for (reply, outcome) in replies.into_iter().zip(store(&mut connection, &batches)) {
                let _ = reply.send(outcome);
            }
        }
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            // PASSIVE: copies what no reader still needs, never waits for anyone.
            if let Err(err) = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::debug!(%err, "WAL checkpoint");
            }
            last_checkpoint = Instant::now();
        }
    }
    tracing::debug!(path = %path.display(), "SQLite writer thread stopped");
}

/// One transaction for `batches`; one outcome per batch, in order.
fn store(connection: &mut Connection, batches: &[Batch]) -> Vec<Result<Vec<usize>, WriteFailure>> {
    let mut transaction = match connection.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(t) => t,
        Err(err) => return batches.iter().map(|_| Err(failure(&err))).collect(),
    };
    let mut outcomes = Vec::with_capacity(batches.len());
    for batch in batches {
        let outcome = match transaction.savepoint() {
            Ok(savepoint) => match store_batch(&savepoint, batch) {
                Ok(lost) => savepoint.commit().map(|()| lost).map_err(|e| failure(&e)),
                // Dropping the savepoint rolls this batch back; the others stay.
                Err(err) => Err(failure(&err)),
            },
            Err(err) => Err(failure(&err)),
        };
        outcomes.push(outcome);
    }
    if let Err(err) = transaction.commit() {
        let failed = failure(&err);
        return outcomes.into_iter().map(|o| o.and(Err(failed.clone()))).collect();
    }
    outcomes
}

/// The batch's claims, then its rows whose claim held. Returns the positions of lost claims.
fn store_batch(connection: &Connection, job: &Batch) -> Result<Vec<usize>, rusqlite::Error> {
    let mut lost = Vec::new();
    if !job.claims.is_empty() {
        let now = timestamp(palaver_entity::now());
        let mut claim = connection.prepare_cached(
            "UPDATE scheduled_messages SET delivered_at = ?1 WHERE id = ?2 AND delivered_at IS NULL",
        )?;
        for (position, scheduled_id) in &job.claims {
            if claim.execute(params![now, scheduled_id.as_bytes()])? == 0 {
                lost.push(*position);
            }
        }
    }
    let mut insert = connection.prepare_cached(
        "INSERT INTO messages (id, channel_id, sender_id, ciphertext, nonce, message_type, reply_to_id, \
         sender_key_id, thread_id, edited_at, deleted_at, quarantined_at, expires_at, webhook_content, \
         created_at, client_nonce) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?;
    for (position, row) in job.rows.iter().enumerate() {
        if lost.contains(&position) {
            continue;
        }
        let uuid = |id: &Option<Uuid>| id.as_ref().map(|id| id.as_bytes().to_vec());
        let time = |t: &Option<chrono::DateTime<chrono::Utc>>| t.map(timestamp);
        insert.execute(params![
            row.id.as_bytes(),
            row.channel_id.as_bytes(),
            uuid(&row.sender_id),
            row.ciphertext,
            row.nonce,
            row.message_type,
            uuid(&row.reply_to_id),
            uuid(&row.sender_key_id),
            uuid(&row.thread_id),
            time(&row.edited_at),
            time(&row.deleted_at),
            time(&row.quarantined_at),
            time(&row.expires_at),
            row.webhook_content,
            timestamp(row.created_at),
            row.client_nonce,
        ])?;
    }
    Ok(lost)
}

/// A timestamp as sqlx stores `DateTime<Utc>` in SQLite.
fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// Busy, locked, full, I/O and open errors are the database being unavailable (the sender
/// gets `unavailable` and may retry); the rest are internal errors.
fn failure(err: &rusqlite::Error) -> WriteFailure {
    use rusqlite::ErrorCode::*;
    match err.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked | SystemIoFailure | DiskFull | CannotOpen | ReadOnly) => {
            WriteFailure::Unavailable(err.to_string())
        }
        _ => WriteFailure::Internal(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palaver_entity::channels;
    use palaver_migration::{Migrator, MigratorTrait};
    use sea_orm::{ConnectionTrait, EntityTrait, IntoActiveModel, Statement};

    /// A fresh migrated database file (removed when the returned guard drops) and a channel in it.
    async fn database() -> (sea_orm::DatabaseConnection, Dir, Uuid) {
        let dir = Dir(std::env::temp_dir().join(format!("palaver-writer-{}", Uuid::new_v4())));
        std::fs::create_dir_all(&dir.0).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.0.join("palaver.db").display());
        let db = sea_orm::Database::connect(&url).await.unwrap();
        db.execute_unprepared("PRAGMA foreign_keys = ON").await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        let channel = channels::Model {
            id: Uuid::now_v7(),
            name: Some("general".into()),
            channel_type: "text".into(),
            topic: None,
            created_by: None,
            group_id: None,
            read_only: false,
            slow_mode_seconds: 0,
            discoverable: false,
            archived: false,
            voice_background: None,
            message_ttl_seconds: None,
            created_at: palaver_entity::now(),
        };
        let channel_id = channel.id;
        channels::Entity::insert(channel.into_active_model()).exec_without_returning(&db).await.unwrap();
        (db, dir, channel_id)
    }

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A message with every optional field set, so each column's encoding is compared.
    fn message(channel_id: Uuid) -> messages::Model {
        let at = palaver_entity::now();
        messages::Model {
            id: Uuid::now_v7(),
            channel_id,
            sender_id: None,
            ciphertext: vec![0, 1, 2, 255],
            nonce: vec![9; 12],
            message_type: "text".into(),
            reply_to_id: Some(Uuid::now_v7()),
            sender_key_id: Some(Uuid::new_v4()),
            thread_id: Some(Uuid::now_v7()),
            edited_at: Some(at),
            deleted_at: Some(at + chrono::Duration::seconds(1)),
            quarantined_at: Some(at + chrono::Duration::milliseconds(1500)),
            expires_at: Some(at + chrono::Duration::days(1)),
            webhook_content: Some("{\"content\":\"hi\"}".into()),
            created_at: at,
            client_nonce: Some("nonce-1".into()),
        }
    }

    /// Each column's SQLite type and literal, as stored.
    async fn stored(db: &sea_orm::DatabaseConnection, id: Uuid) -> Vec<String> {
        let columns = [
            "id",
            "channel_id",
            "sender_id",
            "ciphertext",
            "nonce",
            "message_type",
            "reply_to_id",
            "sender_key_id",
            "thread_id",
            "edited_at",
            "deleted_at",
            "quarantined_at",
            "expires_at",
            "webhook_content",
            "created_at",
            "client_nonce",
        ];
        let select: Vec<String> =
            columns.iter().map(|c| format!("typeof({c}) || ':' || quote({c})")).collect();
        let sql = format!("SELECT {} FROM messages WHERE id = ?", select.join(", "));
        let row = db
            .query_one_raw(Statement::from_sql_and_values(sea_orm::DbBackend::Sqlite, sql, [id.into()]))
            .await
            .unwrap()
            .expect("the row");
        (0..columns.len()).map(|i| row.try_get_by_index::<String>(i).unwrap()).collect()
    }

    #[tokio::test]
    async fn a_row_stored_by_the_writer_is_stored_as_the_pool_stores_it_and_reads_back_equal() {
        let (db, _dir, channel_id) = database().await;
        let writer = SqliteWriter::for_database(&db).expect("a writer for a SQLite file");
        let through_pool = message(channel_id);
        let mut through_writer = through_pool.clone();
        through_writer.id = Uuid::now_v7();
        through_writer.client_nonce = Some("nonce-2".into());
        messages::Entity::insert(through_pool.clone().into_active_model())
            .exec_without_returning(&db)
            .await
            .unwrap();
        assert_eq!(writer.insert_messages(vec![through_writer.clone()], Vec::new()).await, Ok(Vec::new()));

        let (pool_columns, writer_columns) =
            (stored(&db, through_pool.id).await, stored(&db, through_writer.id).await);
        // Everything but the id and the nonce key (which differ on purpose) is stored alike.
        for (i, (a, b)) in pool_columns.iter().zip(&writer_columns).enumerate() {
            if i == 0 || i == 15 {
                assert_eq!(a.split(':').next(), b.split(':').next(), "column {i}: {a} vs {b}");
            } else {
                assert_eq!(a, b, "column {i}");
            }
        }
        let read_back = messages::Entity::find_by_id(through_writer.id).one(&db).await.unwrap();
        assert_eq!(read_back, Some(through_writer));
    }

    #[tokio::test]
    async fn a_failing_batch_fails_alone_and_stores_nothing() {
        let (db, _dir, channel_id) = database().await;
        let writer = SqliteWriter::for_database(&db).unwrap();
        let good = vec![message(channel_id), message(channel_id)];
        // The second row names a channel that does not exist (a foreign key): the whole batch
        // fails, its first row included.
        let bad = vec![message(channel_id), message(Uuid::now_v7())];
        let (good_outcome, bad_outcome) = tokio::join!(
            writer.insert_messages(good.clone(), Vec::new()),
            writer.insert_messages(bad.clone(), Vec::new())
        );
        assert_eq!(good_outcome, Ok(Vec::new()));
        assert!(matches!(bad_outcome, Err(WriteFailure::Internal(_))), "{bad_outcome:?}");
        for row in &good {
            assert!(messages::Entity::find_by_id(row.id).one(&db).await.unwrap().is_some());
        }
        for row in &bad {
            assert!(messages::Entity::find_by_id(row.id).one(&db).await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn a_scheduled_message_is_stored_once_whoever_claims_it_twice() {
        let (db, _dir, channel_id) = database().await;
        let writer = SqliteWriter::for_database(&db).unwrap();
        let scheduled = Uuid::now_v7();
        // Foreign keys are checked by the pool's connections; the user row is not the point.
        db.execute_unprepared("PRAGMA foreign_keys = OFF").await.unwrap();
        db.execute_raw(Statement::from_sql_and_values(
            sea_orm::DbBackend::Sqlite,
            "INSERT INTO scheduled_messages (id, user_id, channel_id, ciphertext, nonce, scheduled_for, created_at) \
             VALUES (?, ?, ?, 'c', 'n', ?, ?)",
            [
                scheduled.into(),
                Uuid::now_v7().into(),
                channel_id.into(),
                palaver_entity::now().into(),
                palaver_entity::now().into(),
            ],
        ))
        .await
        .unwrap();
        let first = vec![message(channel_id), message(channel_id)];
        let second = vec![message(channel_id)];
        assert_eq!(writer.insert_messages(first.clone(), vec![(1, scheduled)]).await, Ok(Vec::new()));
        assert_eq!(writer.insert_messages(second.clone(), vec![(0, scheduled)]).await, Ok(vec![0]));
        assert!(messages::Entity::find_by_id(first[1].id).one(&db).await.unwrap().is_some());
        assert!(messages::Entity::find_by_id(second[0].id).one(&db).await.unwrap().is_none());
        let delivered =
            palaver_entity::scheduled_messages::Entity::find_by_id(scheduled).one(&db).await.unwrap();
        assert!(delivered.expect("the scheduled row").delivered_at.is_some(), "claimed through the writer");
    }

    #[tokio::test]
    async fn a_commit_while_another_connection_writes_waits_for_it_on_the_thread() {
        let (db, dir, channel_id) = database().await;
        let writer = SqliteWriter::for_database(&db).unwrap();
        // Another writer (the pool, an admin's sqlite3 shell) holds the write lock.
        let other = Connection::open(dir.0.join("palaver.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let row = message(channel_id);
        let commit = tokio::spawn({
            let (writer, row) = (writer.clone(), row.clone());
            async move { writer.insert_messages(vec![row], Vec::new()).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!commit.is_finished(), "the commit neither failed nor went around the lock");
        other.execute_batch("COMMIT").unwrap();
        assert_eq!(commit.await.unwrap(), Ok(Vec::new()));
        assert!(messages::Entity::find_by_id(row.id).one(&db).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn no_writer_for_an_in_memory_database() {
        let db = sea_orm::Database::connect("sqlite::memory:").await.unwrap();
        assert!(SqliteWriter::for_database(&db).is_none());
    }
}
