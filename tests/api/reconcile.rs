//! Reconciliation against the fake Stripe's Events API: events created while payhook was not
//! receiving are found and applied, a second pass finds them known, late and same-second
//! events are found, a 429 is waited out, two instances never run passes at once, and
//! `RECONCILE_INTERVAL_SECS` runs passes inside `serve`.

use std::time::{Duration, Instant};

use payhook::store::checkouts;
use payhook::store::now_secs;
use serde_json::{json, Value};

use crate::admin::{admin, with_admin};
use crate::fake_stripe::{stripe_config, FakeStripe};
use crate::helpers::{
    both_backends, spawn_app_on, spawn_app_with_url, Backend, TestApp, TestDatabase,
};
use crate::metrics::scrape;

/// A PaymentIntent confirmed with 4242 at the fake (succeeded); no webhook is sent.
pub async fn paid_intent(fake: &FakeStripe) -> String {
    let pm = fake.card("4242424242424242", "reconcile@example.com").await;
    let pi = fake
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "1500"),
                ("currency", "usd"),
                ("payment_method", pm["id"].as_str().unwrap()),
                ("confirm", "true"),
                ("metadata[customer_ref]", "user_reconcile"),
            ],
        )
        .await;
    assert_eq!(pi["status"], "succeeded", "{pi}");
    pi["id"].as_str().unwrap().to_owned()
}

/// The handled events the fake holds, newest first.
async fn handled_events(fake: &FakeStripe) -> Vec<Value> {
    let types: Vec<String> = payhook::inbox::reconcile::handled_types()
        .iter()
        .map(|t| format!("types[]={t}"))
        .collect();
    let list = fake
        .get(&format!("/v1/events?limit=100&{}", types.join("&")))
        .await;
    list["data"].as_array().unwrap().clone()
}

/// Inserts `event` into the fake's event list (as Stripe would list it).
pub async fn insert_event(fake: &FakeStripe, event: Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/_config/events", fake.base_url))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap()
    );
}

pub async fn fault(fake: &FakeStripe, fault: Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/_config/faults", fake.base_url))
        .json(&fault)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
}

async fn reconcile(app: &TestApp, body: Option<Value>) -> Value {
    let (status, report) = admin(app, "POST", "/reconcile", body).await;
    assert_eq!(status, 200, "{report}");
    report
}

/// A pass's (fetched, new, known).
fn counts(report: &Value) -> (u64, u64, u64) {
    let n = |k: &str| {
        report[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {report}"))
    };
    (n("fetched"), n("new"), n("known"))
}

fn late_event(id: &str, intent: &str, created: i64) -> Value {
    json!({
        "id": id, "object": "event", "type": "payment_intent.succeeded", "created": created,
        "data": {"object": {"id": intent, "object": "payment_intent", "status": "succeeded",
            "amount": 700, "currency": "usd", "metadata": {}}}
    })
}

async fn events_stripe_has_are_found_applied_once_and_then_known(backend: Backend) {
    let Some(fake) = FakeStripe::start("reconcile_finds_missed_events") else {
        return;
    };
    let app = spawn_app_on(backend, |c| {
        stripe_config(c, &fake.base_url);
        with_admin(c);
    })
    .await;
    let pi = paid_intent(&fake).await;
    let listed = handled_events(&fake).await;
    let n = listed.len() as u64;
    assert!(n >= 2, "created and succeeded at least: {listed:?}");

    let first = reconcile(&app, None).await;
    assert_eq!(counts(&first), (n, n, 0), "{first}");
    let cursor = first["cursor"].as_i64().unwrap();
    assert!(
        cursor <= now_secs() - 60,
        "the cursor stays a minute behind"
    );
    for event in &listed {
        let id = event["id"].as_str().unwrap();
        let stored = app.event(id).unwrap_or_else(|| panic!("{id} stored"));
        let as_stored: Value = serde_json::from_str(&stored.payload).unwrap();
        assert_eq!(&as_stored, event, "stored as Stripe lists it");
    }
    app.settle().await;
    let checkout = app.checkout(&pi).expect("a checkout for the missed intent");
    assert_eq!(checkout.state.as_str(), "succeeded");

    let second = reconcile(&app, None).await;
    assert_eq!(counts(&second), (n, 0, n), "{second}");
    app.settle().await;
    let transitions = app.transitions(&pi);
    let mut events: Vec<_> = transitions
        .iter()
        .filter_map(|t| t.event_id.clone())
        .collect();
    events.sort();
    events.dedup();
    assert_eq!(
        events.len(),
        transitions.len(),
        "one transition per event: {transitions:?}"
    );

    // A same-second event listed late (made after the passes, in the second of an event
    // already seen), and one older than the cursor but within the overlap.
    let seen_second = listed[0]["created"].as_i64().unwrap();
    insert_event(
        &fake,
        late_event("evt_same_second", "pi_late_1", seen_second),
    )
    .await;
    insert_event(
        &fake,
        late_event("evt_behind_cursor", "pi_late_2", cursor - 30),
    )
    .await;
    let third = reconcile(&app, None).await;
    assert_eq!(third["new"], 2, "{third}");
    assert!(app.event("evt_same_second").is_some());
    assert!(app.event("evt_behind_cursor").is_some());
    app.settle().await;
    assert_eq!(
        app.checkout("pi_late_2").unwrap().state.as_str(),
        "succeeded"
    );

    if let Some(metrics) = scrape(&app).await {
        let count = |result| metrics.value("payhook_reconcile_events_total", &[("result", result)]);
        assert_eq!(count("new"), (n + 2) as f64);
        assert_eq!(count("known"), (2 * n) as f64);
        let ok = metrics.value(
            "payhook_stripe_requests_total",
            &[("operation", "list_events"), ("outcome", "ok")],
        );
        assert!(ok >= 3.0, "{ok}");
    }
}
both_backends!(events_stripe_has_are_found_applied_once_and_then_known);

async fn a_dry_run_counts_and_stores_nothing_and_since_reaches_back(backend: Backend) {
    let Some(fake) = FakeStripe::start("reconcile_dry_run") else {
        return;
    };
    let app = spawn_app_on(backend, |c| {
        stripe_config(c, &fake.base_url);
        with_admin(c);
    })
    .await;
    paid_intent(&fake).await;
    // Three days old: before a first pass's one-day reach.
    let old = now_secs() - 3 * 86_400;
    insert_event(&fake, late_event("evt_three_days", "pi_old", old)).await;

    let dry = reconcile(&app, Some(json!({"dry_run": true}))).await;
    assert_eq!(dry["dry_run"], true);
    assert!(dry["new"].as_u64().unwrap() >= 2);
    assert_eq!(app.count_events(), 0, "a dry run stores nothing");

    let first = reconcile(&app, None).await;
    assert!(app.event("evt_three_days").is_none(), "{first}");
    let reaching = reconcile(&app, Some(json!({"since": 4 * 86_400}))).await;
    assert_eq!(reaching["new"], 1, "{reaching}");
    assert!(app.event("evt_three_days").is_some());
    // A `since` pass does not move the cursor back.
    assert!(reaching["cursor"].as_i64().unwrap() >= first["cursor"].as_i64().unwrap());

    let (status, body) = admin(&app, "POST", "/reconcile", Some(json!({"since": "2h"}))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("invalid_request"))
    );
}
both_backends!(a_dry_run_counts_and_stores_nothing_and_since_reaches_back);

async fn a_429_from_the_events_api_is_waited_out(backend: Backend) {
    let Some(fake) = FakeStripe::start("reconcile_429") else {
        return;
    };
    let app = spawn_app_on(backend, |c| {
        stripe_config(c, &fake.base_url);
        with_admin(c);
    })
    .await;
    paid_intent(&fake).await;
    fault(
        &fake,
        json!({"method": "GET", "path": "/v1/events", "status": 429, "count": 1, "retry_after": 1}),
    )
    .await;
    let started = Instant::now();
    let report = reconcile(&app, None).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    assert!(report["new"].as_u64().unwrap() >= 2, "{report}");
    let requests = fake
        .get("/_config/requests?method=GET&path=/v1/events")
        .await;
    let statuses: Vec<i64> = requests["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [429, 200]);
    if let Some(metrics) = scrape(&app).await {
        let requests = |outcome| {
            metrics.value(
                "payhook_stripe_requests_total",
                &[("operation", "list_events"), ("outcome", outcome)],
            )
        };
        assert_eq!((requests("retryable"), requests("ok")), (1.0, 1.0));
    }
}
both_backends!(a_429_from_the_events_api_is_waited_out);

async fn two_instances_never_run_passes_at_once_and_apply_nothing_twice(backend: Backend) {
    let Some(fake) = FakeStripe::start("reconcile_two_instances") else {
        return;
    };
    let db = tokio::task::spawn_blocking(move || TestDatabase::create(backend))
        .await
        .unwrap();
    let configure = |c: &mut payhook::config::Config| {
        stripe_config(c, &fake.base_url);
        with_admin(c);
    };
    let one = spawn_app_with_url(db.url(), configure).await;
    let two = spawn_app_with_url(db.url(), configure).await;
    let pi = paid_intent(&fake).await;
    let n = handled_events(&fake).await.len();
    // The first pass's listing is slow, so the second starts while it runs.
    fault(
        &fake,
        json!({"method": "GET", "path": "/v1/events", "delay_ms": 1500, "count": 1}),
    )
    .await;
    let first = {
        let (address, client) = (one.address.clone(), one.client.clone());
        tokio::spawn(async move {
            client
                .post(format!("{address}/admin/v1/reconcile"))
                .bearer_auth(crate::admin::ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, busy) = admin(&two, "POST", "/reconcile", None).await;
    assert_eq!(
        (status, busy["error"].as_str()),
        (409, Some("reconcile_in_progress"))
    );
    let first = first.await.unwrap();
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["new"], n);
    let again = reconcile(&two, None).await;
    assert_eq!(counts(&again), (n as u64, 0, n as u64), "{again}");

    // Both instances' processors apply; every event is applied once.
    let deadline = Instant::now() + Duration::from_secs(20);
    while one
        .checkout(&pi)
        .is_none_or(|c| c.state.as_str() != "succeeded")
    {
        assert!(
            Instant::now() < deadline,
            "the reconciled events were applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    one.settle().await;
    let checkout = one.checkout(&pi).unwrap();
    let transitions = one.with_conn(|c| checkouts::list_transitions(c, &checkout.id).unwrap());
    let mut events: Vec<_> = transitions
        .iter()
        .filter_map(|t| t.event_id.clone())
        .collect();
    let total = events.len();
    events.sort();
    events.dedup();
    assert_eq!(
        events.len(),
        total,
        "one transition per event: {transitions:?}"
    );
}
both_backends!(two_instances_never_run_passes_at_once_and_apply_nothing_twice);

async fn serve_runs_passes_every_reconcile_interval(backend: Backend) {
    let Some(fake) = FakeStripe::start("reconcile_interval") else {
        return;
    };
    let app = crate::helpers::spawn_app_with_workers(backend, |c| {
        stripe_config(c, &fake.base_url);
        c.reconcile_interval = Some(Duration::from_secs(1));
    })
    .await;
    let pi = paid_intent(&fake).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while app
        .checkout(&pi)
        .is_none_or(|c| c.state.as_str() != "succeeded")
    {
        assert!(
            Instant::now() < deadline,
            "a periodic pass found and applied {pi}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
both_backends!(serve_runs_passes_every_reconcile_interval);
