//! Connect (API.md section 4): everything payhook does for a connected account's event
//! happens in that account: Stripe calls carry `Stripe-Account`, customers belong to it. The
//! app API acts in the account its `Stripe-Account` header names (reads and writes, with
//! Idempotency-Keys per account), and reconciliation lists each known account's events with
//! its header.

use payhook::config::{EndpointKind, LivemodePolicy};
use payhook::store::customers::CustomerRow;
use serde_json::{json, Value};

use crate::admin::{admin, with_admin};
use crate::endpoints::{endpoint, post_to, CONNECT_SECRET};
use crate::fake_stripe::{event_for, save_card_items, stripe_config, FakeStripe};
use crate::helpers::{
    both_backends, bytes, spawn_app_on, spawn_manual_app_with_url, Backend, TestApp, TestDatabase,
};
use crate::reconcile::paid_intent;
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
        c.named_endpoints = connect_endpoint();
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
        c.named_endpoints = connect_endpoint();
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
        c.named_endpoints = connect_endpoint();
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

/// The handled events the fake lists in `account` (`None`: the platform), newest first.
async fn events_at_stripe(fake: &FakeStripe, account: Option<&str>) -> Vec<Value> {
    let types: Vec<String> = payhook::inbox::reconcile::handled_types()
        .iter()
        .map(|t| format!("types[]={t}"))
        .collect();
    let path = format!("/v1/events?limit=100&{}", types.join("&"));
    let list = match account {
        Some(account) => fake_get_as(fake, account, &path).await,
        None => fake.get(&path).await,
    };
    list["data"].as_array().unwrap().clone()
}

/// The `Stripe-Account` headers of the event lists the fake answered after the first
/// `before` (`null`: the platform's).
async fn event_lists_since(fake: &FakeStripe, before: usize) -> Vec<Value> {
    logged(fake, "/v1/events")
        .await
        .into_iter()
        .skip(before)
        .map(|call| call["headers"]["Stripe-Account"].clone())
        .collect()
}

async fn reconcile_lists_each_known_account_with_its_header_and_keeps_their_events_theirs(
    backend: Backend,
) {
    let Some(fake) = FakeStripe::start("connect_reconcile") else {
        return;
    };
    let db = tokio::task::spawn_blocking(move || TestDatabase::create(backend))
        .await
        .unwrap();
    let app = spawn_manual_app_with_url(db.url(), |c| {
        stripe_config(c, &fake.base_url);
        crate::app_support::api_config(c, None, 50);
        with_admin(c);
        c.named_endpoints = connect_endpoint();
    })
    .await;
    // The platform: a payment no webhook told payhook of.
    paid_intent(&fake).await;
    // acct_A: a checkout the app made there, paid at Stripe; its events never arrived.
    let (status, checkout) = api_in(
        &app,
        Some("acct_A"),
        "POST",
        "/api/v1/checkouts",
        Some(json!({"mode": "payment", "amount": 1500, "currency": "usd"})),
    )
    .await;
    assert_eq!(status, 201, "{checkout}");
    let pi_a = checkout["intent_id"].as_str().unwrap().to_owned();
    let at_fake = &fake;
    let card = |account| async move {
        fake_post_as(
            at_fake,
            account,
            "/v1/payment_methods",
            &[
                ("type", "card"),
                ("card[number]", "4242424242424242"),
                ("card[exp_month]", "12"),
                ("card[exp_year]", "2031"),
                ("card[cvc]", "123"),
            ],
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let pm_a = card("acct_A").await;
    let paid = fake_post_as(
        &fake,
        "acct_A",
        &format!("/v1/payment_intents/{pi_a}/confirm"),
        &[("payment_method", pm_a.as_str())],
    )
    .await;
    assert_eq!(paid["status"], "succeeded", "{paid}");
    // acct_B: payhook heard of it once through the Connect endpoint; the rest was missed.
    let pm_b = card("acct_B").await;
    let pi_b = fake_post_as(
        &fake,
        "acct_B",
        "/v1/payment_intents",
        &[
            ("amount", "900"),
            ("currency", "usd"),
            ("payment_method", pm_b.as_str()),
            ("confirm", "true"),
        ],
    )
    .await;
    let mut heard = event_for("evt_b_heard", "payment_intent.processing", &pi_b);
    heard["account"] = json!("acct_B");
    assert_eq!(
        post_to(&app, "connect", &bytes(&heard), CONNECT_SECRET)
            .await
            .0,
        200
    );
    app.settle().await;

    let before = logged(&fake, "/v1/events").await.len();
    let (status, report) = admin(&app, "POST", "/reconcile", None).await;
    assert_eq!(status, 200, "{report}");
    // One list per account, each in its own account: the platform's first.
    assert_eq!(
        event_lists_since(&fake, before).await,
        [Value::Null, json!("acct_A"), json!("acct_B")]
    );
    let parts: Vec<(Value, Value)> = report["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["account"].clone(), p["error"].clone()))
        .collect();
    assert_eq!(
        parts,
        [
            (Value::Null, Value::Null),
            (json!("acct_A"), Value::Null),
            (json!("acct_B"), Value::Null)
        ],
        "{report}"
    );
    let mut total = 0;
    for (account, endpoint) in [
        (None, "default"),
        (Some("acct_A"), "connect"),
        (Some("acct_B"), "connect"),
    ] {
        let listed = events_at_stripe(&fake, account).await;
        assert!(listed.len() >= 2, "{account:?}: {listed:#?}");
        total += listed.len();
        for event in &listed {
            let id = event["id"].as_str().unwrap();
            let stored = app
                .event(id)
                .unwrap_or_else(|| panic!("{id} of {account:?} stored"));
            assert_eq!(stored.account.as_deref(), account, "{id}");
            assert_eq!(stored.endpoint, endpoint, "{id}");
        }
    }
    assert_eq!(report["new"], total, "{report}");
    app.settle().await;
    let paid_a = app.checkout(&pi_a).expect("checkout");
    assert_eq!(
        (paid_a.state.as_str(), paid_a.account.as_str()),
        ("succeeded", "acct_A")
    );
    let pi_b = pi_b["id"].as_str().unwrap();
    let paid_b = app.checkout(pi_b).expect("checkout");
    assert_eq!(
        (paid_b.state.as_str(), paid_b.account.as_str()),
        ("succeeded", "acct_B")
    );

    // The admin API's Stripe-Account header limits a pass to that account.
    let before = logged(&fake, "/v1/events").await.len();
    let response = app
        .client
        .post(format!("{}/admin/v1/reconcile", app.address))
        .bearer_auth(crate::admin::ADMIN_TOKEN)
        .header("Stripe-Account", "acct_B")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let only_b: Value = response.json().await.unwrap();
    assert_eq!(event_lists_since(&fake, before).await, [json!("acct_B")]);
    assert_eq!(only_b["accounts"].as_array().unwrap().len(), 1, "{only_b}");
    assert_eq!(only_b["new"], 0, "{only_b}");

    // So does the CLI's `--account`; it records a connected account's events under the
    // environment's Connect endpoint, which it needs no signing secret to know.
    crate::reconcile::insert_event(
        &fake,
        json!({
            "id": "evt_late_in_a", "type": "payment_intent.succeeded", "account": "acct_A",
            "created": payhook::store::now_secs() - 5,
            "data": {"object": {"id": "pi_late_in_a", "object": "payment_intent",
                "status": "succeeded", "amount": 700, "currency": "usd", "metadata": {}}}
        }),
    )
    .await;
    let before = logged(&fake, "/v1/events").await.len();
    let (url, base) = (db.url().expose(), fake.base_url.clone());
    let output = tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        crate::cli::payhook(
            &["reconcile", "--account", "acct_A", "--json"],
            &[
                ("DATABASE_URL", url.as_str()),
                ("STRIPE_SECRET_KEY", crate::fake_stripe::API_KEY),
                ("STRIPE_API_BASE", base.as_str()),
                ("STRIPE_ENDPOINTS", "dev-connect"),
                ("STRIPE_ENDPOINT_DEV_CONNECT_KIND", "connect"),
            ],
            dir.path(),
        )
    })
    .await
    .unwrap();
    let text = crate::cli::text(&output);
    assert!(output.status.success(), "{text}");
    let pass: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("{text}"));
    assert_eq!(pass["new"], 1, "{pass}");
    assert_eq!(pass["accounts"][0]["account"], "acct_A", "{pass}");
    assert_eq!(event_lists_since(&fake, before).await, [json!("acct_A")]);
    let late = app.event("evt_late_in_a").expect("stored");
    assert_eq!(
        (late.account.as_deref(), late.endpoint.as_str()),
        (Some("acct_A"), "dev-connect")
    );
}
both_backends!(reconcile_lists_each_known_account_with_its_header_and_keeps_their_events_theirs);

/// The one `connect` endpoint these tests configure: any livemode, [`CONNECT_SECRET`].
fn connect_endpoint() -> Vec<payhook::config::EndpointConfig> {
    vec![endpoint(
        "connect",
        &[CONNECT_SECRET],
        EndpointKind::Connect,
        LivemodePolicy::Any,
    )]
}
