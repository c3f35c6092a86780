//! Survival, PostgreSQL half of "database unavailable during load": the server stops under
//! load and comes back, and payhook answers 503 (never 200) for what it could not store and
//! recovers without a restart. The SQLite half is in [`crate::survival`].
//!
//! The shared server (127.0.0.1:5432) serves every other test, so this test starts a private,
//! throwaway cluster of its own (`initdb` into a temporary directory, a free port on
//! 127.0.0.1 only) and stops that one. Without the PostgreSQL server binaries it is skipped
//! with one `SKIPPED` line, unless `CI` is set, where it fails.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::Connection;
use payhook::store::events::{self, WebhookEvent};
use payhook::store::{DatabaseUrl, Pool, PoolOptions};

use crate::helpers::{bytes, in_ci, intent_event, spawn_app_with_url};
use crate::survival::free_port;

/// How the PostgreSQL tools are run: as the `postgres` user when we are root (the server
/// refuses to run as root), as ourselves otherwise.
#[derive(Debug, Clone, Copy)]
enum RunAs {
    Me,
    /// `runuser -u postgres -- …`, with the user's uid and gid for `chown`.
    Runuser(u32, u32),
    /// `su -s /bin/sh postgres -c '…'` where util-linux's `runuser` is missing.
    Su(u32, u32),
}

struct Tools {
    bindir: PathBuf,
    run_as: RunAs,
}

/// Where `initdb` and `pg_ctl` are: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/<version>/bin`.
fn postgres_bindir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(dir) = from_pg_config.filter(|d| has_tools(d)) {
        return Some(dir);
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let version = name
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_tools(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// `id -u postgres` / `id -g postgres`.
fn postgres_ids() -> Result<(u32, u32), String> {
    let id = |flag: &str| {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|e| format!("running id: {e}"))?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .map_err(|_| "there is no postgres user to run the server as".to_owned())
    };
    Ok((id("-u")?, id("-g")?))
}

impl Tools {
    /// The tools, or why this machine cannot run a private server.
    fn find(scratch: &Path) -> Result<Self, String> {
        let bindir = postgres_bindir().ok_or(
            "no PostgreSQL server binaries (initdb, pg_ctl) via pg_config --bindir or under \
             /usr/lib/postgresql/*/bin",
        )?;
        // A directory we just created is owned by our effective uid.
        let root = std::fs::metadata(scratch)
            .map_err(|e| format!("{}: {e}", scratch.display()))?
            .uid()
            == 0;
        let run_as = if !root {
            RunAs::Me
        } else {
            let (uid, gid) = postgres_ids()?;
            let runuser = Command::new("runuser")
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if runuser {
                RunAs::Runuser(uid, gid)
            } else {
                RunAs::Su(uid, gid)
            }
        };
        Ok(Self { bindir, run_as })
    }

    fn owner(&self) -> Option<(u32, u32)> {
        match self.run_as {
            RunAs::Me => None,
            RunAs::Runuser(uid, gid) | RunAs::Su(uid, gid) => Some((uid, gid)),
        }
    }

    /// Runs `program` from the server's bin directory in `cwd`; its output on failure.
    fn run(&self, program: &str, args: &[String], cwd: &Path) -> Result<(), String> {
        let program = self.bindir.join(program);
        let mut command = match self.run_as {
            RunAs::Me => {
                let mut c = Command::new(&program);
                c.args(args);
                c
            }
            RunAs::Runuser(..) => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(&program).args(args);
                c
            }
            RunAs::Su(..) => {
                let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
                let line = std::iter::once(quote(&program.to_string_lossy()))
                    .chain(args.iter().map(|a| quote(a)))
                    .collect::<Vec<_>>()
                    .join(" ");
                let mut c = Command::new("su");
                c.args(["-s", "/bin/sh", "postgres", "-c"]).arg(line);
                c
            }
        };
        // `pg_ctl start` is always given `-l`, so the server it leaves running holds none of
        // these pipes and `output` returns when pg_ctl does.
        let out = command
            .current_dir(cwd)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{}: {e}", program.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} {args:?}: {}\n{}{}",
                program.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

/// A throwaway PostgreSQL cluster on 127.0.0.1:`port`; stopped (immediately) on drop, also
/// when the test panics, before its directory is removed.
struct PrivateCluster {
    tools: Tools,
    /// Holds `data/`, the server's socket and its log.
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivateCluster {
    /// A new cluster, started; `None` (after a SKIPPED line) where none can run, except
    /// under CI.
    fn start_or_skip() -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let tools = match Tools::find(dir.path()) {
            Ok(tools) => tools,
            Err(why) => {
                assert!(
                    !in_ci(),
                    "CI is set, so the PostgreSQL outage test must run, but {why}"
                );
                // Straight to stderr: the test harness captures eprintln! of passing tests.
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: PostgreSQL outage test ({why}); install the PostgreSQL server \
                     to run it"
                );
                return None;
            }
        };
        if let Some((uid, gid)) = tools.owner() {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown temp dir");
        }
        let cluster = Self {
            tools,
            dir,
            port: free_port(),
        };
        let data = cluster.data().to_string_lossy().into_owned();
        cluster
            .pg(
                "initdb",
                &[
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "-D",
                    &data,
                ],
            )
            .unwrap_or_else(|e| panic!("initdb: {e}"));
        // In the configuration file rather than on the command line, so that the restart
        // after the outage is a plain `pg_ctl start` with the same settings.
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(cluster.data().join("postgresql.conf"))
            .expect("postgresql.conf");
        writeln!(
            conf,
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             shared_buffers = 16MB\nmax_connections = 50",
            cluster.port,
            cluster.dir.path().display()
        )
        .expect("write postgresql.conf");
        cluster.start();
        Some(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn pg(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        self.tools.run(program, &args, self.dir.path())
    }

    /// `pg_ctl start`, waiting (at most 30 s) until the server accepts connections.
    fn start(&self) {
        let (data, log) = (self.data(), self.log());
        let started = self.pg(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        if let Err(e) = started {
            let log = std::fs::read_to_string(self.log()).unwrap_or_default();
            panic!(
                "starting the private PostgreSQL on port {}: {e}\nserver log:\n{log}",
                self.port
            );
        }
    }

    /// `pg_ctl stop -m immediate`: the server ends at once, as on a crash or a kill.
    fn stop(&self) -> Result<(), String> {
        let data = self.data();
        self.pg(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "-t",
                "30",
                "stop",
            ],
        )
    }

    fn url(&self, database: &str) -> String {
        // libpq waits for an unanswered connect forever by default.
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}?connect_timeout=5",
            self.port
        )
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        // Fails harmlessly when the server is already down.
        let _ = self.stop();
    }
}

fn event_id(n: usize) -> String {
    format!("evt_pgout{n:03}")
}

fn body(n: usize) -> Vec<u8> {
    bytes(&intent_event(
        &event_id(n),
        "payment_intent.created",
        &format!("pi_pgout{n:03}"),
        1_763_900_000,
    ))
}

/// Events delivered before the load.
const BEFORE: usize = 5;
/// Deliveries during the load, one every `SPACING`; the server stops after `STOP_AFTER`.
const LOAD: usize = 20;
const SPACING: Duration = Duration::from_millis(100);
const STOP_AFTER: Duration = Duration::from_millis(450);
/// Longer than any answer may take: the pool gives up on the database after 5 s
/// (`PoolOptions::connect_timeout`), and a writer may have one batch ahead of ours.
const ANSWER_BOUND: Duration = Duration::from_secs(30);
/// How long payhook has, once the server is back, to store and apply every event.
const RECOVERY_BOUND: Duration = Duration::from_secs(30);

struct Answer {
    n: usize,
    sent: Instant,
    took: Duration,
    status: u16,
    retry_after: Option<String>,
    text: String,
}

/// The stored row of `n`, read beside the app (not through its pool).
fn stored(observer: &Pool, n: usize) -> Option<WebhookEvent> {
    let mut conn = observer.get().expect("observer connection");
    events::find_event(&mut conn, &event_id(n)).expect("query")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_postgres_gets_503_never_2xx_and_service_recovers_by_itself() {
    let Some(cluster) = tokio::task::spawn_blocking(PrivateCluster::start_or_skip)
        .await
        .expect("starting the private PostgreSQL")
    else {
        return;
    };
    let cluster = Arc::new(cluster);
    let url = cluster.url("payhook");
    let admin = cluster.url("postgres");
    tokio::task::spawn_blocking(move || {
        let mut c = PgConnection::establish(&admin).expect("connect to the private server");
        c.batch_execute("CREATE DATABASE payhook")
            .expect("CREATE DATABASE");
    })
    .await
    .expect("creating the database");
    // DATABASE_WAIT_MS at 1 s (default 5 s): refusals come within about twice that.
    let app = spawn_app_with_url(DatabaseUrl::Postgres(url.clone()), |c| {
        c.database_wait = Duration::from_secs(1);
    })
    .await;
    for n in 0..BEFORE {
        app.deliver(&body(n)).await;
    }
    app.settle().await;

    // The load: a delivery every SPACING; the server stops (immediate mode: no goodbye to
    // the connections, as on a crash or a kill) while they go on.
    let load_started = tokio::time::Instant::now();
    let deliveries = futures_util::future::join_all((BEFORE..BEFORE + LOAD).map(|n| {
        let app = &app;
        async move {
            tokio::time::sleep_until(load_started + SPACING * (n - BEFORE) as u32).await;
            let sent = Instant::now();
            let response = tokio::time::timeout(ANSWER_BOUND, app.post_signed(&body(n)))
                .await
                .unwrap_or_else(|_| panic!("event {n}: no answer in {ANSWER_BOUND:?}"));
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap_or("(not text)").to_owned());
            let text = response.text().await.unwrap_or_default();
            Answer {
                n,
                sent,
                took: sent.elapsed(),
                status,
                retry_after,
                text,
            }
        }
    }));
    let stopping = {
        let cluster = cluster.clone();
        async move {
            tokio::time::sleep_until(load_started + STOP_AFTER).await;
            tokio::task::spawn_blocking(move || {
                let stopping = Instant::now();
                cluster.stop().expect("stopping the private PostgreSQL");
                (stopping, Instant::now())
            })
            .await
            .expect("stopping")
        }
    };
    let (answers, (stop_began, stopped)) = futures_util::future::join(deliveries, stopping).await;
    // Every delivery is answered by now, with the server still down.
    let restart_began = Instant::now();
    {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || cluster.start())
            .await
            .expect("restarting the private PostgreSQL");
    }
    let restarted = Instant::now();
    let outage = restarted.duration_since(stopped);

    // 200 only if stored; 503 (with Retry-After) only if not stored. The one exception is a
    // commit in flight at the instant of the stop: the server may have made it durable and
    // died before saying so, so payhook answers 503 for a stored event (harmless: Stripe
    // retries, the retry is a duplicate). Only a delivery sent before the stop finished can
    // be in that case; none sent after may be stored.
    let observer = tokio::task::spawn_blocking(move || {
        Pool::connect(
            &DatabaseUrl::Postgres(url),
            PoolOptions {
                max_size: 1,
                ..PoolOptions::default()
            },
        )
        .expect("observer pool")
    })
    .await
    .expect("observer");
    let (mut acked, mut refused, mut refused_but_committed) = (0, Vec::new(), 0);
    let mut slowest_refusal = Duration::ZERO;
    for a in &answers {
        let row = stored(&observer, a.n);
        match a.status {
            200 => {
                // Every answer came before the restart, so nothing sent once the server was
                // down can have been stored.
                assert!(
                    a.sent < stopped,
                    "event {} acknowledged while the server was down",
                    a.n
                );
                assert!(row.is_some(), "event {} acknowledged but not stored", a.n);
                acked += 1;
            }
            503 => {
                assert_eq!(
                    a.retry_after.as_deref(),
                    Some("5"),
                    "event {}: 503 without Retry-After",
                    a.n
                );
                if row.is_some() {
                    assert!(
                        a.sent < stopped,
                        "event {} refused and stored, though sent {:?} after the server was down",
                        a.n,
                        a.sent.duration_since(stopped)
                    );
                    refused_but_committed += 1;
                }
                slowest_refusal = slowest_refusal.max(a.took);
                refused.push(a.n);
            }
            other => panic!("event {}: unexpected {other}: {}", a.n, a.text),
        }
    }
    assert!(
        !refused.is_empty(),
        "the stopped server refused nothing: {:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );

    // Recovery without restarting payhook: Stripe retries each refused event (again after a
    // pause while it is still refused); the admission writers and the processor must
    // reconnect by themselves.
    let deadline = restarted + RECOVERY_BOUND;
    let mut refused_again = 0;
    let mut first_stored = None;
    for &n in &refused {
        loop {
            let response = tokio::time::timeout(ANSWER_BOUND, app.post_signed(&body(n)))
                .await
                .unwrap_or_else(|_| panic!("retry of event {n}: no answer in {ANSWER_BOUND:?}"));
            match response.status().as_u16() {
                200 => break,
                503 => refused_again += 1,
                other => panic!("retry of event {n}: unexpected {other}"),
            }
            assert!(
                Instant::now() < deadline,
                "retries still refused {RECOVERY_BOUND:?} after the restart"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        first_stored.get_or_insert_with(|| restarted.elapsed());
    }
    let all = BEFORE + LOAD;
    loop {
        let observer = observer.clone();
        let unapplied = tokio::task::spawn_blocking(move || {
            (0..all)
                .filter(|&n| stored(&observer, n).is_none_or(|e| e.status.as_str() != "processed"))
                .collect::<Vec<_>>()
        })
        .await
        .expect("observer");
        if unapplied.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "events not stored and applied {RECOVERY_BOUND:?} after the restart: {unapplied:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered = restarted.elapsed();
    // And through payhook's own pool: it too is whole again.
    for n in 0..all {
        let event = app.event(&event_id(n)).expect("stored");
        assert_eq!(event.status.as_str(), "processed", "event {n}");
    }
    assert_eq!(app.count_events(), all as i64);
    println!(
        "pg outage: {} deliveries answered 503 with Retry-After (slowest {slowest_refusal:?}), \
         {acked} answered 200 (all stored), {refused_but_committed} refused but committed by the \
         stop; server down {outage:?} (stop took {:?}, restart with crash recovery {:?}); after the restart the first \
         retry was stored in {:?}, {refused_again} retries refused again, all {all} events stored \
         and applied {recovered:?} after it, payhook never restarted",
        refused.len(),
        stopped.duration_since(stop_began),
        restarted.duration_since(restart_began),
        first_stored.unwrap_or_default(),
    );
}
