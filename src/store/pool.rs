//! The connection pool for whichever backend `DATABASE_URL` names: SQLite's per-connection
//! settings, the in-process write gate, quiet reporting of connection failures, migrations.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection};
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::file_identity::DatabaseFile;
use super::{Conn, DatabaseUrl, Durability, StoreError, StoreResult};

pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// The PostgreSQL advisory lock key held while migrating ("payhook" in ASCII).
const MIGRATION_LOCK: i64 = 0x0070_6179_686f_6f6b;

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
/// to 100 ms) instead of waking when the lock is released, which under load multiplies
/// admission's tail latency (BENCHMARKS.md, "What was tuned"). A mutex wakes the next writer
/// the moment the previous one commits. `busy_timeout` still covers other processes.
///
/// The gate also counts who is waiting for it, so that a long writer (the processor) can
/// commit early and let a short one (an admission batch) through; see
/// [`Pool::writers_waiting`].
#[derive(Clone, Default)]
pub struct WriteGate {
    lock: Arc<Mutex<()>>,
    waiting: Arc<AtomicUsize>,
    /// The file the pool opened, checked before each write commits (see [`DatabaseFile`]).
    /// `None` for pools of commands that only read or run once.
    file: Option<Arc<DatabaseFile>>,
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
                let mut pool = Self::sqlite(&path.to_string_lossy(), options)?;
                // Building the pool opened connections, so the file exists and is the one
                // they hold.
                let file = DatabaseFile::remember(path).map_err(|source| {
                    StoreError::FileGone(format!("{}: {source}", path.display()))
                })?;
                if let Self::Sqlite(_, gate) = &mut pool {
                    gate.file = Some(Arc::new(file));
                }
                Ok(pool)
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
    pub(super) fn sqlite(target: &str, options: PoolOptions) -> StoreResult<Self> {
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
        let (_turn, file) = match self {
            Self::Sqlite(_, gate) => {
                gate.waiting.fetch_add(1, Ordering::SeqCst);
                let turn = gate.lock.lock().unwrap_or_else(PoisonError::into_inner);
                gate.waiting.fetch_sub(1, Ordering::SeqCst);
                (Some(turn), gate.file.as_deref())
            }
            Self::Postgres(_) => (None, None),
        };
        conn.transaction(|conn| {
            let value = f(conn)?;
            // Last thing before the commit: a file that is gone gets nothing more.
            if let Some(file) = file {
                file.check().map_err(E::from)?;
            }
            Ok(value)
        })
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
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
