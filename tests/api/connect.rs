//! Connect (API.md section 4): everything payhook does for a connected account's event
//! happens in that account: Stripe calls carry `Stripe-Account`, customers belong to it. The
//! app API acts in the account its `Stripe-Account` header names (reads and writes, with
//! Idempotency-Keys per account).

use payhook::config::{EndpointKind, LivemodePolicy};
use payhook::store::customers::CustomerRow;
use serde_json::{json, Value};

use crate::endpoints::{endpoint, post_to, CONNECT_SECRET};
use crate::fake_stripe::{event_for, save_card_items, stripe_config, FakeStripe};
use crate::helpers::{both_backends, bytes, spawn_app_on, Backend, TestApp};
use crate::thin_events::{fake_post_as, logged};

/// A succeeded SetupIntent saving a new card for `customer_ref`, made in `account` at the
/// fake (`None`: the platform).
async fn saved_setup_intent(fake: &FakeStripe, account: Option<&str>, customer_ref: &str) -> Value {
    let post = |path: &'static str, form: Vec<(&'static str, String)>| async move {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        match account {
            Some(account) => fake_post_as(fake, account, path, &form).await,
            None => fake.post(path, &form).await,
        }
    };
    let pm = post(
        "/v1/payment_methods",
        vec![
            ("type", "card".into()),
            ("card[number]", "4242424242424242".into()),
            ("card[exp_month]", "12".into()),
            ("card[exp_year]", "2031".into()),
            ("card[cvc]", "123".into()),
            (
                "billing_details[email]",
                format!("{customer_ref}@example.com"),
            ),
        ],
    )
    .await;
    let seti = post(
        "/v1/setup_intents",
        vec![
            ("usage", "off_session".into()),
            ("payment_method_types[0]", "card".into()),
            ("payment_method", pm["id"].as_str().unwrap().to_owned()),
            ("confirm", "true".into()),
            ("metadata[customer_ref]", customer_ref.into()),
        ],
    )
    .await;
    assert_eq!(seti["status"], "succeeded", "{seti}");
    seti
}

fn customers_of(app: &TestApp, customer_ref: &str) -> Vec<CustomerRow> {
    use diesel::prelude::*;
    use payhook::store::schema::customers::dsl;
    let customer_ref = customer_ref.to_owned();
    app.with_conn(|c| {
        payhook::with_conn!(c, conn => dsl::customers
            .filter(dsl::customer_ref.eq(&customer_ref))
            .order(dsl::account.asc())
            .select(CustomerRow::as_select())
            .load(conn))
        .expect("customers")
    })
}

async fn a_connected_accounts_card_is_saved_in_that_account_and_its_customer_is_its_own(
    backend: Backend,
) {
    let Some(fake) = FakeStripe::start("connect_save_card") else {
        return;
    };
    let app = spawn_app_on(backend, |c| {
        stripe_config(c, &fake.base_url);
        c.named_endpoints = vec![endpoint(
            "connect",
            &[CONNECT_SECRET],
            EndpointKind::Connect,
            LivemodePolicy::Any,
        )];
    })
    .await;
    // The same customer_ref in the platform and in acct_A.
    let platform_seti = saved_setup_intent(&fake, None, "user_shared").await;
    let connected_seti = saved_setup_intent(&fake, Some("acct_A"), "user_shared").await;
    app.deliver(&bytes(&event_for(
        "evt_platform_seti",
        "setup_intent.succeeded",
        &platform_seti,
    )))
    .await;
    app.settle().await;

    let mut event = event_for("evt_acct_a_seti", "setup_intent.succeeded", &connected_seti);
    event["account"] = json!("acct_A");
    let before = logged(&fake, "/v1").await.len();
    let (status, answer) = post_to(&app, "connect", &bytes(&event), CONNECT_SECRET).await;
    assert_eq!(status, 200, "{answer}");
    app.settle().await;

    let items = save_card_items(&app);
    assert_eq!(items.len(), 2, "one save per intent");
    assert!(
        items.iter().all(|i| i.status.as_str() == "done"),
        "{:?}",
        items
            .iter()
            .map(|i| (&i.status, &i.last_error))
            .collect::<Vec<_>>()
    );
    // Every Stripe call made for the connected account's event carried its account.
    let calls: Vec<Value> = logged(&fake, "/v1")
        .await
        .into_iter()
        .skip(before)
        .collect();
    assert!(
        calls.len() >= 4,
        "customer, attach, default, details: {calls:#?}"
    );
    for call in &calls {
        assert_eq!(call["headers"]["Stripe-Account"], "acct_A", "{call}");
        assert!(call["status"].as_u64().is_some_and(|s| s < 300), "{call}");
    }

    // Two customers for one customer_ref: one per account, each with its own Stripe customer.
    let customers = customers_of(&app, "user_shared");
    assert_eq!(customers.len(), 2, "{customers:?}");
    assert_eq!(customers[0].account, "");
    assert_eq!(customers[1].account, "acct_A");
    assert_ne!(
        customers[0].stripe_customer_id,
        customers[1].stripe_customer_id
    );
    let connected_cus = customers[1].stripe_customer_id.as_deref().expect("created");
    let at_stripe = fake_get_as(&fake, "acct_A", &format!("/v1/customers/{connected_cus}")).await;
    assert_eq!(
        at_stripe["invoice_settings"]["default_payment_method"],
        connected_seti["payment_method"]
    );
    let checkout = app
        .checkout(connected_seti["id"].as_str().unwrap())
        .expect("checkout");
    assert_eq!(checkout.account, "acct_A");
    assert_eq!(checkout.customer_id, Some(customers[1].id));
}
both_backends!(a_connected_accounts_card_is_saved_in_that_account_and_its_customer_is_its_own);

async fn fake_get_as(fake: &FakeStripe, account: &str, path: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", fake.base_url))
        .bearer_auth(crate::fake_stripe::API_KEY)
        .header("Stripe-Account", account)
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

/// An app API request with the test token and, when given, a `Stripe-Account` header.
async fn api_in(
    app: &TestApp,
    account: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    api_keyed(app, account, None, method, path, body).await
}

/// As [`api_in`], with an `Idempotency-Key` when given.
async fn api_keyed(
    app: &TestApp,
    account: Option<&str>,
    idempotency_key: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}{path}", app.address);
    let mut request = match method {
        "GET" => app.client.get(url),
        _ => app.client.post(url),
    };
    request = request.bearer_auth(crate::app_support::TOKEN);
    if let Some(account) = account {
        request = request.header("Stripe-Account", account);
    }
    if let Some(key) = idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn the_app_api_acts_in_the_account_its_stripe_account_header_names(backend: Backend) {
    let app = spawn_app_on(backend, |c| {
        crate::app_support::api_config(c, None, 50);
        c.named_endpoints = vec![endpoint(
            "connect",
            &[CONNECT_SECRET],
            EndpointKind::Connect,
            LivemodePolicy::Any,
        )];
    })
    .await;
    let now = payhook::store::now_secs();
    // One customer_ref (intent_event's `user_test`) in the platform and in acct_A.
    let platform =
        crate::helpers::intent_event("evt_api_p", "payment_intent.created", "pi_api_p", now);
    app.deliver(&bytes(&platform)).await;
    let mut connected =
        crate::helpers::intent_event("evt_api_a", "payment_intent.created", "pi_api_a", now);
    connected["account"] = json!("acct_A");
    assert_eq!(
        post_to(&app, "connect", &bytes(&connected), CONNECT_SECRET)
            .await
            .0,
        200
    );
    app.settle().await;
    let platform_id = app.checkout("pi_api_p").expect("checkout").id;
    let connected_id = app.checkout("pi_api_a").expect("checkout").id;

    // One object: found in its own account only.
    let path = format!("/api/v1/checkouts/{connected_id}");
    let (status, body) = api_in(&app, Some("acct_A"), "GET", &path, None).await;
    assert_eq!(
        (status, body["intent_id"].as_str()),
        (200, Some("pi_api_a")),
        "{body}"
    );
    assert_eq!(api_in(&app, None, "GET", &path, None).await.0, 404);
    assert_eq!(
        api_in(&app, Some("acct_B"), "GET", &path, None).await.0,
        404
    );
    let path = format!("/api/v1/checkouts/{platform_id}");
    assert_eq!(api_in(&app, None, "GET", &path, None).await.0, 200);
    assert_eq!(
        api_in(&app, Some("acct_A"), "GET", &path, None).await.0,
        404
    );

    // Lists are per account.
    let ids = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["intent_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, page) = api_in(&app, None, "GET", "/api/v1/checkouts", None).await;
    assert_eq!(ids(&page), ["pi_api_p"]);
    let (_, page) = api_in(
        &app,
        Some("acct_A"),
        "GET",
        "/api/v1/checkouts?customer_ref=user_test",
        None,
    )
    .await;
    assert_eq!(ids(&page), ["pi_api_a"]);

    // The same customer_ref is one customer per account.
    let (status, platform_customer) =
        api_in(&app, None, "GET", "/api/v1/customers/user_test", None).await;
    assert_eq!(status, 200, "{platform_customer}");
    let (status, connected_customer) = api_in(
        &app,
        Some("acct_A"),
        "GET",
        "/api/v1/customers/user_test",
        None,
    )
    .await;
    assert_eq!(status, 200, "{connected_customer}");
    assert_eq!(
        api_in(
            &app,
            Some("acct_B"),
            "GET",
            "/api/v1/customers/user_test",
            None
        )
        .await
        .0,
        404
    );

    // A header that names no account is refused, naming it.
    let (status, body) = api_in(&app, Some("nope"), "GET", "/api/v1/checkouts", None).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("Stripe-Account"),
        "{body}"
    );
    // Writes too: a header that names no account is refused before anything is made.
    let (status, body) = api_in(
        &app,
        Some("nope"),
        "POST",
        "/api/v1/checkouts",
        Some(json!({"mode": "setup", "customer_ref": "user_test"})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("Stripe-Account"),
        "{body}"
    );
}
both_backends!(the_app_api_acts_in_the_account_its_stripe_account_header_names);

/// The calls the fake logged for `/v1/…` after the first `before`.
async fn stripe_calls_since(fake: &FakeStripe, before: usize) -> Vec<Value> {
    logged(fake, "/v1").await.into_iter().skip(before).collect()
}

fn paths(calls: &[Value]) -> Vec<String> {
    calls
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["method"].as_str().unwrap(),
                c["path"].as_str().unwrap()
            )
        })
        .collect()
}

async fn a_checkout_created_with_stripe_account_is_made_in_that_account_and_seen_only_there(
    backend: Backend,
) {
    let Some(fake) = FakeStripe::start("connect_api_checkout") else {
        return;
    };
    let app = spawn_app_on(backend, |c| {
        stripe_config(c, &fake.base_url);
        crate::app_support::api_config(c, None, 50);
    })
    .await;
    let body = json!({"mode": "payment", "amount": 1099, "currency": "usd",
                      "customer_ref": "user_conn", "email": "conn@example.com"});
    let before = logged(&fake, "/v1").await.len();
    let (status, created) = api_keyed(
        &app,
        Some("acct_A"),
        Some("key-1"),
        "POST",
        "/api/v1/checkouts",
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let pi = created["intent_id"].as_str().unwrap().to_owned();
    // Every Stripe call it made (the customer, the intent) was made in acct_A.
    let calls = stripe_calls_since(&fake, before).await;
    assert_eq!(
        paths(&calls),
        ["POST /v1/customers", "POST /v1/payment_intents"],
        "{calls:#?}"
    );
    for call in &calls {
        assert_eq!(call["headers"]["Stripe-Account"], "acct_A", "{call}");
        assert!(call["status"].as_u64().is_some_and(|s| s < 300), "{call}");
    }
    let at_stripe = fake_get_as(&fake, "acct_A", &format!("/v1/payment_intents/{pi}")).await;
    assert_eq!(at_stripe["metadata"]["checkout_id"], id.as_str());
    let customers = customers_of(&app, "user_conn");
    assert_eq!(customers.len(), 1, "{customers:?}");
    assert_eq!(customers[0].account, "acct_A");
    assert_eq!(
        at_stripe["customer"],
        json!(customers[0].stripe_customer_id)
    );
    assert_eq!(app.checkout(&pi).expect("checkout").account, "acct_A");

    // Seen in acct_A only.
    let path = format!("/api/v1/checkouts/{id}");
    let (status, seen) = api_in(&app, Some("acct_A"), "GET", &path, None).await;
    assert_eq!(
        (status, seen["intent_id"].as_str()),
        (200, Some(pi.as_str()))
    );
    assert_eq!(api_in(&app, None, "GET", &path, None).await.0, 404);
    assert_eq!(
        api_in(&app, Some("acct_B"), "GET", &path, None).await.0,
        404
    );

    // Idempotency-Keys are per account: the same key and body in acct_B is another
    // checkout (with acct_B's own customer for user_conn); in acct_A it is a replay.
    let (status, other) = api_keyed(
        &app,
        Some("acct_B"),
        Some("key-1"),
        "POST",
        "/api/v1/checkouts",
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 201, "{other}");
    assert_ne!(other["id"], created["id"]);
    assert_ne!(other["intent_id"], created["intent_id"]);
    let before = logged(&fake, "/v1").await.len();
    let (status, replay) = api_keyed(
        &app,
        Some("acct_A"),
        Some("key-1"),
        "POST",
        "/api/v1/checkouts",
        Some(body),
    )
    .await;
    assert_eq!((status, &replay["id"]), (200, &created["id"]), "{replay}");
    assert!(stripe_calls_since(&fake, before).await.is_empty());
    let accounts: Vec<String> = customers_of(&app, "user_conn")
        .into_iter()
        .map(|c| c.account)
        .collect();
    assert_eq!(accounts, ["acct_A", "acct_B"]);

    // Canceling: another account's checkout is not found; in its own account the cancel is
    // made there.
    let cancel = format!("/api/v1/checkouts/{id}/cancel");
    assert_eq!(api_in(&app, None, "POST", &cancel, None).await.0, 404);
    assert_eq!(
        api_in(&app, Some("acct_B"), "POST", &cancel, None).await.0,
        404
    );
    let before = logged(&fake, "/v1").await.len();
    let (status, canceled) = api_in(&app, Some("acct_A"), "POST", &cancel, None).await;
    assert_eq!(
        (status, canceled["state"].as_str()),
        (200, Some("canceled")),
        "{canceled}"
    );
    let calls = stripe_calls_since(&fake, before).await;
    assert_eq!(
        paths(&calls),
        [format!("POST /v1/payment_intents/{pi}/cancel")]
    );
    assert_eq!(calls[0]["headers"]["Stripe-Account"], "acct_A");
    assert_eq!(calls[0]["status"], 200, "{calls:#?}");
}
both_backends!(a_checkout_created_with_stripe_account_is_made_in_that_account_and_seen_only_there);

async fn an_off_session_charge_is_made_in_the_account_it_names_with_keys_per_account(
    backend: Backend,
) {
    let Some(fake) = FakeStripe::start("connect_api_charge") else {
        return;
    };
    let app = spawn_app_on(backend, |c| {
        stripe_config(c, &fake.base_url);
        crate::app_support::api_config(c, None, 50);
        c.named_endpoints = vec![endpoint(
            "connect",
            &[CONNECT_SECRET],
            EndpointKind::Connect,
            LivemodePolicy::Any,
        )];
    })
    .await;
    // user_shared has a saved default card in the platform and another in acct_A.
    let platform_seti = saved_setup_intent(&fake, None, "user_shared").await;
    let connected_seti = saved_setup_intent(&fake, Some("acct_A"), "user_shared").await;
    app.deliver(&bytes(&event_for(
        "evt_charge_platform_seti",
        "setup_intent.succeeded",
        &platform_seti,
    )))
    .await;
    let mut event = event_for(
        "evt_charge_acct_a_seti",
        "setup_intent.succeeded",
        &connected_seti,
    );
    event["account"] = json!("acct_A");
    assert_eq!(
        post_to(&app, "connect", &bytes(&event), CONNECT_SECRET)
            .await
            .0,
        200
    );
    app.settle().await;
    let customers = customers_of(&app, "user_shared");
    assert_eq!(customers.len(), 2, "{customers:?}");
    assert!(customers
        .iter()
        .all(|c| c.default_payment_method_id.is_some()));

    let path = "/api/v1/customers/user_shared/charges";
    let charge = json!({"amount": 2000, "currency": "usd"});
    let before = logged(&fake, "/v1").await.len();
    let (status, in_a) = api_keyed(
        &app,
        Some("acct_A"),
        Some("charge-1"),
        "POST",
        path,
        Some(charge.clone()),
    )
    .await;
    assert_eq!(status, 201, "{in_a}");
    assert_eq!(in_a["state"], "succeeded", "{in_a}");
    assert_eq!(in_a["payment_method"], connected_seti["payment_method"]);
    let calls = stripe_calls_since(&fake, before).await;
    assert_eq!(paths(&calls), ["POST /v1/payment_intents"], "{calls:#?}");
    assert_eq!(calls[0]["headers"]["Stripe-Account"], "acct_A");
    assert_eq!(calls[0]["status"], 200, "{calls:#?}");
    let pi = in_a["intent_id"].as_str().unwrap();
    let at_stripe = fake_get_as(&fake, "acct_A", &format!("/v1/payment_intents/{pi}")).await;
    assert_eq!(
        at_stripe["customer"],
        json!(customers[1].stripe_customer_id)
    );
    assert_eq!(app.checkout(pi).expect("checkout").account, "acct_A");

    // The same key and body in the platform: the platform's customer, card and charge.
    let before = logged(&fake, "/v1").await.len();
    let (status, in_platform) = api_keyed(
        &app,
        None,
        Some("charge-1"),
        "POST",
        path,
        Some(charge.clone()),
    )
    .await;
    assert_eq!(status, 201, "{in_platform}");
    assert_ne!(in_platform["id"], in_a["id"]);
    assert_ne!(in_platform["intent_id"], in_a["intent_id"]);
    assert_eq!(
        in_platform["payment_method"],
        platform_seti["payment_method"]
    );
    let calls = stripe_calls_since(&fake, before).await;
    assert_eq!(paths(&calls), ["POST /v1/payment_intents"], "{calls:#?}");
    assert_eq!(calls[0]["headers"]["Stripe-Account"], Value::Null);

    // A replay in acct_A is acct_A's charge, with no new call.
    let before = logged(&fake, "/v1").await.len();
    let (status, replay) = api_keyed(
        &app,
        Some("acct_A"),
        Some("charge-1"),
        "POST",
        path,
        Some(charge.clone()),
    )
    .await;
    assert_eq!((status, &replay["id"]), (200, &in_a["id"]), "{replay}");
    assert!(stripe_calls_since(&fake, before).await.is_empty());
    // acct_B has no user_shared.
    let (status, body) = api_keyed(
        &app,
        Some("acct_B"),
        Some("charge-2"),
        "POST",
        path,
        Some(charge),
    )
    .await;
    assert_eq!(status, 404, "{body}");
}
both_backends!(an_off_session_charge_is_made_in_the_account_it_names_with_keys_per_account);
