use std::time::{Duration, Instant};

use payhook::domain::checkout::{CheckoutState, TransitionOutcome};
use payhook::store::events::requeue_dead_events;

use std::sync::{Arc, Barrier};

use diesel::connection::SimpleConnection;
use payhook::store::{Pool, PoolOptions, StoreResult};
use payhook::with_conn;

use crate::helpers::{
    both_backends, bytes, intent_event, spawn_app_on, spawn_app_with_workers, Backend,
};
use crate::helpers::{fresh_pool, postgres_available_or_skip, stored_event, TestDatabase};

async fn processing_failures_are_retried_with_backoff_then_dead_then_requeued(backend: Backend) {
    let app = spawn_app_on(backend, |c| c.processor.max_attempts = 3).await;
    // A real database failure on the processing path: the table it writes is gone.
    app.exec("ALTER TABLE checkout_transitions RENAME TO transitions_away");
    app.deliver(&bytes(&intent_event(
        "evt_doomed",
        "payment_intent.created",
        "pi_doomed",
        10,
    )))
    .await;
    app.settle().await;
    let dead = app.event("evt_doomed").expect("stored");
    assert_eq!(dead.status.as_str(), "dead");
    assert_eq!(dead.attempts, 3);
    assert!(dead.last_error.unwrap().contains("checkout_transitions"));
    assert!(
        app.checkout("pi_doomed").is_none(),
        "nothing is half-applied"
    );

    app.exec("ALTER TABLE transitions_away RENAME TO checkout_transitions");
    let requeued = app.with_conn(|c| requeue_dead_events(c).unwrap());
    assert_eq!(requeued, 1);
    app.settle().await;
    assert_eq!(
        app.event("evt_doomed").unwrap().status.as_str(),
        "processed"
    );
    assert_eq!(app.checkout("pi_doomed").unwrap().state.as_str(), "pending");
}
both_backends!(processing_failures_are_retried_with_backoff_then_dead_then_requeued);

/// The background processor's own schedule, so with the workers running.
async fn retries_wait_longer_each_time(backend: Backend) {
    let app = spawn_app_with_workers(backend, |c| {
        c.processor.max_attempts = 10;
        c.processor.retry_base = std::time::Duration::from_millis(200);
    })
    .await;
    app.exec("ALTER TABLE checkout_transitions RENAME TO transitions_away");
    app.deliver(&bytes(&intent_event(
        "evt_slow",
        "payment_intent.created",
        "pi_slow",
        10,
    )))
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let event = app.event("evt_slow").unwrap();
    // 1st try at once, 2nd after 100-300 ms, 3rd 200-600 ms later: at most 3 tries in 600 ms.
    assert!(
        (1..=3).contains(&event.attempts),
        "attempts {}",
        event.attempts
    );
    assert_eq!(event.status.as_str(), "pending");
    assert!(event.next_attempt_at_ms > payhook::store::now_ms() - 1000);
}
both_backends!(retries_wait_longer_each_time);

/// A delivery wakes the processor, which lets `gather` pass before it claims: what arrives
/// meanwhile is applied in the same transaction (seen as the two events turning `processed`
/// together), and nothing is applied before the pause ends.
async fn a_woken_processor_lets_the_next_deliveries_gather_first(backend: Backend) {
    let gather = Duration::from_secs(3);
    let app = spawn_app_with_workers(backend, |c| {
        c.processor.gather = gather;
        // Only a delivery's wake-up starts a batch within the test.
        c.processor.poll_interval = Duration::from_secs(600);
    })
    .await;
    let started = std::time::Instant::now();
    let first = intent_event("evt_gather_a", "payment_intent.created", "pi_gather_a", 10);
    let second = intent_event("evt_gather_b", "payment_intent.created", "pi_gather_b", 11);
    app.deliver(&bytes(&first)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.deliver(&bytes(&second)).await;
    assert!(
        started.elapsed() < gather,
        "both deliveries fell inside the pause"
    );
    let status = |id: &str| app.event(id).expect("stored").status.as_str().to_owned();
    assert_eq!(
        status("evt_gather_a"),
        "pending",
        "applied before the pause ended"
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        // The first read before the second: if the first is applied, its transaction has
        // committed, and with it the second, had they been applied together.
        let (a, b) = (status("evt_gather_a"), status("evt_gather_b"));
        if a == "processed" {
            assert_eq!(
                b, "processed",
                "the second delivery was not in the first's batch"
            );
            break;
        }
        assert_eq!(a, "pending");
        assert!(std::time::Instant::now() < deadline, "never applied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        started.elapsed() >= gather,
        "applied after {:?}, before the pause ended",
        started.elapsed()
    );
    assert!(app.checkout("pi_gather_a").is_some() && app.checkout("pi_gather_b").is_some());
}
both_backends!(a_woken_processor_lets_the_next_deliveries_gather_first);

async fn checkouts_that_never_complete_expire_and_a_later_success_still_wins(backend: Backend) {
    let app = spawn_app_on(backend, |c| {
        c.processor.checkout_expiry = Duration::from_secs(60);
    })
    .await;
    // Read before the checkouts exist: they were last touched at or after it, whichever
    // second the processor applied them in.
    let first = payhook::store::now_secs();
    app.deliver(&bytes(&intent_event(
        "evt_e1",
        "payment_intent.created",
        "pi_abandoned",
        10,
    )))
    .await;
    app.deliver(&bytes(&intent_event(
        "evt_e2",
        "payment_intent.processing",
        "pi_inflight",
        10,
    )))
    .await;
    app.settle().await;
    let now = payhook::store::now_secs();
    assert_eq!(
        app.drain.sweep(first + 59).await.unwrap(),
        0,
        "not quiet for long enough"
    );
    assert_eq!(app.drain.sweep(now + 61).await.unwrap(), 1);
    assert_eq!(
        app.checkout("pi_abandoned").unwrap().state,
        CheckoutState::Expired
    );
    assert_eq!(
        app.checkout("pi_inflight").unwrap().state.as_str(),
        "processing",
        "money in flight does not expire"
    );
    let trail = app.transitions("pi_abandoned");
    assert_eq!(trail.last().unwrap().to_state.as_str(), "expired");
    assert_eq!(trail.last().unwrap().event_id, None);

    app.deliver(&bytes(&intent_event(
        "evt_e3",
        "payment_intent.requires_action",
        "pi_abandoned",
        20,
    )))
    .await;
    app.deliver(&bytes(&intent_event(
        "evt_e4",
        "payment_intent.succeeded",
        "pi_abandoned",
        30,
    )))
    .await;
    app.settle().await;
    let checkout = app.checkout("pi_abandoned").unwrap();
    assert_eq!(checkout.state.as_str(), "succeeded");
    let trail = app.transitions("pi_abandoned");
    assert_eq!(
        trail[trail.len() - 2].reason.as_deref(),
        Some("final"),
        "requires_action cannot revive it"
    );
}
both_backends!(checkouts_that_never_complete_expire_and_a_later_success_still_wins);

/// The sweeper's watch of `intent_id` (`checkouts.expiry_watch`).
fn watch_of(app: &crate::helpers::TestApp, intent_id: &str) -> Option<i64> {
    #[derive(diesel::QueryableByName)]
    struct Watch {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
        expiry_watch: Option<i64>,
    }
    let sql = format!("SELECT expiry_watch FROM checkouts WHERE intent_id = '{intent_id}'");
    let rows: Vec<Watch> = app
        .with_conn(
            |c| with_conn!(c, conn => diesel::RunQueryDsl::load(diesel::sql_query(&sql), conn)),
        )
        .expect("watch");
    rows.first().expect("checkout exists").expiry_watch
}

/// Events never touch the indexed watch once it is on (issue 13: updates that leave every
/// indexed column alone are HOT on PostgreSQL), so the sweeper keeps it right: it ends the
/// watch of a checkout that cannot expire, moves on the watch of one that changed since,
/// and a later state that can expire starts a new watch.
async fn the_sweeper_watches_a_checkout_only_while_it_can_expire(backend: Backend) {
    let app = spawn_app_on(backend, |c| {
        c.processor.checkout_expiry = Duration::from_secs(60);
    })
    .await;
    let deliver = |id: &'static str, kind: &'static str, created: i64| {
        let app = &app;
        async move {
            app.deliver(&bytes(&intent_event(id, kind, "pi_watched", created)))
                .await;
            app.settle().await;
        }
    };
    deliver("evt_w1", "payment_intent.created", 10).await;
    let opened = app.checkout("pi_watched").unwrap();
    assert_eq!(watch_of(&app, "pi_watched"), Some(opened.updated_at));
    deliver("evt_w2", "payment_intent.processing", 20).await;
    assert_eq!(
        watch_of(&app, "pi_watched"),
        Some(opened.updated_at),
        "an event leaves the watch alone"
    );
    let now = payhook::store::now_secs();
    assert_eq!(app.drain.sweep(now + 61).await.unwrap(), 0);
    assert_eq!(
        app.checkout("pi_watched").unwrap().state.as_str(),
        "processing"
    );
    assert_eq!(
        watch_of(&app, "pi_watched"),
        None,
        "processing cannot expire"
    );

    deliver("evt_w3", "payment_intent.payment_failed", 30).await;
    let failed = app.checkout("pi_watched").unwrap();
    assert_eq!(failed.state.as_str(), "failed");
    assert_eq!(watch_of(&app, "pi_watched"), Some(failed.updated_at));
    // Watched long before its last change, as a checkout that moved between two states
    // that can expire is: due for a look, not for expiry.
    app.exec(
        "UPDATE checkouts SET expiry_watch = expiry_watch - 1000 WHERE intent_id = 'pi_watched'",
    );
    let changed = failed.updated_at;
    assert_eq!(app.drain.sweep(changed + 30).await.unwrap(), 0);
    assert_eq!(watch_of(&app, "pi_watched"), Some(changed));
    assert_eq!(app.drain.sweep(changed + 59).await.unwrap(), 0);
    assert_eq!(app.drain.sweep(changed + 60).await.unwrap(), 1);
    assert_eq!(
        app.checkout("pi_watched").unwrap().state.as_str(),
        "expired"
    );
    assert_eq!(watch_of(&app, "pi_watched"), None);
}
both_backends!(the_sweeper_watches_a_checkout_only_while_it_can_expire);

/// A sweep goes on past one transaction's batch: 2 500 finished checkouts with watches
/// still on (each left one when it finished) do not hide a due one behind them.
async fn a_sweep_gets_through_more_watches_than_one_batch(backend: Backend) {
    let app = spawn_app_on(backend, |c| {
        c.processor.checkout_expiry = Duration::from_secs(60);
    })
    .await;
    app.exec(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500) \
         INSERT INTO checkouts (id, kind, intent_id, state, state_event_created, created_at, \
           updated_at, expiry_watch) \
         SELECT 'chk_done_' || i, 'payment', 'pi_done_' || i, 'succeeded', 1, 100, 100, 100 FROM n",
    );
    app.deliver(&bytes(&intent_event(
        "evt_due",
        "payment_intent.created",
        "pi_due",
        10,
    )))
    .await;
    app.settle().await;
    app.exec(
        "UPDATE checkouts SET expiry_watch = 200, updated_at = 200 WHERE intent_id = 'pi_due'",
    );
    assert_eq!(app.drain.sweep(1000).await.unwrap(), 1);
    assert_eq!(app.checkout("pi_due").unwrap().state.as_str(), "expired");
    assert_eq!(watch_of(&app, "pi_done_2500"), None);
    assert_eq!(
        app.checkout("pi_done_7").unwrap().state.as_str(),
        "succeeded"
    );
    let watched: i64 = app
        .with_conn(|c| {
            use diesel::prelude::*;
            use payhook::store::schema::checkouts::dsl;
            with_conn!(c, conn => dsl::checkouts
            .filter(dsl::expiry_watch.is_not_null())
            .count()
            .get_result(conn))
        })
        .unwrap();
    assert_eq!(watched, 0);
}
both_backends!(a_sweep_gets_through_more_watches_than_one_batch);

/// A sweep whose later transaction fails keeps what its earlier ones committed and reports
/// their expiries; one that fails in its first transaction reports the error. Either way the
/// next sweep finishes the work.
async fn a_sweep_that_fails_part_way_keeps_what_it_committed(backend: Backend) {
    let app = spawn_app_on(backend, |c| {
        c.processor.checkout_expiry = Duration::from_secs(60);
    })
    .await;
    app.deliver(&bytes(&intent_event(
        "evt_first",
        "payment_intent.created",
        "pi_first",
        10,
    )))
    .await;
    app.settle().await;
    // The due checkout is the oldest watch, so the first transaction expires it; 1 500
    // finished checkouts follow, and the one the second transaction reaches refuses to change.
    app.exec(
        "UPDATE checkouts SET expiry_watch = 50, updated_at = 50 WHERE intent_id = 'pi_first'",
    );
    app.exec(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1500) \
         INSERT INTO checkouts (id, kind, intent_id, state, state_event_created, created_at, \
           updated_at, expiry_watch) \
         SELECT 'chk_done_' || i, 'payment', 'pi_done_' || i, 'succeeded', 1, 100, 100, 100 + i FROM n",
    );
    let refuse = match backend {
        Backend::Sqlite => {
            "CREATE TRIGGER refuse BEFORE UPDATE OF expiry_watch ON checkouts \
             WHEN OLD.id = 'chk_done_1200' BEGIN SELECT RAISE(ABORT, 'injected'); END;"
        }
        Backend::Postgres => {
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
               $$ BEGIN RAISE EXCEPTION 'injected'; END $$; \
             CREATE TRIGGER refuse BEFORE UPDATE OF expiry_watch ON checkouts FOR EACH ROW \
               WHEN (OLD.id = 'chk_done_1200') EXECUTE FUNCTION refuse();"
        }
    };
    app.exec(refuse);
    assert_eq!(
        app.drain.sweep(5000).await.unwrap(),
        1,
        "the first pass's expiry"
    );
    assert_eq!(app.checkout("pi_first").unwrap().state.as_str(), "expired");
    assert_eq!(watch_of(&app, "pi_done_10"), None, "first pass committed");
    assert_eq!(
        watch_of(&app, "pi_done_1100"),
        Some(1200),
        "second pass undone"
    );
    // Failing in the first transaction: nothing committed to count, so the error is told.
    let err = app.drain.sweep(5000).await.unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    app.exec(match backend {
        Backend::Sqlite => "DROP TRIGGER refuse",
        Backend::Postgres => "DROP TRIGGER refuse ON checkouts",
    });
    assert_eq!(app.drain.sweep(5000).await.unwrap(), 0);
    assert_eq!(watch_of(&app, "pi_done_1500"), None);
}
both_backends!(a_sweep_that_fails_part_way_keeps_what_it_committed);

/// Two transactions locking two rows in opposite orders: PostgreSQL aborts one with a
/// deadlock error, which the processor must treat as contention (reschedule, try not
/// counted), not as a failure of the event. PostgreSQL only: SQLite has one writer.
#[tokio::test]
async fn a_deadlock_victim_is_contention_not_a_failed_try() {
    if !postgres_available_or_skip() {
        return;
    }
    let db = tokio::task::spawn_blocking(|| TestDatabase::create(Backend::Postgres))
        .await
        .unwrap();
    let url = db.url();
    tokio::task::spawn_blocking(move || {
        let pool = Pool::connect(&url, PoolOptions::default()).unwrap();
        let mut setup = pool.get().unwrap();
        with_conn!(&mut setup, c => c.batch_execute(
            "CREATE TABLE pair (id INT PRIMARY KEY); INSERT INTO pair VALUES (1), (2)"
        ))
        .unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let lock_both = |first: i32, second: i32| {
            let (pool, barrier) = (pool.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut conn = pool.get().unwrap();
                conn.transaction(|conn| -> StoreResult<()> {
                    let lock = |n: i32| format!("UPDATE pair SET id = id WHERE id = {n}");
                    with_conn!(&mut *conn, c => c.batch_execute(&lock(first)))?;
                    barrier.wait();
                    with_conn!(&mut *conn, c => c.batch_execute(&lock(second)))?;
                    Ok(())
                })
            })
        };
        let (a, b) = (lock_both(1, 2), lock_both(2, 1));
        let results = [a.join().unwrap(), b.join().unwrap()];
        let errors: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(errors.len(), 1, "one victim: {results:?}");
        assert!(errors[0].is_contention(), "{}", errors[0]);
    })
    .await
    .unwrap();
    drop(db);
}

/// A batch that yields after each event (as it does while admission waits for the SQLite
/// write lock) leaves the rest of its claim pending, and the next batches pick it up: every
/// event ends applied exactly once, in each intent's Stripe order.
async fn a_batch_cut_short_by_waiting_writers_leaves_the_rest_for_the_next(backend: Backend) {
    use payhook::config::ProcessorConfig;
    use payhook::inbox::processor::process_up_to;
    use payhook::store::checkouts::{find_checkout_by_intent, list_transitions};
    use payhook::store::events::insert_event;

    let (_db, pool) = fresh_pool(backend).await;
    const INTENTS: usize = 5;
    let types = [
        "payment_intent.created",
        "payment_intent.processing",
        "payment_intent.succeeded",
    ];
    {
        let mut conn = pool.get().expect("connection");
        for intent in 0..INTENTS {
            for (n, event_type) in types.into_iter().enumerate() {
                let event = intent_event(
                    &format!("evt_cut_{intent}_{n}"),
                    event_type,
                    &format!("pi_cut_{intent}"),
                    100 + n as i64,
                );
                insert_event(&mut conn, &stored_event(&bytes(&event))).expect("insert");
            }
        }
    }
    let expected = INTENTS * types.len();
    let config = ProcessorConfig::default();
    let mut applied = 0;
    for batch in 1..=expected {
        let p = pool.clone();
        let report = tokio::task::spawn_blocking(move || process_up_to(&p, &config, 500, || true))
            .await
            .expect("batch")
            .expect("batch ran");
        assert_eq!(report.done(), 1, "one event per batch when always yielding");
        assert_eq!(
            report.yielded,
            batch < expected,
            "batch {batch}: {report:?}"
        );
        applied += report.processed;
    }
    assert_eq!(applied, expected);
    let mut conn = pool.get().expect("connection");
    for intent in 0..INTENTS {
        let checkout = find_checkout_by_intent(&mut conn, &format!("pi_cut_{intent}"))
            .expect("query")
            .expect("checkout");
        assert_eq!(checkout.state.as_str(), "succeeded");
        let trail: Vec<_> = list_transitions(&mut conn, &checkout.id)
            .expect("query")
            .into_iter()
            .map(|t| (t.to_state, t.outcome))
            .collect();
        let applied_in_order: Vec<_> = [
            CheckoutState::Pending,
            CheckoutState::Processing,
            CheckoutState::Succeeded,
        ]
        .into_iter()
        .map(|s| (s, TransitionOutcome::Applied))
        .collect();
        assert_eq!(trail, applied_in_order, "once each, in Stripe order");
    }
}
both_backends!(a_batch_cut_short_by_waiting_writers_leaves_the_rest_for_the_next);

/// The signal the processor yields on: true exactly while another writer of this process
/// waits for the SQLite write lock.
#[tokio::test]
async fn writers_waiting_reports_a_writer_queued_behind_the_lock() {
    let (_db, pool) = fresh_pool(Backend::Sqlite).await;
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (entered, in_lock) = std::sync::mpsc::channel::<()>();
    let holder = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            pool.write(|_| -> StoreResult<()> {
                entered.send(()).expect("signal");
                held.recv().expect("release");
                Ok(())
            })
        })
    };
    in_lock.recv().expect("holder has the lock");
    assert!(!pool.writers_waiting(), "nobody waits yet");
    let waiter = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.write(|_| -> StoreResult<()> { Ok(()) }))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pool.writers_waiting() {
        assert!(Instant::now() < deadline, "the waiter never showed");
        std::thread::sleep(Duration::from_millis(1));
    }
    release.send(()).expect("release");
    holder.join().expect("holder").expect("holder wrote");
    waiter.join().expect("waiter").expect("waiter wrote");
    assert!(!pool.writers_waiting(), "nobody waits any more");
}

/// The other reason to commit early: a transaction that has run for `max_transaction` ends
/// after the event it is on (on PostgreSQL re-deliveries of the events it updated wait for
/// it), even when no writer is waiting.
async fn a_batch_past_its_time_budget_commits_and_leaves_the_rest(backend: Backend) {
    use payhook::config::ProcessorConfig;
    use payhook::inbox::processor::process_up_to;
    use payhook::store::events::insert_event;

    let (_db, pool) = fresh_pool(backend).await;
    {
        let mut conn = pool.get().expect("connection");
        for n in 0..3 {
            let event = intent_event(
                &format!("evt_budget_{n}"),
                "payment_intent.created",
                &format!("pi_budget_{n}"),
                100,
            );
            insert_event(&mut conn, &stored_event(&bytes(&event))).expect("insert");
        }
    }
    let config = ProcessorConfig {
        max_transaction: Duration::ZERO,
        ..ProcessorConfig::default()
    };
    let p = pool.clone();
    let report = tokio::task::spawn_blocking(move || process_up_to(&p, &config, 500, || false))
        .await
        .expect("batch")
        .expect("batch ran");
    assert_eq!(
        (report.claimed, report.done(), report.yielded),
        (3, 1, true)
    );
    let roomy = ProcessorConfig::default();
    let p = pool.clone();
    let rest = tokio::task::spawn_blocking(move || process_up_to(&p, &roomy, 500, || false))
        .await
        .expect("batch")
        .expect("batch ran");
    assert_eq!((rest.claimed, rest.done(), rest.yielded), (2, 2, false));
}
both_backends!(a_batch_past_its_time_budget_commits_and_leaves_the_rest);

/// One event of a batch failing in the database (here a trigger refuses its checkout) is
/// rolled back alone: the batch's other events, before and after it in apply order, are
/// applied and finished in the same batch, and the failing one is scheduled for a retry with
/// its error recorded and nothing of it written.
async fn a_batch_with_one_failing_event_applies_the_others(backend: Backend) {
    use payhook::config::ProcessorConfig;
    use payhook::inbox::processor::process_up_to;
    use payhook::store::checkouts::find_checkout_by_intent;
    use payhook::store::events::{find_event, insert_event};

    let (_db, pool) = fresh_pool(backend).await;
    let refuse = match backend {
        Backend::Sqlite => {
            "CREATE TRIGGER refuse_bad BEFORE INSERT ON checkouts WHEN NEW.intent_id = 'pi_iso_2' \
             BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END;"
        }
        Backend::Postgres => {
            "CREATE FUNCTION refuse_bad() RETURNS trigger AS $$ BEGIN \
               IF NEW.intent_id = 'pi_iso_2' THEN RAISE EXCEPTION 'refused by the test trigger'; END IF; \
               RETURN NEW; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER refuse_bad BEFORE INSERT ON checkouts FOR EACH ROW EXECUTE FUNCTION refuse_bad();"
        }
    };
    {
        let mut conn = pool.get().expect("connection");
        with_conn!(&mut conn, c => c.batch_execute(refuse)).expect("trigger");
        for intent in 0..5 {
            for (n, event_type) in ["payment_intent.created", "payment_intent.succeeded"]
                .into_iter()
                .enumerate()
            {
                let event = intent_event(
                    &format!("evt_iso_{intent}_{n}"),
                    event_type,
                    &format!("pi_iso_{intent}"),
                    100 + n as i64,
                );
                insert_event(&mut conn, &stored_event(&bytes(&event))).expect("insert");
            }
        }
    }
    // Room for the whole batch in one transaction (a debug build is slow).
    let config = ProcessorConfig {
        max_transaction: Duration::from_secs(60),
        ..ProcessorConfig::default()
    };
    let p = pool.clone();
    let report = tokio::task::spawn_blocking(move || process_up_to(&p, &config, 500, || false))
        .await
        .expect("batch")
        .expect("batch ran");
    assert_eq!(report.claimed, 10);
    assert!(!report.yielded, "{report:?}");
    assert_eq!(report.processed, 8, "{report:?}");
    assert_eq!(report.retried, 2, "{report:?}");

    let mut conn = pool.get().expect("connection");
    for intent in [0, 1, 3, 4] {
        let checkout = find_checkout_by_intent(&mut conn, &format!("pi_iso_{intent}"))
            .expect("query")
            .expect("the others are applied");
        assert_eq!(checkout.state.as_str(), "succeeded");
        for n in 0..2 {
            let event = find_event(&mut conn, &format!("evt_iso_{intent}_{n}"))
                .expect("query")
                .expect("stored");
            assert_eq!(event.status.as_str(), "processed");
            assert_eq!(event.attempts, 1);
        }
    }
    assert!(find_checkout_by_intent(&mut conn, "pi_iso_2")
        .expect("query")
        .is_none());
    for n in 0..2 {
        let event = find_event(&mut conn, &format!("evt_iso_2_{n}"))
            .expect("query")
            .expect("stored");
        assert_eq!(event.status.as_str(), "pending", "retried later");
        assert_eq!(event.attempts, 1);
        assert!(event
            .last_error
            .expect("error recorded")
            .contains("refused by the test trigger"));
    }
}
both_backends!(a_batch_with_one_failing_event_applies_the_others);
