//! Three `payhook serve` processes on one PostgreSQL database, one of them killed with
//! SIGKILL halfway through the deliveries and started again: every acknowledged event is
//! stored once, applied once, and every checkout ends where the pure state machine says;
//! every Stripe side effect happened exactly once at a fake Stripe.
//!
//! Side effects: all instances share one fake Stripe ([`FakeStripe`], localstripe with
//! Idempotency-Key replay). [`CARD_USERS`] app users own card-saving setup intents (one to
//! three each, some saving the same card number twice), each naming a real payment method
//! created at the fake. Their events go through the same shuffled, duplicated, round-robin
//! delivery and the same SIGKILL as the others. The kill waits (up to 3 s) for a moment
//! the victim holds action leases, so it dies in the middle of Stripe calls; another
//! instance resumes those actions after `ACTION_LEASE_SECS` with the same idempotency keys. Once no event and no action is
//! pending, [`verify_side_effects`] checks at the fake: one Stripe customer per app user, the
//! user's cards attached to it and to no other customer, one card per fingerprint (older
//! duplicates detached), the newest saved card (by Stripe time) as the default; and locally: every `save_card`
//! action done, each customer linked to the Stripe customer the fake has for that user.
//! Without the fake (python3 + localstripe) the side-effect part is skipped with a SKIPPED
//! line, except under `CI=true`, where the test fails.
//!
//! PostgreSQL only (several processes on one SQLite file is not a supported deployment).
//! Figures are printed to stderr; run with `--nocapture` to see them.

use payhook::store::events::EventStatus;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use futures_util::StreamExt;
use payhook::domain::checkout::{self, CheckoutState};
use payhook::store::customers::{self, CustomerRow};
use payhook::store::outbox::OutboxRow;
use payhook::store::{now_secs, Conn, DatabaseUrl, Pool, PoolOptions};
use payhook::stripe::signature;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};

use crate::fake_stripe::{self, FakeStripe};
use crate::helpers::{intent_event, postgres_available_or_skip, Backend, TestDatabase, SECRET};

const INSTANCES: usize = 3;
const INTENTS: usize = 300;
const EVENTS_PER_INTENT: usize = 10;
const DUPLICATE_SHARE: f64 = 0.10;
const CONCURRENCY: usize = 24;
/// Which instance dies, and after how many acknowledged deliveries (a fraction of all).
const VICTIM: usize = 1;
const KILL_AT_SHARE: f64 = 0.5;

const PAYMENT_TYPES: [&str; 6] = payhook::stripe::payload::PAYMENT_INTENT_EVENT_TYPES;
/// App users who save cards (`user_0` … `user_39`), and what a card-saving setup intent
/// sends: it ends succeeded, so each one asks for exactly one `save_card` action.
const CARD_USERS: usize = 40;
const CARD_TYPES: [&str; 3] = [
    "setup_intent.created",
    "setup_intent.requires_action",
    "setup_intent.succeeded",
];
/// A SIGKILLed worker's actions wait this long before another instance resumes them.
const ACTION_LEASE_SECS: u64 = 3;
const SETUP_TYPES: [&str; 5] = payhook::stripe::payload::SETUP_INTENT_EVENT_TYPES;

fn target(event_type: &str) -> CheckoutState {
    crate::helpers::target_of(event_type)
}

/// One `payhook serve` child process; killed when dropped so a failing test leaves none.
struct Instance {
    port: u16,
    log: PathBuf,
    child: Child,
}

impl Instance {
    /// `stripe`: the fake's base URL; without it the instance has no key and runs no actions.
    fn start(url: &str, port: u16, log: PathBuf, stripe: Option<&str>) -> Self {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_payhook"));
        match stripe {
            Some(base) => command
                .env("STRIPE_API_BASE", base)
                .env("STRIPE_SECRET_KEY", fake_stripe::API_KEY)
                .env("STRIPE_MAX_RPS", "1000")
                .env("ACTION_RETRY_BASE_MS", "50")
                .env("ACTION_LEASE_SECS", ACTION_LEASE_SECS.to_string()),
            None => command.env_remove("STRIPE_SECRET_KEY"),
        };
        let child = command
            .arg("serve")
            .env("DATABASE_URL", url)
            .env("BIND", format!("127.0.0.1:{port}"))
            .env("STRIPE_WEBHOOK_SECRET", SECRET)
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

/// A setup intent that saves a real card, created at the fake Stripe.
struct CardIntent {
    user: String,
    payment_method: String,
    fingerprint: String,
}

/// One to three card intents per user ([`CARD_USERS`] users, 80 intents in all), each with
/// its own payment method at the fake. Every fourth user's last intent saves their first
/// card number again (a new payment method, the same fingerprint: dedupe detaches one).
async fn create_cards(fake: &FakeStripe) -> Vec<CardIntent> {
    let mut cards = Vec::new();
    let mut numbers = 0u64;
    for u in 0..CARD_USERS {
        let user = format!("user_{u}");
        let email = format!("{user}@example.com");
        let count = 1 + u % 3 + usize::from(u == 0);
        let mut first = None;
        for j in 0..count {
            let number = match &first {
                Some(n) if j == count - 1 && u % 4 == 1 => String::clone(n),
                _ => {
                    numbers += 1;
                    format!("4242{:012}", 100_000 + numbers)
                }
            };
            first.get_or_insert_with(|| number.clone());
            let pm = fake.card(&number, &email).await;
            cards.push(CardIntent {
                user: user.clone(),
                payment_method: pm["id"].as_str().expect("pm id").to_owned(),
                fingerprint: pm["card"]["fingerprint"]
                    .as_str()
                    .expect("fingerprint")
                    .to_owned(),
            });
        }
    }
    assert!(cards.len() <= INTENTS / 2, "one setup intent per card");
    cards
}

/// Events for [`INTENTS`] intents; the first setup intents save `cards`, one each.
fn generate(cards: &[CardIntent]) -> Vec<Generated> {
    let mut rng = rand::rng();
    let mut events = Vec::with_capacity(INTENTS * EVENTS_PER_INTENT);
    for i in 0..INTENTS {
        let card = (i % 2 == 1).then(|| cards.get(i / 2)).flatten();
        let (intent, types) = if i % 2 == 0 {
            (format!("pi_scale{i:04}"), &PAYMENT_TYPES[..])
        } else if card.is_some() {
            (format!("seti_scale{i:04}"), &CARD_TYPES[..])
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
            let object = &mut value["data"]["object"];
            object["metadata"] = json!({"customer_ref": format!("user_{}", i / 10)});
            if let Some(card) = card {
                object["metadata"] = json!({"customer_ref": card.user});
                object["payment_method"] = json!(card.payment_method);
            }
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
    // One fake Stripe for all instances; None (after a SKIPPED line) outside CI without it.
    let fake = FakeStripe::start("scale_out: Stripe side effects");
    let cards = match &fake {
        Some(fake) => create_cards(fake).await,
        None => Vec::new(),
    };
    let stripe = fake.as_ref().map(|f| f.base_url.clone());
    let logs = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();

    // Started together: they also race to migrate the fresh database.
    let mut instances: Vec<Instance> = (0..INSTANCES)
        .map(|n| {
            let log = logs.path().join(format!("i{n}.log"));
            Instance::start(&url, free_port(), log, stripe.as_deref())
        })
        .collect();
    for instance in &mut instances {
        instance.wait_ready(&client).await;
    }
    let urls: Vec<String> = instances.iter().map(Instance::url).collect();

    let unique = generate(&cards);
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
        let (done, instances, client, url, stripe) = (
            done.clone(),
            instances.clone(),
            client.clone(),
            url.clone(),
            stripe.clone(),
        );
        let logs = logs.path().to_owned();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(300);
            while done.load(Ordering::SeqCst) < kill_at && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let pid = instances.lock().await[VICTIM].child.id();
            if stripe.is_some() {
                // Aim the kill at a moment the victim holds Stripe action leases (its calls
                // take milliseconds, so a blind kill almost never does).
                let url = url.clone();
                let waited = Duration::from_secs(3);
                tokio::task::spawn_blocking(move || wait_for_lease(&url, pid, waited))
                    .await
                    .expect("lease query");
            }
            let killed_at = done.load(Ordering::SeqCst);
            let port = {
                let mut all = instances.lock().await;
                all[VICTIM].kill();
                all[VICTIM].port
            };
            let held = {
                let url = url.clone();
                tokio::task::spawn_blocking(move || actions_leased_by(&url, pid))
                    .await
                    .expect("lease query")
            };
            tokio::time::sleep(Duration::from_millis(500)).await;
            let log = logs.join(format!("i{VICTIM}b.log"));
            let mut fresh = Instance::start(&url, port, log, stripe.as_deref());
            fresh.wait_ready(&client).await;
            instances.lock().await[VICTIM] = fresh;
            (killed_at, held)
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
    let (killed_at, held) = tokio::time::timeout(Duration::from_secs(60), killer)
        .await
        .expect("restart in time")
        .expect("killer task");
    let refused: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();

    let pool = Pool::connect(&db.url(), PoolOptions::default()).unwrap();
    let settled = wait_until_settled(&pool, started).await;
    let elapsed = started.elapsed();
    let effects = match &fake {
        Some(fake) => {
            let mut conn = pool.get().unwrap();
            SideEffects::collect(fake, &mut conn, &cards).await
        }
        None => SideEffects::default(),
    };
    let (acknowledged, redelivered) = {
        let mut tally = tally.lock().unwrap();
        (std::mem::take(&mut tally.acknowledged), tally.redelivered)
    };
    eprintln!(
        "scale-out: {INSTANCES} instances, {total} deliveries sent ({} unique events for \
         {INTENTS} intents + {duplicates} duplicates), {} unique acknowledged, {redelivered} \
         acknowledged only by another instance, {} never acknowledged; instance {VICTIM} SIGKILLed after {killed_at} answered deliveries \
         holding {held} leased Stripe actions and restarted; all delivered in {delivered_in:.1?}, all applied in {:.1?}; {}",
        unique.len(),
        acknowledged.len(),
        refused.len(),
        settled.events_at,
        effects.summary(fake.is_some(), cards.len(), elapsed),
    );
    let pending = settled.pending_events;
    assert!(pending.is_empty(), "events still pending: {pending:?}");
    assert!(
        settled.pending_actions.is_empty(),
        "Stripe actions still pending: {:?}",
        settled.pending_actions
    );
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
    if fake.is_some() {
        verify_side_effects(&effects, &cards);
    }
    drop(conn);
    drop(pool);
    drop(Arc::try_unwrap(instances).ok());
    drop(db);
    drop(fake);
}

struct Settled {
    pending_events: Vec<(String, i64)>,
    /// Action ids and steps still pending.
    pending_actions: Vec<(i64, String)>,
    /// Since `started`, when no event was pending any more.
    events_at: Duration,
}

/// Waits (bounded) until no event and no Stripe action is pending.
async fn wait_until_settled(pool: &Pool, started: Instant) -> Settled {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut events_at = None;
    loop {
        let (counts, actions) = {
            let mut conn = pool.get().unwrap();
            (
                payhook::store::events::count_events_by_status(&mut conn).unwrap(),
                payhook::store::outbox::list_items(&mut conn, payhook::outbox::save_card::KIND)
                    .unwrap(),
            )
        };
        let pending_events: Vec<_> = counts
            .into_iter()
            .filter(|(s, n)| *s == EventStatus::Pending && *n > 0)
            .map(|(s, n)| (s.to_string(), n))
            .collect();
        if pending_events.is_empty() {
            events_at.get_or_insert_with(|| started.elapsed());
        }
        let pending_actions: Vec<_> = actions
            .into_iter()
            .filter(|a| a.status.as_str() == "pending")
            .map(|a| (a.id, a.step))
            .collect();
        let settled = pending_events.is_empty() && pending_actions.is_empty();
        if settled || Instant::now() > deadline {
            return Settled {
                pending_events,
                pending_actions,
                events_at: events_at.unwrap_or_else(|| started.elapsed()),
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls (bounded) until the worker of process `pid` holds an action lease.
fn wait_for_lease(url: &str, pid: u32, at_most: Duration) {
    let deadline = Instant::now() + at_most;
    let mut conn = pg(url);
    while count_leased_by(&mut conn, pid) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Pending actions leased by the worker of process `pid`.
fn actions_leased_by(url: &str, pid: u32) -> i64 {
    count_leased_by(&mut pg(url), pid)
}

fn pg(url: &str) -> diesel::PgConnection {
    use diesel::Connection;
    diesel::PgConnection::establish(url).expect("connect")
}

/// A worker's id starts with its process id; a pending action with `locked_by` is leased.
fn count_leased_by(conn: &mut diesel::PgConnection, pid: u32) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    diesel::sql_query(
        "SELECT count(*) AS n FROM outbox \
         WHERE status = 'pending' AND locked_by LIKE $1",
    )
    .bind::<Text, _>(format!("{pid}-%"))
    .get_result::<Count>(conn)
    .expect("count leased actions")
    .n
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
    // Every event settled, so none is left in the processor's queue (its rows are deleted
    // with the outcome; a SIGKILLed instance's batch rolled back with its rows still there).
    let queued = query::<IdStatus>(
        conn,
        "SELECT id, 'queued' AS status FROM webhook_event_queue",
    );
    assert!(
        queued.is_empty(),
        "queue rows of settled events: {:?}",
        queued.iter().map(|r| &r.id).take(10).collect::<Vec<_>>()
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

/// The outbox, the local customers and the fake Stripe's state once everything settled.
#[derive(Default)]
struct SideEffects {
    actions: Vec<OutboxRow>,
    /// Local customers of the card users, by `customer_ref`.
    local: HashMap<String, CustomerRow>,
    /// Every customer at the fake.
    customers: Vec<Value>,
    /// The card payment methods the fake lists for each customer id.
    attached: HashMap<String, Vec<String>>,
    /// Each created card's `customer` at the fake (None: detached).
    owner: HashMap<String, Option<String>>,
    /// Stripe time each card was saved at (its succeeded event's `created`), as recorded.
    saved_at: HashMap<String, i64>,
}

impl SideEffects {
    async fn collect(fake: &FakeStripe, conn: &mut Conn, cards: &[CardIntent]) -> Self {
        let actions =
            payhook::store::outbox::list_items(conn, payhook::outbox::save_card::KIND).unwrap();
        let mut local = HashMap::new();
        for card in cards {
            if let Some(found) = customers::find_customer_by_ref(conn, None, &card.user).unwrap() {
                local.insert(card.user.clone(), found);
            }
        }
        let mut all = Vec::new();
        loop {
            let path = match all.last().and_then(|c: &Value| c["id"].as_str()) {
                Some(last) => format!("/v1/customers?limit=100&starting_after={last}"),
                None => "/v1/customers?limit=100".to_owned(),
            };
            let page = fake.get(&path).await;
            let data = page["data"].as_array().expect("a list").clone();
            let more = page["has_more"].as_bool() == Some(true) && !data.is_empty();
            all.extend(data);
            if !more {
                break;
            }
        }
        let mut attached = HashMap::new();
        for customer in &all {
            let id = customer["id"].as_str().expect("customer id");
            let list = fake
                .get(&format!(
                    "/v1/payment_methods?customer={id}&type=card&limit=100"
                ))
                .await;
            let ids = list["data"]
                .as_array()
                .expect("a list")
                .iter()
                .map(|pm| pm["id"].as_str().expect("pm id").to_owned())
                .collect();
            attached.insert(id.to_owned(), ids);
        }
        let mut owner = HashMap::new();
        let mut saved_at = HashMap::new();
        for card in cards {
            let row =
                payhook::store::payment_methods::find_payment_method(conn, &card.payment_method)
                    .unwrap()
                    .unwrap_or_else(|| panic!("no local record of {}", card.payment_method));
            let at = row
                .saved_at
                .unwrap_or_else(|| panic!("{} has no saved_at", row.id));
            saved_at.insert(card.payment_method.clone(), at);
            let pm = fake
                .get(&format!("/v1/payment_methods/{}", card.payment_method))
                .await;
            let customer = pm["customer"].as_str().map(str::to_owned);
            owner.insert(card.payment_method.clone(), customer);
        }
        Self {
            actions,
            local,
            customers: all,
            attached,
            owner,
            saved_at,
        }
    }

    fn summary(&self, checked: bool, cards: usize, elapsed: Duration) -> String {
        if !checked {
            return "Stripe side effects not checked (no fake Stripe)".to_owned();
        }
        let done = self
            .actions
            .iter()
            .filter(|a| a.status.as_str() == "done")
            .count();
        let retries: i64 = self.actions.iter().map(|a| i64::from(a.attempts)).sum();
        let detached = self.owner.values().filter(|o| o.is_none()).count();
        format!(
            "side effects: {} save_card actions for {cards} card intents ({done} done, \
             {retries} retried tries), {} Stripe customers created for {CARD_USERS} users, \
             {detached} duplicate cards detached, all done in {elapsed:.1?}",
            self.actions.len(),
            self.customers.len(),
        )
    }
}

/// Every card intent saved its card exactly once: one done action each; at the fake one
/// customer per user holding one card per fingerprint (the newest copy by Stripe time, older
/// duplicates detached), no card on two customers, the newest saved card as the default,
/// whatever order the shuffled webhooks arrived in; and the local customers link those
/// Stripe customers and that default.
fn verify_side_effects(fx: &SideEffects, cards: &[CardIntent]) {
    let mut by_pm: HashMap<String, &OutboxRow> = HashMap::new();
    for action in &fx.actions {
        assert_eq!(action.kind.as_str(), "save_card", "{action:?}");
        assert_eq!(action.status.as_str(), "done", "{action:?}");
        let pm = crate::fake_stripe::item_payment_method(action);
        let twice = by_pm.insert(pm.clone(), action);
        assert!(twice.is_none(), "two actions save {pm}");
    }
    assert_eq!(fx.actions.len(), cards.len(), "one action per card intent");
    for card in cards {
        assert!(
            by_pm.contains_key(card.payment_method.as_str()),
            "no action saves {}",
            card.payment_method
        );
    }
    // "Newest" is Stripe time, not the order the saves ran in; a tie allows either card.
    let saved = |pm: &str| fx.saved_at[pm];

    let mut per_user: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for customer in &fx.customers {
        let user = customer["metadata"]["customer_ref"]
            .as_str()
            .unwrap_or("(no customer_ref)");
        per_user.entry(user).or_default().push(customer);
    }
    let users: BTreeSet<&str> = cards.iter().map(|c| c.user.as_str()).collect();
    assert_eq!(
        per_user.keys().copied().collect::<BTreeSet<_>>(),
        users,
        "Stripe customers exist for the card users only"
    );
    let mut holder: HashMap<&str, &str> = HashMap::new();
    for (customer, pms) in &fx.attached {
        for pm in pms {
            if let Some(other) = holder.insert(pm, customer) {
                panic!("{pm} is attached to {other} and {customer}");
            }
        }
    }

    for user in users {
        let found = &per_user[user];
        assert_eq!(
            found.len(),
            1,
            "{user} has {} Stripe customers",
            found.len()
        );
        let customer = found[0];
        let cus = customer["id"].as_str().expect("customer id");
        let local = fx.local.get(user).expect("local customer");
        assert_eq!(local.stripe_customer_id.as_deref(), Some(cus), "{user}");

        let mine: Vec<&CardIntent> = cards.iter().filter(|c| c.user == user).collect();
        let attached: BTreeSet<&str> = fx.attached[cus].iter().map(String::as_str).collect();
        for pm in &attached {
            assert!(
                mine.iter().any(|c| c.payment_method == *pm),
                "{user}'s {cus} holds {pm}, not one of the user's cards"
            );
        }
        let mut by_fingerprint: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for card in &mine {
            by_fingerprint
                .entry(&card.fingerprint)
                .or_default()
                .push(&card.payment_method);
        }
        for (fingerprint, pms) in by_fingerprint {
            let kept: Vec<&str> = pms
                .iter()
                .copied()
                .filter(|pm| attached.contains(pm))
                .collect();
            assert_eq!(
                kept.len(),
                1,
                "{user} {fingerprint}: {pms:?} attached {kept:?}"
            );
            let last = pms.iter().map(|pm| saved(pm)).max();
            assert_eq!(
                Some(saved(kept[0])),
                last,
                "{user}: the kept {fingerprint} card is not the newest copy"
            );
            for pm in pms {
                let expected = (pm == kept[0]).then_some(cus);
                assert_eq!(fx.owner[pm].as_deref(), expected, "{user}: {pm}");
            }
        }
        let default = customer["invoice_settings"]["default_payment_method"]
            .as_str()
            .unwrap_or_else(|| panic!("{user}'s {cus} has no default card"));
        assert!(attached.contains(default), "{user}: default {default}");
        let last = mine.iter().map(|c| saved(&c.payment_method)).max();
        assert_eq!(
            Some(saved(default)),
            last,
            "{user}: the default {default} is not the newest saved card"
        );
        assert_eq!(
            local.default_payment_method_id.as_deref(),
            Some(default),
            "{user}: local default"
        );
    }
}
