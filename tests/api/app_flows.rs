//! The app's flows end to end, through the real HTTP app against the stateful fake Stripe:
//! the app calls `/api/v1`, the "browser" confirms at the fake, the fake sends its webhooks
//! to payhook, and the app hears of the outcome through notifications verified by the
//! Standard Webhooks reference library.

use serde_json::{json, Value};

use crate::app_support::{
    api, api_ok, bodies, deliveries, id, stripe_scene, verify_independently, wait_for_event,
};
use crate::fake_stripe::{FakeStripe, API_KEY};
use crate::helpers::{both_backends, Backend, TestApp};

/// POSTs to the fake without asserting success (a decline is a 402).
async fn fake_post_raw(fake: &FakeStripe, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", fake.base_url))
        .bearer_auth(API_KEY)
        .form(form)
        .send()
        .await
        .expect("fake answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

/// The notifications of checkout `checkout_id`: `(type, sequence, data)` in sequence order.
async fn notifications_of(
    sink: &wiremock::MockServer,
    checkout_id: &str,
) -> Vec<(String, i64, Value)> {
    let mut found: Vec<(String, i64, Value)> = bodies(&deliveries(sink).await)
        .into_iter()
        .filter(|b| b["data"]["id"] == checkout_id)
        .map(|b| {
            (
                b["type"].as_str().expect("type").to_owned(),
                b["data"]["sequence"].as_i64().expect("sequence"),
                b["data"].clone(),
            )
        })
        .collect();
    found.sort_by_key(|n| n.1);
    found
}

fn types(notes: &[(String, i64, Value)]) -> Vec<(&str, i64)> {
    notes.iter().map(|(t, s, _)| (t.as_str(), *s)).collect()
}

/// A setup checkout for `customer_ref`, confirmed at the fake with card `number` (3DS done
/// when the card asks for it), applied; returns (checkout, payment method id).
async fn save_card(
    fake: &FakeStripe,
    app: &TestApp,
    customer_ref: &str,
    number: &str,
) -> (Value, String) {
    let email = format!("{customer_ref}@example.com");
    let checkout = api_ok(
        app,
        "POST",
        "/api/v1/checkouts",
        Some(json!({"mode": "setup", "customer_ref": customer_ref, "email": email})),
        None,
        201,
    )
    .await;
    let intent = checkout["intent_id"].as_str().expect("intent").to_owned();
    let secret = checkout["client_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let pm = id(&fake.card(number, &email).await);
    let confirmed = fake
        .post(
            &format!("/v1/setup_intents/{intent}/confirm"),
            &[("payment_method", &pm), ("client_secret", &secret)],
        )
        .await;
    if confirmed["status"] == "requires_action" {
        let done = fake
            .post(
                &format!("/v1/setup_intents/{intent}/_authenticate"),
                &[("client_secret", &secret), ("success", "true")],
            )
            .await;
        assert_eq!(done["status"], "succeeded", "{done}");
    } else {
        assert_eq!(confirmed["status"], "succeeded", "{confirmed}");
    }
    wait_for_event(app, "setup_intent.succeeded", &intent).await;
    let got = api_ok(
        app,
        "GET",
        &format!("/api/v1/checkouts/{}", id(&checkout)),
        None,
        None,
        200,
    )
    .await;
    assert_eq!(got["state"], "succeeded", "{got}");
    assert_eq!(got["card"]["status"], "saved", "{got}");
    (got, pm)
}

async fn the_setup_flow_saves_the_card_and_tells_the_app(backend: Backend) {
    let Some((fake, app, sink)) = stripe_scene(backend, "setup flow").await else {
        return;
    };
    let created = api_ok(
        &app,
        "POST",
        "/api/v1/checkouts",
        Some(json!({"mode": "setup", "customer_ref": "user_ada", "email": "ada@example.com"})),
        None,
        201,
    )
    .await;
    assert_eq!(created["state"], "pending");
    assert_eq!(created["mode"], "setup");
    assert_eq!(created["customer_ref"], "user_ada");
    assert_eq!(created["save_card"], true);
    assert!(created["card"].is_null());
    let intent = created["intent_id"].as_str().expect("intent").to_owned();
    assert!(intent.starts_with("seti_"), "{created}");
    let secret = created["client_secret"]
        .as_str()
        .expect("client secret")
        .to_owned();
    assert!(secret.starts_with(&intent));

    // At Stripe: the user's one customer is set on the intent, with payhook's metadata.
    let at_stripe = fake.get(&format!("/v1/setup_intents/{intent}")).await;
    assert_eq!(at_stripe["metadata"]["checkout_id"], created["id"]);
    assert_eq!(at_stripe["metadata"]["customer_ref"], "user_ada");
    let cus = at_stripe["customer"]
        .as_str()
        .expect("customer on the intent")
        .to_owned();
    let customer = fake.get(&format!("/v1/customers/{cus}")).await;
    assert_eq!(customer["metadata"]["customer_ref"], "user_ada");

    // The browser confirms; Stripe's webhooks reach payhook.
    let (first, pm1) = save_card_confirmed(&fake, &app, &intent, &secret, "4242424242424242").await;
    assert!(
        first["client_secret"].is_null(),
        "no secret once succeeded: {first}"
    );
    assert_eq!(first["card"]["payment_method"], pm1.as_str());
    let transitions = first["transitions"].as_array().expect("transitions");
    assert!(transitions.iter().any(|t| t["to"] == "succeeded"
        && t["outcome"] == "applied"
        && t["event_id"]
            .as_str()
            .is_some_and(|e| e.starts_with("evt_"))));

    let customer = api_ok(&app, "GET", "/api/v1/customers/user_ada", None, None, 200).await;
    assert_eq!(customer["stripe_customer_id"], cus.as_str());
    assert_eq!(customer["default_payment_method"], pm1.as_str());
    assert_eq!(customer["email"], "ada@example.com");
    let cards = customer["cards"].as_array().expect("cards");
    assert_eq!(cards.len(), 1, "{customer}");
    assert_eq!(cards[0]["id"], pm1.as_str());
    assert_eq!(cards[0]["status"], "default");
    assert_eq!(cards[0]["brand"], "visa");
    assert_eq!(cards[0]["last4"], "4242");
    assert_eq!(cards[0]["exp_month"], 12);
    assert_eq!(cards[0]["exp_year"], 2031);
    assert!(cards[0]["fingerprint"].as_str().is_some());
    let default_at_stripe = fake.get(&format!("/v1/customers/{cus}")).await;
    assert_eq!(
        default_at_stripe["invoice_settings"]["default_payment_method"],
        pm1.as_str()
    );

    // A second card replaces the first: same Stripe customer, the new card the default.
    // The newest card wins by Stripe time (seconds; a tie goes to the higher id): save the
    // second one a second later, as a person would.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (second, pm2) = save_card(&fake, &app, "user_ada", "5555555555554444").await;
    let customer = api_ok(&app, "GET", "/api/v1/customers/user_ada", None, None, 200).await;
    assert_eq!(
        customer["stripe_customer_id"],
        cus.as_str(),
        "one customer per customer_ref"
    );
    assert_eq!(customer["default_payment_method"], pm2.as_str());
    let status_of = |pm: &str| {
        customer["cards"]
            .as_array()
            .expect("cards")
            .iter()
            .find(|c| c["id"] == pm)
            .map(|c| c["status"].clone())
    };
    assert_eq!(status_of(&pm1), Some(json!("superseded")));
    assert_eq!(status_of(&pm2), Some(json!("default")));

    // The app heard: checkout.succeeded, then card.saved, for each checkout, in sequence.
    let notes = notifications_of(&sink, first["id"].as_str().expect("id")).await;
    assert_eq!(
        types(&notes),
        [("checkout.succeeded", 1), ("card.saved", 2)]
    );
    assert_eq!(notes[1].2["card"]["status"], "saved");
    assert!(notes.iter().all(|n| n.2["client_secret"].is_null()));
    let notes = notifications_of(&sink, second["id"].as_str().expect("id")).await;
    assert_eq!(
        types(&notes),
        [("checkout.succeeded", 1), ("card.saved", 2)]
    );
    verify_independently(&deliveries(&sink).await);
}
both_backends!(the_setup_flow_saves_the_card_and_tells_the_app);

/// Confirms setup intent `intent` with a new card `number`, waits for its webhook; returns
/// the checkout (GET, with transitions) and the card.
async fn save_card_confirmed(
    fake: &FakeStripe,
    app: &TestApp,
    intent: &str,
    secret: &str,
    number: &str,
) -> (Value, String) {
    let pm = id(&fake.card(number, "ada@example.com").await);
    let confirmed = fake
        .post(
            &format!("/v1/setup_intents/{intent}/confirm"),
            &[("payment_method", &pm), ("client_secret", secret)],
        )
        .await;
    assert_eq!(confirmed["status"], "succeeded", "{confirmed}");
    wait_for_event(app, "setup_intent.succeeded", intent).await;
    let checkout_id = app.checkout(intent).expect("checkout").id;
    let got = api_ok(
        app,
        "GET",
        &format!("/api/v1/checkouts/{checkout_id}"),
        None,
        None,
        200,
    )
    .await;
    assert_eq!(got["state"], "succeeded", "{got}");
    assert_eq!(got["card"]["status"], "saved", "{got}");
    (got, pm)
}

async fn a_payment_that_keeps_the_card_saves_it(backend: Backend) {
    let Some((fake, app, sink)) = stripe_scene(backend, "payment with save_card").await else {
        return;
    };
    let created = api_ok(
        &app,
        "POST",
        "/api/v1/checkouts",
        Some(json!({"mode": "payment", "amount": 1099, "currency": "usd",
                    "customer_ref": "user_bo", "email": "bo@example.com", "save_card": true,
                    "description": "Order 7", "metadata": {"order": "7"}})),
        None,
        201,
    )
    .await;
    assert_eq!(created["amount"], 1099);
    assert_eq!(created["currency"], "usd");
    assert_eq!(created["metadata"]["order"], "7");
    let intent = created["intent_id"].as_str().expect("intent").to_owned();
    let at_stripe = fake.get(&format!("/v1/payment_intents/{intent}")).await;
    assert_eq!(at_stripe["setup_future_usage"], "off_session");
    assert_eq!(at_stripe["metadata"]["order"], "7");
    assert_eq!(at_stripe["metadata"]["checkout_id"], created["id"]);
    assert!(at_stripe["customer"].as_str().is_some());

    let pm = id(&fake.card("4242424242424242", "bo@example.com").await);
    let secret = created["client_secret"].as_str().expect("secret");
    let paid = fake
        .post(
            &format!("/v1/payment_intents/{intent}/confirm"),
            &[("payment_method", &pm), ("client_secret", secret)],
        )
        .await;
    assert_eq!(paid["status"], "succeeded");
    wait_for_event(&app, "payment_intent.succeeded", &intent).await;

    let got = api_ok(
        &app,
        "GET",
        &format!("/api/v1/checkouts/{}", id(&created)),
        None,
        None,
        200,
    )
    .await;
    assert_eq!(got["state"], "succeeded", "{got}");
    assert_eq!(got["payment_method"], pm.as_str());
    assert_eq!(got["card"]["status"], "saved");
    let customer = api_ok(&app, "GET", "/api/v1/customers/user_bo", None, None, 200).await;
    assert_eq!(customer["default_payment_method"], pm.as_str());
    let notes = notifications_of(&sink, &id(&created)).await;
    assert_eq!(
        types(&notes),
        [("checkout.succeeded", 1), ("card.saved", 2)]
    );
    verify_independently(&deliveries(&sink).await);
}
both_backends!(a_payment_that_keeps_the_card_saves_it);

async fn charge(app: &TestApp, customer_ref: &str, key: &str) -> Value {
    api_ok(
        app,
        "POST",
        &format!("/api/v1/customers/{customer_ref}/charges"),
        Some(json!({"amount": 2000, "currency": "usd", "description": "renewal"})),
        Some(key),
        201,
    )
    .await
}

async fn an_off_session_charge_of_a_good_card_succeeds(backend: Backend) {
    let Some((fake, app, sink)) = stripe_scene(backend, "charge 4242").await else {
        return;
    };
    let (_, pm) = save_card(&fake, &app, "user_cy", "4242424242424242").await;
    let charged = charge(&app, "user_cy", "renewal-1").await;
    assert_eq!(charged["state"], "succeeded", "{charged}");
    assert_eq!(charged["off_session"], true);
    assert_eq!(charged["payment_method"], pm.as_str());
    assert_eq!(charged["amount"], 2000);
    let intent = charged["intent_id"].as_str().expect("intent").to_owned();

    // The webhooks that follow agree; the replayed request answers the same checkout.
    wait_for_event(&app, "payment_intent.succeeded", &intent).await;
    let again = api_ok(
        &app,
        "POST",
        "/api/v1/customers/user_cy/charges",
        Some(json!({"amount": 2000, "currency": "usd", "description": "renewal"})),
        Some("renewal-1"),
        200,
    )
    .await;
    assert_eq!(again["id"], charged["id"]);
    assert_eq!(again["state"], "succeeded");
    let creations = fake
        .get("/_config/requests?method=POST&path=/v1/payment_intents")
        .await;
    assert_eq!(
        creations["data"].as_array().expect("log").len(),
        1,
        "one charge at Stripe"
    );
    let got = api_ok(
        &app,
        "GET",
        &format!("/api/v1/checkouts/{}", id(&charged)),
        None,
        None,
        200,
    )
    .await;
    let transitions = got["transitions"].as_array().expect("transitions");
    assert_eq!(transitions[0]["to"], "pending");
    assert_eq!(
        (
            transitions[1]["from"].clone(),
            transitions[1]["to"].clone(),
            transitions[1]["reason"].clone()
        ),
        (json!("pending"), json!("succeeded"), json!("charge"))
    );
    let notes = notifications_of(&sink, &id(&charged)).await;
    assert_eq!(types(&notes), [("checkout.succeeded", 1)], "notified once");
}
both_backends!(an_off_session_charge_of_a_good_card_succeeds);

async fn a_charge_that_needs_authentication_recovers_on_session(backend: Backend) {
    let Some((fake, app, sink)) = stripe_scene(backend, "charge 3184").await else {
        return;
    };
    let (_, pm) = save_card(&fake, &app, "user_di", "4000002760003184").await;
    let charged = charge(&app, "user_di", "renewal-3184").await;
    assert_eq!(charged["state"], "requires_action", "{charged}");
    assert_eq!(charged["last_error"]["code"], "authentication_required");
    assert_eq!(charged["payment_method"], pm.as_str());
    let secret = charged["client_secret"]
        .as_str()
        .expect("client secret for on-session")
        .to_owned();
    let intent = charged["intent_id"].as_str().expect("intent").to_owned();
    wait_for_event(&app, "payment_intent.payment_failed", &intent).await;
    let still = api_ok(
        &app,
        "GET",
        &format!("/api/v1/checkouts/{}", id(&charged)),
        None,
        None,
        200,
    )
    .await;
    assert_eq!(
        still["state"], "requires_action",
        "the webhook agrees: {still}"
    );

    // The customer comes back: Stripe.js confirmCardPayment(client_secret, {payment_method}).
    let confirmed = fake
        .post(
            &format!("/v1/payment_intents/{intent}/confirm"),
            &[("payment_method", &pm), ("client_secret", &secret)],
        )
        .await;
    assert_eq!(confirmed["status"], "requires_action");
    let done = fake
        .post(
            &format!("/v1/payment_intents/{intent}/_authenticate"),
            &[("client_secret", &secret), ("success", "true")],
        )
        .await;
    assert_eq!(done["status"], "succeeded");
    wait_for_event(&app, "payment_intent.succeeded", &intent).await;
    let got = api_ok(
        &app,
        "GET",
        &format!("/api/v1/checkouts/{}", id(&charged)),
        None,
        None,
        200,
    )
    .await;
    assert_eq!(got["state"], "succeeded", "{got}");
    assert!(got["last_error"].is_null());
    let notes = notifications_of(&sink, &id(&charged)).await;
    assert_eq!(
        types(&notes),
        [("checkout.requires_action", 1), ("checkout.succeeded", 2)]
    );
    assert_eq!(notes[0].2["last_error"]["code"], "authentication_required");
    verify_independently(&deliveries(&sink).await);
}
both_backends!(a_charge_that_needs_authentication_recovers_on_session);

async fn a_declined_off_session_charge_fails_with_its_decline_code(backend: Backend) {
    let Some((fake, app, sink)) = stripe_scene(backend, "charge 3178").await else {
        return;
    };
    save_card(&fake, &app, "user_ed", "4000008260003178").await;
    let charged = charge(&app, "user_ed", "renewal-3178").await;
    assert_eq!(charged["state"], "failed", "{charged}");
    assert_eq!(charged["last_error"]["code"], "card_declined");
    assert_eq!(charged["last_error"]["decline_code"], "insufficient_funds");
    let intent = charged["intent_id"].as_str().expect("intent").to_owned();
    wait_for_event(&app, "payment_intent.payment_failed", &intent).await;
    let got = api_ok(
        &app,
        "GET",
        &format!("/api/v1/checkouts/{}", id(&charged)),
        None,
        None,
        200,
    )
    .await;
    assert_eq!(got["state"], "failed");
    assert_eq!(got["last_error"]["decline_code"], "insufficient_funds");
    let notes = notifications_of(&sink, &id(&charged)).await;
    assert_eq!(types(&notes), [("checkout.failed", 1)]);
}
both_backends!(a_declined_off_session_charge_fails_with_its_decline_code);

async fn a_card_declined_on_session_fails_the_checkout(backend: Backend) {
    let Some((fake, app, sink)) = stripe_scene(backend, "9995 on-session").await else {
        return;
    };
    let created = api_ok(
        &app,
        "POST",
        "/api/v1/checkouts",
        Some(json!({"mode": "payment", "amount": 700, "currency": "usd",
                    "customer_ref": "user_fa", "save_card": true})),
        None,
        201,
    )
    .await;
    let intent = created["intent_id"].as_str().expect("intent").to_owned();
    let pm = id(&fake.card("4000000000009995", "fa@example.com").await);
    let (status, body) = fake_post_raw(
        &fake,
        &format!("/v1/payment_intents/{intent}/confirm"),
        &[
            ("payment_method", &pm),
            (
                "client_secret",
                created["client_secret"].as_str().expect("secret"),
            ),
        ],
    )
    .await;
    assert_eq!(status, 402, "{body}");
    wait_for_event(&app, "payment_intent.payment_failed", &intent).await;
    let got = api_ok(
        &app,
        "GET",
        &format!("/api/v1/checkouts/{}", id(&created)),
        None,
        None,
        200,
    )
    .await;
    assert_eq!(got["state"], "failed", "{got}");
    assert_eq!(got["last_error"]["code"], "card_declined");
    assert_eq!(got["last_error"]["decline_code"], "insufficient_funds");
    assert!(got["card"].is_null(), "nothing saved: {got}");
    assert!(
        got["client_secret"].as_str().is_some(),
        "the customer may try another card"
    );
    let customer = api_ok(&app, "GET", "/api/v1/customers/user_fa", None, None, 200).await;
    assert!(customer["default_payment_method"].is_null(), "{customer}");
    let notes = notifications_of(&sink, &id(&created)).await;
    assert_eq!(types(&notes), [("checkout.failed", 1)]);
}
both_backends!(a_card_declined_on_session_fails_the_checkout);

async fn an_abandoned_checkout_expires_and_the_app_is_told(backend: Backend) {
    let Some((_fake, app, sink)) = stripe_scene(backend, "expiry").await else {
        return;
    };
    let created = api_ok(
        &app,
        "POST",
        "/api/v1/checkouts",
        Some(json!({"mode": "setup", "customer_ref": "user_gi"})),
        None,
        201,
    )
    .await;
    app.settle().await;
    let later = payhook::store::now_secs() + 3600 + 5;
    assert_eq!(app.drain.sweep(later).await.expect("sweep"), 1);
    app.settle().await;
    let got = api_ok(
        &app,
        "GET",
        &format!("/api/v1/checkouts/{}", id(&created)),
        None,
        None,
        200,
    )
    .await;
    assert_eq!(got["state"], "expired");
    assert!(got["client_secret"].is_null());
    let notes = notifications_of(&sink, &id(&created)).await;
    assert_eq!(types(&notes), [("checkout.expired", 1)]);
    verify_independently(&deliveries(&sink).await);
}
both_backends!(an_abandoned_checkout_expires_and_the_app_is_told);

async fn a_checkout_is_canceled_at_stripe_and_a_success_cannot_be(backend: Backend) {
    let Some((fake, app, sink)) = stripe_scene(backend, "cancel").await else {
        return;
    };
    let created = api_ok(
        &app,
        "POST",
        "/api/v1/checkouts",
        Some(json!({"mode": "payment", "amount": 500, "currency": "eur"})),
        None,
        201,
    )
    .await;
    let canceled = api_ok(
        &app,
        "POST",
        &format!("/api/v1/checkouts/{}/cancel", id(&created)),
        None,
        None,
        200,
    )
    .await;
    assert_eq!(canceled["state"], "canceled", "{canceled}");
    assert!(canceled["client_secret"].is_null());
    let at_stripe = fake
        .get(&format!(
            "/v1/payment_intents/{}",
            created["intent_id"].as_str().expect("intent")
        ))
        .await;
    assert_eq!(at_stripe["status"], "canceled");
    app.settle().await;
    assert_eq!(
        types(&notifications_of(&sink, &id(&created)).await),
        [("checkout.canceled", 1)]
    );

    let (_, _) = save_card(&fake, &app, "user_ho", "4242424242424242").await;
    let paid = charge(&app, "user_ho", "k-final").await;
    let (status, body, _) = api(
        &app,
        "POST",
        &format!("/api/v1/checkouts/{}/cancel", id(&paid)),
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (409, json!("checkout_final")),
        "{body}"
    );
}
both_backends!(a_checkout_is_canceled_at_stripe_and_a_success_cannot_be);

async fn listing_is_newest_first_with_filters_and_pages(backend: Backend) {
    let Some((fake, app, _sink)) = stripe_scene(backend, "list").await else {
        return;
    };
    let mut ids = Vec::new();
    for n in 0..3 {
        let c = api_ok(
            &app,
            "POST",
            "/api/v1/checkouts",
            Some(json!({"mode": "payment", "amount": 100 + n, "currency": "usd", "customer_ref": "user_li"})),
            None,
            201,
        )
        .await;
        ids.push(id(&c));
    }
    let other = api_ok(
        &app,
        "POST",
        "/api/v1/checkouts",
        Some(json!({"mode": "setup", "customer_ref": "user_other"})),
        None,
        201,
    )
    .await;
    drop(fake);
    let page = api_ok(
        &app,
        "GET",
        "/api/v1/checkouts?customer_ref=user_li&limit=2",
        None,
        None,
        200,
    )
    .await;
    let first: Vec<String> = page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(id)
        .collect();
    assert_eq!(page["has_more"], true);
    let rest = api_ok(
        &app,
        "GET",
        &format!(
            "/api/v1/checkouts?customer_ref=user_li&limit=2&starting_after={}",
            first[1]
        ),
        None,
        None,
        200,
    )
    .await;
    let second: Vec<String> = rest["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(id)
        .collect();
    assert_eq!(rest["has_more"], false);
    let mut all = [first, second].concat();
    assert_eq!(all.len(), 3);
    let mut expected = ids.clone();
    // Newest first: created_at descending, then id descending.
    expected.reverse();
    all.sort();
    expected.sort();
    assert_eq!(all, expected);
    let by_intent = api_ok(
        &app,
        "GET",
        &format!(
            "/api/v1/checkouts?intent_id={}",
            other["intent_id"].as_str().expect("intent")
        ),
        None,
        None,
        200,
    )
    .await;
    assert_eq!(by_intent["data"][0]["id"], other["id"]);
    let pending = api_ok(
        &app,
        "GET",
        "/api/v1/checkouts?state=pending&limit=100",
        None,
        None,
        200,
    )
    .await;
    assert_eq!(pending["data"].as_array().expect("data").len(), 4);
    for bad in [
        "limit=0",
        "limit=101",
        "limit=x",
        "state=paid",
        "bogus=1",
        "starting_after=chk_nope",
    ] {
        let (status, body, _) =
            api(&app, "GET", &format!("/api/v1/checkouts?{bad}"), None, None).await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(body["error"], "invalid_request");
    }
}
both_backends!(listing_is_newest_first_with_filters_and_pages);
