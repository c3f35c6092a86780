//! The processor's queue (`webhook_event_queue`) holds exactly the pending events, with their
//! claim order and due time, through every change of an event's status: admission (new,
//! re-delivered), outcomes (processed, ignored, failed), a failed try scheduled for later,
//! and a retry through the admin API. And on PostgreSQL, recording an outcome is a HOT update
//! of the inbox: no index of `webhook_events` is written, the reason the queue exists.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use payhook::config::ProcessorConfig;
use payhook::inbox::processor::process_batch;
use payhook::store::events::insert_event;
use payhook::store::{Pool, PoolOptions};
use payhook::with_conn;
use serde_json::json;

use crate::admin::{admin, with_admin};
use crate::helpers::{
    both_backends, bytes, intent_event, postgres_available_or_skip, spawn_app_on, stored_event,
    Backend, TestDatabase,
};

fn queued_ids(app: &crate::helpers::TestApp) -> Vec<String> {
    app.queued().into_iter().map(|r| r.id).collect()
}

async fn the_queue_holds_exactly_the_pending_events(backend: Backend) {
    let app = spawn_app_on(backend, |c| {
        with_admin(c);
        // A failed try waits long enough to be seen waiting.
        c.processor.retry_base = Duration::from_millis(400);
    })
    .await;
    assert!(queued_ids(&app).is_empty());

    let broken = json!({"id": "evt_q_broken", "object": "event",
        "type": "payment_intent.succeeded", "created": 1_700_000_005, "data": {}});
    let other_type = json!({"id": "evt_q_customer", "object": "event",
        "type": "customer.created", "created": 1_700_000_001,
        "data": {"object": {"id": "cus_q", "object": "customer"}}});
    let events = [
        intent_event("evt_q_1", "payment_intent.created", "pi_q1", 1_700_000_000),
        intent_event(
            "evt_q_2",
            "payment_intent.succeeded",
            "pi_q1",
            1_700_000_003,
        ),
        intent_event("evt_q_3", "payment_intent.created", "pi_q2", 1_700_000_002),
        broken,
        other_type,
    ];
    for event in &events {
        app.deliver(&bytes(event)).await;
    }
    // Re-delivered: stored once, queued once.
    app.deliver(&bytes(&events[0])).await;
    let queued = app.queued();
    assert_eq!(
        queued.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [
            "evt_q_1",
            "evt_q_2",
            "evt_q_3",
            "evt_q_broken",
            "evt_q_customer"
        ]
    );
    let pi_q1 = queued.iter().find(|r| r.id == "evt_q_2").unwrap();
    assert_eq!(
        (
            pi_q1.created,
            pi_q1.object_id.as_deref(),
            pi_q1.next_attempt_at_ms
        ),
        (1_700_000_003, Some("pi_q1"), 0)
    );

    app.settle().await;
    assert!(queued_ids(&app).is_empty(), "every outcome left the queue");
    let status = |id: &str| app.event(id).unwrap().status.as_str().to_owned();
    assert_eq!(status("evt_q_2"), "processed");
    assert_eq!(status("evt_q_customer"), "ignored");
    assert_eq!(status("evt_q_broken"), "failed");
    assert_eq!(app.checkout("pi_q1").unwrap().state.as_str(), "succeeded");

    // A retry puts the event back in the queue, due at once.
    let (code, _) = admin(&app, "POST", "/events/evt_q_broken/retry", None).await;
    assert_eq!(code, 200);
    let queued = app.queued();
    assert_eq!(queued.len(), 1);
    assert_eq!(
        (queued[0].id.as_str(), queued[0].next_attempt_at_ms),
        ("evt_q_broken", 0)
    );
    app.settle().await;
    assert!(queued_ids(&app).is_empty());
    assert_eq!(status("evt_q_broken"), "failed");

    // A failed try stays queued, due later, and is not claimed before then.
    app.exec("ALTER TABLE checkout_transitions RENAME TO transitions_away");
    app.deliver(&bytes(&intent_event(
        "evt_q_later",
        "payment_intent.created",
        "pi_q3",
        1_700_000_010,
    )))
    .await;
    app.drain.run_until_idle().await.expect("one try");
    let queued = app.queued();
    assert_eq!(queued.len(), 1);
    assert!(queued[0].next_attempt_at_ms > payhook::store::now_ms());
    let event = app.event("evt_q_later").unwrap();
    assert_eq!((event.status.as_str(), event.attempts), ("pending", 1));
    app.drain.run_until_idle().await.expect("nothing due");
    assert_eq!(app.event("evt_q_later").unwrap().attempts, 1, "tried early");
    app.exec("ALTER TABLE transitions_away RENAME TO checkout_transitions");
    app.settle().await;
    assert!(queued_ids(&app).is_empty());
    assert_eq!(status("evt_q_later"), "processed");
}
both_backends!(the_queue_holds_exactly_the_pending_events);

/// Storing an event and queueing it are one: when the queue refuses the row (a trigger
/// here), the delivery is refused and nothing is stored, so Stripe delivers it again; an
/// event stored without its queue row would be acknowledged and never applied.
async fn an_event_is_never_stored_without_its_queue_row(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    match backend {
        Backend::Sqlite => app.exec(
            "CREATE TRIGGER refuse BEFORE INSERT ON webhook_event_queue \
             BEGIN SELECT RAISE(ABORT, 'queue refused'); END;",
        ),
        Backend::Postgres => app.exec(
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN \
               RAISE EXCEPTION 'queue refused'; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER refuse BEFORE INSERT ON webhook_event_queue \
               FOR EACH ROW EXECUTE FUNCTION refuse();",
        ),
    }
    let body = bytes(&intent_event(
        "evt_q_atomic",
        "payment_intent.created",
        "pi_q_atomic",
        1_700_000_000,
    ));
    let refused = app.post_signed(&body).await;
    assert_eq!(refused.status().as_u16(), 503);
    assert!(
        app.event("evt_q_atomic").is_none(),
        "stored without its queue row"
    );

    app.exec(match backend {
        Backend::Sqlite => "DROP TRIGGER refuse",
        Backend::Postgres => "DROP TRIGGER refuse ON webhook_event_queue",
    });
    app.deliver(&body).await;
    assert_eq!(queued_ids(&app), ["evt_q_atomic"]);
    app.settle().await;
    assert_eq!(
        app.event("evt_q_atomic").unwrap().status.as_str(),
        "processed"
    );
}
both_backends!(an_event_is_never_stored_without_its_queue_row);

/// A queue row whose event was settled behind payhook's back (an operator's `UPDATE`) is
/// dropped by the processor, not applied: applying it would apply a settled event twice.
async fn a_queue_row_of_a_settled_event_is_dropped_not_applied(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    for (id, intent) in [("evt_q_hand", "pi_q_hand"), ("evt_q_next", "pi_q_next")] {
        let event = intent_event(id, "payment_intent.created", intent, 1_700_000_000);
        app.deliver(&bytes(&event)).await;
    }
    app.exec("UPDATE webhook_events SET status = 'processed' WHERE id = 'evt_q_hand'");
    app.drain.run_until_idle().await.expect("drain");
    assert!(queued_ids(&app).is_empty(), "the stale row is gone");
    assert!(
        app.checkout("pi_q_hand").is_none(),
        "a settled event applied again"
    );
    assert_eq!(app.checkout("pi_q_next").unwrap().state.as_str(), "pending");
}
both_backends!(a_queue_row_of_a_settled_event_is_dropped_not_applied);

/// Events stored before the queue existed: the upgrade queues the pending ones, with their
/// due times, and they are applied after it; settled ones stay out of the queue.
async fn the_upgrade_queues_the_events_pending_before_it(backend: Backend) {
    use diesel_migrations::MigrationHarness;
    use payhook::store::{POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};
    let db = TestDatabase::create(backend);
    let url = db.url();
    let old = Pool::connect(&url, PoolOptions::default()).expect("pool");
    tokio::task::spawn_blocking(move || {
        let mut conn = old.get().expect("connection");
        with_conn!(&mut conn, c => {
            // Every migration before 000090_event_queue.
            for _ in 0..12 {
                match backend {
                    Backend::Sqlite => c.run_next_migration(SQLITE_MIGRATIONS),
                    Backend::Postgres => c.run_next_migration(POSTGRES_MIGRATIONS),
                }
                .expect("an old migration");
            }
            for (id, intent, status, next) in [
                ("evt_old_due", "pi_old_1", "pending", 0),
                ("evt_old_later", "pi_old_2", "pending", 5_000),
                ("evt_old_done", "pi_old_3", "processed", 0),
            ] {
                let payload = intent_event(id, "payment_intent.created", intent, 1_700_000_000);
                diesel::sql_query(
                    "INSERT INTO webhook_events (id, event_type, created, livemode, object_id, \
                       object_type, payload, received_at, status, next_attempt_at_ms) \
                     VALUES ($1, 'payment_intent.created', 1700000000, FALSE, $2, \
                       'payment_intent', $3, 1, $4, $5)",
                )
                .bind::<diesel::sql_types::Text, _>(id)
                .bind::<diesel::sql_types::Text, _>(intent)
                .bind::<diesel::sql_types::Text, _>(payload.to_string())
                .bind::<diesel::sql_types::Text, _>(status)
                .bind::<BigInt, _>(next)
                .execute(c)
                .expect("an event of the old schema");
            }
            Ok::<_, diesel::result::Error>(())
        })
        .expect("old schema");
    })
    .await
    .expect("old schema");

    let app = crate::helpers::spawn_manual_app_with_url(url, |_| {}).await;
    let queued = app.queued();
    assert_eq!(
        queued
            .iter()
            .map(|r| (r.id.as_str(), r.object_id.as_deref(), r.next_attempt_at_ms))
            .collect::<Vec<_>>(),
        [
            ("evt_old_due", Some("pi_old_1"), 0),
            ("evt_old_later", Some("pi_old_2"), 5_000)
        ]
    );
    app.settle().await;
    assert!(queued_ids(&app).is_empty());
    assert_eq!(app.checkout("pi_old_2").unwrap().state.as_str(), "pending");
    assert!(
        app.checkout("pi_old_3").is_none(),
        "a settled event is not applied again"
    );
    drop(app);
    drop(db);
}
both_backends!(the_upgrade_queues_the_events_pending_before_it);

#[derive(QueryableByName)]
struct Updates {
    #[diesel(sql_type = BigInt)]
    updated: i64,
    #[diesel(sql_type = BigInt)]
    hot: i64,
}

/// Recording a batch's outcomes rewrites no index of `webhook_events` on PostgreSQL: every
/// update of the inbox is HOT. Before the queue, `status` was in the claim index and none was.
#[tokio::test]
async fn recording_outcomes_writes_no_index_of_the_inbox() {
    if !postgres_available_or_skip() {
        return;
    }
    let db = TestDatabase::create(Backend::Postgres);
    // One connection: the batch's statistics are this backend's, flushed on demand below.
    let options = PoolOptions {
        max_size: 1,
        ..PoolOptions::default()
    };
    let pool = Pool::connect(&db.url(), options).expect("pool");
    pool.migrate().expect("migrate");
    let pool = tokio::task::spawn_blocking(move || {
        let mut conn = pool.get().expect("connection");
        // Events of one intent and of many, arriving together as a burst does.
        for n in 0..200 {
            let intent = format!("pi_hot_{}", n % 40);
            let event = intent_event(
                &format!("evt_hot_{n:03}"),
                "payment_intent.created",
                &intent,
                1_700_000_000 + n,
            );
            insert_event(&mut conn, &stored_event(&bytes(&event))).expect("insert");
        }
        drop(conn);
        let config = ProcessorConfig {
            max_transaction: Duration::from_secs(60),
            ..ProcessorConfig::default()
        };
        let report = process_batch(&pool, &config).expect("batch");
        assert_eq!(report.processed, 200, "{report:?}");
        pool
    })
    .await
    .expect("batch");
    let mut conn = pool.get().expect("the batch's connection");
    let counts: Updates = with_conn!(&mut conn, c => {
        c.batch_execute("SELECT pg_stat_force_next_flush()").expect("flush");
        diesel::sql_query(
            "SELECT n_tup_upd AS updated, n_tup_hot_upd AS hot \
             FROM pg_stat_user_tables WHERE relname = 'webhook_events'",
        )
        .get_result(c)
    })
    .expect("statistics");
    assert_eq!(counts.updated, 200, "one update per outcome");
    assert_eq!(counts.hot, 200, "every outcome a HOT update");
}
