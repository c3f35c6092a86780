//! Survival: a crash mid-load, an unavailable database, slow and abusive clients, and secrets
//! in logs. Each test is bounded (well under a minute here) and prints its figure, so
//! `cargo test -- --nocapture survival` doubles as a report.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use payhook::store::checkouts;
use payhook::store::events;
use payhook::store::{now_secs, DatabaseUrl, Pool, PoolOptions};
use payhook::stripe::signature::header_for;

use crate::helpers::{
    both_backends, bytes, fixture, fixtures_dir, intent_event, spawn_app_on, Backend, SECRET,
};

/// A port nobody listens on right now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `payhook serve` as a child process on `port`, its output in `log`.
fn spawn_serve(db: &Path, port: u16, log: &Path, extra_env: &[(&str, &str)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_payhook"));
    command
        .arg("serve")
        .env("DATABASE_URL", db)
        .env("BIND", format!("127.0.0.1:{port}"))
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .env("HTTP_WORKERS", "2")
        .env("PROCESS_POLL_MS", "20")
        .env("PROCESS_RETRY_BASE_MS", "10")
        .env_remove("STRIPE_SECRET_KEY")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log);
    for (k, v) in extra_env {
        command.env(k, v);
    }
    command.spawn().expect("payhook serve starts")
}

/// Polls `/readyz` until 200; returns how long it took.
async fn wait_ready(port: u16, child: &mut Child) -> Duration {
    let started = Instant::now();
    let client = reqwest::Client::new();
    loop {
        assert!(
            child.try_wait().expect("child status").is_none(),
            "payhook serve exited early"
        );
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .timeout(Duration::from_millis(500))
            .send()
            .await
        {
            if r.status() == 200 {
                return started.elapsed();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "serve not ready in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn open_pool(db: &Path) -> Pool {
    Pool::connect(
        &DatabaseUrl::Sqlite(db.to_owned()),
        PoolOptions {
            max_size: 2,
            ..PoolOptions::default()
        },
    )
    .expect("pool")
}

fn pending(pool: &Pool) -> i64 {
    let mut conn = pool.get().expect("connection");
    events::count_events_by_status(&mut conn)
        .expect("counts")
        .into_iter()
        .filter(|(s, _)| s.as_str() == "pending")
        .map(|(_, n)| n)
        .sum()
}

/// The processor's queue rows: one per pending event, whatever killed the writer.
fn queued(pool: &Pool) -> i64 {
    let mut conn = pool.get().expect("connection");
    events::count_pending_events(&mut conn).expect("queue")
}

const LIFE: [&str; 4] = [
    "payment_intent.created",
    "payment_intent.requires_action",
    "payment_intent.processing",
    "payment_intent.succeeded",
];

/// Event `n` of a load spread over `intents` checkouts, each following `LIFE`.
fn load_event(run: &str, n: usize, intents: usize) -> (String, String, Vec<u8>) {
    let intent = format!("pi_{run}{:04}", n % intents);
    let step = (n / intents) % LIFE.len();
    let id = format!("evt_{run}{n:06}");
    let body = intent_event(&id, LIFE[step], &intent, 1_763_900_000 + step as i64);
    (id, intent, bytes(&body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_load_loses_no_acknowledged_event_and_half_applies_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("payhook.sqlite3");
    let log = dir.path().join("serve.log");
    let port = free_port();
    let mut child = spawn_serve(&db, port, &log, &[]);
    let first_ready = wait_ready(port, &mut child).await;

    let run = "kill";
    let intents = 200;
    let next = Arc::new(Mutex::new(0usize));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("http://127.0.0.1:{port}/webhooks/stripe");
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (next, acked, stop, url) = (next.clone(), acked.clone(), stop.clone(), url.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut sent = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let n = {
                        let mut next = next.lock().expect("lock");
                        *next += 1;
                        *next - 1
                    };
                    let (id, _, body) = load_event(run, n, intents);
                    let header = header_for(&body, SECRET, now_secs());
                    sent += 1;
                    let response = client
                        .post(&url)
                        .header("Stripe-Signature", header)
                        .body(body)
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status().is_success() => {
                            acked.lock().expect("lock").push(id);
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
                sent
            })
        })
        .collect();
    // Let the load and the processor get going, then kill without warning.
    let load_started = Instant::now();
    while acked.lock().expect("lock").len() < 300 {
        assert!(
            load_started.elapsed() < Duration::from_secs(20),
            "load too slow"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    child.kill().expect("SIGKILL");
    let killed_at = load_started.elapsed();
    child.wait().expect("reaped");
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    for w in workers {
        sent += w.await.expect("worker");
    }
    let acked: Vec<String> = acked.lock().expect("lock").clone();

    // What the crash left: every acknowledged event is stored.
    let pool = open_pool(&db);
    let left_pending = pending(&pool);
    assert_eq!(
        queued(&pool),
        left_pending,
        "after the crash: queue rows vs pending events"
    );
    let mut conn = pool.get().expect("connection");
    for id in &acked {
        assert!(
            events::find_event(&mut conn, id).expect("query").is_some(),
            "acknowledged event {id} lost by the crash"
        );
    }
    drop(conn);

    // Restart on the same database: it applies what was left, once.
    let port2 = free_port();
    let mut child = spawn_serve(&db, port2, &log, &[]);
    let restart_ready = wait_ready(port2, &mut child).await;
    let settle_started = Instant::now();
    while pending(&pool) > 0 {
        assert!(
            settle_started.elapsed() < Duration::from_secs(30),
            "backlog not applied after restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settle = settle_started.elapsed();
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    assert_eq!(
        queued(&pool),
        0,
        "queue rows left after the backlog was applied"
    );

    // Every stored event is applied exactly once: one audit row (transition or refusal) per
    // event, and each checkout's state is the one its last applied transition set.
    let mut conn = pool.get().expect("connection");
    let mut stored = 0usize;
    let mut audited = 0usize;
    for i in 0..intents {
        let intent = format!("pi_{run}{i:04}");
        let ids: HashSet<String> = (0..*next.lock().expect("lock"))
            .filter(|n| n % intents == i)
            .map(|n| format!("evt_{run}{n:06}"))
            .filter(|id| {
                events::find_event(&mut conn, id)
                    .expect("query")
                    .is_some_and(|e| {
                        assert_eq!(e.status.as_str(), "processed", "event {id}");
                        true
                    })
            })
            .collect();
        stored += ids.len();
        let Some(checkout) = checkouts::find_checkout_by_intent(&mut conn, &intent).expect("q")
        else {
            assert!(ids.is_empty(), "{intent}: events stored but no checkout");
            continue;
        };
        let trail = checkouts::list_transitions(&mut conn, &checkout.id).expect("trail");
        let mut per_event: HashMap<String, usize> = HashMap::new();
        for t in &trail {
            *per_event
                .entry(t.event_id.clone().unwrap_or_default())
                .or_default() += 1;
        }
        for id in &ids {
            assert_eq!(per_event.get(id), Some(&1), "{id} applied {per_event:?}");
        }
        assert_eq!(
            trail.len(),
            ids.len(),
            "{intent}: audit rows without events"
        );
        audited += trail.len();
        let last_applied = trail
            .iter()
            .filter(|t| t.outcome.as_str() == "applied")
            .max_by_key(|t| t.id)
            .expect("an applied transition");
        assert_eq!(checkout.state, last_applied.to_state, "{intent}");
    }
    assert!(stored >= acked.len());
    println!(
        "sigkill: {sent} sent, {} acknowledged (all stored), {stored} stored, killed at {killed_at:?} \
         with {left_pending} pending, restart ready in {restart_ready:?} (first start {first_ready:?}), \
         backlog applied in {settle:?}, {audited} audit rows = one per stored event",
        acked.len()
    );
}

/// SQLite only: its second outage holds SQLite's exclusive file lock past the busy timeout,
/// which has no PostgreSQL equivalent that fails fast (PostgreSQL waits on locks).
#[tokio::test]
async fn an_unavailable_database_gets_503_never_2xx_and_service_recovers_by_itself() {
    let app = spawn_app_on(Backend::Sqlite, |c| {
        c.processor.retry_base = Duration::from_millis(10);
    })
    .await;
    let body = |n: usize| {
        bytes(&intent_event(
            &format!("evt_outage{n:03}"),
            "payment_intent.created",
            &format!("pi_outage{n:03}"),
            1_763_900_000,
        ))
    };
    for n in 0..5 {
        app.deliver(&body(n)).await;
    }

    // Outage 1: the inbox table is gone (as after a botched restore). Running as root, chmod
    // cannot make the file unwritable, so the store is broken from inside: every insert fails
    // exactly as on a read-only or missing database.
    app.with_conn(|c| {
        payhook::with_conn!(c, c => c.batch_execute("ALTER TABLE webhook_events RENAME TO webhook_events_away"))
            .expect("rename")
    });
    let mut refused = 0;
    for n in 5..15 {
        let response = app.post_signed(&body(n)).await;
        assert_eq!(response.status(), 503, "event {n} during the outage");
        assert_eq!(response.headers()["retry-after"], "5");
        refused += 1;
    }
    app.with_conn(|c| {
        payhook::with_conn!(c, c => c.batch_execute("ALTER TABLE webhook_events_away RENAME TO webhook_events"))
            .expect("rename back")
    });
    for n in 5..15 {
        assert!(app.event(&format!("evt_outage{n:03}")).is_none());
    }

    // Outage 2: another process holds the write lock longer than busy_timeout (5 s), as a
    // stuck backup or migration would. Deliveries wait, then get 503; none is stored.
    let pool = app.pool.clone();
    let locked = Arc::new(AtomicBool::new(false));
    let holder = {
        let locked = locked.clone();
        std::thread::spawn(move || {
            let mut conn = pool.get().expect("connection");
            payhook::with_conn!(&mut conn, c => {
                c.batch_execute("BEGIN EXCLUSIVE").expect("lock");
                locked.store(true, Ordering::SeqCst);
                // Past twice busy_timeout: a writer that needs a fresh connection waits once for
                // `journal_mode` and once for its transaction.
                std::thread::sleep(Duration::from_millis(12_000));
                c.batch_execute("ROLLBACK").expect("unlock");
            });
        })
    };
    while !locked.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let during_lock = Instant::now();
    let answers = futures_util::future::join_all((15..20).map(|n| {
        let body = body(n);
        let app = &app;
        async move { app.post_signed(&body).await.status().as_u16() }
    }))
    .await;
    let waited = during_lock.elapsed();
    holder.join().expect("lock holder");
    // A batch that waited past busy_timeout failed (503); one that began later may have got
    // the lock once it was released (200). Either way: 200 only if stored, 503 only if not.
    let mut refused_during_lock = 0;
    for (n, status) in (15..20).zip(&answers) {
        let stored = app.event(&format!("evt_outage{n:03}")).is_some();
        match status {
            200 => assert!(stored, "event {n} acknowledged but not stored"),
            503 => {
                assert!(!stored, "event {n} refused but stored");
                refused_during_lock += 1;
            }
            other => panic!("event {n}: unexpected {other}"),
        }
    }
    assert!(
        refused_during_lock >= 1,
        "the lock refused nothing: {answers:?}"
    );
    refused += refused_during_lock;

    // Recovery without a restart: Stripe's retries are stored and applied.
    let recovered = Instant::now();
    for n in 5..20 {
        app.deliver(&body(n)).await;
    }
    app.settle().await;
    for n in 0..20 {
        let event = app.event(&format!("evt_outage{n:03}")).expect("stored");
        assert_eq!(event.status.as_str(), "processed");
    }
    println!(
        "outage: {refused} deliveries answered 503 (0 acknowledged without storage), lock wait {waited:?}, \
         all retries stored and applied {:?} after recovery",
        recovered.elapsed()
    );
}

/// Sends raw bytes on a fresh connection; returns what came back before close or `wait`.
fn raw_exchange(port: u16, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

async fn slow_and_abusive_clients_do_not_stop_other_deliveries(backend: Backend) {
    let app = spawn_app_on(backend, |c| {
        c.client_request_timeout = Duration::from_secs(1);
        c.max_body_bytes = 64 * 1024;
    })
    .await;
    let port: u16 = app
        .address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");

    // 200 slowloris connections: a request head one byte at a time, never finished.
    let stop = Arc::new(AtomicBool::new(false));
    let closed_after = Arc::new(Mutex::new(Vec::new()));
    let slow: Vec<_> = (0..200)
        .map(|_| {
            let (stop, closed_after) = (stop.clone(), closed_after.clone());
            std::thread::spawn(move || {
                let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                    return;
                };
                let started = Instant::now();
                let head = b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
                for byte in head.iter().cycle() {
                    if stop.load(Ordering::Relaxed) || s.write_all(&[*byte]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                if !stop.load(Ordering::Relaxed) {
                    closed_after.lock().expect("lock").push(started.elapsed());
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    // Meanwhile, real deliveries are served promptly.
    let mut worst = Duration::ZERO;
    for n in 0..50 {
        let started = Instant::now();
        app.deliver(&bytes(&intent_event(
            &format!("evt_slow{n:03}"),
            "payment_intent.created",
            &format!("pi_slow{n:03}"),
            1_763_900_000,
        )))
        .await;
        worst = worst.max(started.elapsed());
    }
    assert!(
        worst < Duration::from_secs(1),
        "a delivery took {worst:?} beside slow clients"
    );

    // A body that trickles in is cut off by the request timeout too.
    let event = bytes(&intent_event(
        "evt_trickle",
        "payment_intent.created",
        "pi_trickle",
        1,
    ));
    let header = header_for(&event, SECRET, now_secs());
    let trickle_started = Instant::now();
    let trickle = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let head = format!(
            "POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nStripe-Signature: {header}\r\nContent-Length: {}\r\n\r\n",
            event.len()
        );
        s.write_all(head.as_bytes()).expect("head");
        for byte in &event[..event.len() - 1] {
            if s.write_all(&[*byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .expect("trickle");
    let trickle_cut = trickle_started.elapsed();
    assert!(
        trickle.starts_with("HTTP/1.1 408"),
        "slow body: {trickle:?}"
    );
    assert!(app.event("evt_trickle").is_none());

    // Oversized heads are refused; the server goes on serving.
    let huge_header = format!(
        "POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let answer = raw_exchange(port, huge_header.as_bytes(), Duration::from_secs(5));
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "huge header: {answer:?}"
    );
    let many_headers: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = raw_exchange(
        port,
        format!("POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n").as_bytes(),
        Duration::from_secs(5),
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "many headers: {answer:?}"
    );
    let answer = raw_exchange(
        port,
        b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(answer.starts_with("HTTP/1.1 413"), "huge body: {answer:?}");
    app.deliver(&fixture("payment_intent.created.json")).await;

    // The slow heads were cut off by the server, not left open.
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for t in slow {
        t.join().expect("slow client");
    }
    let closed = closed_after.lock().expect("lock").clone();
    let slowest = closed.iter().max().copied().unwrap_or_default();
    assert!(
        closed.len() >= 190,
        "only {} of 200 slow connections closed by the server",
        closed.len()
    );
    println!(
        "slow clients: 200 slowloris connections closed by the server within {slowest:?}; \
         50 deliveries beside them, worst {worst:?}; trickled body cut after {trickle_cut:?} (408); \
         200 KiB head, 200 headers and a 100 MB Content-Length refused"
    );
}
both_backends!(slow_and_abusive_clients_do_not_stop_other_deliveries; multi_thread);

/// Every secret-looking value a full run handles: the webhook secret, the API key, and each
/// `client_secret` in the fixtures.
fn secrets_to_hunt(api_key: &str) -> Vec<String> {
    let mut secrets = vec![SECRET.to_owned(), api_key.to_owned()];
    for entry in std::fs::read_dir(fixtures_dir()).expect("fixtures") {
        let path: PathBuf = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("fixture");
            for piece in text.split('"') {
                if piece.contains("_secret_") {
                    secrets.push(piece.to_owned());
                    // The part after `_secret_` alone is the sensitive half.
                    if let Some((_, tail)) = piece.split_once("_secret_") {
                        secrets.push(tail.to_owned());
                    }
                }
            }
        }
    }
    secrets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_any_log_line_at_trace_level() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("payhook.sqlite3");
    let log = dir.path().join("serve.log");
    let port = free_port();
    let api_key = "sk_test_51LogHuntNeverPrintThisKey0123456789";
    let rotated = format!("whsec_old_rotated_secret_abc,{SECRET}");
    let mut child = spawn_serve(
        &db,
        port,
        &log,
        &[
            ("RUST_LOG", "trace"),
            ("STRIPE_SECRET_KEY", api_key),
            ("STRIPE_WEBHOOK_SECRET", &rotated),
            ("STRIPE_API_BASE", "http://127.0.0.1:9"),
        ],
    );
    wait_ready(port, &mut child).await;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/webhooks/stripe");
    let mut delivered = 0;
    // Every fixture, twice (the second is a duplicate), then every kind of refusal.
    for entry in std::fs::read_dir(fixtures_dir()).expect("fixtures") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let body = std::fs::read(&path).expect("fixture");
        for _ in 0..2 {
            let response = client
                .post(&url)
                .header("Stripe-Signature", header_for(&body, SECRET, now_secs()))
                .body(body.clone())
                .send()
                .await
                .expect("sent");
            assert_eq!(response.status(), 200, "{}", path.display());
            delivered += 1;
        }
    }
    let body = fixture("payment_intent.succeeded.json");
    let bad = [
        header_for(&body, "whsec_wrong", now_secs()),
        header_for(&body, SECRET, now_secs() - 10_000),
        "t=1,v1=zz".to_owned(),
        "garbage".to_owned(),
    ];
    for header in bad {
        let response = client
            .post(&url)
            .header("Stripe-Signature", header)
            .body(body.clone())
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 400);
    }
    let response = client
        .post(&url)
        .header(
            "Stripe-Signature",
            header_for(b"{not json", SECRET, now_secs()),
        )
        .body("{not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);
    let pool = open_pool(&db);
    let started = Instant::now();
    while pending(&pool) > 0 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A graceful stop, so shutdown logging is covered too.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let stop_started = Instant::now();
    while child.try_wait().expect("status").is_none() {
        if stop_started.elapsed() > Duration::from_secs(15) {
            child.kill().expect("kill");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let text = std::fs::read_to_string(&log).expect("log");
    let lines = text.lines().count();
    assert!(
        lines > 50 && text.contains("TRACE") && text.contains("DEBUG"),
        "trace logging did not happen ({lines} lines)"
    );
    let secrets = secrets_to_hunt(api_key);
    let mut found = Vec::new();
    for secret in secrets
        .iter()
        .chain(std::iter::once(&"whsec_old_rotated_secret_abc".to_owned()))
    {
        for line in text.lines().filter(|l| l.contains(secret.as_str())) {
            found.push(format!("{secret}: {line}"));
        }
    }
    assert!(found.is_empty(), "secrets in logs:\n{}", found.join("\n"));
    println!(
        "log hunt: {delivered} deliveries + 5 refusals at RUST_LOG=trace, {lines} log lines ({} bytes) \
         searched for {} secret values: 0 found",
        text.len(),
        secrets.len() + 1
    );
}
