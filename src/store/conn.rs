//! One pooled connection of either backend, and the transactions and savepoints every
//! repository function runs in.

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, PooledConnection};
use diesel::sqlite::SqliteConnection;

use super::prepared;
use super::StoreResult;

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

impl Conn {
    /// `SELECT 1`: does the database answer on this connection?
    pub fn ping(&mut self) -> StoreResult<()> {
        with_conn!(self, c => c.batch_execute("SELECT 1"))?;
        Ok(())
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// For the rest of the current transaction on PostgreSQL, plans read and write rows
    /// through their indexes rather than by scanning a table (`SET LOCAL enable_seqscan =
    /// off`); nothing on SQLite, whose planner uses an index whenever one fits.
    ///
    /// For a transaction made only of lookups and writes by key in bounded batches, such as
    /// applying a claimed batch: locking a batch's checkouts by intent (`= ANY($1)` of the
    /// batch's intents) and updating them from `unnest` were planned as a scan of `checkouts`
    /// (a hash join for the update) whenever the table had no statistics yet, as after a
    /// first start or a restore, before autovacuum analyses it: 489 scans reading 3.96 M rows
    /// in one 100 000-event drain (`pg_stat_user_tables`, BENCHMARKS.md). A statement no
    /// index serves still scans; the setting only takes a scan off the list when an index
    /// fits.
    pub fn keyed_access_only(&mut self) -> StoreResult<()> {
        if let Self::Postgres(c) = self {
            c.batch_execute("SET LOCAL enable_seqscan = off")?;
        }
        Ok(())
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
    /// through `sqlite3_exec`, parsing them every time, and the processor takes one savepoint
    /// per event). PostgreSQL keeps diesel's nested transaction, whose bookkeeping
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
