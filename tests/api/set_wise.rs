//! The set-wise apply (`payhook::apply::staging`) against the event-by-event one: the same
//! events, applied each way on a fresh database, leave the same rows; and a gathered write
//! that another transaction made impossible sends the batch back to event-by-event.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use payhook::app::notifications::Notifications;
use payhook::config::ProcessorConfig;
use payhook::inbox::processor::{process_with, BatchReport, Isolation};
use payhook::store::events::insert_event;
use payhook::store::Pool;
use payhook::with_conn;
use serde_json::Value;

use crate::helpers::{both_backends, bytes, fixture_json, fixtures_dir, fresh_pool, stored_event};
use crate::helpers::{intent_event, Backend};

/// Every fixture, several times over: each copy's intent ids suffixed so that two copies
/// share an intent and others do not, Stripe times shuffled (events of one intent arrive out
/// of order), every other copy naming its customer by another `customer_ref`. Payment
/// method events keep their card ids, so they interleave with the intents naming the card.
fn mixed_events() -> Vec<Value> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    let mut events = Vec::new();
    for copy in 0..4u32 {
        for (n, name) in names.iter().enumerate() {
            let mut event = fixture_json(name);
            event["id"] = format!("evt_sw_{copy}_{n}").into();
            let created = event["created"].as_i64().expect("created");
            event["created"] = (created + i64::from((copy * 7 + n as u32 * 13) % 11)).into();
            let object = &mut event["data"]["object"];
            if matches!(
                object["object"].as_str(),
                Some("payment_intent" | "setup_intent")
            ) {
                let id = object["id"].as_str().expect("intent id");
                object["id"] = format!("{id}_{}", copy % 3).into();
                if copy % 2 == 1 {
                    object["metadata"]["customer_ref"] = format!("user_sw_{copy}").into();
                }
            }
            events.push(event);
        }
    }
    events
}

fn config(notifications: Notifications) -> ProcessorConfig {
    ProcessorConfig {
        notifications,
        // Room for the whole batch in one transaction (a debug build is slow).
        max_transaction: Duration::from_secs(60),
        ..ProcessorConfig::default()
    }
}

async fn store_all(pool: &Pool, events: &[Value]) {
    let mut conn = pool.get().expect("connection");
    for event in events {
        insert_event(&mut conn, &stored_event(&bytes(event))).expect("insert");
    }
}

async fn apply_all(pool: &Pool, isolation: Isolation, notifications: Notifications) -> BatchReport {
    let p = pool.clone();
    let config = config(notifications);
    tokio::task::spawn_blocking(move || process_with(&p, &config, 500, &|| false, isolation))
        .await
        .expect("batch")
        .expect("batch ran")
}

#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = Text)]
    line: String,
}

/// Every row the apply writes, as text, without what differs by construction (the random
/// checkout ids, the local times).
fn snapshot(pool: &Pool) -> Vec<String> {
    const QUERIES: [&str; 6] = [
        "SELECT 'checkout ' || c.intent_id || ' ' || c.kind || ' ' || \
           COALESCE(CAST(c.customer_id AS TEXT), '-') || ' ' || COALESCE(c.stripe_customer_id, '-') || ' ' || \
           COALESCE(c.payment_method_id, '-') || ' ' || COALESCE(CAST(c.amount AS TEXT), '-') || ' ' || \
           COALESCE(c.currency, '-') || ' ' || COALESCE(c.setup_future_usage, '-') || ' ' || c.state || ' ' || \
           COALESCE(c.state_event_id, '-') || ' ' || CAST(c.state_event_created AS TEXT) || ' ' || \
           COALESCE(c.last_error_code, '-') || ' ' || COALESCE(c.decline_code, '-') || ' ' || \
           COALESCE(c.last_error_message, '-') || ' ' || c.account AS line \
         FROM checkouts c ORDER BY c.intent_id",
        "SELECT 'transition ' || c.intent_id || ' ' || COALESCE(t.event_id, '-') || ' ' || \
           COALESCE(t.from_state, '-') || ' ' || t.to_state || ' ' || t.outcome || ' ' || \
           COALESCE(t.reason, '-') || ' ' || COALESCE(t.error_code, '-') || ' ' || \
           COALESCE(t.decline_code, '-') || ' ' || COALESCE(CAST(t.event_created AS TEXT), '-') AS line \
         FROM checkout_transitions t JOIN checkouts c ON c.id = t.checkout_id ORDER BY t.id",
        "SELECT 'card ' || id || ' ' || COALESCE(CAST(customer_id AS TEXT), '-') || ' ' || \
           COALESCE(stripe_customer_id, '-') || ' ' || COALESCE(brand, '-') || ' ' || COALESCE(last4, '-') || ' ' || \
           COALESCE(fingerprint, '-') || ' ' || COALESCE(billing_email, '-') || ' ' || status || ' ' || \
           COALESCE(CAST(attached_at AS TEXT), '-') || ' ' || COALESCE(CAST(detached_at AS TEXT), '-') || ' ' || \
           COALESCE(CAST(saved_at AS TEXT), '-') AS line \
         FROM payment_methods ORDER BY id",
        "SELECT 'customer ' || CAST(id AS TEXT) || ' ' || COALESCE(customer_ref, '-') || ' ' || \
           COALESCE(stripe_customer_id, '-') || ' ' || COALESCE(email, '-') || ' ' || account AS line \
         FROM customers ORDER BY id",
        // A notification's key, lane and body carry the random checkout id: its order and checkout
        // tell it apart instead.
        "SELECT 'outbox ' || o.kind || ' ' || \
           CASE WHEN o.kind = 'notify' THEN '-' \
             ELSE o.idempotency_key || ' ' || o.data || ' ' || COALESCE(o.lane, '-') END || ' ' || \
           COALESCE(c.intent_id, '-') || ' ' || o.step || ' ' || o.status AS line \
         FROM outbox o LEFT JOIN checkouts c ON c.id = o.checkout_id \
         ORDER BY o.kind, c.intent_id, o.idempotency_key, o.id",
        "SELECT 'event ' || id || ' ' || status || ' ' || CAST(attempts AS TEXT) || ' ' || \
           COALESCE(last_error, '-') AS line FROM webhook_events ORDER BY id",
    ];
    let mut conn = pool.get().expect("connection");
    QUERIES
        .iter()
        .flat_map(|q| {
            with_conn!(&mut conn, c => diesel::sql_query(*q).load::<Line>(c))
                .expect("snapshot query")
        })
        .map(|l| l.line)
        .collect()
}

async fn a_set_wise_batch_leaves_exactly_what_event_by_event_leaves(backend: Backend) {
    let events = mixed_events();
    assert!(events.len() >= 60, "{} events", events.len());
    // Queuing notifications makes the batch write what it gathered before each one (its
    // view reads the checkout); skipping them leaves everything to the end.
    for notifications in [Notifications::Skip, Notifications::Queue] {
        let (_set_db, set_wise) = fresh_pool(backend).await;
        let (_one_db, one_by_one) = fresh_pool(backend).await;
        store_all(&set_wise, &events).await;
        store_all(&one_by_one, &events).await;

        let gathered = apply_all(&set_wise, Isolation::Optimistic, notifications).await;
        let each = apply_all(&one_by_one, Isolation::SavepointPerEvent, notifications).await;
        assert!(
            !gathered.rerun_event_by_event,
            "the set-wise try itself committed: {gathered:?}"
        );
        assert_eq!(gathered.claimed, events.len());
        assert_eq!(gathered.done(), events.len(), "{gathered:?}");
        assert_eq!(
            (gathered.processed, gathered.ignored, gathered.invalid),
            (each.processed, each.ignored, each.invalid)
        );
        assert_eq!(gathered.transitions, each.transitions);

        let (got, want) = (snapshot(&set_wise), snapshot(&one_by_one));
        assert!(
            got.iter().filter(|l| l.starts_with("checkout ")).count() >= 15,
            "{got:#?}"
        );
        assert!(
            got.iter().any(|l| l.starts_with("outbox save_card")),
            "{got:#?}"
        );
        assert_eq!(
            got.iter().any(|l| l.starts_with("outbox notify")),
            notifications == Notifications::Queue
        );
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "{notifications:?}");
        }
        assert_eq!(got.len(), want.len());
    }
}
both_backends!(a_set_wise_batch_leaves_exactly_what_event_by_event_leaves);

/// The batch read no checkout for `pi_raced`, then one is created before its gathered insert
/// (by a trigger on the card's insert, which the flush makes first, standing in for another
/// instance): the set-wise try fails as a whole,
/// and the event-by-event rerun applies every event, `pi_raced`'s on top of that checkout.
async fn a_checkout_created_meanwhile_sends_the_batch_back_to_event_by_event(backend: Backend) {
    let (_db, pool) = fresh_pool(backend).await;
    let racer = match backend {
        Backend::Sqlite => {
            "CREATE TRIGGER racer BEFORE INSERT ON payment_methods BEGIN \
               INSERT OR IGNORE INTO checkouts (id, kind, intent_id, state, state_event_created, created_at, updated_at, account) \
               VALUES ('chk_racer', 'payment', 'pi_raced', 'pending', 1, 0, 0, ''); END;"
        }
        Backend::Postgres => {
            "CREATE FUNCTION racer() RETURNS trigger AS $$ BEGIN \
               INSERT INTO checkouts (id, kind, intent_id, state, state_event_created, created_at, updated_at, account) \
               VALUES ('chk_racer', 'payment', 'pi_raced', 'pending', 1, 0, 0, '') ON CONFLICT DO NOTHING; \
               RETURN NULL; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER racer BEFORE INSERT ON payment_methods \
               FOR EACH STATEMENT EXECUTE FUNCTION racer();"
        }
    };
    let mut events = vec![intent_event(
        "evt_raced",
        "payment_intent.succeeded",
        "pi_raced",
        100,
    )];
    events[0]["data"]["object"]["payment_method"] = "pm_raced".into();
    for n in 0..3 {
        events.push(intent_event(
            &format!("evt_calm_{n}"),
            "payment_intent.processing",
            &format!("pi_calm_{n}"),
            100,
        ));
    }
    store_all(&pool, &events).await;
    {
        let mut conn = pool.get().expect("connection");
        with_conn!(&mut conn, c => c.batch_execute(racer)).expect("trigger");
    }
    let report = apply_all(&pool, Isolation::Optimistic, Notifications::Queue).await;
    assert!(report.rerun_event_by_event, "{report:?}");
    assert_eq!((report.processed, report.done()), (4, 4), "{report:?}");
    let lines = snapshot(&pool);
    let raced: Vec<_> = lines
        .iter()
        .filter(|l| l.starts_with("checkout pi_raced "))
        .collect();
    assert_eq!(raced.len(), 1, "{lines:#?}");
    assert!(raced[0].contains(" succeeded evt_raced 100 "), "{raced:?}");
    for n in 0..3 {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("checkout pi_calm_{n} "))
                    && l.contains(" processing ")),
            "{lines:#?}"
        );
    }
    assert!(lines
        .iter()
        .filter(|l| l.starts_with("event "))
        .all(|l| l.ends_with(" processed 1 -")));
}
both_backends!(a_checkout_created_meanwhile_sends_the_batch_back_to_event_by_event);

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

/// How PostgreSQL would lock a batch's checkouts by intent (the statement of
/// `store::checkouts::lock_checkouts_by_intents`), as one line per plan node.
fn lock_plan(conn: &mut payhook::store::Conn, intents: &[String]) -> String {
    let payhook::store::Conn::Postgres(c) = conn else {
        panic!("PostgreSQL only");
    };
    diesel::sql_query(
        "EXPLAIN SELECT * FROM checkouts WHERE intent_id = ANY($1) ORDER BY intent_id FOR UPDATE",
    )
    .bind::<diesel::sql_types::Array<Text>, _>(intents)
    .load::<PlanLine>(&mut **c)
    .expect("explain")
    .into_iter()
    .map(|l| l.line)
    .collect::<Vec<_>>()
    .join("\n")
}

fn seqscan_setting(conn: &mut payhook::store::Conn) -> String {
    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = Text)]
        enable_seqscan: String,
    }
    with_conn!(conn, c => diesel::sql_query("SHOW enable_seqscan").get_result::<Setting>(c))
        .expect("show")
        .enable_seqscan
}

/// A batch locks its checkouts through the intent index even while `checkouts` has no
/// statistics (a first start, a restore, before autovacuum's first analyse), when PostgreSQL
/// would otherwise scan the whole table for each batch; and the setting that makes it so
/// ends with the batch's transaction, leaving other work on the connection as it was.
#[tokio::test]
async fn a_batch_reads_checkouts_by_index_before_the_table_has_statistics() {
    if !crate::helpers::postgres_available_or_skip() {
        return;
    }
    let (_db, pool) = fresh_pool(Backend::Postgres).await;
    let mut conn = pool.get().expect("connection");
    with_conn!(&mut conn, c => c.batch_execute(
        "INSERT INTO checkouts (id, kind, intent_id, state, state_event_created, created_at, \
           updated_at, notify_sequence, account) \
         SELECT 'chk_' || n, 'payment', 'pi_' || n, 'pending', 0, 0, 0, 0, '' \
         FROM generate_series(1, 20000) AS n",
    ))
    .expect("checkouts");
    let intents: Vec<String> = (1..=1000).map(|n| format!("pi_{}", n * 19)).collect();
    let scanned = conn
        .transaction(|conn| Ok::<_, diesel::result::Error>(lock_plan(conn, &intents)))
        .expect("plan");
    // The table as built here is one PostgreSQL scans when left to itself: otherwise this
    // test would prove nothing.
    assert!(scanned.contains("Seq Scan on checkouts"), "{scanned}");
    let keyed = conn
        .transaction(|conn| {
            conn.keyed_access_only().expect("set");
            assert_eq!(seqscan_setting(conn), "off");
            Ok::<_, diesel::result::Error>(lock_plan(conn, &intents))
        })
        .expect("plan");
    assert!(!keyed.contains("Seq Scan"), "{keyed}");
    assert!(keyed.contains("checkouts_intent_id_key"), "{keyed}");
    assert_eq!(
        seqscan_setting(&mut conn),
        "on",
        "the setting outlived its transaction"
    );
}
