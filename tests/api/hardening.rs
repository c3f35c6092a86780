//! Issue 9: nothing acknowledged is lost, one bad event fails alone and at the door, the
//! same on both backends; card rows are not overwritten by a concurrent writer; a dead
//! background task stops the service.

use std::time::Duration;

use payhook::domain::checkout::CheckoutState;
use payhook::startup::Workers;
use payhook::store::events::EventStatus;
use payhook::store::now_secs;
use payhook::Application;
use serde_json::{json, Value};

use crate::helpers::{
    both_backends, bytes, init_logs, intent_event, spawn_app_on, spawn_manual_app_with_url,
    test_config, Backend, TestApp, TestDatabase,
};

/// POSTs `event` signed now; the status and the error kind of the answer.
async fn post(app: &TestApp, body: &[u8]) -> (u16, String) {
    let response = app.post_signed(body).await;
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap_or_default();
    let kind = answer["error"].as_str().unwrap_or_default().to_owned();
    (status, kind)
}

async fn readyz(app: &TestApp) -> (u16, Value) {
    let response = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .expect("readyz answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

// ---- Item 3: the door ----

async fn envelope_strings_the_database_would_refuse_are_400_at_the_door(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let base = || intent_event("evt_door1", "payment_intent.created", "pi_door1", 100);
    let long = format!("pi_{}", "x".repeat(100_000));
    let mut cases: Vec<Value> = Vec::new();
    let mut nul_type = base();
    nul_type["type"] = json!("payment_intent.created\u{0}");
    cases.push(nul_type);
    let mut nul_id = base();
    nul_id["data"]["object"]["id"] = json!("pi_door\u{0}1");
    cases.push(nul_id);
    let mut long_id = base();
    long_id["data"]["object"]["id"] = json!(long);
    cases.push(long_id);
    let mut nul_account = base();
    nul_account["account"] = json!("acct_\u{0}1");
    cases.push(nul_account);
    let mut nul_version = base();
    nul_version["api_version"] = json!("2025-09-30\u{0}");
    cases.push(nul_version);
    for case in &cases {
        assert_eq!(
            post(&app, &bytes(case)).await,
            (400, "invalid_envelope_field".to_owned()),
            "{}",
            &bytes(case).len()
        );
    }
    // The signature comes first: the same junk unsigned is a signature error.
    let unsigned = app.post_with_header(&bytes(&cases[0]), None).await;
    assert_eq!(unsigned.status(), 400);
    let answer: Value = unsigned.json().await.unwrap();
    assert_eq!(answer["error"], "missing_signature_header");
    assert_eq!(app.count_events(), 0, "nothing stored");
}
both_backends!(envelope_strings_the_database_would_refuse_are_400_at_the_door);

async fn created_must_be_an_integer_not_after_the_signature(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let far_future = now_secs() + 3_600;
    let cases: Vec<Value> = vec![
        json!(-5),
        json!(1e30),
        json!(1.5),
        json!("123"),
        json!(far_future),
    ];
    for created in cases {
        let mut event = intent_event("evt_created1", "payment_intent.created", "pi_c1", 0);
        event["created"] = created.clone();
        assert_eq!(
            post(&app, &bytes(&event)).await,
            (400, "invalid_created".to_owned()),
            "created {created}"
        );
    }
    assert_eq!(app.count_events(), 0);
    // Within the tolerance of the signature: accepted.
    let event = intent_event(
        "evt_created2",
        "payment_intent.created",
        "pi_c2",
        now_secs() + 60,
    );
    app.deliver(&bytes(&event)).await;
}
both_backends!(created_must_be_an_integer_not_after_the_signature);

async fn an_event_must_carry_the_object_its_type_names(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    // A payment_intent.succeeded carrying a setup intent, and the reverse by id only.
    let mut setup = intent_event("evt_mis1", "setup_intent.succeeded", "seti_mis1", 100);
    setup["type"] = json!("payment_intent.succeeded");
    let mut by_id = intent_event("evt_mis2", "setup_intent.succeeded", "seti_mis2", 100);
    by_id["data"]["object"]["id"] = json!("pi_mis2");
    for event in [setup, by_id] {
        assert_eq!(
            post(&app, &bytes(&event)).await,
            (400, "object_type_mismatch".to_owned())
        );
    }
    assert_eq!(app.count_events(), 0);
    app.settle().await;
    assert!(app.checkout("seti_mis1").is_none(), "no setup checkout");
}
both_backends!(an_event_must_carry_the_object_its_type_names);

async fn what_the_apply_step_cannot_parse_is_refused_at_the_door(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let event = bytes(&intent_event(
        "evt_deep1",
        "payment_intent.created",
        "pi_deep1",
        100,
    ));
    let text = String::from_utf8(event).unwrap();
    // 200 levels of nesting in a field admission does not read, then a lone surrogate.
    let deep = text.replacen(
        "\"amount\":1000",
        &format!(
            "\"amount\":1000,\"x\":{}1{}",
            "[".repeat(200),
            "]".repeat(200)
        ),
        1,
    );
    let surrogate = text.replacen("\"amount\":1000", "\"amount\":1000,\"x\":\"\\ud800\"", 1);
    assert_ne!(deep, text);
    assert_ne!(surrogate, text);
    for body in [deep, surrogate] {
        assert_eq!(
            post(&app, body.as_bytes()).await,
            (400, "malformed_json".to_owned())
        );
    }
    assert_eq!(app.count_events(), 0);
}
both_backends!(what_the_apply_step_cannot_parse_is_refused_at_the_door);

// ---- Item 3: one bad event fails alone ----

/// A trigger that refuses events whose id starts `evt_poison`: a row the database refuses
/// although the door let it through (what a NUL was on PostgreSQL before the door checked).
fn install_poison_trigger(app: &TestApp, backend: Backend) {
    match backend {
        Backend::Sqlite => app.exec(
            "CREATE TRIGGER poison BEFORE INSERT ON webhook_events \
             WHEN NEW.id LIKE 'evt_poison%' BEGIN SELECT RAISE(ABORT, 'poisoned row'); END;",
        ),
        Backend::Postgres => app.exec(
            "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN \
               IF NEW.id LIKE 'evt_poison%' THEN RAISE EXCEPTION 'poisoned row'; END IF; \
               RETURN NEW; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER poison BEFORE INSERT ON webhook_events \
               FOR EACH ROW EXECUTE FUNCTION poison();",
        ),
    }
}

async fn a_poisoned_event_fails_alone_and_its_batch_neighbours_are_stored(backend: Backend) {
    let app = spawn_app_on(backend, |config| {
        // Batches gather for a while, so poison and good events share them.
        config.admission.max_wait = Duration::from_millis(30);
        config.admission.writers = 1;
    })
    .await;
    install_poison_trigger(&app, backend);
    let connections = 6;
    let per_connection = 8;
    let results = futures_util::future::join_all((0..connections).map(|c| {
        let app = &app;
        async move {
            let mut answers = Vec::new();
            for n in 0..per_connection {
                let poison = (c + n) % 2 == 0;
                let id = if poison {
                    format!("evt_poison_{c}_{n}")
                } else {
                    format!("evt_good_{c}_{n}")
                };
                let event = intent_event(&id, "payment_intent.created", &format!("pi_{c}_{n}"), 1);
                answers.push((poison, id, post(app, &bytes(&event)).await.0));
            }
            answers
        }
    }))
    .await;
    let mut good = 0;
    for (poison, id, status) in results.into_iter().flatten() {
        if poison {
            assert_eq!(status, 503, "{id}");
            assert!(app.event(&id).is_none(), "{id}");
        } else {
            assert_eq!(status, 200, "{id} shared a batch with a poisoned event");
            assert!(app.event(&id).is_some(), "{id}");
            good += 1;
        }
    }
    assert_eq!(good, connections * per_connection / 2);
    // A poisoned event alone is no storage outage once a good one commits.
    let event = intent_event("evt_good_last", "payment_intent.created", "pi_last", 1);
    app.deliver(&bytes(&event)).await;
    assert_eq!(readyz(&app).await.0, 200);
}
both_backends!(a_poisoned_event_fails_alone_and_its_batch_neighbours_are_stored; multi_thread);

// ---- Item 3: values the database cannot store, when applying ----

async fn values_the_database_cannot_store_never_cost_an_event_its_transition(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let long = "x".repeat(100_000);
    app.deliver(&bytes(&intent_event(
        "evt_val1",
        "payment_intent.created",
        "pi_val1",
        100,
    )))
    .await;
    let mut failed = intent_event("evt_val2", "payment_intent.payment_failed", "pi_val1", 101);
    failed["data"]["object"]["last_payment_error"]["message"] = json!(format!("no\u{0}{long}"));
    failed["data"]["object"]["last_payment_error"]["code"] = json!("card\u{0}declined");
    app.deliver(&bytes(&failed)).await;
    let mut succeeded = intent_event("evt_val3", "payment_intent.succeeded", "pi_val1", 102);
    succeeded["data"]["object"]["metadata"]["customer_ref"] = json!("user\u{0}1");
    succeeded["data"]["object"]["currency"] = json!(format!("usd{long}"));
    app.deliver(&bytes(&succeeded)).await;
    app.settle().await;
    for id in ["evt_val1", "evt_val2", "evt_val3"] {
        let event = app.event(id).unwrap();
        assert_eq!(
            (event.status, event.attempts),
            (EventStatus::Processed, 1),
            "{id}: {:?}",
            event.last_error
        );
    }
    let checkout = app.checkout("pi_val1").unwrap();
    assert_eq!(checkout.state, CheckoutState::Succeeded);
}
both_backends!(values_the_database_cannot_store_never_cost_an_event_its_transition);

async fn a_duplicate_with_another_body_is_still_a_duplicate(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let event = intent_event("evt_dup1", "payment_intent.created", "pi_dup1", 100);
    app.deliver(&bytes(&event)).await;
    let mut altered = event.clone();
    altered["data"]["object"]["amount"] = json!(1);
    let answer = app.deliver(&bytes(&altered)).await;
    assert_eq!(answer["duplicate"], true);
    let stored = app.event("evt_dup1").unwrap().payload;
    assert_eq!(stored.as_bytes(), bytes(&event), "the first body stays");
}
both_backends!(a_duplicate_with_another_body_is_still_a_duplicate);

// ---- Item 2: the SQLite file goes away ----

async fn spawn_on_own_sqlite() -> (TestDatabase, std::path::PathBuf, TestApp) {
    let db = TestDatabase::create(Backend::Sqlite);
    let url = db.url();
    let path = match &url {
        payhook::store::DatabaseUrl::Sqlite(path) => path.clone(),
        _ => unreachable!(),
    };
    let app = spawn_manual_app_with_url(url, |_| {}).await;
    (db, path, app)
}

/// Delivers an event after `remove` took something away from under a running payhook:
/// every try is `503 storage_unavailable`, and `/readyz` says why, with `why` in its message.
async fn removing_is_503_and_not_ready(remove: impl FnOnce(&std::path::Path), why: &str) {
    let (_db, path, app) = spawn_on_own_sqlite().await;
    let first = intent_event("evt_rm1", "payment_intent.created", "pi_rm1", 100);
    app.deliver(&bytes(&first)).await;
    remove(&path);
    let second = intent_event("evt_rm2", "payment_intent.created", "pi_rm2", 101);
    for _ in 0..3 {
        assert_eq!(
            post(&app, &bytes(&second)).await,
            (503, "storage_unavailable".to_owned())
        );
    }
    let (status, ready) = readyz(&app).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["error"], "storage");
    let message = ready["message"].as_str().unwrap();
    assert!(message.contains(why), "{message}");
}

#[tokio::test]
async fn a_removed_sqlite_directory_is_503_and_not_ready() {
    removing_is_503_and_not_ready(
        |path| std::fs::remove_dir_all(path.parent().unwrap()).expect("rm -rf"),
        "was removed",
    )
    .await;
}

/// The same for the WAL beside the file: SQLite would go on committing into the removed
/// file, which the next start does not read.
#[tokio::test]
async fn a_removed_wal_file_is_503_and_not_ready() {
    removing_is_503_and_not_ready(
        |path| {
            let mut wal = path.to_owned().into_os_string();
            wal.push("-wal");
            std::fs::remove_file(wal).expect("rm the WAL");
        },
        "-wal was removed",
    )
    .await;
}

#[tokio::test]
async fn a_replaced_sqlite_file_is_503_until_payhook_restarts() {
    let (_db, path, app) = spawn_on_own_sqlite().await;
    app.deliver(&bytes(&intent_event(
        "evt_rp1",
        "payment_intent.created",
        "pi_rp1",
        100,
    )))
    .await;
    // A restore: another file (a copy) moved over the path.
    let copy = path.with_extension("restore");
    std::fs::copy(&path, &copy).expect("copy");
    std::fs::rename(&copy, &path).expect("restore over the path");
    let event = intent_event("evt_rp2", "payment_intent.created", "pi_rp2", 101);
    assert_eq!(
        post(&app, &bytes(&event)).await,
        (503, "storage_unavailable".to_owned())
    );
    let (status, ready) = readyz(&app).await;
    assert_eq!(status, 503);
    assert!(ready["message"]
        .as_str()
        .unwrap()
        .contains("now names another file"));
}

async fn readyz_fails_while_deliveries_cannot_be_stored(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    assert_eq!(readyz(&app).await.0, 200);
    // Every insert fails (as on a full disk) while the table is away.
    app.exec("ALTER TABLE webhook_events RENAME TO webhook_events_away");
    let event = intent_event("evt_full1", "payment_intent.created", "pi_full1", 100);
    assert_eq!(
        post(&app, &bytes(&event)).await,
        (503, "storage_unavailable".to_owned())
    );
    let (status, ready) = readyz(&app).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["error"], "storage");
    app.exec("ALTER TABLE webhook_events_away RENAME TO webhook_events");
    app.deliver(&bytes(&event)).await;
    assert_eq!(readyz(&app).await.0, 200, "ready again after a commit");
}
both_backends!(readyz_fails_while_deliveries_cannot_be_stored);

// ---- Item 5: card rows under concurrent writers ----

fn card_event(event_id: &str, event_type: &str, created: i64, customer: Option<&str>) -> Value {
    let mut object = json!({"id": "pm_lock1", "object": "payment_method", "type": "card",
        "customer": customer, "card": {"brand": "visa", "last4": "4242", "exp_month": 1,
        "exp_year": 2031, "fingerprint": "fp_lock"}});
    if customer.is_some() {
        object["billing_details"] = json!({"email": "old@example.com"});
    }
    json!({"id": event_id, "object": "event", "type": event_type, "created": created,
        "livemode": false, "data": {"object": object}})
}

/// Another writer (another instance, the outbox worker) holds the card row and changes a
/// column while a `payment_method.detached` is applied: the event must apply on top of that
/// change, not write back what it read before.
async fn a_card_update_waits_for_a_concurrent_writer_and_keeps_its_change(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    app.deliver(&bytes(&card_event(
        "evt_pm1",
        "payment_method.attached",
        100,
        Some("cus_lock1"),
    )))
    .await;
    app.settle().await;
    app.deliver(&bytes(&card_event(
        "evt_pm2",
        "payment_method.detached",
        200,
        None,
    )))
    .await;
    let mut other = app.pool.get().expect("connection");
    let (locked_tx, locked) = tokio::sync::oneshot::channel();
    let writer = tokio::task::spawn_blocking(move || {
        let lock = match &other {
            payhook::store::Conn::Sqlite(_) => "BEGIN IMMEDIATE",
            payhook::store::Conn::Postgres(_) => {
                "BEGIN; SELECT id FROM payment_methods WHERE id = 'pm_lock1' FOR UPDATE"
            }
        };
        payhook::with_conn!(&mut other, c => diesel::connection::SimpleConnection::batch_execute(c, lock))
            .expect("lock");
        locked_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(800));
        payhook::with_conn!(&mut other, c => diesel::connection::SimpleConnection::batch_execute(
            c,
            "UPDATE payment_methods SET billing_email = 'new@example.com' WHERE id = 'pm_lock1'; \
             COMMIT"
        ))
        .expect("update");
    });
    locked.await.unwrap();
    app.settle().await;
    writer.await.unwrap();
    let row = app
        .with_conn(|c| payhook::store::payment_methods::find_payment_method(c, "pm_lock1"))
        .expect("query")
        .expect("card");
    assert!(row.is_detached());
    assert_eq!(
        row.billing_email.as_deref(),
        Some("new@example.com"),
        "the concurrent change was overwritten"
    );
}
both_backends!(a_card_update_waits_for_a_concurrent_writer_and_keeps_its_change; multi_thread);

// ---- Item 5: supervision ----

async fn built_with_workers(backend: Backend) -> (TestDatabase, Application) {
    init_logs();
    let db = tokio::task::spawn_blocking(move || TestDatabase::create(backend))
        .await
        .unwrap();
    let app = Application::build_with(test_config(db.url()), Workers::Background)
        .await
        .expect("app builds");
    (db, app)
}

async fn a_dead_task_or_writer_stops_the_service_with_an_error(backend: Backend) {
    let mut victims = vec!["sweeper", "processor-0", "writer"];
    if backend == Backend::Sqlite {
        victims.push("checkpointer");
    }
    for victim in victims {
        let (_db, app) = built_with_workers(backend).await;
        let port = app.port();
        let health = app.health();
        if victim == "writer" {
            app.crash_admission_writer_for_test().await;
        } else {
            assert!(app.abort_task_for_test(victim), "{victim} runs");
        }
        let ended = tokio::time::timeout(Duration::from_secs(30), app.run_until_stopped())
            .await
            .expect("serve ends");
        let err = ended.expect_err("a death is an error").to_string();
        // The writers share one queue: whichever takes the crash job dies.
        let named = if victim == "writer" {
            "payhook-admit-"
        } else {
            victim
        };
        assert!(err.contains(named), "{victim}: {err}");
        assert_eq!(health.problems()[0].0, "tasks", "{victim}");
        let refused = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
        assert!(refused.is_err(), "{victim}: still accepting connections");
    }
}
both_backends!(a_dead_task_or_writer_stops_the_service_with_an_error; multi_thread);
