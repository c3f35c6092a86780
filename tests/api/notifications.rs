//! Notifications to the app, delivered to a wiremock "app": signed per Standard Webhooks
//! (checked by the reference library for Python, never only by payhook's signer), one per
//! applied transition and none for a refused event, the same `webhook-id` on every attempt,
//! retried after a 500, stopped by a 410, `Retry-After` honoured, a redirect never followed,
//! every attempt recorded, a failed one retried by `payhook notifications retry`.

use payhook::store::outbox::{self, OutboxRow};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::app_support::{api_config, bodies, deliveries, verify_independently};
use crate::helpers::{both_backends, bytes, intent_event, spawn_app_on, Backend, TestApp};

async fn app_notifying(backend: Backend, sink: &MockServer, retry_ms: u64) -> TestApp {
    let url = format!("{}/hooks", sink.uri());
    spawn_app_on(backend, |c| api_config(c, Some(&url), retry_ms)).await
}

/// Delivers `payment_intent.succeeded` for `intent` (a checkout payhook learns of from
/// webhooks alone) and applies it.
async fn succeed(app: &TestApp, event_id: &str, intent: &str) {
    let event = intent_event(
        event_id,
        "payment_intent.succeeded",
        intent,
        payhook::store::now_secs(),
    );
    app.deliver(&bytes(&event)).await;
}

fn notify_items(app: &TestApp) -> Vec<OutboxRow> {
    app.with_conn(|c| outbox::list_items(c, payhook::outbox::notify::KIND).expect("items"))
}

fn attempts(app: &TestApp, item: &OutboxRow) -> Vec<outbox::AttemptRow> {
    app.with_conn(|c| outbox::list_attempts(c, item.id).expect("attempts"))
}

async fn one_notification_per_applied_transition_never_for_a_refused_event(backend: Backend) {
    let sink = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&sink)
        .await;
    let app = app_notifying(backend, &sink, 50).await;
    let now = payhook::store::now_secs();
    let created = intent_event(
        "evt_n_created",
        "payment_intent.created",
        "pi_notify1",
        now - 2,
    );
    app.deliver(&bytes(&created)).await;
    succeed(&app, "evt_n_ok", "pi_notify1").await;
    app.settle().await;
    // After it, a redelivery (another event id, same state and time) and a stale failure: refused.
    succeed(&app, "evt_n_ok_twin", "pi_notify1").await;
    let stale = intent_event(
        "evt_n_stale",
        "payment_intent.payment_failed",
        "pi_notify1",
        now - 1,
    );
    app.deliver(&bytes(&stale)).await;
    app.settle().await;

    let received = deliveries(&sink).await;
    let bodies = bodies(&received);
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let body = &bodies[0];
    assert_eq!(body["type"], "checkout.succeeded");
    assert_eq!(body["data"]["sequence"], 1);
    assert_eq!(body["data"]["intent_id"], "pi_notify1");
    assert_eq!(body["data"]["state"], "succeeded");
    assert_eq!(
        body["data"]["customer_ref"], "user_test",
        "from the intent's metadata"
    );
    assert!(body["data"]["client_secret"].is_null());
    let ts = body["timestamp"].as_str().expect("timestamp");
    assert!(ts.len() == 20 && ts.ends_with('Z'), "{ts}");
    assert_eq!(received[0]["path"], "/hooks");
    let signature = received[0]["headers"]["webhook-signature"]
        .as_str()
        .expect("signature");
    assert_eq!(
        signature.split(' ').count(),
        2,
        "one signature per secret: {signature}"
    );
    assert!(signature.split(' ').all(|s| s.starts_with("v1,")));
    verify_independently(&received);
    let items = notify_items(&app);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].status.as_str(), "done");
    let tries = attempts(&app, &items[0]);
    assert_eq!(tries.len(), 1);
    assert_eq!(tries[0].status_code, Some(204));
}
both_backends!(one_notification_per_applied_transition_never_for_a_refused_event);

async fn a_500_is_retried_with_the_same_webhook_id_and_a_410_stops(backend: Backend) {
    let sink = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&sink)
        .await;
    Mock::given(method("POST"))
        .and(path("/hooks"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&sink)
        .await;
    let app = app_notifying(backend, &sink, 50).await;
    succeed(&app, "evt_r_ok", "pi_retry1").await;
    app.settle().await;
    let received = deliveries(&sink).await;
    assert_eq!(received.len(), 3, "two 500s, then delivered");
    let ids: Vec<&str> = received
        .iter()
        .map(|d| d["headers"]["webhook-id"].as_str().expect("id"))
        .collect();
    assert!(
        ids.iter().all(|i| *i == ids[0] && i.starts_with("msg_")),
        "{ids:?}"
    );
    assert!(
        received.iter().all(|d| d["body"] == received[0]["body"]),
        "same body each time"
    );
    verify_independently(&received);
    let item = &notify_items(&app)[0];
    assert_eq!(item.status.as_str(), "done");
    let codes: Vec<Option<i32>> = attempts(&app, item).iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(500), Some(500), Some(200)]);

    // The app says the endpoint is gone: no more tries, failed and visible.
    sink.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(410))
        .mount(&sink)
        .await;
    succeed(&app, "evt_r_gone", "pi_retry2").await;
    app.settle().await;
    assert_eq!(deliveries(&sink).await.len(), 1, "a 410 is not retried");
    let gone = notify_items(&app)
        .into_iter()
        .find(|i| i.status.as_str() == "failed")
        .expect("a failed notification");
    assert_eq!(gone.last_error_code.as_deref(), Some("gone"));

    // `payhook notifications retry` (the library call it makes) puts it back, same id.
    sink.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&sink)
        .await;
    let requeued = app.with_conn(|c| {
        outbox::requeue_failed_items_by_id(c, payhook::outbox::notify::KIND, &[gone.id])
            .expect("requeue")
    });
    assert_eq!(requeued, vec![gone.id]);
    app.settle().await;
    let again = deliveries(&sink).await;
    assert_eq!(again.len(), 1);
    let data: serde_json::Value = serde_json::from_str(&gone.data).expect("data");
    assert_eq!(again[0]["headers"]["webhook-id"], data["webhook_id"]);
    verify_independently(&again);
}
both_backends!(a_500_is_retried_with_the_same_webhook_id_and_a_410_stops);

async fn retry_after_is_honoured_and_redirects_are_not_followed(backend: Backend) {
    let sink = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks"))
        .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", "2"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&sink)
        .await;
    Mock::given(method("POST"))
        .and(path("/hooks"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("Location", format!("{}/elsewhere", sink.uri())),
        )
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&sink)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(3)
        .mount(&sink)
        .await;
    // Retries 50 ms apart by the schedule: only Retry-After can make one wait 2 s.
    let app = app_notifying(backend, &sink, 50).await;
    succeed(&app, "evt_ra", "pi_retry_after").await;
    app.settle().await;
    let received = deliveries(&sink).await;
    let paths: Vec<&str> = received
        .iter()
        .map(|d| d["path"].as_str().expect("path"))
        .collect();
    assert_eq!(
        paths,
        ["/hooks", "/hooks", "/hooks"],
        "the redirect was not followed"
    );
    let item = &notify_items(&app)[0];
    let tries = attempts(&app, item);
    let codes: Vec<Option<i32>> = tries.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(503), Some(302), Some(200)]);
    let waited = tries[1].started_at_ms - tries[0].started_at_ms;
    assert!(
        waited >= 2000,
        "Retry-After: 2 honoured, waited {waited} ms"
    );
    let quick = tries[2].started_at_ms - tries[1].started_at_ms;
    assert!(quick < 2000, "the schedule alone after a 302: {quick} ms");
    verify_independently(&received);
}
both_backends!(retry_after_is_honoured_and_redirects_are_not_followed);

async fn a_notification_that_never_gets_through_fails_and_stays_visible(backend: Backend) {
    let sink = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&sink)
        .await;
    let app = app_notifying(backend, &sink, 20).await;
    succeed(&app, "evt_never", "pi_never").await;
    app.settle().await;
    let item = &notify_items(&app)[0];
    assert_eq!(item.status.as_str(), "failed");
    assert_eq!(item.last_error_code.as_deref(), Some("retries_exhausted"));
    assert_eq!(
        attempts(&app, item).len(),
        8,
        "the first try and seven retries"
    );
    assert_eq!(deliveries(&sink).await.len(), 8);
}
both_backends!(a_notification_that_never_gets_through_fails_and_stays_visible);

/// `payhook notifications list|retry` on `url`, bounded: (success, stdout + stderr).
fn cli(url: &str, args: &[&str]) -> (bool, String) {
    let mut all = vec!["notifications"];
    all.extend_from_slice(args);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_payhook"))
        .args(&all)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", url)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("payhook runs");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

async fn the_cli_lists_failed_notifications_and_retries_them(backend: Backend) {
    let (db, pool) = crate::helpers::fresh_pool(backend).await;
    let url = db.url().expose();
    tokio::task::spawn_blocking(move || {
        use payhook::domain::checkout::{CheckoutKind, CheckoutState};
        use payhook::store::checkouts::{self, CheckoutRow};
        let mut conn = pool.get().expect("connection");
        let row = CheckoutRow {
            id: "chk_cli".into(),
            kind: CheckoutKind::Payment,
            intent_id: "pi_cli".into(),
            customer_id: None,
            stripe_customer_id: None,
            payment_method_id: None,
            amount: Some(100),
            currency: Some("usd".into()),
            setup_future_usage: None,
            state: CheckoutState::Succeeded,
            state_event_id: None,
            state_event_created: 1,
            last_error_code: None,
            decline_code: None,
            last_error_message: None,
            created_at: 1,
            updated_at: 1,
            account: String::new(),
        };
        assert!(checkouts::insert_checkout(&mut conn, &row).expect("insert"));
        for sequence in [1, 2] {
            payhook::outbox::notify::enqueue(
                &mut conn,
                "chk_cli",
                "checkout.succeeded",
                sequence,
                serde_json::json!({"id": "chk_cli"}),
                1,
            )
            .expect("enqueue");
        }
        let items = outbox::list_items(&mut conn, payhook::outbox::notify::KIND).expect("items");
        let failed = items[0].clone();
        let mut leased = failed.clone();
        leased.locked_by = Some("test".into());
        payhook::with_conn!(&mut conn, c => {
            use diesel::prelude::*;
            use payhook::store::schema::outbox::dsl;
            diesel::update(dsl::outbox.find(failed.id))
                .set(dsl::locked_by.eq("test"))
                .execute(c)
        })
        .expect("lease");
        outbox::finish_item(
            &mut conn,
            &leased,
            outbox::OutboxStatus::Failed,
            8,
            Some(("gone", "the app answered 410")),
            None,
            1,
        )
        .expect("fail it");

        let (ok, out) = cli(&url, &["list", "--status", "failed"]);
        assert!(ok, "{out}");
        let rows: Vec<&str> = out.lines().skip(1).collect();
        assert_eq!(rows.len(), 1, "{out}");
        assert!(
            rows[0].starts_with(&format!(
                "{}\tfailed\tcheckout.succeeded\tchk_cli\t1\t",
                failed.id
            )),
            "{out}"
        );
        assert!(rows[0].ends_with("\tgone"), "{out}");
        let (ok, out) = cli(&url, &["list"]);
        assert!(ok && out.lines().count() == 3, "{out}");

        let (ok, out) = cli(&url, &["retry", &failed.id.to_string(), "999"]);
        assert!(
            !ok,
            "an id that is not a failed notification fails the command: {out}"
        );
        assert!(
            out.contains("1 failed notifications requeued") && out.contains("999"),
            "{out}"
        );
        let again = outbox::find_item(&mut conn, failed.id)
            .expect("find")
            .expect("item");
        assert_eq!(again.status.as_str(), "pending");
        assert_eq!(again.attempts, 0);
        let (ok, out) = cli(&url, &["list", "--status", "failed"]);
        assert!(ok && out.lines().count() == 1, "{out}");
    })
    .await
    .expect("cli test");
    drop(db);
}
both_backends!(the_cli_lists_failed_notifications_and_retries_them);

/// Without `NOTIFY_URL` nothing would ever send a notification, so applying queues none (it
/// used to queue and keep them, which cost every applied transition a rendered checkout and
/// an outbox row); the checkouts move as before.
async fn without_notify_url_applied_transitions_queue_no_notification(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let now = payhook::store::now_secs();
    let created = intent_event(
        "evt_q_created",
        "payment_intent.created",
        "pi_quiet",
        now - 2,
    );
    app.deliver(&bytes(&created)).await;
    succeed(&app, "evt_q_ok", "pi_quiet").await;
    app.settle().await;
    assert_eq!(
        app.checkout("pi_quiet").expect("checkout").state.as_str(),
        "succeeded"
    );
    assert!(notify_items(&app).is_empty(), "{:?}", notify_items(&app));
}
both_backends!(without_notify_url_applied_transitions_queue_no_notification);
