//! Three `payhook serve` processes on one PostgreSQL database, one of them killed with
//! SIGKILL halfway through the deliveries and started again: every acknowledged event is
//! stored once, applied once, and every checkout ends where the pure state machine says.
//!
//! PostgreSQL only (several processes on one SQLite file is not a supported deployment).
//! Figures are printed to stderr; run with `--nocapture` to see them.
//!
//! Stripe side effects (the `stripe_actions` outbox and its worker) are not checked yet: when
//! they land, point every instance at a fake Stripe in [`Instance::start`] (STRIPE_API_BASE,
//! STRIPE_SECRET_KEY) and add a check beside [`verify_checkouts`] that each expected call was
//! made exactly once (by idempotency key).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use futures_util::StreamExt;
use payhook::checkout::{self, CheckoutState};
use payhook::signature;
use payhook::store::{now_secs, Conn, DatabaseUrl, Pool, PoolOptions};
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::json;

use crate::helpers::{intent_event, postgres_available_or_skip, Backend, TestDatabase, SECRET};

const INSTANCES: usize = 3;
const INTENTS: usize = 300;
const EVENTS_PER_INTENT: usize = 10;
const DUPLICATE_SHARE: f64 = 0.10;
const CONCURRENCY: usize = 24;
/// Which instance dies, and after how many acknowledged deliveries (a fraction of all).
const VICTIM: usize = 1;
const KILL_AT_SHARE: f64 = 0.5;

const PAYMENT_TYPES: [&str; 6] = [
    "payment_intent.created",
    "payment_intent.requires_action",
    "payment_intent.processing",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
];
const SETUP_TYPES: [&str; 5] = [
    "setup_intent.created",
    "setup_intent.requires_action",
    "setup_intent.succeeded",
    "setup_intent.setup_failed",
    "setup_intent.canceled",
];

fn target(event_type: &str) -> CheckoutState {
    match event_type.rsplit('.').next().unwrap() {
        "created" => CheckoutState::Pending,
        "requires_action" => CheckoutState::RequiresAction,
        "processing" => CheckoutState::Processing,
        "succeeded" => CheckoutState::Succeeded,
        "payment_failed" | "setup_failed" => CheckoutState::Failed,
        "canceled" => CheckoutState::Canceled,
        other => panic!("{other}"),
    }
}

/// One `payhook serve` child process; killed when dropped so a failing test leaves none.
struct Instance {
    port: u16,
    log: PathBuf,
    child: Child,
}

impl Instance {
    fn start(url: &str, port: u16, log: PathBuf) -> Self {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_payhook"))
            .arg("serve")
            .env("DATABASE_URL", url)
            .env("BIND", format!("127.0.0.1:{port}"))
            .env("STRIPE_WEBHOOK_SECRET", SECRET)
            .env_remove("STRIPE_SECRET_KEY")
            .env("PROCESS_POLL_MS", "50")
            .env("PROCESS_RETRY_BASE_MS", "50")
            .env("PROCESS_BATCH_SIZE", "100")
            .env("DATABASE_POOL_SIZE", "8")
            .env("HTTP_WORKERS", "2")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("payhook serve starts");
        Self { port, log, child }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/webhooks/stripe", self.port)
    }

    async fn wait_ready(&mut self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                panic!("instance exited with {status}:\n{}", tail(&self.log));
            }
            let health = format!("http://127.0.0.1:{}/healthz", self.port);
            if let Ok(r) = client.get(&health).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "not ready:\n{}", tail(&self.log));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no graceful shutdown, open transactions die with the connections.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// One generated event: its id, intent, type and Stripe time, and the signed body.
#[derive(Clone)]
struct Generated {
    id: String,
    intent: String,
    event_type: &'static str,
    created: i64,
    body: Arc<Vec<u8>>,
}

fn generate() -> Vec<Generated> {
    let mut rng = rand::rng();
    let mut events = Vec::with_capacity(INTENTS * EVENTS_PER_INTENT);
    for i in 0..INTENTS {
        let (intent, types) = if i % 2 == 0 {
            (format!("pi_scale{i:04}"), &PAYMENT_TYPES[..])
        } else {
            (format!("seti_scale{i:04}"), &SETUP_TYPES[..])
        };
        for n in 0..EVENTS_PER_INTENT {
            // Every type at least once per intent, then random ones (Stripe sends e.g.
            // several payment_failed for one intent); random seconds make ties common.
            let event_type = if n < types.len() {
                types[n]
            } else {
                types[rng.random_range(0..types.len())]
            };
            let id = format!("evt_scale{i:04}_{n:02}");
            let created = 1_700_000_000 + rng.random_range(0..20);
            let mut value = intent_event(&id, event_type, &intent, created);
            // Customers shared by ten intents: concurrent instances meet on customer rows.
            value["data"]["object"]["metadata"] =
                json!({"customer_ref": format!("user_{}", i / 10)});
            events.push(Generated {
                id,
                intent: intent.clone(),
                event_type,
                created,
                body: Arc::new(serde_json::to_vec(&value).unwrap()),
            });
        }
    }
    events
}

#[derive(Default)]
struct Tally {
    acknowledged: HashSet<String>,
    /// Deliveries not acknowledged by the first instance tried, then by another.
    redelivered: usize,
}

async fn deliver(
    client: &reqwest::Client,
    urls: &[String],
    first: usize,
    event: &Generated,
) -> Result<usize, String> {
    let mut last = String::new();
    // Like Stripe: not acknowledged means delivered again, here at once to the next instance.
    for attempt in 0..urls.len() * 3 {
        let url = &urls[(first + attempt) % urls.len()];
        let header = signature::header_for(&event.body, SECRET, now_secs());
        let sent = client
            .post(url)
            .header("Stripe-Signature", header)
            .body(event.body.to_vec())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return Ok(attempt + 1),
            Ok(r) => last = format!("{url}: {}", r.status()),
            Err(e) => last = format!("{url}: {e}"),
        }
        if attempt >= urls.len() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Err(last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_one_killed_apply_every_acknowledged_event_exactly_once() {
    if !postgres_available_or_skip() {
        return;
    }
    crate::helpers::init_logs();
    let db = tokio::task::spawn_blocking(|| TestDatabase::create(Backend::Postgres))
        .await
        .unwrap();
    let DatabaseUrl::Postgres(url) = db.url() else {
        unreachable!()
    };
    let logs = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();

    // Started together: they also race to migrate the fresh database.
    let mut instances: Vec<Instance> = (0..INSTANCES)
        .map(|n| Instance::start(&url, free_port(), logs.path().join(format!("i{n}.log"))))
        .collect();
    for instance in &mut instances {
        instance.wait_ready(&client).await;
    }
    let urls: Vec<String> = instances.iter().map(Instance::url).collect();

    let unique = generate();
    let mut deliveries: Vec<Generated> = unique.clone();
    let mut rng = rand::rng();
    let duplicates = (unique.len() as f64 * DUPLICATE_SHARE) as usize;
    for _ in 0..duplicates {
        deliveries.push(unique[rng.random_range(0..unique.len())].clone());
    }
    deliveries.shuffle(&mut rng);
    let total = deliveries.len();
    let kill_at = (total as f64 * KILL_AT_SHARE) as usize;

    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let instances = Arc::new(tokio::sync::Mutex::new(instances));
    // The killer: SIGKILL the victim once half the deliveries are answered, restart it on
    // the same port a moment later (its in-flight requests fail and go elsewhere).
    let killer = {
        let (done, instances, client, url) =
            (done.clone(), instances.clone(), client.clone(), url.clone());
        let logs = logs.path().to_owned();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(300);
            while done.load(Ordering::SeqCst) < kill_at && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let killed_at = done.load(Ordering::SeqCst);
            let port = {
                let mut all = instances.lock().await;
                all[VICTIM].kill();
                all[VICTIM].port
            };
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut fresh = Instance::start(&url, port, logs.join(format!("i{VICTIM}b.log")));
            fresh.wait_ready(&client).await;
            instances.lock().await[VICTIM] = fresh;
            killed_at
        })
    };

    let results = futures_util::stream::iter(deliveries.iter().enumerate())
        .map(|(n, event)| {
            let (client, urls, done, tally) = (&client, &urls, done.clone(), tally.clone());
            async move {
                let result = deliver(client, urls, n % INSTANCES, event).await;
                done.fetch_add(1, Ordering::SeqCst);
                if let Ok(tries) = result {
                    let mut tally = tally.lock().unwrap();
                    tally.acknowledged.insert(event.id.clone());
                    tally.redelivered += usize::from(tries > 1);
                }
                result.map(drop).map_err(|e| format!("{}: {e}", event.id))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let delivered_in = started.elapsed();
    let killed_at = tokio::time::timeout(Duration::from_secs(60), killer)
        .await
        .expect("restart in time")
        .expect("killer task");
    let refused: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();

    let pool = Pool::connect(&db.url(), PoolOptions::default()).unwrap();
    let pending = wait_until_nothing_pending(&pool).await;
    let elapsed = started.elapsed();
    let (acknowledged, redelivered) = {
        let mut tally = tally.lock().unwrap();
        (std::mem::take(&mut tally.acknowledged), tally.redelivered)
    };
    eprintln!(
        "scale-out: {INSTANCES} instances, {total} deliveries sent ({} unique events for \
         {INTENTS} intents + {duplicates} duplicates), {} unique acknowledged, {redelivered} \
         acknowledged only by another instance, {} never acknowledged; instance {VICTIM} SIGKILLed after {killed_at} answered deliveries \
         and restarted; all delivered in {delivered_in:.1?}, all applied in {elapsed:.1?}",
        unique.len(),
        acknowledged.len(),
        refused.len(),
    );
    assert!(pending.is_empty(), "events still pending: {pending:?}");
    assert!(
        refused.is_empty(),
        "deliveries never acknowledged by any instance: {:?}",
        &refused[..refused.len().min(10)]
    );

    let mut conn = pool.get().unwrap();
    verify_inbox(&mut conn, &acknowledged);
    // Neither the kill (its batch rolled back) nor contention between instances (not
    // counted) is a failed try: every event was applied at its first counted try.
    let retried = query::<IdCount>(
        &mut conn,
        "SELECT id, attempts::bigint AS n FROM webhook_events WHERE attempts <> 1",
    );
    assert!(
        retried.is_empty(),
        "events with failed tries: {:?}",
        retried
            .iter()
            .map(|r| (&r.id, r.n))
            .take(10)
            .collect::<Vec<_>>()
    );
    verify_transitions(&mut conn, &acknowledged);
    verify_checkouts(&mut conn, &unique, &acknowledged);
    drop(conn);
    drop(pool);
    drop(Arc::try_unwrap(instances).ok());
    drop(db);
}

async fn wait_until_nothing_pending(pool: &Pool) -> Vec<(String, i64)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let counts = {
            let mut conn = pool.get().unwrap();
            payhook::store::events::count_events_by_status(&mut conn).unwrap()
        };
        let pending: Vec<_> = counts
            .into_iter()
            .filter(|(s, n)| s == "pending" && *n > 0)
            .collect();
        if pending.is_empty() || Instant::now() > deadline {
            return pending;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(QueryableByName)]
struct IdCount {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct IdStatus {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    status: String,
}

fn query<T: QueryableByName<diesel::pg::Pg> + 'static>(conn: &mut Conn, sql: &str) -> Vec<T> {
    let Conn::Postgres(c) = conn else {
        unreachable!("scale-out runs on PostgreSQL")
    };
    diesel::sql_query(sql).load::<T>(&mut **c).unwrap()
}

/// Every acknowledged event is stored (once: the id is the key) and processed.
fn verify_inbox(conn: &mut Conn, acknowledged: &HashSet<String>) {
    let stored: HashMap<String, String> =
        query::<IdStatus>(conn, "SELECT id, status FROM webhook_events")
            .into_iter()
            .map(|r| (r.id, r.status))
            .collect();
    for id in acknowledged {
        match stored.get(id).map(String::as_str) {
            Some("processed") => {}
            other => panic!("acknowledged {id} is {other:?}"),
        }
    }
    assert_eq!(
        stored.len(),
        acknowledged.len(),
        "nothing unacknowledged stored"
    );
}

/// Each event left exactly one applied-or-refused row: none was applied twice.
fn verify_transitions(conn: &mut Conn, acknowledged: &HashSet<String>) {
    let rows = query::<IdCount>(
        conn,
        "SELECT event_id AS id, count(*) AS n FROM checkout_transitions \
         WHERE event_id IS NOT NULL GROUP BY event_id",
    );
    let twice: Vec<_> = rows
        .iter()
        .filter(|r| r.n != 1)
        .map(|r| (&r.id, r.n))
        .collect();
    assert!(
        twice.is_empty(),
        "{} events recorded more than once, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(10)]
    );
    let recorded: HashSet<String> = rows.into_iter().map(|r| r.id).collect();
    assert_eq!(
        &recorded, acknowledged,
        "one trail row per acknowledged event"
    );
}

/// Each checkout ends in the state the pure machine reaches over its events, whatever order
/// and instance they were applied in.
fn verify_checkouts(conn: &mut Conn, unique: &[Generated], acknowledged: &HashSet<String>) {
    let mut per_intent: BTreeMap<&str, Vec<(CheckoutState, i64)>> = BTreeMap::new();
    for e in unique.iter().filter(|e| acknowledged.contains(&e.id)) {
        per_intent
            .entry(&e.intent)
            .or_default()
            .push((target(e.event_type), e.created));
    }
    let states: HashMap<String, String> = query::<IdStatus>(
        conn,
        "SELECT intent_id AS id, state AS status FROM checkouts",
    )
    .into_iter()
    .map(|r| (r.id, r.status))
    .collect();
    assert_eq!(states.len(), per_intent.len(), "one checkout per intent");
    for (intent, events) in per_intent {
        let expected = checkout::fold(events.iter().copied()).unwrap().state;
        let mut reversed = events.clone();
        reversed.reverse();
        assert_eq!(
            checkout::fold(reversed).unwrap().state,
            expected,
            "the machine itself is order independent"
        );
        assert_eq!(
            states.get(intent).map(String::as_str),
            Some(expected.as_str()),
            "{intent}: {events:?}"
        );
    }
}
