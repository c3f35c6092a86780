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
//! may change the plan, so it re-prepares the statement whenever the binding changes, which is
//! on every call. Measured with `sqlite3_stmt_status(SQLITE_STMTSTATUS_REPREPARE)`: 5 re-prepares in 5
//! calls with `LIMIT ?`, none with the same query unlimited; it was a fifth of the
//! processor's CPU time. The lookups are by unique keys, so the limit bought nothing.

mod blocking;
pub mod checkouts;
pub mod customers;
pub mod events;
mod open;
pub mod outbox;
pub mod payment_methods;
mod prepared;
pub mod schema;

pub use open::{open_existing, pending_migrations, OpenError};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, PooledConnection};
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub use blocking::{BackgroundThread, JobError};

pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// The PostgreSQL advisory lock key held while migrating ("payhook" in ASCII).
const MIGRATION_LOCK: i64 = 0x0070_6179_686f_6f6b;

pub use crate::config::DatabaseUrl;

/// Durability of SQLite commits. PostgreSQL follows its server's `synchronous_commit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// fsync on every commit: an acknowledged event survives power loss (the default).
    Full,
    /// fsync at WAL checkpoints only: survives a crash of payhook, may lose the last
    /// acknowledged events on power loss or an OS crash.
    Normal,
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

/// SQLite settings applied to every pooled connection.
#[derive(Debug, Clone, Copy)]
struct SqliteSetup {
    durability: Durability,
}

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for SqliteSetup {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        let synchronous = match self.durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        // WAL lets readers run beside the single writer; busy_timeout makes a second writer
        // wait instead of failing; foreign keys are off by default in SQLite. busy_timeout
        // comes first: `journal_mode = WAL` itself needs a lock, and without the timeout a
        // new connection opened while another one writes fails with "database is locked".
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
             PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON;"
        ))
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Reports the pool's failed connection attempts at WARN, at most once per
/// [`PoolErrors::EVERY`] with how many were folded into that line.
///
/// r2d2's default handler logs every failed attempt at ERROR: while PostgreSQL is down that
/// is several lines a second per pool, which buries the one line that matters (and pages
/// whoever alerts on ERROR for an outage the service already survives: deliveries get 503
/// and are retried by Stripe, and the pool reconnects by itself).
#[derive(Debug, Default)]
struct PoolErrors {
    last_logged: Mutex<Option<std::time::Instant>>,
    folded: AtomicUsize,
}

impl PoolErrors {
    const EVERY: Duration = Duration::from_secs(10);
}

impl<E: std::fmt::Display> diesel::r2d2::HandleError<E> for PoolErrors {
    fn handle_error(&self, error: E) {
        let mut last = self
            .last_logged
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = std::time::Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < Self::EVERY) {
            self.folded.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(now);
        let folded = self.folded.swap(0, Ordering::Relaxed);
        log::warn!(
            "database connection failed (retrying in the background; {folded} more failures \
             since the last report): {error}"
        );
    }
}

/// A pool of connections to whichever backend `DATABASE_URL` named.
#[derive(Clone)]
pub enum Pool {
    Sqlite(
        diesel::r2d2::Pool<ConnectionManager<SqliteConnection>>,
        WriteGate,
    ),
    Postgres(diesel::r2d2::Pool<ConnectionManager<PgConnection>>),
}

/// Serialises this process's SQLite write transactions (admission, processor, sweeper).
///
/// SQLite admits one writer at a time anyway; without the gate a second writer learns of the
/// first through `SQLITE_BUSY` and SQLite's busy handler, which sleeps in growing steps (up
/// to 100 ms) instead of waking when the lock is released. Measured under load that turned a
/// 2 ms admission commit into a p99 of hundreds of milliseconds. A mutex wakes the next writer
/// the moment the previous one commits. `busy_timeout` still covers other processes.
///
/// The gate also counts who is waiting for it, so that a long writer (the processor) can
/// commit early and let a short one (an admission batch) through; see
/// [`Pool::writers_waiting`].
#[derive(Clone, Default)]
pub struct WriteGate {
    lock: Arc<Mutex<()>>,
    waiting: Arc<AtomicUsize>,
}

/// One pooled connection.
pub enum Conn {
    Sqlite(PooledConnection<ConnectionManager<SqliteConnection>>),
    Postgres(PooledConnection<ConnectionManager<PgConnection>>),
}

/// Runs `$body` with `$c` bound to the concrete `&mut SqliteConnection` or `&mut PgConnection`,
/// so the same diesel code is compiled for both backends.
#[macro_export]
macro_rules! with_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::store::Conn::Sqlite(pooled) => {
                let $c: &mut ::diesel::sqlite::SqliteConnection = &mut *pooled;
                $body
            }
            $crate::store::Conn::Postgres(pooled) => {
                let $c: &mut ::diesel::pg::PgConnection = &mut *pooled;
                $body
            }
        }
    };
}

/// Pool tuning.
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    pub max_size: u32,
    pub durability: Durability,
    pub connect_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_size: 8,
            durability: Durability::Full,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl Pool {
    /// Connects (creating the SQLite file and its directory if needed). Does not migrate.
    pub fn connect(url: &DatabaseUrl, options: PoolOptions) -> StoreResult<Self> {
        match url {
            DatabaseUrl::Sqlite(path) => {
                create_parent_dir(path)?;
                Self::sqlite(&path.to_string_lossy(), options)
            }
            DatabaseUrl::Postgres(url) => {
                let manager = ConnectionManager::<PgConnection>::new(url.as_str());
                let pool = diesel::r2d2::Pool::builder()
                    .max_size(options.max_size)
                    .connection_timeout(options.connect_timeout)
                    .error_handler(Box::new(PoolErrors::default()))
                    .build(manager)?;
                Ok(Self::Postgres(pool))
            }
        }
    }

    /// A SQLite pool on `target`: a path, or a `file:` URI with open flags (see [`open`]).
    fn sqlite(target: &str, options: PoolOptions) -> StoreResult<Self> {
        let manager = ConnectionManager::<SqliteConnection>::new(target);
        let pool = diesel::r2d2::Pool::builder()
            .max_size(options.max_size)
            .connection_timeout(options.connect_timeout)
            .connection_customizer(Box::new(SqliteSetup {
                durability: options.durability,
            }))
            .error_handler(Box::new(PoolErrors::default()))
            .build(manager)?;
        Ok(Self::Sqlite(pool, WriteGate::default()))
    }

    pub fn get(&self) -> StoreResult<Conn> {
        Ok(match self {
            Self::Sqlite(pool, _) => Conn::Sqlite(pool.get()?),
            Self::Postgres(pool) => Conn::Postgres(pool.get()?),
        })
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(..) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// Runs `f` in a write transaction on a pooled connection, behind the [`WriteGate`] on
    /// SQLite. The connection is taken before the gate, so waiting for the pool never
    /// blocks another writer.
    pub fn write<T, E>(&self, f: impl FnOnce(&mut Conn) -> Result<T, E>) -> Result<T, E>
    where
        E: From<diesel::result::Error> + From<StoreError>,
    {
        let mut conn = self.get().map_err(E::from)?;
        // A panic while holding the gate leaves no state behind it (the transaction rolled
        // back with the connection), so a poisoned gate is still a good gate.
        let _turn = match self {
            Self::Sqlite(_, gate) => {
                gate.waiting.fetch_add(1, Ordering::SeqCst);
                let turn = gate.lock.lock().unwrap_or_else(PoisonError::into_inner);
                gate.waiting.fetch_sub(1, Ordering::SeqCst);
                Some(turn)
            }
            Self::Postgres(_) => None,
        };
        conn.transaction(f)
    }

    /// Whether another writer of this process is waiting for the SQLite write lock. A long
    /// transaction checks this between units of work and commits early when it is true.
    /// Always false on PostgreSQL, where writers do not queue behind one lock.
    pub fn writers_waiting(&self) -> bool {
        match self {
            Self::Sqlite(_, gate) => gate.waiting.load(Ordering::SeqCst) > 0,
            Self::Postgres(_) => false,
        }
    }

    /// Applies pending embedded migrations; returns how many ran.
    pub fn migrate(&self) -> StoreResult<usize> {
        let mut conn = self.get()?;
        let applied = match &mut conn {
            Conn::Sqlite(c) => c
                .run_pending_migrations(SQLITE_MIGRATIONS)
                .map(|v| v.len())
                .map_err(|e| StoreError::Migration(e.to_string()))?,
            Conn::Postgres(c) => {
                // Several instances starting together would otherwise race to create the
                // same tables. The session lock waits for whoever migrates first; the others
                // then find nothing pending. It ends with the session if we die holding it.
                c.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))?;
                let result = c
                    .run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map(|v| v.len())
                    .map_err(|e| StoreError::Migration(e.to_string()));
                c.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))?;
                result?
            }
        };
        Ok(applied)
    }
}

fn create_parent_dir(path: &Path) -> StoreResult<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory {
                path: dir.to_owned(),
                source,
            })
        }
        _ => Ok(()),
    }
}

impl Conn {
    /// `SELECT 1`: does the database answer on this connection?
    pub fn ping(&mut self) -> StoreResult<()> {
        with_conn!(self, c => c.batch_execute("SELECT 1"))?;
        Ok(())
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// Runs `f` in a write transaction (a savepoint when nested). On SQLite the outermost one
    /// is `BEGIN IMMEDIATE`: taking the write lock up front avoids the SQLITE_BUSY a deferred
    /// transaction gets when it upgrades from reading to writing beside another writer.
    pub fn transaction<T, E>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, E>) -> Result<T, E>
    where
        E: From<diesel::result::Error>,
    {
        with_conn!(&mut *self, c => {
            let depth = AnsiTransactionManager::transaction_manager_status_mut(c)
                .transaction_depth()
                .map_err(E::from)?;
            match (depth, c.is_sqlite()) {
                (None, true) => AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE"),
                _ => AnsiTransactionManager::begin_transaction(c),
            }
            .map_err(E::from)?
        });
        match f(self) {
            Ok(value) => {
                with_conn!(&mut *self, c => AnsiTransactionManager::commit_transaction(c))
                    .map_err(E::from)?;
                Ok(value)
            }
            Err(err) => {
                // The original error matters more than a failed rollback; a broken connection
                // is detected and discarded by the pool.
                let _ =
                    with_conn!(&mut *self, c => AnsiTransactionManager::rollback_transaction(c));
                Err(err)
            }
        }
    }
}

impl Conn {
    /// Runs `f` in a savepoint of the current transaction, so that its writes are undone
    /// alone when it fails and the rest of the transaction goes on.
    ///
    /// On SQLite the savepoint statements are [`prepared::Fixed`] (diesel sends its own
    /// through `sqlite3_exec`, parsing them every time: a tenth of the processor's CPU at one
    /// savepoint per event). PostgreSQL keeps diesel's nested transaction, whose bookkeeping
    /// also tracks an aborted transaction's state there.
    pub fn savepoint<T, E>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, E>) -> Result<T, E>
    where
        E: From<diesel::result::Error>,
    {
        struct Savepoint;
        struct Release;
        struct RollbackTo;
        const RELEASE: &str = "RELEASE payhook_step";
        fn run<K: 'static>(conn: &mut Conn, sql: &'static str) -> diesel::QueryResult<usize> {
            use diesel::RunQueryDsl;
            with_conn!(conn, c => prepared::Fixed::<K>::new().sql(sql).execute(c))
        }
        if self.is_postgres() {
            return self.transaction(f);
        }
        run::<Savepoint>(self, "SAVEPOINT payhook_step")?;
        match f(self) {
            Ok(value) => {
                run::<Release>(self, RELEASE)?;
                Ok(value)
            }
            Err(err) => {
                // As in `transaction`: the original error matters more than a failed undo,
                // and an undo that failed leaves the outer transaction to fail its commit.
                let _ = run::<RollbackTo>(self, "ROLLBACK TO payhook_step");
                let _ = run::<Release>(self, RELEASE);
                Err(err)
            }
        }
    }
}

/// Lets [`with_conn!`] bodies ask which backend they run on without naming the type.
trait IsSqlite {
    fn is_sqlite(&self) -> bool;
}
impl IsSqlite for SqliteConnection {
    fn is_sqlite(&self) -> bool {
        true
    }
}
impl IsSqlite for PgConnection {
    fn is_sqlite(&self) -> bool {
        false
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_errors_are_reported_once_per_interval_and_counted_between() {
        use diesel::r2d2::HandleError;
        let errors = PoolErrors::default();
        for _ in 0..5 {
            errors.handle_error("connection refused");
        }
        assert_eq!(
            errors.folded.load(Ordering::Relaxed),
            4,
            "one reported, four folded"
        );
        // Once the interval has passed the next failure is reported, with the count.
        *errors.last_logged.lock().expect("lock") =
            std::time::Instant::now().checked_sub(PoolErrors::EVERY);
        errors.handle_error("connection refused");
        assert_eq!(errors.folded.load(Ordering::Relaxed), 0);
    }
}
