//! The actor runtime: one supervised ractor actor per active channel, one session actor per
//! WebSocket, presence, and the `Hub` that finds them.
//!
//! Nothing here knows about HTTP. Frames are JSON text built once and shared as
//! `Utf8Bytes` (a reference-counted buffer) with every recipient.

pub mod channel;
pub mod cluster;
pub mod community;
pub mod config;
pub mod db;
pub mod elsewhere;
pub mod error_code;
pub mod history;
pub mod hub;
pub mod kinds;
pub mod metrics;
pub mod outbox;
pub mod presence;
pub mod protocol;
pub mod registry;
pub mod roles;
pub mod roster;
pub mod session;
pub mod shared;
pub mod sqlite_writer;
pub mod store;
pub mod supervisor;
pub mod users;
pub mod wire_time;

pub use config::HubConfig;
pub use hub::Hub;

/// Why the live side could not do something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubError {
    /// The channel (or other target) does not exist.
    NotFound,
    /// The database is unreachable; retry later.
    Unavailable,
    /// The hub is shutting down.
    Stopped,
    Internal(String),
}

impl HubError {
    pub fn from_db(err: sea_orm::DbErr) -> Self {
        if is_unavailable(&err) { Self::Unavailable } else { Self::Internal(err.to_string()) }
    }
}

impl std::fmt::Display for HubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound => write!(f, "not found"),
            Self::Unavailable => write!(f, "database unavailable"),
            Self::Stopped => write!(f, "shutting down"),
            Self::Internal(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for HubError {}

/// True when a database error means "try again later" rather than "bad query": the database
/// cannot be reached, or it stayed busy with concurrent writers (see [`db::is_contention`]).
pub fn is_unavailable(err: &sea_orm::DbErr) -> bool {
    use sea_orm::{DbErr, RuntimeErr, sqlx};
    if db::is_contention(err) {
        return true;
    }
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => matches!(
            e.as_ref(),
            sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Tls(_)
                | sqlx::Error::WorkerCrashed
        ),
        _ => false,
    }
}
