//! Thin (v2) events: verified and stored like snapshot events; applying one fetches the event
//! (`GET /v2/core/events/{id}`, `Stripe-Context` from its `context`) and then its object,
//! applied as observed state; pings and types about other objects are `ignored`.

use payhook::config::{EndpointKind, LivemodePolicy};
use payhook::store::events::EventStatus;
use serde_json::{json, Value};

use crate::endpoints::{endpoint, post_to, CONNECT_SECRET};
use crate::fake_stripe::{stripe_config, FakeStripe, API_KEY};
use crate::helpers::{both_backends, bytes, spawn_app_on, Backend, TestApp};
use crate::reconcile::paid_intent;

/// A control call of the fake with a JSON body.
pub async fn fake_json(fake: &FakeStripe, path: &str, body: &Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", fake.base_url))
        .bearer_auth(API_KEY)
        .json(body)
        .send()
        .await
        .expect("fake Stripe answers");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.expect("JSON")
}

/// The requests the fake logged for `path` (a prefix), oldest first.
pub async fn logged(fake: &FakeStripe, path: &str) -> Vec<Value> {
    fake.get(&format!("/_config/requests?path={path}")).await["data"]
        .as_array()
        .expect("a list")
        .clone()
}

async fn spawn_thin_app(backend: Backend, fake: &FakeStripe) -> TestApp {
    spawn_app_on(backend, |c| {
        stripe_config(c, &fake.base_url);
        c.named_endpoints = vec![endpoint(
            "connect",
            &[CONNECT_SECRET],
            EndpointKind::Connect,
            LivemodePolicy::Any,
        )];
    })
    .await
}

async fn a_thin_event_for_a_payment_intent_is_fetched_and_applied(backend: Backend) {
    let Some(fake) = FakeStripe::start("thin_payment_intent") else {
        return;
    };
    let app = spawn_thin_app(backend, &fake).await;
    let pi = paid_intent(&fake).await;
    let note = fake_json(
        &fake,
        "/_config/thin_events",
        &json!({"type": "v1.payment_intent.succeeded", "related_object": {"id": pi}}),
    )
    .await;
    assert_eq!(note["object"], "v2.core.event");
    let id = note["id"].as_str().unwrap();
    let answer = app.deliver(&bytes(&note)).await;
    assert_eq!(answer, json!({"received": true, "duplicate": false}));
    let stored = app.event(id).expect("stored");
    assert_eq!(stored.object_id.as_deref(), Some(pi.as_str()));
    assert_eq!(stored.api_version, None);
    assert!(
        (stored.created - payhook::store::now_secs()).abs() < 60,
        "RFC 3339 created kept in unix seconds: {}",
        stored.created
    );

    app.settle().await;
    assert_eq!(app.event(id).unwrap().status, EventStatus::Processed);
    let checkout = app
        .checkout(&pi)
        .expect("the fetched intent made its checkout");
    assert_eq!(checkout.state.as_str(), "succeeded");
    // Counted as a snapshot event's transition is.
    if let Some(metrics) = crate::metrics::scrape(&app).await {
        assert_eq!(
            metrics.value(
                "payhook_checkout_transitions_total",
                &[("to", "succeeded"), ("outcome", "applied")]
            ),
            1.0
        );
    }
    let fetched = logged(&fake, &format!("/v2/core/events/{id}")).await;
    assert_eq!(fetched.len(), 1, "{fetched:?}");
    assert_eq!(
        fetched[0]["headers"]["Stripe-Context"],
        Value::Null,
        "a platform event"
    );
    assert_eq!(
        logged(&fake, &format!("/v1/payment_intents/{pi}"))
            .await
            .len(),
        1
    );
    // Delivered again: a duplicate, nothing fetched again.
    assert_eq!(app.deliver(&bytes(&note)).await["duplicate"], true);
    app.settle().await;
    assert_eq!(
        logged(&fake, &format!("/v2/core/events/{id}")).await.len(),
        1
    );
}
both_backends!(a_thin_event_for_a_payment_intent_is_fetched_and_applied);

async fn a_connected_accounts_thin_event_is_fetched_with_its_context(backend: Backend) {
    let Some(fake) = FakeStripe::start("thin_connect") else {
        return;
    };
    let app = spawn_thin_app(backend, &fake).await;
    let pm = fake_post_as(
        &fake,
        "acct_T",
        "/v1/payment_methods",
        &[
            ("type", "card"),
            ("card[number]", "4242424242424242"),
            ("card[exp_month]", "12"),
            ("card[exp_year]", "2031"),
            ("card[cvc]", "123"),
        ],
    )
    .await;
    let pi = fake_post_as(
        &fake,
        "acct_T",
        "/v1/payment_intents",
        &[
            ("amount", "700"),
            ("currency", "usd"),
            ("payment_method", pm["id"].as_str().unwrap()),
            ("confirm", "true"),
        ],
    )
    .await;
    let pi = pi["id"].as_str().unwrap().to_owned();
    let note = fake_json(
        &fake,
        "/_config/thin_events",
        &json!({"type": "v1.payment_intent.succeeded", "related_object": {"id": pi},
                "context": "acct_T"}),
    )
    .await;
    // `context` stands for `account`: refused on an account endpoint, taken on a Connect one.
    let body = bytes(&note);
    let refused = app.post_signed(&body).await;
    assert_eq!(refused.status().as_u16(), 400);
    let (status, _) = post_to(&app, "connect", &body, CONNECT_SECRET).await;
    assert_eq!(status, 200);
    let id = note["id"].as_str().unwrap();
    assert_eq!(app.event(id).unwrap().account.as_deref(), Some("acct_T"));

    app.settle().await;
    assert_eq!(app.event(id).unwrap().status, EventStatus::Processed);
    assert_eq!(
        app.checkout(&pi).expect("checkout").state.as_str(),
        "succeeded"
    );
    let calls: Vec<Value> = [
        logged(&fake, &format!("/v2/core/events/{id}")).await,
        logged(&fake, &format!("/v1/payment_intents/{pi}")).await,
    ]
    .concat()
    .into_iter()
    .filter(|r| r["method"] == "GET")
    .collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    for call in calls {
        assert_eq!(call["headers"]["Stripe-Context"], "acct_T", "{call}");
        assert_eq!(call["status"], 200, "{call}");
    }
}
both_backends!(a_connected_accounts_thin_event_is_fetched_with_its_context);

async fn a_ping_and_an_unknown_thin_type_are_stored_and_ignored(backend: Backend) {
    let Some(fake) = FakeStripe::start("thin_ping") else {
        return;
    };
    let app = spawn_thin_app(backend, &fake).await;
    let ping = fake_json(
        &fake,
        "/_config/thin_events",
        &json!({"type": "v2.core.event_destination.ping"}),
    )
    .await;
    let odd = fake_json(
        &fake,
        "/_config/thin_events",
        &json!({"type": "v9.something.unknown", "related_object": null}),
    )
    .await;
    for note in [&ping, &odd] {
        assert_eq!(app.deliver(&bytes(note)).await["duplicate"], false);
    }
    app.settle().await;
    for note in [&ping, &odd] {
        let event = app.event(note["id"].as_str().unwrap()).expect("stored");
        assert_eq!(event.status, EventStatus::Ignored, "{}", event.event_type);
    }
    assert!(
        logged(&fake, "/v2/core/events").await.is_empty(),
        "nothing fetched"
    );
}
both_backends!(a_ping_and_an_unknown_thin_type_are_stored_and_ignored);

/// A form POST to the fake in the connected account `account`.
pub async fn fake_post_as(
    fake: &FakeStripe,
    account: &str,
    path: &str,
    form: &[(&str, &str)],
) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", fake.base_url))
        .bearer_auth(API_KEY)
        .header("Stripe-Account", account)
        .form(form)
        .send()
        .await
        .expect("fake Stripe answers");
    let status = response.status();
    let body: Value = response.json().await.expect("JSON");
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}
