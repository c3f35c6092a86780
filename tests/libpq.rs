//! libpq is compiled into payhook (pq-sys `bundled`, OpenSSL `vendored`), not taken from the
//! system. These check that the built-in libpq can do TLS, so a `DATABASE_URL` with
//! `sslmode=require` keeps working: a libpq built without OpenSSL refuses that URL with
//! `sslmode value "require" invalid when SSL support is not compiled in`.
//!
//! A separate test binary, not a module of `tests/api`: it needs no app, only the libpq that
//! every payhook binary links.

// A panic is the failure report in tests.
#![allow(clippy::unwrap_used)]

use std::io::Write;

use diesel::dsl::sql;
use diesel::pg::PgConnection;
use diesel::sql_types::Bool;
use diesel::{Connection, RunQueryDsl};

const NOT_COMPILED_IN: &str = "SSL support is not compiled in";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

/// Needs no server: libpq checks `sslmode` before it connects, so an unreachable port shows
/// whether TLS was compiled in.
#[test]
fn the_built_in_libpq_accepts_sslmode_require() {
    // Port 1: nothing listens there, so the connection is refused at once.
    let url = "postgres://payhook@127.0.0.1:1/payhook?sslmode=require&connect_timeout=5";
    let Err(err) = PgConnection::establish(url) else {
        panic!("something answered as PostgreSQL on 127.0.0.1:1");
    };
    let message = err.to_string();
    assert!(!message.contains(NOT_COMPILED_IN), "{message}");
    assert!(message.contains("Connection refused"), "{message}");
}

/// With the test server (`PAYHOOK_TEST_POSTGRES_URL`, default the local one): the session is
/// encrypted, or the server has no TLS and libpq says so (which it can only say with TLS
/// compiled in).
#[test]
fn sslmode_require_gives_an_encrypted_session() {
    let admin = std::env::var("PAYHOOK_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let url = with_param(&with_param(&admin, "connect_timeout=5"), "sslmode=require");
    match PgConnection::establish(&url) {
        Ok(mut conn) => {
            let encrypted: bool = diesel::select(sql::<Bool>(
                "(SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())",
            ))
            .get_result(&mut conn)
            .unwrap();
            assert!(encrypted, "sslmode=require gave a session without TLS");
        }
        Err(err) if err.to_string().contains("server does not support SSL") => {
            // Straight to stderr: the test harness captures eprintln! of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "libpq: the test server has no TLS; libpq's own TLS is shown by its refusal"
            );
        }
        Err(err) => {
            let why = err
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            assert!(!why.contains(NOT_COMPILED_IN), "{why}");
            assert!(!in_ci(), "CI is set, so PostgreSQL must answer: {why}");
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: PostgreSQL TLS test (unreachable: {why}); set \
                 PAYHOOK_TEST_POSTGRES_URL or start PostgreSQL to run it"
            );
        }
    }
}
