//! Opening a database that must already exist and be migrated, without changing it.
//!
//! Only `serve` and `migrate` create a database or apply migrations. Every other command
//! (`stats`, `retry`, …) opens with [`open_existing`]: a mistyped `DATABASE_URL` then gives an
//! error that says so, instead of a fresh empty database that reports zero events, and a
//! binary newer than the schema says to run `payhook migrate` instead of migrating behind the
//! operator's back.
//!
//! The check reads the migrations table itself: diesel's `MigrationHarness` creates that
//! table when asked what is pending, which would be a write.

use std::path::Path;

use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::sql_types::{BigInt, Text};
use diesel::sqlite::Sqlite;
use diesel::RunQueryDsl;

use super::{
    Conn, DatabaseUrl, Pool, PoolOptions, StoreError, StoreResult, POSTGRES_MIGRATIONS,
    SQLITE_MIGRATIONS,
};
use crate::with_conn;

/// Why an existing database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "there is no database at {0}: check DATABASE_URL, or run `payhook migrate` to create it"
    )]
    Missing(String),
    #[error(
        "the database {0} has no payhook schema (it is empty or another application's): check \
         DATABASE_URL, or run `payhook migrate` to create the schema"
    )]
    Empty(String),
    #[error(
        "the database {url} is behind this payhook ({pending} migrations pending): run `payhook \
         migrate`"
    )]
    Behind { url: String, pending: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Connects to the database at `url` if it exists and carries every embedded migration;
/// creates and changes nothing.
pub fn open_existing(url: &DatabaseUrl, options: PoolOptions) -> Result<Pool, OpenError> {
    let pool = match url {
        DatabaseUrl::Sqlite(path) => {
            if !path.is_file() {
                return Err(OpenError::Missing(url.to_string()));
            }
            // `mode=rw`: should the file vanish after the check, SQLite fails instead of
            // creating an empty one.
            Pool::sqlite(&read_write_uri(path), options)?
        }
        DatabaseUrl::Postgres(_) => Pool::connect(url, options)?,
    };
    let mut conn = pool.get()?;
    match pending_migrations(&mut conn)? {
        None => Err(OpenError::Empty(url.to_string())),
        Some(0) => {
            drop(conn);
            Ok(pool)
        }
        Some(pending) => Err(OpenError::Behind {
            url: url.to_string(),
            pending,
        }),
    }
}

/// How many embedded migrations the database lacks; `None` if it was never migrated (no
/// migrations table). Read-only.
pub fn pending_migrations(conn: &mut Conn) -> StoreResult<Option<usize>> {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    #[derive(diesel::QueryableByName)]
    struct Version {
        #[diesel(sql_type = Text)]
        version: String,
    }
    let exists = match conn {
        Conn::Sqlite(c) => diesel::sql_query(
            "SELECT count(*) AS n FROM sqlite_master \
             WHERE type = 'table' AND name = '__diesel_schema_migrations'",
        )
        .get_result::<Count>(&mut **c)?,
        Conn::Postgres(c) => diesel::sql_query(
            "SELECT count(*) AS n FROM pg_catalog.pg_tables \
             WHERE schemaname = current_schema() AND tablename = '__diesel_schema_migrations'",
        )
        .get_result::<Count>(&mut **c)?,
    };
    if exists.n == 0 {
        return Ok(None);
    }
    let applied: Vec<String> = with_conn!(conn, c =>
        diesel::sql_query("SELECT version FROM __diesel_schema_migrations").load::<Version>(c))?
    .into_iter()
    .map(|v| v.version)
    .collect();
    let embedded = embedded_versions(conn)?;
    Ok(Some(
        embedded.iter().filter(|v| !applied.contains(v)).count(),
    ))
}

/// The versions of the migrations built into this binary for `conn`'s backend.
fn embedded_versions(conn: &Conn) -> StoreResult<Vec<String>> {
    let migration_error =
        |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Migration(e.to_string());
    Ok(match conn {
        Conn::Sqlite(_) => MigrationSource::<Sqlite>::migrations(&SQLITE_MIGRATIONS)
            .map_err(migration_error)?
            .iter()
            .map(|m| m.name().version().to_string())
            .collect(),
        Conn::Postgres(_) => MigrationSource::<Pg>::migrations(&POSTGRES_MIGRATIONS)
            .map_err(migration_error)?
            .iter()
            .map(|m| m.name().version().to_string())
            .collect(),
    })
}

/// `file:<path>?mode=rw`, with the characters a URI gives meaning to percent-encoded.
fn read_write_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?mode=rw");
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_escape_what_sqlite_would_read_as_syntax() {
        assert_eq!(
            read_write_uri(Path::new("/tmp/a%b?c#d.db")),
            "file:/tmp/a%25b%3fc%23d.db?mode=rw"
        );
    }

    fn refusal(url: &DatabaseUrl) -> OpenError {
        match open_existing(url, PoolOptions::default()) {
            Ok(_) => panic!("{url} opened"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_missing_file_is_not_created() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nested/none.sqlite3");
        let url = DatabaseUrl::Sqlite(path.clone());
        let err = refusal(&url);
        assert!(matches!(err, OpenError::Missing(_)), "{err}");
        assert!(err.to_string().contains("payhook migrate"));
        assert!(!path.exists() && !dir.path().join("nested").exists());
    }

    #[test]
    fn an_empty_or_outdated_file_is_reported_and_left_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("x.sqlite3");
        std::fs::write(&path, b"").expect("empty file");
        let url = DatabaseUrl::Sqlite(path.clone());
        let err = refusal(&url);
        assert!(matches!(err, OpenError::Empty(_)), "{err}");

        let pool = Pool::connect(&url, PoolOptions::default()).expect("pool");
        pool.migrate().expect("migrate");
        assert!(open_existing(&url, PoolOptions::default()).is_ok());
        let mut conn = pool.get().expect("conn");
        with_conn!(&mut conn, c => diesel::sql_query(
            "DELETE FROM __diesel_schema_migrations WHERE version = \
             (SELECT max(version) FROM __diesel_schema_migrations)"
        ).execute(c))
        .expect("forget one migration");
        let err = refusal(&url);
        assert!(err
            .to_string()
            .contains("1 migrations pending): run `payhook migrate`"));
        assert_eq!(pending_migrations(&mut conn).expect("count"), Some(1));
    }
}
