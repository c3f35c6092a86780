//! Fault injection between the action worker and Stripe, with `wiremock` standing in for the
//! API: server errors, rate limits, lock timeouts, timeouts, a crash between a call and its
//! record, permanent errors, and the request budget. Each test checks the idempotency keys
//! Stripe would have seen, since that is what makes retries safe at the real Stripe.

use std::time::{Duration, Instant};

use payhook::store::customers;
use serde_json::{json, Value};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::fake_stripe::{stripe_config, wait_for_action};
use crate::helpers::{
    both_backends, bytes, intent_event, spawn_app_on, Backend, TestApp, TestDatabase,
};

/// The Stripe customer the mock creates for local customer `local`.
fn cus_for(local: impl std::fmt::Display) -> String {
    format!("cus_mock{local}")
}

fn card_pm(pm_id: &str, customer: Option<&str>) -> Value {
    json!({
        "id": pm_id, "object": "payment_method", "allow_redisplay": "unspecified",
        "billing_details": {"address": null, "email": "jo@example.com", "name": null,
                            "phone": null, "tax_id": null},
        "card": {"brand": "visa", "checks": null, "country": "US", "display_brand": "visa",
                 "exp_month": 8, "exp_year": 2030, "fingerprint": "fpMock0001", "funding": "credit",
                 "generated_from": null, "last4": "4242", "networks": null,
                 "regulated_status": "unregulated", "three_d_secure_usage": {"supported": true},
                 "wallet": null},
        "created": 1719000000, "customer": customer, "livemode": false, "metadata": {},
        "radar_options": {}, "type": "card"
    })
}

fn customer(cid: &str) -> Value {
    json!({
        "id": cid, "object": "customer", "address": null, "balance": 0, "created": 1719000000,
        "currency": null, "default_source": null, "delinquent": false, "description": null,
        "discount": null, "email": null, "invoice_prefix": "ABC123",
        "invoice_settings": {"custom_fields": null, "default_payment_method": null,
                             "footer": null, "rendering_options": null},
        "livemode": false, "metadata": {}, "name": null, "next_invoice_sequence": 1,
        "phone": null, "preferred_locales": [], "shipping": null, "tax_exempt": "none",
        "test_clock": null
    })
}

fn stripe_error(status: u16, type_: &str, code: Option<&str>, message: &str) -> ResponseTemplate {
    let mut error = json!({"type": type_, "message": message});
    if let Some(code) = code {
        error["code"] = code.into();
    }
    ResponseTemplate::new(status).set_body_json(json!({ "error": error }))
}

fn pm_in_path(req: &Request) -> String {
    req.url
        .path_segments()
        .and_then(|mut s| s.nth(2))
        .unwrap_or("pm_unknown")
        .to_owned()
}

/// A Stripe that answers every call payhook makes, successfully. Fault mocks mounted with
/// a higher priority (lower number) answer first while they last.
pub(crate) async fn happy_stripe() -> MockServer {
    let server = MockServer::start().await;
    // Like Stripe: one customer per idempotency key (payhook:customer:{local id}).
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(|req: &Request| {
            let local = req
                .headers
                .get("idempotency-key")
                .and_then(|k| k.to_str().ok())
                .and_then(|k| k.rsplit(':').next())
                .unwrap_or("nokey")
                .to_owned();
            ResponseTemplate::new(200).set_body_json(customer(&cus_for(&local)))
        })
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/v1/customers/cus_\w+$"))
        .respond_with(|req: &Request| {
            let cus = req
                .url
                .path_segments()
                .and_then(|mut s| s.nth(2))
                .unwrap_or("cus_x");
            ResponseTemplate::new(200).set_body_json(customer(cus))
        })
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/v1/payment_methods/pm_\w+$"))
        .respond_with(|req: &Request| {
            ResponseTemplate::new(200).set_body_json(card_pm(&pm_in_path(req), None))
        })
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/v1/payment_methods/pm_\w+/attach$"))
        .respond_with(|req: &Request| {
            ResponseTemplate::new(200).set_body_json(card_pm(&pm_in_path(req), None))
        })
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/v1/payment_methods/pm_\w+/detach$"))
        .respond_with(|req: &Request| {
            ResponseTemplate::new(200).set_body_json(card_pm(&pm_in_path(req), None))
        })
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/payment_methods"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list", "url": "/v1/payment_methods", "has_more": false, "data": []
        })))
        .mount(&server)
        .await;
    server
}

/// A signed `setup_intent.succeeded` for the app user `user_test` with card `pm`.
fn succeeded(event_id: &str, seti: &str, pm: &str) -> Vec<u8> {
    let mut event = intent_event(event_id, "setup_intent.succeeded", seti, 1_763_900_000);
    event["data"]["object"]["payment_method"] = pm.into();
    event["data"]["object"]["status"] = "succeeded".into();
    bytes(&event)
}

/// Requests the server got for `method path`, with their Idempotency-Key headers.
pub(crate) async fn keys_of(
    server: &MockServer,
    verb: &str,
    request_path: &str,
) -> Vec<Option<String>> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method.as_str() == verb && r.url.path() == request_path)
        .map(|r| {
            r.headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .collect()
}

fn local_customer_id(app: &TestApp) -> i64 {
    app.with_conn(|c| customers::find_customer_by_ref(c, None, "user_test").expect("query"))
        .expect("customer")
        .id
}

async fn server_errors_are_retried_with_the_same_idempotency_key_until_stripe_answers(
    backend: Backend,
) {
    let server = happy_stripe().await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(stripe_error(
            500,
            "api_error",
            None,
            "An unknown error occurred",
        ))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    let app = spawn_app_on(backend, |c| stripe_config(c, &server.uri())).await;
    app.deliver(&succeeded("evt_500", "seti_500", "pm_500"))
        .await;

    let action = wait_for_action(&app, "save_card:seti_500", "done").await;
    assert_eq!(action.attempts, 2, "two failed tries before the success");
    let keys = keys_of(&server, "POST", "/v1/customers").await;
    let expected = format!("payhook:customer:{}", local_customer_id(&app));
    assert_eq!(keys, vec![Some(expected); 3]);
    assert_eq!(
        crate::fake_stripe::card_status(&app, "seti_500").as_deref(),
        Some("saved")
    );
}
both_backends!(server_errors_are_retried_with_the_same_idempotency_key_until_stripe_answers);

async fn rate_limits_and_lock_timeouts_are_retried(backend: Backend) {
    let server = happy_stripe().await;
    Mock::given(method("POST"))
        .and(path_regex(r"/attach$"))
        .respond_with(stripe_error(
            429,
            "invalid_request_error",
            Some("rate_limit"),
            "Too many requests",
        ))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/attach$"))
        .respond_with(stripe_error(
            429,
            "invalid_request_error",
            Some("lock_timeout"),
            "This object cannot be accessed right now because another API request or Stripe process is currently accessing it.",
        ))
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&server)
        .await;
    let app = spawn_app_on(backend, |c| stripe_config(c, &server.uri())).await;
    app.deliver(&succeeded("evt_429", "seti_429", "pm_429"))
        .await;

    let action = wait_for_action(&app, "save_card:seti_429", "done").await;
    assert_eq!(action.attempts, 2);
    let keys = keys_of(&server, "POST", "/v1/payment_methods/pm_429/attach").await;
    assert_eq!(keys.len(), 3);
    let expected = format!(
        "save_card:seti_429:attach:{}",
        cus_for(local_customer_id(&app))
    );
    assert!(
        keys.iter().all(|k| k.as_deref() == Some(expected.as_str())),
        "{keys:?}"
    );
    // The customer was created once: its step was recorded before the attach failed.
    assert_eq!(keys_of(&server, "POST", "/v1/customers").await.len(), 1);
}
both_backends!(rate_limits_and_lock_timeouts_are_retried);

async fn a_timed_out_call_is_retried_with_the_same_key(backend: Backend) {
    let server = happy_stripe().await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/v1/customers/cus_\w+$"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(customer("cus_slow"))
                .set_delay(Duration::from_secs(2)),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    let app = spawn_app_on(backend, |c| {
        stripe_config(c, &server.uri());
        c.actions.request_timeout = Duration::from_millis(300);
    })
    .await;
    app.deliver(&succeeded("evt_slow", "seti_slow", "pm_slow"))
        .await;

    let action = wait_for_action(&app, "save_card:seti_slow", "done").await;
    assert_eq!(action.attempts, 1);
    let cus = cus_for(local_customer_id(&app));
    let keys = keys_of(&server, "POST", &format!("/v1/customers/{cus}")).await;
    assert_eq!(
        keys,
        vec![Some(format!("save_card:seti_slow:default:{cus}")); 2]
    );
}
both_backends!(a_timed_out_call_is_retried_with_the_same_key);

async fn a_crash_between_the_stripe_call_and_its_record_resumes_with_the_same_key(
    backend: Backend,
) {
    let server = happy_stripe().await;
    // The first customer creation is slow: the process "crashes" while it is in flight,
    // after Stripe has received (and would have performed) it.
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(customer("cus_never_recorded"))
                .set_delay(Duration::from_secs(3)),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    // One database for both processes, kept for the whole test.
    let shared = TestDatabase::create(backend);
    let database = shared.url();
    let configure = |c: &mut payhook::config::Config| {
        stripe_config(c, &server.uri());
        c.database_url = database.clone();
        c.actions.lease = Duration::from_millis(800);
    };

    // The first instance works by itself and is stopped in the middle of a Stripe call.
    let first = crate::helpers::spawn_app_with_workers(backend, configure).await;
    first
        .deliver(&succeeded("evt_crash", "seti_crash", "pm_crash"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while keys_of(&server, "POST", "/v1/customers").await.is_empty() {
        assert!(Instant::now() < deadline, "customer creation never sent");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let customer_id = local_customer_id(&first);
    drop(first); // stops the worker mid-call: its result is never recorded
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stuck = {
        let pool = payhook::store::Pool::connect(&database, Default::default()).expect("pool");
        let mut conn = pool.get().expect("connection");
        payhook::store::outbox::find_item_by_key(&mut conn, "save_card:seti_crash")
            .expect("query")
            .expect("action")
    };
    assert_eq!(stuck.step, "customer", "the call's result was not recorded");

    let second = spawn_app_on(backend, configure).await;
    let action = wait_for_action(&second, "save_card:seti_crash", "done").await;
    assert_eq!(action.attempts, 0, "a crash is not a failed try");
    let keys = keys_of(&server, "POST", "/v1/customers").await;
    assert_eq!(
        keys,
        vec![Some(format!("payhook:customer:{customer_id}")); 2]
    );
    let local = second
        .with_conn(|c| customers::find_customer(c, customer_id).expect("query"))
        .expect("customer");
    assert_eq!(local.stripe_customer_id, Some(cus_for(customer_id)));
}
both_backends!(a_crash_between_the_stripe_call_and_its_record_resumes_with_the_same_key);

async fn a_permanent_error_fails_the_action_with_stripes_code_until_payhook_retry(
    backend: Backend,
) {
    let server = happy_stripe().await;
    Mock::given(method("GET"))
        .and(path("/v1/payment_methods/pm_gone"))
        .respond_with(stripe_error(
            404,
            "invalid_request_error",
            Some("resource_missing"),
            "No such PaymentMethod: 'pm_gone'",
        ))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db_path = dir.path().join("retry.sqlite3");
    let database = payhook::store::DatabaseUrl::Sqlite(db_path.clone());
    let app = spawn_app_on(backend, |c| {
        stripe_config(c, &server.uri());
        c.database_url = database.clone();
    })
    .await;
    app.deliver(&succeeded("evt_gone", "seti_gone", "pm_gone"))
        .await;

    let failed = wait_for_action(&app, "save_card:seti_gone", "failed").await;
    assert_eq!(failed.last_error_code.as_deref(), Some("resource_missing"));
    assert_eq!(failed.attempts, 1, "not retried");
    assert_eq!(failed.step, "attach", "the customer step had completed");
    let (status, code, error) = crate::fake_stripe::card_of(&app, "seti_gone").expect("card");
    assert_eq!(status, "failed");
    assert_eq!(code.as_deref(), Some("resource_missing"));
    assert!(error
        .as_deref()
        .is_some_and(|m| m.contains("No such PaymentMethod")));

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_payhook"))
        .arg("retry")
        .env("DATABASE_URL", &db_path)
        .env("RUST_LOG", "warn")
        .output()
        .expect("payhook retry runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("1 failed Stripe actions requeued"),
        "{stdout}"
    );

    let done = wait_for_action(&app, "save_card:seti_gone", "done").await;
    assert_eq!(done.last_error_code, None);
    assert_eq!(keys_of(&server, "POST", "/v1/customers").await.len(), 1);
    assert_eq!(
        crate::fake_stripe::card_status(&app, "seti_gone").as_deref(),
        Some("saved")
    );
}
both_backends!(a_permanent_error_fails_the_action_with_stripes_code_until_payhook_retry);

async fn retryable_errors_give_up_after_max_attempts_and_say_so(backend: Backend) {
    let server = happy_stripe().await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(stripe_error(503, "api_error", None, "Service unavailable"))
        .with_priority(1)
        .mount(&server)
        .await;
    let app = spawn_app_on(backend, |c| {
        stripe_config(c, &server.uri());
        c.actions.max_attempts = 3;
    })
    .await;
    app.deliver(&succeeded("evt_down", "seti_down", "pm_down"))
        .await;

    let failed = wait_for_action(&app, "save_card:seti_down", "failed").await;
    assert_eq!(failed.attempts, 3);
    assert_eq!(failed.last_error_code.as_deref(), Some("retries_exhausted"));
    assert!(failed
        .last_error
        .as_deref()
        .is_some_and(|m| m.contains("http_503")));
    assert_eq!(keys_of(&server, "POST", "/v1/customers").await.len(), 3);
    assert_eq!(
        crate::fake_stripe::card_of(&app, "seti_down")
            .and_then(|c| c.1)
            .as_deref(),
        Some("retries_exhausted")
    );
}
both_backends!(retryable_errors_give_up_after_max_attempts_and_say_so);

async fn a_backlog_is_spaced_out_by_the_request_budget(backend: Backend) {
    let server = happy_stripe().await;
    let rps = 40.0;
    let app = spawn_app_on(backend, |c| {
        stripe_config(c, &server.uri());
        c.actions.max_rps = rps;
        c.actions.burst = 1.0;
        c.actions.concurrency = 8;
    })
    .await;
    let actions = 12;
    let started = Instant::now();
    for n in 0..actions {
        let mut event = intent_event(
            &format!("evt_backlog_{n}"),
            "setup_intent.succeeded",
            &format!("seti_backlog_{n}"),
            1_763_900_000,
        );
        event["data"]["object"]["payment_method"] = format!("pm_backlog_{n}").into();
        event["data"]["object"]["metadata"]["customer_ref"] = format!("user_backlog_{n}").into();
        app.deliver(&bytes(&event)).await;
    }
    for n in 0..actions {
        wait_for_action(&app, &format!("save_card:seti_backlog_{n}"), "done").await;
    }
    let elapsed = started.elapsed();
    let requests = server.received_requests().await.unwrap_or_default().len();
    // 6 calls per action (create, retrieve, attach, default, retrieve, list).
    assert_eq!(requests, actions * 6);
    let floor = Duration::from_secs_f64((requests as f64 - 1.0) / rps * 0.9);
    println!("{requests} Stripe requests at most {rps}/s took {elapsed:?} (floor {floor:?})");
    assert!(
        elapsed >= floor,
        "{requests} requests in {elapsed:?} exceed {rps}/s"
    );
}
both_backends!(a_backlog_is_spaced_out_by_the_request_budget);

async fn a_rejected_key_fails_the_action_without_the_key_reaching_the_database(backend: Backend) {
    let server = happy_stripe().await;
    // A misbehaving intermediary echoes the key back in its error message.
    let echoed = format!("Invalid API Key provided: {}", crate::fake_stripe::API_KEY);
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(stripe_error(401, "invalid_request_error", None, &echoed))
        .with_priority(1)
        .mount(&server)
        .await;
    let app = spawn_app_on(backend, |c| stripe_config(c, &server.uri())).await;
    app.deliver(&succeeded("evt_401", "seti_401", "pm_401"))
        .await;

    let failed = wait_for_action(&app, "save_card:seti_401", "failed").await;
    assert_eq!(failed.last_error_code.as_deref(), Some("http_401"));
    let checkout = app.checkout("seti_401").expect("checkout");
    let shown = format!("{failed:?} {checkout:?}");
    assert!(shown.contains("[redacted]"), "{shown}");
    assert!(!shown.contains(crate::fake_stripe::API_KEY), "{shown}");
}
both_backends!(a_rejected_key_fails_the_action_without_the_key_reaching_the_database);
