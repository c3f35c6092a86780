//! `spawn_app_on(backend, …)` and friends: a fresh database and a running payhook per test.
//!
//! # Every test runs on both backends
//!
//! Write the test as a plain `async fn` taking a [`Backend`], then name it in
//! [`both_backends!`] right below:
//!
//! ```ignore
//! async fn a_duplicate_is_stored_once(backend: Backend) {
//!     let app = spawn_app_on(backend, |_| {}).await;
//!     // …
//! }
//! both_backends!(a_duplicate_is_stored_once);
//! ```
//!
//! The macro adds a module of the same name holding two `#[tokio::test]`s, so the test runs
//! as `…::a_duplicate_is_stored_once::sqlite` and `…::a_duplicate_is_stored_once::postgres`
//! (filter with `cargo test --test api sqlite` or `… postgres`). A forgotten `both_backends!`
//! line leaves the function unused, which `clippy -D warnings` rejects.
//!
//! - SQLite: a new file in a temporary directory.
//! - PostgreSQL: a new database `payhook_t_<random>` created through the server named by
//!   `PAYHOOK_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`, the
//!   maintenance database), dropped `WITH (FORCE)` when the [`TestApp`] (or [`TestDatabase`])
//!   is dropped, so tests run in parallel without seeing each other.
//! - PostgreSQL unreachable: with `CI` set (`CI=true`), every `postgres` test fails; without,
//!   it passes without running after one `SKIPPED: PostgreSQL half …` line on stderr.
//!
//! There is deliberately no backend-less `spawn_app()`: a test written against it fails to
//! compile here, and takes a `backend` and a `both_backends!` line to be fixed.

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::Connection;
use payhook::config::Config;
use payhook::startup::{Drain, Workers};
use payhook::store::checkouts::{self, CheckoutRow, TransitionRow};
use payhook::store::events::{self, WebhookEvent};
use payhook::store::{now_ms, now_secs, DatabaseUrl, Pool};
use payhook::stripe::signature;
use payhook::Application;
use serde_json::{json, Value};

pub const SECRET: &str = "whsec_test_0123456789abcdef";

/// The database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// As payhook names it (`/readyz`, logs).
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// Turns each named `async fn name(backend: Backend)` into the tests `name::sqlite` and
/// `name::postgres` (see the module docs).
macro_rules! both_backends {
    // `both_backends!(name; multi_thread)`: for a test that blocks a thread of its own runtime.
    ($name:ident; multi_thread) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if $crate::helpers::postgres_available_or_skip() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            }
        }
    };
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }

            #[tokio::test]
            async fn postgres() {
                if $crate::helpers::postgres_available_or_skip() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            }
        }
    )+};
}
pub(crate) use both_backends;

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The maintenance database tests create their databases through.
pub fn postgres_admin_url() -> String {
    let url = std::env::var("PAYHOOK_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_POSTGRES_URL.to_owned());
    // libpq waits for an unanswered connect forever by default.
    if url.contains("connect_timeout") {
        url
    } else if url.contains('?') {
        format!("{url}&connect_timeout=5")
    } else {
        format!("{url}?connect_timeout=5")
    }
}

/// Whether this run must have PostgreSQL (`CI` set and not `false`/`0`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Whether PostgreSQL answers; checked once per test binary.
fn postgres_reachable() -> &'static Result<(), String> {
    static REACHABLE: OnceLock<Result<(), String>> = OnceLock::new();
    REACHABLE.get_or_init(|| {
        // Before this binary's first libpq connection (see `init_libpq_tls`).
        payhook::store::init_libpq_tls();
        let url = postgres_admin_url();
        let checked = match PgConnection::establish(&url) {
            Ok(mut c) => c.batch_execute("SELECT 1").map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        // libpq's message spans lines; the SKIPPED line is one.
        checked.map_err(|e| {
            let e = e.split_whitespace().collect::<Vec<_>>().join(" ");
            let shown = DatabaseUrl::parse(&url).map_or_else(|e| e.to_string(), |u| u.to_string());
            format!("{shown} unreachable: {e}")
        })
    })
}

/// For the `postgres` half of a test: true if PostgreSQL is reachable; otherwise fails the
/// test under CI, or says once that the PostgreSQL half is skipped and returns false.
pub fn postgres_available_or_skip() -> bool {
    let Err(why) = postgres_reachable() else {
        return true;
    };
    assert!(
        !in_ci(),
        "CI is set, so the PostgreSQL half must run, but PostgreSQL is {why} \
         (set PAYHOOK_TEST_POSTGRES_URL or start the server)"
    );
    static SAID: OnceLock<()> = OnceLock::new();
    SAID.get_or_init(|| {
        // Straight to stderr: the test harness captures eprintln! of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: PostgreSQL half ({why}); set PAYHOOK_TEST_POSTGRES_URL or start \
             PostgreSQL to run it"
        );
    });
    false
}

/// A fresh, empty database for one test; removed on drop.
pub enum TestDatabase {
    Sqlite(tempfile::TempDir),
    Postgres { name: String, admin_url: String },
}

impl TestDatabase {
    pub fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self::Sqlite(tempfile::tempdir().expect("temp dir")),
            Backend::Postgres => {
                if let Err(why) = postgres_reachable() {
                    panic!("PostgreSQL is {why}");
                }
                let admin_url = postgres_admin_url();
                let name = format!("payhook_t_{:016x}", rand::random::<u64>());
                let mut admin = PgConnection::establish(&admin_url).expect("connect to PostgreSQL");
                admin
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
                Self::Postgres { name, admin_url }
            }
        }
    }

    pub fn url(&self) -> DatabaseUrl {
        match self {
            Self::Sqlite(dir) => DatabaseUrl::Sqlite(dir.path().join("payhook.sqlite3")),
            Self::Postgres { name, admin_url } => {
                DatabaseUrl::Postgres(url_with_database(admin_url, name))
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Self::Postgres { name, admin_url } = self {
            // FORCE ends the connections the app still holds (PostgreSQL 13+).
            let dropped = PgConnection::establish(admin_url).map(|mut c| {
                c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            });
            if !matches!(dropped, Ok(Ok(()))) {
                let _ = writeln!(
                    std::io::stderr(),
                    "warning: test database {name} not dropped: {dropped:?}"
                );
            }
        }
    }
}

/// `scheme://user@host:port/old?params` → `scheme://user@host:port/<database>?params`.
fn url_with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

/// A row of the processor's queue.
#[derive(Debug, Clone, PartialEq, Eq, diesel::QueryableByName)]
pub struct QueueRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub id: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub created: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub received_at: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub object_id: Option<String>,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub next_attempt_at_ms: i64,
}

pub struct TestApp {
    pub address: String,
    pub pool: Pool,
    pub client: reqwest::Client,
    pub secret: String,
    /// Runs the inbox and the outbox by hand (see [`TestApp::settle`]).
    pub drain: Drain,
    handle: ServerHandle,
    // Last: dropped after the server is told to stop. `None` when the test owns the database
    // (see [`spawn_app_with_url`]).
    _db: Option<TestDatabase>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop without waiting; the runtime ends with the test anyway.
        drop(self.handle.stop(false));
    }
}

pub fn init_logs() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// A config for a test, through the same loader as `payhook serve`: the given database,
/// port 0, quick polling, and every other setting (backend defaults included) as `serve`
/// would have it.
pub fn test_config(database_url: DatabaseUrl) -> Config {
    let url = database_url.expose();
    Config::from_vars(&[
        ("DATABASE_URL", &url),
        ("STRIPE_WEBHOOK_SECRET", SECRET),
        ("BIND", "127.0.0.1:0"),
        ("PROCESS_POLL_MS", "20"),
        ("PROCESS_RETRY_BASE_MS", "10"),
        ("HTTP_WORKERS", "2"),
    ])
    .unwrap_or_else(|e| panic!("test configuration refused: {e}"))
}

/// Starts payhook on a fresh database of `backend`, after `customize` has its say. Its
/// background workers do not run: the test applies events and performs outbox work with
/// [`TestApp::settle`], so it sees exactly the work it asked for, when it asks.
pub async fn spawn_app_on(backend: Backend, customize: impl FnOnce(&mut Config)) -> TestApp {
    spawn(backend, Workers::Manual, customize).await
}

/// As [`spawn_app_on`], with the background workers running as in `payhook serve`: for tests
/// of what those loops do by themselves (waking on commits, retrying, expiring).
pub async fn spawn_app_with_workers(
    backend: Backend,
    customize: impl FnOnce(&mut Config),
) -> TestApp {
    spawn(backend, Workers::Background, customize).await
}

async fn spawn(backend: Backend, workers: Workers, customize: impl FnOnce(&mut Config)) -> TestApp {
    init_logs();
    let db = tokio::task::spawn_blocking(move || TestDatabase::create(backend))
        .await
        .expect("creating the test database");
    start_app(db.url(), Some(db), workers, customize).await
}

/// Starts payhook, background workers running, on the database at `url`, which the test
/// provides and outlives the app (a private PostgreSQL server it stops and starts, say).
pub async fn spawn_app_with_url(url: DatabaseUrl, customize: impl FnOnce(&mut Config)) -> TestApp {
    init_logs();
    start_app(url, None, Workers::Background, customize).await
}

/// As [`spawn_app_with_url`], with manual workers (see [`spawn_app_on`]): for tests that
/// share the database with another process (a CLI command) and settle it themselves.
pub async fn spawn_manual_app_with_url(
    url: DatabaseUrl,
    customize: impl FnOnce(&mut Config),
) -> TestApp {
    init_logs();
    start_app(url, None, Workers::Manual, customize).await
}

async fn start_app(
    url: DatabaseUrl,
    db: Option<TestDatabase>,
    workers: Workers,
    customize: impl FnOnce(&mut Config),
) -> TestApp {
    let mut config = test_config(url);
    customize(&mut config);
    let secret = config
        .webhook_secrets
        .last()
        .expect("a secret")
        .expose()
        .to_owned();
    let app = Application::build_with(config, workers)
        .await
        .expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let pool = app.pool();
    let handle = app.handle();
    let drain = app.drain();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        pool,
        client: reqwest::Client::new(),
        secret,
        drain,
        handle,
        _db: db,
    }
}

impl TestApp {
    pub fn webhook_url(&self) -> String {
        format!("{}/webhooks/stripe", self.address)
    }

    /// POSTs `body` signed now with the app's secret.
    pub async fn post_signed(&self, body: &[u8]) -> reqwest::Response {
        let header = signature::header_for(body, &self.secret, now_secs());
        self.post_with_header(body, Some(header)).await
    }

    pub async fn post_with_header(&self, body: &[u8], header: Option<String>) -> reqwest::Response {
        let mut request = self.client.post(self.webhook_url()).body(body.to_vec());
        if let Some(h) = header {
            request = request.header("Stripe-Signature", h);
        }
        request.send().await.expect("request sent")
    }

    /// POSTs and asserts a 200.
    pub async fn deliver(&self, body: &[u8]) -> Value {
        let response = self.post_signed(body).await;
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        assert_eq!(status, 200, "delivery refused: {text}");
        serde_json::from_str(&text).expect("JSON answer")
    }

    /// Applies every pending event and performs every pending outbox item (of the kinds
    /// this app performs), including retries scheduled for later, until nothing is pending.
    /// Waits only for what is scheduled: until the next retry is due (bounded: 30 s in all).
    pub async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.drain.run_until_idle().await.expect("draining");
            let Some(due) = self.drain.next_due_ms().await.expect("pending work") else {
                return;
            };
            assert!(
                Instant::now() < deadline,
                "work still pending, next due at {due} ms"
            );
            let wait = due.saturating_sub(now_ms()).clamp(1, 1000);
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
    }

    /// Runs `sql` (one or more statements) on a pooled connection.
    pub fn exec(&self, sql: &str) {
        self.with_conn(|c| payhook::with_conn!(c, conn => conn.batch_execute(sql)))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub fn with_conn<T>(&self, f: impl FnOnce(&mut payhook::store::Conn) -> T) -> T {
        let mut conn = self.pool.get().expect("connection");
        f(&mut conn)
    }

    pub fn event(&self, id: &str) -> Option<WebhookEvent> {
        self.with_conn(|c| events::find_event(c, id).expect("query"))
    }

    pub fn checkout(&self, intent_id: &str) -> Option<CheckoutRow> {
        self.with_conn(|c| checkouts::find_checkout_by_intent(c, intent_id).expect("query"))
    }

    pub fn transitions(&self, intent_id: &str) -> Vec<TransitionRow> {
        let checkout = self.checkout(intent_id).expect("checkout exists");
        self.with_conn(|c| checkouts::list_transitions(c, &checkout.id).expect("query"))
    }

    /// The queue's rows, after checking they are exactly the pending events, with the same
    /// claim order and due time (see `payhook::store::events`): the rule every change of an
    /// event's status keeps. Read in one transaction, so a consistent pair.
    pub fn queued(&self) -> Vec<QueueRow> {
        use diesel::RunQueryDsl;
        const QUEUED: &str = "SELECT id, created, received_at, object_id, next_attempt_at_ms \
                              FROM webhook_event_queue ORDER BY id";
        const PENDING: &str = "SELECT id, created, received_at, object_id, next_attempt_at_ms \
                               FROM webhook_events WHERE status = 'pending' ORDER BY id";
        let (queued, pending) = self.with_conn(|c| {
            c.transaction(|c| {
                let queued: Vec<QueueRow> =
                    payhook::with_conn!(c, conn => diesel::sql_query(QUEUED).load(conn))?;
                let pending: Vec<QueueRow> =
                    payhook::with_conn!(c, conn => diesel::sql_query(PENDING).load(conn))?;
                Ok::<_, diesel::result::Error>((queued, pending))
            })
            .expect("queue and pending events")
        });
        assert_eq!(
            queued, pending,
            "the queue (left) vs the pending events (right)"
        );
        queued
    }

    pub fn count_events(&self) -> i64 {
        self.with_conn(|c| events::count_events_by_status(c).expect("counts"))
            .iter()
            .map(|(_, n)| n)
            .sum()
    }
}

/// A fresh, migrated database and a pool on it, without the app (so no processor of its
/// own takes part). Keep the `TestDatabase`: dropping it removes the database.
pub async fn fresh_pool(backend: Backend) -> (TestDatabase, payhook::store::Pool) {
    let db = tokio::task::spawn_blocking(move || TestDatabase::create(backend))
        .await
        .expect("creating the test database");
    let pool = payhook::store::Pool::connect(&db.url(), payhook::store::PoolOptions::default())
        .expect("pool");
    pool.migrate().expect("migrate");
    (db, pool)
}

/// The row admission would store for `body` (a verified delivery), received at time 0.
pub fn stored_event(body: &[u8]) -> payhook::store::events::NewWebhookEvent {
    let envelope = payhook::stripe::envelope::parse_envelope(body).expect("envelope");
    payhook::store::events::NewWebhookEvent {
        id: envelope.id.into_string(),
        event_type: envelope.event_type,
        api_version: envelope.api_version,
        created: envelope.created.unwrap_or(0),
        livemode: envelope.livemode,
        account: envelope.account,
        object_id: envelope.object_id,
        object_type: envelope.object_type,
        payload: String::from_utf8(body.to_vec()).expect("UTF-8"),
        received_at: 0,
        endpoint: "default".to_owned(),
        secret_index: None,
        status: payhook::store::events::EventStatus::Pending,
        last_error: None,
    }
}

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).expect("fixture is JSON")
}

/// A minimal but well-formed intent event.
pub fn intent_event(event_id: &str, event_type: &str, intent_id: &str, created: i64) -> Value {
    let object = if intent_id.starts_with("seti_") {
        "setup_intent"
    } else {
        "payment_intent"
    };
    let mut data = json!({
        "id": intent_id, "object": object, "amount": 1000, "currency": "usd",
        "customer": null, "metadata": {"customer_ref": "user_test"}, "status": "requires_payment_method"
    });
    if event_type.ends_with("failed") {
        let field = if object == "setup_intent" {
            "last_setup_error"
        } else {
            "last_payment_error"
        };
        data[field] = json!({"code": "card_declined", "decline_code": "generic_decline", "type": "card_error"});
    }
    json!({
        "id": event_id, "object": "event", "api_version": "2025-09-30.clover", "created": created,
        "livemode": false, "pending_webhooks": 1, "type": event_type, "data": {"object": data}
    })
}

pub fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialize")
}

/// The state an intent event type asks for (a failure taken as a plain decline).
pub fn target_of(event_type: &str) -> payhook::domain::checkout::CheckoutState {
    match payhook::stripe::payload::EventKind::from_type(event_type) {
        Some(payhook::stripe::payload::EventKind::Intent(kind)) => kind.trigger(false).target(),
        _ => panic!("{event_type} is not an intent event"),
    }
}
