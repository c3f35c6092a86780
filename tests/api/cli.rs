//! The `payhook` binary as an operator runs it: each test starts it as a child process with
//! a clean environment (only the variables the test names), bounded in time, and reads what
//! it prints.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use payhook::config::vars;
use payhook::store::events::{self, EventStatus};
use payhook::store::{DatabaseUrl, Pool, PoolOptions};

use crate::helpers::{
    both_backends, bytes, fixtures_dir, fresh_pool, intent_event, postgres_admin_url,
    postgres_available_or_skip, spawn_app_on, stored_event, Backend, TestDatabase, SECRET,
};

/// Runs `payhook ARGS` in `cwd` with only `env` set (and `PATH`); kills it after 30 s.
pub(crate) fn payhook(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_payhook"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "payhook {args:?} still running after 30 s: {}",
                text(&output)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// stdout and stderr together.
pub(crate) fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

// --- replay -----------------------------------------------------------------------------

async fn the_replay_command_signs_and_posts_files_and_fails_on_rejection(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let file = fixtures_dir().join("payment_intent.created.json");
    let run = |secret: String| {
        let (file, url) = (file.clone(), app.webhook_url());
        tokio::task::spawn_blocking(move || {
            let cwd = tempfile::tempdir().unwrap();
            payhook(
                &[
                    "replay",
                    file.to_str().unwrap(),
                    "--url",
                    &url,
                    "--secret",
                    &secret,
                ],
                &[],
                cwd.path(),
            )
        })
    };
    let output = run(app.secret.clone()).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("-> 200"), "{stdout}");

    let output = run("whsec_wrong".into()).await.unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("-> 400"));
}
both_backends!(the_replay_command_signs_and_posts_files_and_fails_on_rejection);

// --- serve: configuration ---------------------------------------------------------------

#[test]
fn serve_without_a_webhook_secret_refuses_to_start_and_says_where_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let output = payhook(
        &["serve", "--bind", "127.0.0.1:0"],
        &[("DATABASE_URL", "x.sqlite3")],
        dir.path(),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("stripe listen") && stderr.contains("dashboard"),
        "{stderr}"
    );
}

#[test]
fn help_documents_every_setting_without_showing_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let secrets: Vec<(&str, String)> = vars::ALL
        .iter()
        .filter(|v| v.secret)
        .map(|v| (v.name, format!("do_not_print_{}", v.name)))
        .collect();
    let env: Vec<(&str, &str)> = secrets.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let output = payhook(&["serve", "--help"], &env, dir.path());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{help}");
    for var in vars::ALL {
        assert!(help.contains(var.name), "--help lacks {}", var.name);
        assert!(
            help.contains(&format!("--{}", var.flag)),
            "--help lacks --{}",
            var.flag
        );
    }
    for var in [
        "STRIPE_ENDPOINT_<NAME>_SECRET",
        "STRIPE_ENDPOINT_<NAME>_KIND",
        "STRIPE_ENDPOINT_<NAME>_LIVEMODE",
    ] {
        assert!(help.contains(var), "--help lacks {var}");
    }
    assert!(!help.contains("do_not_print"), "{help}");
}

#[test]
fn webhook_secrets_that_are_api_keys_are_refused_saying_which_secret_goes_where() {
    let dir = tempfile::tempdir().unwrap();
    for (env, var) in [
        (
            vec![("STRIPE_WEBHOOK_SECRET", "sk_test_51Leaked")],
            "STRIPE_WEBHOOK_SECRET",
        ),
        (
            vec![
                ("STRIPE_WEBHOOK_SECRET", "whsec_ok"),
                ("STRIPE_ENDPOINTS", "eu"),
                ("STRIPE_ENDPOINT_EU_SECRET", "rk_live_51Leaked"),
            ],
            "STRIPE_ENDPOINT_EU_SECRET",
        ),
    ] {
        let mut env = env;
        env.extend([("DATABASE_URL", "x.sqlite3"), ("BIND", "127.0.0.1:0")]);
        let output = payhook(&["serve"], &env, dir.path());
        let all = text(&output);
        assert!(!output.status.success(), "{all}");
        assert!(
            all.contains(&format!("{var}: this is a Stripe API key"))
                && all.contains("whsec_")
                && all.contains("STRIPE_SECRET_KEY"),
            "{all}"
        );
        assert!(!all.contains("51Leaked"), "the key is never quoted: {all}");
    }
}

#[test]
fn out_of_range_settings_stop_start_up_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value) in [
        ("DATABASE_POOL_SIZE", "1"),
        ("PROCESS_NICE", "25"),
        ("ADMIT_MAX_BATCH", "0"),
    ] {
        let output = payhook(
            &["serve"],
            &[
                ("STRIPE_WEBHOOK_SECRET", SECRET),
                ("DATABASE_URL", "x.sqlite3"),
                ("BIND", "127.0.0.1:0"),
                (var, value),
            ],
            dir.path(),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("{var}: {value} is out of range")),
            "{stderr}"
        );
    }
    assert!(is_empty_dir(dir.path()), "nothing was created");
}

// --- DATABASE_URL -----------------------------------------------------------------------

#[test]
fn migrate_creates_the_embedded_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nested/payhook.sqlite3");
    let output = payhook(
        &["migrate", "--database-url", db.to_str().unwrap()],
        &[],
        dir.path(),
    );
    assert!(output.status.success(), "{}", text(&output));
    assert!(db.exists());
    // Every embedded migration ran on the fresh file.
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .unwrap()
        .count();
    assert!(String::from_utf8_lossy(&output.stdout)
        .contains(&format!("{migrations} migrations applied")));

    // Any case of the scheme.
    let db = dir.path().join("upper.sqlite3");
    let url = format!("SQLITE://{}", db.display());
    let output = payhook(&["migrate"], &[("DATABASE_URL", &url)], dir.path());
    assert!(output.status.success(), "{}", text(&output));
    assert!(db.exists());
}

#[test]
fn database_urls_that_name_no_supported_backend_are_refused_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    for (url, says) in [
        (
            "mysql://u@127.0.0.1/db",
            "`mysql://` is not a supported backend",
        ),
        (
            "postgress://127.0.0.1/db",
            "`postgress://` is not a supported backend",
        ),
        ("foo=bar", "`foo` is not a libpq keyword"),
        ("postgres://", "names no database"),
        ("Postgres://u:pw@127.0.0.1:1", "names no database"),
        ("host=127.0.0.1 user=u", "names no database"),
        ("sqlite://", "names no SQLite file"),
    ] {
        for command in ["migrate", "stats", "serve"] {
            let output = payhook(
                &[command],
                &[
                    ("DATABASE_URL", url),
                    ("STRIPE_WEBHOOK_SECRET", SECRET),
                    ("BIND", "127.0.0.1:0"),
                ],
                dir.path(),
            );
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(!output.status.success(), "{command} {url}: {stderr}");
            assert!(
                stderr.contains("DATABASE_URL: ") && stderr.contains(says),
                "{command} {url}: {stderr}"
            );
            assert!(!stderr.contains("pw"), "{stderr}");
            assert!(is_empty_dir(dir.path()), "{command} {url} created a file");
        }
    }
}

/// Every password form libpq accepts, against a server that does not answer (port 1) and,
/// when PostgreSQL runs, against the real one: the password is in no output.
#[test]
fn database_passwords_never_print() {
    let dir = tempfile::tempdir().unwrap();
    let forms = [
        ("postgres://u:pw_userinfo@127.0.0.1:1/db", "pw_userinfo"),
        (
            "postgres://127.0.0.1:1/db?user=u&password=pw_query",
            "pw_query",
        ),
        (
            "host=127.0.0.1 port=1 dbname=db user=u password=pw_keyvalue",
            "pw_keyvalue",
        ),
        (
            "host=127.0.0.1 port=1 dbname=db password='pw quoted\\'one'",
            "quoted",
        ),
    ];
    // Each waits for its connection attempts to time out: run them side by side.
    let runs: Vec<_> = forms
        .iter()
        .flat_map(|&(url, password)| {
            ["migrate", "serve"].map(|command| {
                let cwd = dir.path().to_owned();
                std::thread::spawn(move || {
                    let output = payhook(
                        &[command],
                        &[
                            ("DATABASE_URL", url),
                            ("STRIPE_WEBHOOK_SECRET", SECRET),
                            ("BIND", "127.0.0.1:0"),
                            ("DATABASE_WAIT_MS", "200"),
                            ("RUST_LOG", "trace"),
                        ],
                        &cwd,
                    );
                    (command, url, password, output)
                })
            })
        })
        .collect();
    for run in runs {
        let (command, url, password, output) = run.join().unwrap();
        let all = text(&output);
        assert!(!output.status.success(), "{command} {url}: {all}");
        assert!(!all.contains(password), "{command} {url}: {all}");
        assert!(all.contains("***"), "{command} {url}: {all}");
    }
    assert!(is_empty_dir(dir.path()), "no SQLite file named after a URL");

    if !postgres_available_or_skip() {
        return;
    }
    // A server that accepts the connection (trust authentication ignores the password):
    // the success line of `migrate` shows the URL, redacted.
    let db = TestDatabase::create(Backend::Postgres);
    let url = format!("{}&password=pw_success", db.url().expose());
    let output = payhook(&["migrate"], &[("DATABASE_URL", &url)], dir.path());
    let all = text(&output);
    assert!(output.status.success(), "{all}");
    assert!(all.contains("password=***"), "{all}");
    assert!(!all.contains("pw_success"), "{all}");
}

/// `POSTGRESQL://…` and libpq key=value strings reach PostgreSQL (never a local file).
#[test]
fn upper_case_schemes_and_key_value_strings_select_postgres() {
    if !postgres_available_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::create(Backend::Postgres);
    let DatabaseUrl::Postgres(url) = db.url() else {
        unreachable!("a PostgreSQL database")
    };
    let upper = url.replacen("postgres://", "POSTGRESQL://", 1);
    let parsed = url::Url::parse(&url).unwrap();
    let key_value = format!(
        "host={} port={} user={} dbname={}",
        parsed.host_str().unwrap(),
        parsed.port().unwrap_or(5432),
        parsed.username(),
        parsed.path().trim_start_matches('/'),
    );
    for url in [upper, key_value] {
        let output = payhook(&["migrate"], &[("DATABASE_URL", &url)], dir.path());
        let all = text(&output);
        assert!(output.status.success(), "{url}: {all}");
        assert!(all.contains("migrations applied to "), "{all}");
        assert!(is_empty_dir(dir.path()), "{url} became a SQLite file");
    }
}

// --- commands that must not create or migrate -------------------------------------------

/// `stats`, `retry` and `events list` on `url` fail, saying `says`.
fn refuses(url: &str, says: &str) {
    let dir = tempfile::tempdir().unwrap();
    for command in [&["stats"][..], &["retry"], &["events", "list"]] {
        let output = payhook(command, &[("DATABASE_URL", url)], dir.path());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{command:?}: {stderr}");
        assert!(stderr.contains(says), "{command:?}: {stderr}");
    }
}

async fn stats_and_retry_never_create_or_migrate_a_database(backend: Backend) {
    tokio::task::spawn_blocking(move || {
        let db = TestDatabase::create(backend);
        let url = db.url();
        match &url {
            DatabaseUrl::Sqlite(path) => {
                // A mistyped path: an error, and no file.
                refuses(&url.expose(), "there is no database at");
                assert!(!path.exists());
                std::fs::write(path, b"").unwrap();
            }
            DatabaseUrl::Postgres(raw) => {
                let missing = raw.replace("payhook_t_", "payhook_missing_");
                refuses(&missing, "does not exist");
            }
        }
        // An empty database stays empty.
        refuses(&url.expose(), "has no payhook schema");
        let pool = Pool::connect(&url, PoolOptions::default()).unwrap();
        let mut conn = pool.get().unwrap();
        assert_eq!(
            payhook::store::pending_migrations(&mut conn).unwrap(),
            None,
            "no migrations table was created"
        );
        // Up to date: both work.
        pool.migrate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        for command in [&["stats"][..], &["retry"], &["events", "list"]] {
            let output = payhook(command, &[("DATABASE_URL", &url.expose())], dir.path());
            assert!(output.status.success(), "{command:?}: {}", text(&output));
        }
        // A schema behind the binary (as if it had been upgraded since).
        payhook::with_conn!(&mut conn, c => c.batch_execute(
            "DELETE FROM __diesel_schema_migrations WHERE version = \
             (SELECT max(version) FROM __diesel_schema_migrations)"
        ))
        .unwrap();
        refuses(&url.expose(), "run `payhook migrate`");
        assert_eq!(
            payhook::store::pending_migrations(&mut conn).unwrap(),
            Some(1),
            "nothing was migrated"
        );
    })
    .await
    .unwrap();
}
both_backends!(stats_and_retry_never_create_or_migrate_a_database);

// --- retry ------------------------------------------------------------------------------

async fn retry_requeues_failed_events_by_id_or_all_of_a_status(backend: Backend) {
    let (db, pool) = fresh_pool(backend).await;
    let url = db.url().expose();
    tokio::task::spawn_blocking(move || {
        let mut conn = pool.get().unwrap();
        for (id, status) in [
            ("evt_failed_1", EventStatus::Failed),
            ("evt_failed_2", EventStatus::Failed),
            ("evt_dead", EventStatus::Dead),
            ("evt_done", EventStatus::Processed),
        ] {
            let body = bytes(&intent_event(id, "payment_intent.created", "pi_1", 1));
            let event = stored_event(&body);
            assert!(events::insert_event(&mut conn, &event).unwrap());
            let key = events::QueueKey {
                created: event.created,
                received_at: event.received_at,
                id,
            };
            events::finish_event(&mut conn, key, status, 3, Some("why"), 1).unwrap();
        }
        let mut status_of = |id: &str| events::find_event(&mut conn, id).unwrap().unwrap().status;
        let dir = tempfile::tempdir().unwrap();
        let retry = |args: &[&str]| {
            let mut all = vec!["retry"];
            all.extend_from_slice(args);
            payhook(&all, &[("DATABASE_URL", &url)], dir.path())
        };

        // One failed event by id.
        let output = retry(&["evt_failed_1"]);
        assert!(output.status.success(), "{}", text(&output));
        assert!(text(&output).contains("1 events requeued"));
        assert_eq!(status_of("evt_failed_1").as_str(), "pending");
        assert_eq!(status_of("evt_failed_2").as_str(), "failed");

        // Ids that cannot be requeued are named, and the command fails; nothing else moves.
        let output = retry(&["evt_done", "evt_nope", "--status", "dead"]);
        let all = text(&output);
        assert!(!output.status.success(), "{all}");
        assert!(all.contains("evt_done: is processed, not dead"), "{all}");
        assert!(all.contains("evt_nope: no such event"), "{all}");
        assert_eq!(status_of("evt_done").as_str(), "processed");

        // All failed events; dead ones stay dead.
        let output = retry(&["--status", "failed"]);
        assert!(
            text(&output).contains("1 failed events requeued"),
            "{}",
            text(&output)
        );
        assert_eq!(status_of("evt_failed_2").as_str(), "pending");
        assert_eq!(status_of("evt_dead").as_str(), "dead");

        // The default, as before: all dead events, and failed Stripe actions.
        let output = retry(&[]);
        let all = text(&output);
        assert!(all.contains("1 dead events requeued"), "{all}");
        assert!(all.contains("0 failed Stripe actions requeued"), "{all}");
        assert_eq!(status_of("evt_dead").as_str(), "pending");
        let event = events::find_event(&mut pool.get().unwrap(), "evt_dead")
            .unwrap()
            .unwrap();
        assert_eq!(event.attempts, 0, "a fresh count of tries");
    })
    .await
    .unwrap();
}
both_backends!(retry_requeues_failed_events_by_id_or_all_of_a_status);

// --- logging ----------------------------------------------------------------------------

/// `payhook serve` running in the background, its output in a file; killed on drop.
struct ServeProcess {
    child: std::process::Child,
    log_path: std::path::PathBuf,
}

impl ServeProcess {
    /// Starts `payhook serve` in `dir` with only `env` set, on a port of its choosing.
    fn start(dir: &Path, env: &[(&str, &str)]) -> Self {
        let log_path = dir.join("serve.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_payhook"))
            .arg("serve")
            .env_clear()
            .envs([("BIND", "127.0.0.1:0"), ("HTTP_WORKERS", "1")])
            .envs(env.iter().copied())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Self { child, log_path }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The first log line containing `what`, waiting for it (bounded).
    fn wait_for(&self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| l.contains(what)) {
                return line.to_owned();
            }
            assert!(Instant::now() < deadline, "no {what:?} in the log: {log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The port from the start-up line.
    fn port(&self) -> u16 {
        let listening = self.wait_for("listening on 127.0.0.1:");
        listening
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {listening}"))
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `serve`'s start-up lines name the database, redacted.
#[test]
fn the_start_up_line_shows_the_database_without_its_password() {
    if !postgres_available_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::create(Backend::Postgres);
    let url = format!("{}&password=pw_startup", db.url().expose());
    let serve = ServeProcess::start(
        dir.path(),
        &[
            ("DATABASE_URL", &url),
            ("STRIPE_WEBHOOK_SECRET", SECRET),
            ("RUST_LOG", "trace"),
        ],
    );
    serve.port();
    let ready = serve.wait_for("ready (");
    assert!(ready.contains("password=***"), "{ready}");
    drop(serve);
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(!log.contains("pw_startup"), "{log}");
}

/// actix-http answers 431 to an oversized request head and logs it; any client can do that,
/// so the line is a warning, not an error.
#[test]
fn oversized_request_headers_get_431_without_an_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(
        dir.path(),
        &[
            ("DATABASE_URL", "payhook.sqlite3"),
            ("STRIPE_WEBHOOK_SECRET", SECRET),
            ("RUST_LOG", "info"),
        ],
    );
    let mut stream = TcpStream::connect(("127.0.0.1", serve.port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // More header fields than actix-http's limit (96): a head too large, answered 431 without
    // making the client send (and the test buffer) the 128 KB that also trigger it.
    let headers: String = (0..120)
        .map(|i| format!("X-Field-{i}: {}\r\n", "a".repeat(64)))
        .collect();
    stream
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{headers}\r\n").as_bytes())
        .unwrap();
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 431");

    let line = serve.wait_for("message head is too large");
    assert!(line.contains(" WARN "), "{line}");
    let log = serve.log();
    assert!(
        !log.lines().any(|l| l.contains(" ERROR ")),
        "an ERROR line: {log}"
    );
}

// --- the admin URL helper is a valid DATABASE_URL ------------------------------------------

#[test]
fn the_test_servers_url_is_a_valid_database_url() {
    assert!(matches!(
        DatabaseUrl::parse(&postgres_admin_url()),
        Ok(DatabaseUrl::Postgres(_))
    ));
}

/// A raw HTTP/1.1 POST of a signed `body` to `/webhooks/stripe`; the status line's code.
fn post_signed_raw(port: u16, body: &[u8]) -> u16 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let header = payhook::stripe::signature::header_for(body, SECRET, now);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Stripe-Signature: {header}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).unwrap();
    std::str::from_utf8(&answer[9..12])
        .unwrap()
        .parse()
        .unwrap()
}

/// The same event id with another body is acknowledged as a duplicate, and the operator is
/// told with a WARN line carrying both bodies' SHA-256, never the bodies.
#[test]
fn a_duplicate_with_another_body_is_logged_with_both_digests() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(
        dir.path(),
        &[
            ("DATABASE_URL", "payhook.sqlite3"),
            ("STRIPE_WEBHOOK_SECRET", SECRET),
            ("RUST_LOG", "info"),
        ],
    );
    let port = serve.port();
    let now = 1_700_000_000;
    let event = intent_event("evt_dupbody", "payment_intent.created", "pi_dupbody", now);
    let mut altered = event.clone();
    altered["data"]["object"]["description"] = "secret-looking altered text".into();
    let (first, second) = (bytes(&event), bytes(&altered));
    assert_eq!(post_signed_raw(port, &first), 200);
    assert_eq!(
        post_signed_raw(port, &first),
        200,
        "an identical re-delivery"
    );
    assert_eq!(post_signed_raw(port, &second), 200, "still a duplicate");

    let line = serve.wait_for("different body");
    assert!(line.contains(" WARN "), "{line}");
    assert!(
        line.contains(&hex::encode(Sha256::digest(&first))),
        "{line}"
    );
    assert!(
        line.contains(&hex::encode(Sha256::digest(&second))),
        "{line}"
    );
    let log = serve.log();
    assert_eq!(
        log.matches("different body").count(),
        1,
        "the identical re-delivery is not reported: {log}"
    );
    assert!(!log.contains("altered text"), "a body in the log: {log}");
}
