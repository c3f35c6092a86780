//! Database access: the connection pool for either backend, transactions, migrations.
//!
//! payhook runs on SQLite (embedded default) or PostgreSQL, chosen at run time by
//! `DATABASE_URL`. Rather than diesel's `MultiConnection` (which limits the query DSL to what
//! every backend shares, and so rules out `ON CONFLICT` and `FOR UPDATE SKIP LOCKED`), [`Conn`]
//! is an enum of the two concrete connections and [`with_conn!`] compiles each query once per
//! backend. Repository functions take `&mut Conn`, never the pool, so callers compose them in
//! one transaction.
//!
//! Lookups of one row use `get_result` (the first row of the result), never diesel's
//! `first()`: that adds `LIMIT ?`, and SQLite's planner treats a bound LIMIT as a value that
//! may change the plan, so it re-prepares the statement on every call (BENCHMARKS.md has the
//! measurement). The lookups are by unique keys, so the limit buys nothing.
//!
//! - `pool`: the pool for either backend, the SQLite write gate, migrations.
//! - `conn`: one connection, transactions and savepoints, [`with_conn!`].
//! - `blocking`: the one way from async code to blocking database work.
//! - one module per table (repositories; `app_checkouts`: what the app asked for), `schema`,
//!   `prepared` (statements prepared once); `listing`: the pages and counts operators read
//!   (admin API, CLI, `/metrics`).

pub mod app_checkouts;
mod blocking;
pub mod checkouts;
pub mod checkpointer;
mod conn;
pub mod customers;
pub mod events;
mod file_identity;
pub mod listing;
mod open;
pub mod outbox;
pub mod payment_methods;
mod pool;
mod prepared;
pub mod reconcile;
pub mod schema;

use std::path::PathBuf;

pub use blocking::{BackgroundThread, JobError};
pub use conn::Conn;
pub use open::{open_existing, pending_migrations, OpenError};
pub use pool::{
    init_libpq_tls, Commit, Pool, PoolOptions, WalCheckpoints, WriteGate, POSTGRES_MIGRATIONS,
    SQLITE_MIGRATIONS,
};

pub use crate::config::DatabaseUrl;

/// Rows per multi-row statement: far below PostgreSQL's 65 535 bind parameters for the
/// widest row, whatever batch size is configured.
pub(crate) const ROWS_PER_STATEMENT: usize = 1000;

/// Durability of SQLite commits. PostgreSQL follows its server's `synchronous_commit`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// fsync on every commit: an acknowledged event survives power loss (the default).
    #[default]
    Full,
    /// fsync at WAL checkpoints only: survives a crash of payhook, may lose the last
    /// acknowledged events on power loss or an OS crash.
    Normal,
}

impl Durability {
    /// The value of SQLite's `PRAGMA synchronous` that gives it.
    pub fn sqlite_synchronous(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Normal => "NORMAL",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database connection pool: {0}")]
    Pool(#[from] diesel::r2d2::PoolError),
    #[error("database: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("database connection: {0}")]
    Connection(#[from] diesel::ConnectionError),
    #[error("migrations: {0}")]
    Migration(String),
    #[error("creating the database directory {path}: {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("concurrent change, try again: {0}")]
    Conflict(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// A closure given to [`Pool::run`] or [`Pool::run_on`] panicked or was lost.
    #[error("{0}")]
    Task(String),
    /// The SQLite file the pool opened is no longer the file its path names.
    #[error("{0}")]
    FileGone(String),
    /// The [`BackgroundThread`] a closure was sent to has stopped.
    #[error("the background thread has stopped")]
    ThreadStopped,
}

impl StoreError {
    /// A clash between concurrent transactions that says nothing about the data: PostgreSQL
    /// chose this transaction as a deadlock victim or could not serialize it, or a row it
    /// meant to create was created concurrently. Trying again soon succeeds; it is not a
    /// failure of the event being applied.
    pub fn is_contention(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error};
        match self {
            Self::Conflict(_) => true,
            Self::Query(Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _)) => true,
            // diesel maps SQLSTATE 40P01 (deadlock_detected) to `Unknown`; the server's
            // message is the only mark left (English unless lc_messages says otherwise).
            Self::Query(Error::DatabaseError(_, info)) => {
                info.message().contains("deadlock detected")
            }
            _ => false,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Seconds since the epoch.
pub fn now_secs() -> i64 {
    now_ms() / 1000
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
