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
    wal_checkpoints: WalCheckpoints,
}

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for SqliteSetup {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        let synchronous = self.durability.sqlite_synchronous();
        // WAL lets readers run beside the single writer; busy_timeout makes a second writer
        // wait instead of failing; foreign keys are off by default in SQLite. busy_timeout
        // comes first: `journal_mode = WAL` itself needs a lock, and without the timeout a
        // new connection opened while another one writes fails with "database is locked".
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
             PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON;"
        ))
        .map_err(diesel::r2d2::Error::QueryError)?;
        if self.wal_checkpoints == WalCheckpoints::Background {
            conn.batch_execute("PRAGMA wal_autocheckpoint = 0")
                .map_err(diesel::r2d2::Error::QueryError)?;
        }
        Ok(())
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
    /// What a durable commit means on this pool's connections (restored after a deferred
    /// one, see [`Commit::Deferred`]).
    durability: Durability,
    lock: Arc<Mutex<()>>,
    waiting: Arc<AtomicUsize>,
    /// The file the pool opened, checked before each write commits (see [`DatabaseFile`]).
    /// `None` for pools of commands that only read or run once.
    file: Option<Arc<DatabaseFile>>,
}

/// How a write transaction's commit is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Durable when the commit returns, as the pool's durability says (SQLite `FULL`: an
    /// fsync of the WAL; PostgreSQL: the server's `synchronous_commit`).
    Durable,
    /// On SQLite with `FULL` durability: committed with `synchronous = NORMAL`, so atomic at
    /// once and durable with the next WAL fsync of any writer, which covers every frame
    /// written before it. A crash of the machine before then loses the transaction whole,
    /// never part of it. For the processor, whose work is derived from events that are
    /// already durable: a lost apply leaves its events `pending`, to be applied again, and
    /// whatever acts on an applied result outside the database (the outbox, notifications)
    /// first commits its claim durably, which makes the result durable before anyone relies
    /// on it. The fsync it saves was taken inside the write lock, where admission waited
    /// for it (BENCHMARKS.md, 30 November). Elsewhere the same as `Durable`: PostgreSQL has
    /// no write lock, and asynchronous commits there made admission's own WAL flushes
    /// larger (p99 at 1 000 deliveries/s 13–16 ms against 8–10 ms, same minutes).
    Deferred,
}

/// Pool tuning.
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    pub max_size: u32,
    pub durability: Durability,
    pub connect_timeout: Duration,
    /// Who checkpoints SQLite's WAL (see [`WalCheckpoints`]).
    pub wal_checkpoints: WalCheckpoints,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_size: 8,
            durability: Durability::Full,
            connect_timeout: Duration::from_secs(5),
            wal_checkpoints: WalCheckpoints::OnCommit,
        }
    }
}

/// Who copies SQLite's WAL back into the database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalCheckpoints {
    /// SQLite's own: the commit that takes the WAL past 1 000 pages checkpoints it, inside
    /// the transaction's write lock (and so inside payhook's write gate). For commands that
    /// run briefly.
    OnCommit,
    /// [`Pool::checkpoint_wal`], called by `serve`'s checkpointer: commits never checkpoint.
    /// The autocheckpoint copied the WAL and synced the database file while admission waited
    /// for the gate; at 1 000 deliveries/s that was the tail of the acknowledgement latency
    /// (BENCHMARKS.md, 1 December).
    Background,
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
                init_libpq_tls();
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
                wal_checkpoints: options.wal_checkpoints,
            }))
            .error_handler(Box::new(PoolErrors::default()))
            .build(manager)?;
        Ok(Self::Sqlite(
            pool,
            WriteGate {
                durability: options.durability,
                ..WriteGate::default()
            },
        ))
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
        self.write_with(Commit::Durable, f)
    }

    /// [`Pool::write`] for work that is one statement on PostgreSQL: there it runs without
    /// `BEGIN` and `COMMIT` (a statement is atomic and, committing by itself, durable), two
    /// round trips fewer. On SQLite, where `f` may run several statements and the write gate
    /// is needed anyway, the same as [`Pool::write`].
    pub fn write_statement<T, E>(&self, f: impl FnOnce(&mut Conn) -> Result<T, E>) -> Result<T, E>
    where
        E: From<diesel::result::Error> + From<StoreError>,
    {
        match self {
            Self::Postgres(_) => f(&mut self.get().map_err(E::from)?),
            Self::Sqlite(..) => self.write(f),
        }
    }

    /// [`Pool::write`] with the commit's durability chosen (see [`Commit`]).
    pub fn write_with<T, E>(
        &self,
        commit: Commit,
        f: impl FnOnce(&mut Conn) -> Result<T, E>,
    ) -> Result<T, E>
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
        // Only a FULL pool has an fsync to skip; `synchronous` is per connection.
        let unsynced = match (&mut conn, self) {
            (Conn::Sqlite(c), Self::Sqlite(_, gate))
                if commit == Commit::Deferred && gate.durability == Durability::Full =>
            {
                c.batch_execute("PRAGMA synchronous = NORMAL")
                    .map_err(E::from)?;
                true
            }
            _ => false,
        };
        let result = conn.transaction(|conn| {
            let value = f(conn)?;
            // Last thing before the commit: a file that is gone gets nothing more.
            if let Some(file) = file {
                file.check().map_err(E::from)?;
            }
            Ok(value)
        });
        if let (true, Conn::Sqlite(c)) = (unsynced, &mut conn) {
            // Back to the pool as every other connection is, whatever the transaction did.
            c.batch_execute("PRAGMA synchronous = FULL")
                .map_err(E::from)?;
        }
        result
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// Copies SQLite's WAL back into the database file, almost all of it outside the write
    /// gate, so that no delivery waits for the copying (see [`WalCheckpoints::Background`]).
    ///
    /// A checkpoint beside running writers copies what the WAL held when it began, while they
    /// append more; SQLite starts the WAL over only when a write begins with every frame
    /// copied, which then never happens and the WAL grows without end (BENCHMARKS.md, 30
    /// November). So a second pass runs holding the gate: no writer of this process appends
    /// meanwhile, it copies the few frames written during the first, and the next write
    /// starts the WAL over. Each pass syncs the database file before the WAL may be reused,
    /// as SQLite's own checkpoints do. Nothing to do on PostgreSQL or with an empty WAL.
    /// Returns how many frames the WAL held when the pass under the gate finished, all
    /// copied (0 on PostgreSQL or with an empty WAL).
    pub fn checkpoint_wal(&self) -> StoreResult<i64> {
        let Self::Sqlite(_, gate) = self else {
            return Ok(0);
        };
        let mut conn = self.get()?;
        let first = passive_checkpoint(&mut conn)?;
        if first.log == 0 {
            return Ok(0);
        }
        let _turn = gate.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let last = passive_checkpoint(&mut conn)?;
        Ok(last.log)
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

/// The row of `PRAGMA wal_checkpoint`.
#[derive(diesel::QueryableByName)]
struct Checkpointed {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    busy: i32,
    /// Frames in the WAL (all copied when the checkpoint was not busy).
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    log: i64,
}

/// One `PASSIVE` checkpoint: copies what it can without waiting for anyone.
fn passive_checkpoint(conn: &mut Conn) -> StoreResult<Checkpointed> {
    use diesel::RunQueryDsl;
    let Conn::Sqlite(c) = conn else {
        unreachable!("checkpoints are SQLite's")
    };
    let row: Checkpointed =
        diesel::sql_query("PRAGMA wal_checkpoint(PASSIVE)").get_result(&mut **c)?;
    if row.busy != 0 {
        log::debug!("a WAL checkpoint could not run: another process holds the checkpoint lock");
    }
    Ok(row)
}

/// Initialises the OpenSSL that libpq is built with (see README, *Dependencies*) before libpq
/// does, without the clean-up OpenSSL otherwise registers with `atexit`. That clean-up frees
/// OpenSSL's global state while the process exits, under any thread still reading a TLS
/// connection (a pool's connection to PostgreSQL with `sslmode=prefer` or stricter), which
/// then touches freed memory: the way a test binary of this project once ended with
/// SIGSEGV after every test had passed. rust-openssl initialises OpenSSL the same way for
/// the same reason; the memory is the operating system's to reclaim at exit anyway.
/// Idempotent; libpq's own initialisation afterwards keeps these options.
pub fn init_libpq_tls() {
    openssl_sys::init();
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
    use diesel::RunQueryDsl;

    use super::*;

    fn synchronous(conn: &mut Conn) -> i32 {
        #[derive(diesel::QueryableByName)]
        struct Level {
            #[diesel(sql_type = diesel::sql_types::Integer)]
            synchronous: i32,
        }
        let Conn::Sqlite(c) = conn else {
            panic!("a SQLite connection")
        };
        diesel::sql_query("PRAGMA synchronous")
            .get_result::<Level>(&mut **c)
            .expect("pragma")
            .synchronous
    }

    const NORMAL: i32 = 1;
    const FULL: i32 = 2;

    /// A pool of one connection on a new file (so the connection a write used is the one
    /// looked at after it), and its temporary directory.
    fn one_connection(durability: Durability) -> (tempfile::TempDir, Pool) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = DatabaseUrl::Sqlite(dir.path().join("db.sqlite3"));
        let options = PoolOptions {
            max_size: 1,
            durability,
            ..PoolOptions::default()
        };
        (dir, Pool::connect(&url, options).expect("pool"))
    }

    fn synchronous_during(pool: &Pool, commit: Commit) -> i32 {
        pool.write_with(commit, |conn| -> StoreResult<i32> { Ok(synchronous(conn)) })
            .expect("write")
    }

    #[test]
    fn a_deferred_commit_skips_the_fsync_for_its_own_transaction_only() {
        let (_dir, pool) = one_connection(Durability::Full);
        assert_eq!(synchronous_during(&pool, Commit::Deferred), NORMAL);
        assert_eq!(synchronous(&mut pool.get().expect("conn")), FULL);
        // Also when the transaction fails.
        let failed = pool.write_with(Commit::Deferred, |conn| -> StoreResult<()> {
            crate::with_conn!(conn, c => diesel::sql_query("SELECT * FROM no_such_table").execute(c))?;
            Ok(())
        });
        assert!(failed.is_err());
        assert_eq!(synchronous(&mut pool.get().expect("conn")), FULL);
        assert_eq!(synchronous_during(&pool, Commit::Durable), FULL);

        // A pool whose commits are not synced anyway stays as it is.
        let (_dir, pool) = one_connection(Durability::Normal);
        assert_eq!(synchronous_during(&pool, Commit::Deferred), NORMAL);
        assert_eq!(synchronous(&mut pool.get().expect("conn")), NORMAL);
    }

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
