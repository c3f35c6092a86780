//! The app API's rules: bearer tokens, request validation, `Idempotency-Key` (sequential and
//! concurrent duplicates make one intent), and crash-safety against Stripe faults (wiremock
//! standing in for Stripe: a 500 then success, and an answer lost between the call and its
//! record, both resumed with the same key; a webhook that comes before the record finds its
//! checkout).

use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::app_support::{api, api_as, api_ok, id, spawn_api_app, stripe_scene, TOKEN};
use crate::fake_stripe::stripe_config;
use crate::helpers::{both_backends, bytes, spawn_app_on, Backend};

async fn the_api_needs_one_of_its_tokens(backend: Backend) {
    let app = spawn_app_on(backend, |c| {
        c.api_tokens = vec![
            payhook::config::ApiToken::new("old_token_1".into()),
            payhook::config::ApiToken::new(TOKEN.into()),
        ];
    })
    .await;
    let list = "/api/v1/checkouts";
    for token in [
        None,
        Some("wrong"),
        Some("old_token_"),
        Some("old_token_12"),
    ] {
        let (status, body, _) = api_as(&app, token, "GET", list, None, None).await;
        assert_eq!(status, 401, "{token:?}: {body}");
        assert_eq!(body["error"], "unauthorized");
        assert!(!body.to_string().contains(TOKEN) && !body.to_string().contains("old_token_1"));
    }
    // While rotating, both tokens work.
    for token in ["old_token_1", TOKEN] {
        let (status, body, _) = api_as(&app, Some(token), "GET", list, None, None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"], json!([]));
        assert_eq!(body["has_more"], false);
    }
    let (status, body, _) = api(&app, "GET", "/api/v1/nothing/here", None, None).await;
    assert_eq!((status, body["error"].clone()), (404, json!("not_found")));
    let (status, body, _) = api(&app, "GET", "/api/v1/checkouts/chk_nope", None, None).await;
    assert_eq!((status, body["error"].clone()), (404, json!("not_found")));

    // Without API_TOKEN the API does not exist.
    let off = spawn_app_on(backend, |_| {}).await;
    for token in [None, Some(TOKEN)] {
        let (status, body, _) = api_as(&off, token, "GET", list, None, None).await;
        assert_eq!(
            (status, body["error"].clone()),
            (404, json!("not_found")),
            "{token:?}"
        );
    }
}
both_backends!(the_api_needs_one_of_its_tokens);

async fn bad_requests_name_their_field_and_make_nothing(backend: Backend) {
    // No Stripe at all: a valid request would answer 503, an invalid one never gets that far.
    let app = spawn_app_on(backend, |c| crate::app_support::api_config(c, None, 50)).await;
    for (body, field) in [
        (json!({"customer_ref": "u"}), "mode"),
        (json!({"mode": "setup"}), "customer_ref"),
        (json!({"mode": "payment", "currency": "usd"}), "amount"),
        (
            json!({"mode": "payment", "amount": -5, "currency": "usd"}),
            "amount",
        ),
        (
            json!({"mode": "payment", "amount": 5, "currency": "usd", "save_card": true}),
            "customer_ref",
        ),
        (
            json!({"mode": "payment", "amount": 5, "currency": "usd", "extra": 1}),
            "extra",
        ),
    ] {
        let (status, answer, _) =
            api(&app, "POST", "/api/v1/checkouts", Some(body.clone()), None).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["error"], "invalid_request");
        assert!(
            answer["message"]
                .as_str()
                .expect("message")
                .starts_with(field),
            "{answer}"
        );
    }
    let (status, answer, _) = api(
        &app,
        "POST",
        "/api/v1/customers/user_1/charges",
        Some(json!({"amount": 100, "currency": "usd"})),
        None,
    )
    .await;
    assert_eq!(
        (status, answer["error"].clone()),
        (400, json!("idempotency_key_required"))
    );
    let (status, answer, _) = api(
        &app,
        "POST",
        "/api/v1/customers/nobody/charges",
        Some(json!({"amount": 100, "currency": "usd"})),
        Some("k1"),
    )
    .await;
    assert_eq!((status, answer["error"].clone()), (404, json!("not_found")));
    let (status, _, _) = api(&app, "GET", "/api/v1/customers/nobody", None, None).await;
    assert_eq!(status, 404);
    // A valid request without a Stripe key: 503 with Retry-After, nothing at Stripe.
    let (status, answer, retry_after) = api(
        &app,
        "POST",
        "/api/v1/checkouts",
        Some(json!({"mode": "payment", "amount": 5, "currency": "usd"})),
        None,
    )
    .await;
    assert_eq!(
        (status, answer["error"].clone()),
        (503, json!("stripe_unavailable")),
        "{answer}"
    );
    assert_eq!(retry_after.as_deref(), Some("5"));
}
both_backends!(bad_requests_name_their_field_and_make_nothing);

async fn a_customer_without_a_saved_card_cannot_be_charged(backend: Backend) {
    let Some((_fake, app, _sink)) = stripe_scene(backend, "no default card").await else {
        return;
    };
    api_ok(
        &app,
        "POST",
        "/api/v1/checkouts",
        Some(json!({"mode": "setup", "customer_ref": "user_nd"})),
        None,
        201,
    )
    .await;
    let (status, body, _) = api(
        &app,
        "POST",
        "/api/v1/customers/user_nd/charges",
        Some(json!({"amount": 100, "currency": "usd"})),
        Some("k-nd"),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (409, json!("no_default_payment_method")),
        "{body}"
    );
}
both_backends!(a_customer_without_a_saved_card_cannot_be_charged);

async fn the_same_request_twice_makes_one_intent(backend: Backend) {
    let Some((fake, app, _sink)) = stripe_scene(backend, "idempotency").await else {
        return;
    };
    let body =
        json!({"mode": "payment", "amount": 1500, "currency": "usd", "customer_ref": "user_id"});
    let first = api_ok(
        &app,
        "POST",
        "/api/v1/checkouts",
        Some(body.clone()),
        Some("order-1"),
        201,
    )
    .await;
    let again = api_ok(
        &app,
        "POST",
        "/api/v1/checkouts",
        Some(body.clone()),
        Some("order-1"),
        200,
    )
    .await;
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["intent_id"], first["intent_id"]);
    let (status, reused, _) = api(
        &app,
        "POST",
        "/api/v1/checkouts",
        Some(json!({"mode": "payment", "amount": 1600, "currency": "usd"})),
        Some("order-1"),
    )
    .await;
    assert_eq!(
        (status, reused["error"].clone()),
        (409, json!("idempotency_key_reused"))
    );

    // Eight at once with one key: one checkout, one intent.
    let answers = futures_util::future::join_all((0..8).map(|_| {
        api(
            &app,
            "POST",
            "/api/v1/checkouts",
            Some(body.clone()),
            Some("order-2"),
        )
    }))
    .await;
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(status, body, _)| {
            assert!(matches!(status, 200 | 201), "{status}: {body}");
            id(body)
        })
        .collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    let created = answers.iter().filter(|(s, _, _)| *s == 201).count();
    assert!(created >= 1);

    // At the fake: two intents in all (order-1, order-2), every creation with its checkout's key.
    let events = fake
        .get("/v1/events?type=payment_intent.created&limit=100")
        .await;
    assert_eq!(
        events["data"].as_array().expect("events").len(),
        2,
        "{events}"
    );
    let log = fake
        .get("/_config/requests?method=POST&path=/v1/payment_intents")
        .await;
    let keys: std::collections::BTreeSet<String> = log["data"]
        .as_array()
        .expect("log")
        .iter()
        .map(|r| {
            r["headers"]["Idempotency-Key"]
                .as_str()
                .expect("key")
                .to_owned()
        })
        .collect();
    let expected: std::collections::BTreeSet<String> = [&first, &answers[0].1]
        .iter()
        .map(|c| format!("checkout:{}:intent", id(c)))
        .collect();
    assert_eq!(keys, expected);
}
both_backends!(the_same_request_twice_makes_one_intent);

/// A PaymentIntent as Stripe answers it (async-stripe parses this shape).
fn payment_intent(intent: &str, checkout: &str) -> Value {
    json!({
        "amount": 1099, "amount_capturable": 0, "amount_received": 0,
        "automatic_payment_methods": null, "canceled_at": null, "cancellation_reason": null,
        "capture_method": "automatic", "client_secret": format!("{intent}_secret_abc"),
        "confirmation_method": "automatic", "created": payhook::store::now_secs(),
        "currency": "usd", "customer": null, "description": null, "id": intent,
        "last_payment_error": null, "latest_charge": null, "livemode": false,
        "metadata": {"checkout_id": checkout}, "next_action": null, "object": "payment_intent",
        "payment_method": null, "payment_method_types": ["card"], "receipt_email": null,
        "setup_future_usage": null, "status": "requires_payment_method"
    })
}

/// The checkout id payhook put in a PaymentIntent creation's form body.
fn checkout_of(req: &Request) -> String {
    url::form_urlencoded::parse(&req.body)
        .find(|(k, _)| k == "metadata[checkout_id]")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn idempotency_keys(requests: &[Request]) -> Vec<String> {
    requests
        .iter()
        .map(|r| {
            r.headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

async fn a_stripe_outage_answers_503_and_the_retry_resumes_with_the_same_key(backend: Backend) {
    let stripe = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents"))
        .respond_with(ResponseTemplate::new(500).set_body_json(
            json!({"error": {"type": "api_error", "message": "Something went wrong"}}),
        ))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&stripe)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents"))
        .respond_with(|req: &Request| {
            ResponseTemplate::new(200)
                .set_body_json(payment_intent("pi_mock500", &checkout_of(req)))
        })
        .mount(&stripe)
        .await;
    let app = spawn_api_app(backend, &stripe.uri(), None).await;
    let body = json!({"mode": "payment", "amount": 1099, "currency": "usd"});
    let (status, answer, retry_after) = api(
        &app,
        "POST",
        "/api/v1/checkouts",
        Some(body.clone()),
        Some("outage-1"),
    )
    .await;
    assert_eq!(
        (status, answer["error"].clone()),
        (503, json!("stripe_unavailable")),
        "{answer}"
    );
    assert!(retry_after.is_some());
    let created = api_ok(
        &app,
        "POST",
        "/api/v1/checkouts",
        Some(body),
        Some("outage-1"),
        201,
    )
    .await;
    assert_eq!(created["intent_id"], "pi_mock500");
    let requests = stripe.received_requests().await.expect("recorded");
    let keys = idempotency_keys(&requests);
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1], "the retry sends the same key");
    assert_eq!(keys[0], format!("checkout:{}:intent", id(&created)));
}
both_backends!(a_stripe_outage_answers_503_and_the_retry_resumes_with_the_same_key);

async fn a_lost_answer_resumes_with_the_same_key_and_a_webhook_finds_the_checkout_first(
    backend: Backend,
) {
    let stripe = MockServer::start().await;
    // Stripe makes the intent, but its answer never reaches payhook in time: as if payhook
    // crashed between the call and its record.
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents"))
        .respond_with(|req: &Request| {
            ResponseTemplate::new(200)
                .set_body_json(payment_intent("pi_mocklost", &checkout_of(req)))
                .set_delay(Duration::from_secs(3))
        })
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&stripe)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents"))
        .respond_with(|req: &Request| {
            ResponseTemplate::new(200)
                .set_body_json(payment_intent("pi_mocklost", &checkout_of(req)))
        })
        .mount(&stripe)
        .await;
    let app = spawn_app_on(backend, |c| {
        stripe_config(c, &stripe.uri());
        c.actions.request_timeout = Duration::from_secs(1);
        crate::app_support::api_config(c, None, 50);
    })
    .await;
    let body = json!({"mode": "payment", "amount": 1099, "currency": "usd"});
    let (status, answer, _) = api(
        &app,
        "POST",
        "/api/v1/checkouts",
        Some(body.clone()),
        Some("lost-1"),
    )
    .await;
    assert_eq!(status, 503, "{answer}");
    let requests = stripe.received_requests().await.expect("recorded");
    let checkout_id = checkout_of(&requests[0]);
    assert!(checkout_id.starts_with("chk_"));

    // Stripe's webhook for the intent comes before the retry: it finds the checkout by its
    // metadata, under the id the app will be given.
    let mut event = crate::helpers::intent_event(
        "evt_lost_succeeded",
        "payment_intent.succeeded",
        "pi_mocklost",
        payhook::store::now_secs(),
    );
    event["data"]["object"]["metadata"] =
        json!({"checkout_id": checkout_id, "customer_ref": "user_lost"});
    event["data"]["object"]["status"] = json!("succeeded");
    app.deliver(&bytes(&event)).await;
    app.settle().await;
    assert_eq!(
        app.checkout("pi_mocklost").expect("checkout").id,
        checkout_id
    );

    let resumed = api_ok(
        &app,
        "POST",
        "/api/v1/checkouts",
        Some(body),
        Some("lost-1"),
        201,
    )
    .await;
    assert_eq!(resumed["id"], checkout_id.as_str());
    assert_eq!(
        resumed["state"], "succeeded",
        "the webhook's state stands: {resumed}"
    );
    assert_eq!(resumed["customer_ref"], "user_lost");
    let requests = stripe.received_requests().await.expect("recorded");
    let intents: Vec<&Request> = requests
        .iter()
        .filter(|r| r.url.path() == "/v1/payment_intents")
        .collect();
    assert_eq!(intents.len(), 2);
    let keys = idempotency_keys(&intents.into_iter().cloned().collect::<Vec<_>>());
    assert_eq!(keys, vec![format!("checkout:{checkout_id}:intent"); 2]);
}
both_backends!(a_lost_answer_resumes_with_the_same_key_and_a_webhook_finds_the_checkout_first);

async fn a_charge_and_its_webhook_agree_when_the_webhook_comes_first(backend: Backend) {
    let stripe = MockServer::start().await;
    // Stripe charges at once, but its answer reaches payhook after the webhook did.
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents"))
        .respond_with(|req: &Request| {
            let mut pi = payment_intent("pi_mockorder", &checkout_of(req));
            pi["status"] = json!("succeeded");
            pi["amount_received"] = json!(1099);
            pi["payment_method"] = json!("pm_order");
            pi["customer"] = json!("cus_order");
            ResponseTemplate::new(200)
                .set_body_json(pi)
                .set_delay(Duration::from_millis(1500))
        })
        .mount(&stripe)
        .await;
    // The app listens: notifications are queued only when NOTIFY_URL is set.
    let sink = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&sink)
        .await;
    let sink_url = format!("{}/hooks", sink.uri());
    let app = spawn_api_app(backend, &stripe.uri(), Some(&sink_url)).await;
    app.with_conn(|c| {
        use payhook::store::customers;
        customers::insert_customer(
            c,
            &customers::NewCustomer {
                customer_ref: Some("user_order"),
                email: None,
                stripe_customer_id: Some("cus_order"),
                created_at: 1,
                updated_at: 1,
                account: "",
            },
        )
        .expect("customer");
        let id = customers::find_customer_by_ref(c, None, "user_order")
            .expect("find")
            .expect("customer")
            .id;
        customers::set_default_payment_method(c, id, "pm_order", 1).expect("default");
    });
    let charge = {
        let (address, client) = (app.address.clone(), app.client.clone());
        tokio::spawn(async move {
            let response = client
                .post(format!("{address}/api/v1/customers/user_order/charges"))
                .bearer_auth(TOKEN)
                .header("Idempotency-Key", "order-charge-1")
                .json(&json!({"amount": 1099, "currency": "usd"}))
                .send()
                .await
                .expect("answer");
            (
                response.status().as_u16(),
                response.json::<Value>().await.expect("JSON"),
            )
        })
    };
    let checkout_id = loop {
        let requests = stripe.received_requests().await.expect("recorded");
        if let Some(r) = requests.first() {
            break checkout_of(r);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut event = crate::helpers::intent_event(
        "evt_order_succeeded",
        "payment_intent.succeeded",
        "pi_mockorder",
        payhook::store::now_secs(),
    );
    event["data"]["object"]["metadata"] = json!({"checkout_id": checkout_id});
    event["data"]["object"]["customer"] = json!("cus_order");
    app.deliver(&bytes(&event)).await;
    app.settle().await;
    let (status, charged) = charge.await.expect("charge task");
    assert_eq!(status, 201, "{charged}");
    assert_eq!(charged["id"], checkout_id.as_str());
    assert_eq!(charged["state"], "succeeded");
    let got = api_ok(
        &app,
        "GET",
        &format!("/api/v1/checkouts/{checkout_id}"),
        None,
        None,
        200,
    )
    .await;
    let outcomes: Vec<(Value, Value)> = got["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .map(|t| (t["outcome"].clone(), t["reason"].clone()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (json!("applied"), Value::Null),
            (json!("refused"), json!("duplicate (charge)"))
        ],
        "{got}"
    );
    let notified = app.with_conn(|c| {
        payhook::store::outbox::list_items(c, payhook::outbox::notify::KIND).expect("items")
    });
    assert_eq!(
        notified.len(),
        1,
        "one checkout.succeeded, from the webhook"
    );
}
both_backends!(a_charge_and_its_webhook_agree_when_the_webhook_comes_first);

async fn a_stripe_refusal_answers_502_with_stripes_code(backend: Backend) {
    let stripe = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {
            "type": "invalid_request_error", "code": "amount_too_small",
            "message": "Amount must be at least $0.50 usd", "param": "amount"}})))
        .mount(&stripe)
        .await;
    let app = spawn_api_app(backend, &stripe.uri(), None).await;
    let (status, body, _) = api(
        &app,
        "POST",
        "/api/v1/checkouts",
        Some(json!({"mode": "payment", "amount": 10, "currency": "usd"})),
        None,
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "stripe_error");
    assert_eq!(body["code"], "amount_too_small");
    assert!(body["decline_code"].is_null());
    assert!(!body.to_string().contains("sk_test"), "{body}");
}
both_backends!(a_stripe_refusal_answers_502_with_stripes_code);
