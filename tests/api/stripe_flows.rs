//! End-to-end card saving against a stateful fake Stripe (localstripe): the scene is set at
//! the fake, the event Stripe would send is built from the fake's own objects and delivered
//! signed, and the outcome is checked both at the fake and in the local rows.

use std::time::Duration;

use payhook::store::checkouts::CheckoutRow;
use payhook::store::customers::{self, CustomerRow};
use payhook::store::payment_methods::{self, PaymentMethodRow};
use serde_json::Value;

use crate::fake_stripe::{card_status, event_for, spawn_stripe_app, wait_for_action, FakeStripe};
use crate::helpers::{both_backends, bytes, spawn_app_on, Backend, TestApp};

fn id(v: &Value) -> String {
    v["id"].as_str().expect("object id").to_owned()
}

fn local_customer_by_ref(app: &TestApp, customer_ref: &str) -> CustomerRow {
    app.with_conn(|c| customers::find_customer_by_ref(c, None, customer_ref).expect("query"))
        .expect("local customer")
}

fn local_card(app: &TestApp, pm: &str) -> PaymentMethodRow {
    app.with_conn(|c| payment_methods::find_payment_method(c, pm).expect("query"))
        .expect("local card record")
}

fn checkout(app: &TestApp, intent: &str) -> CheckoutRow {
    app.checkout(intent).expect("checkout")
}

/// A SetupIntent confirmed at the fake with a new card, no Stripe customer, and the app's
/// user in its metadata; returns (intent, payment method).
async fn confirmed_setup_intent(
    fake: &FakeStripe,
    number: &str,
    email: &str,
    customer_ref: &str,
) -> (Value, Value) {
    let pm = fake.card(number, email).await;
    let seti = fake
        .post(
            "/v1/setup_intents",
            &[
                ("usage", "off_session"),
                ("payment_method_types[0]", "card"),
                ("payment_method", &id(&pm)),
                ("confirm", "true"),
                ("metadata[customer_ref]", customer_ref),
            ],
        )
        .await;
    assert_eq!(seti["status"], "succeeded", "{seti}");
    (seti, pm)
}

/// Checks the fake and the local rows agree that `pm` is `customer`'s attached default card.
async fn assert_saved(fake: &FakeStripe, app: &TestApp, customer: &CustomerRow, pm: &Value) {
    let cus = customer
        .stripe_customer_id
        .as_deref()
        .expect("Stripe customer recorded");
    let at_stripe = fake.get(&format!("/v1/customers/{cus}")).await;
    assert_eq!(
        at_stripe["invoice_settings"]["default_payment_method"],
        pm["id"]
    );
    let pm_at_stripe = fake.get(&format!("/v1/payment_methods/{}", id(pm))).await;
    assert_eq!(pm_at_stripe["customer"], cus);

    assert_eq!(
        customer.default_payment_method_id.as_deref(),
        pm["id"].as_str()
    );
    let card = local_card(app, &id(pm));
    assert_eq!(card.customer_id, Some(customer.id));
    assert_eq!(card.stripe_customer_id.as_deref(), Some(cus));
    assert_eq!(card.status.as_str(), "default");
    assert_eq!(card.brand.as_deref(), pm["card"]["brand"].as_str());
    assert_eq!(card.last4.as_deref(), pm["card"]["last4"].as_str());
    assert_eq!(card.exp_month, Some(12));
    assert_eq!(card.exp_year, Some(2031));
    assert_eq!(
        card.fingerprint.as_deref(),
        pm["card"]["fingerprint"].as_str()
    );
}

async fn setup_intent_saved_card_is_attached_and_default_at_stripe_and_recorded_locally(
    backend: Backend,
) {
    let Some(fake) = FakeStripe::start("flow 1") else {
        return;
    };
    let app = spawn_stripe_app(backend, &fake.base_url).await;
    let (seti, pm) =
        confirmed_setup_intent(&fake, "4242424242424242", "ada@example.com", "user_ada").await;

    app.deliver(&bytes(&event_for(
        "evt_flow1",
        "setup_intent.succeeded",
        &seti,
    )))
    .await;
    let action = wait_for_action(&app, &format!("save_card:{}", id(&seti)), "done").await;

    let customer = local_customer_by_ref(&app, "user_ada");
    assert_eq!(
        crate::fake_stripe::item_customer(&action),
        Some(customer.id)
    );
    assert_saved(&fake, &app, &customer, &pm).await;
    let cus = customer.stripe_customer_id.clone().expect("cus");
    let at_stripe = fake.get(&format!("/v1/customers/{cus}")).await;
    assert_eq!(at_stripe["metadata"]["customer_ref"], "user_ada");
    let chk = checkout(&app, &id(&seti));
    assert_eq!(card_status(&app, &id(&seti)).as_deref(), Some("saved"));
    assert_eq!(chk.stripe_customer_id.as_deref(), Some(cus.as_str()));

    // A redelivery of the same event changes nothing and queues nothing.
    app.deliver(&bytes(&event_for(
        "evt_flow1",
        "setup_intent.succeeded",
        &seti,
    )))
    .await;
    app.settle().await;
    let actions = crate::fake_stripe::save_card_items(&app);
    assert_eq!(actions.len(), 1);
}
both_backends!(setup_intent_saved_card_is_attached_and_default_at_stripe_and_recorded_locally);

async fn payment_intent_with_setup_future_usage_saves_the_card_on_its_customer(backend: Backend) {
    let Some(fake) = FakeStripe::start("flow 2") else {
        return;
    };
    let app = spawn_stripe_app(backend, &fake.base_url).await;
    let customer = fake
        .post(
            "/v1/customers",
            &[
                ("email", "bob@example.com"),
                ("metadata[customer_ref]", "user_bob"),
            ],
        )
        .await;
    let pm = fake.card("5555555555554444", "bob@example.com").await;
    let pi = fake
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "2500"),
                ("currency", "usd"),
                ("customer", &id(&customer)),
                ("payment_method", &id(&pm)),
                ("setup_future_usage", "off_session"),
                ("confirm", "true"),
                ("metadata[customer_ref]", "user_bob"),
            ],
        )
        .await;
    assert_eq!(pi["status"], "succeeded", "{pi}");

    app.deliver(&bytes(&event_for(
        "evt_flow2",
        "payment_intent.succeeded",
        &pi,
    )))
    .await;
    wait_for_action(&app, &format!("save_card:{}", id(&pi)), "done").await;

    let local = local_customer_by_ref(&app, "user_bob");
    assert_eq!(
        local.stripe_customer_id.as_deref(),
        Some(id(&customer).as_str())
    );
    assert_saved(&fake, &app, &local, &pm).await;
    assert_eq!(
        local_card(&app, &id(&pm)).brand.as_deref(),
        Some("mastercard")
    );
    assert_eq!(card_status(&app, &id(&pi)).as_deref(), Some("saved"));
}
both_backends!(payment_intent_with_setup_future_usage_saves_the_card_on_its_customer);

async fn payment_intent_without_setup_future_usage_saves_nothing(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let mut event =
        crate::helpers::intent_event("evt_nosfu", "payment_intent.succeeded", "pi_nosfu", 1);
    event["data"]["object"]["payment_method"] = "pm_nosfu".into();
    app.deliver(&bytes(&event)).await;
    app.settle().await;
    assert!(crate::fake_stripe::save_card_items(&app).is_empty());
    assert_eq!(card_status(&app, "pi_nosfu"), None);
}
both_backends!(payment_intent_without_setup_future_usage_saves_nothing);

async fn a_newer_card_supersedes_the_previous_one_and_a_repeated_card_detaches_its_older_copy(
    backend: Backend,
) {
    let Some(fake) = FakeStripe::start("supersede and dedupe") else {
        return;
    };
    let app = spawn_stripe_app(backend, &fake.base_url).await;
    let email = "cy@example.com";
    let mut saved = Vec::new();
    for (n, number) in ["4242424242424242", "5555555555554444", "4242424242424242"]
        .into_iter()
        .enumerate()
    {
        let (seti, pm) = confirmed_setup_intent(&fake, number, email, "user_cy").await;
        let mut event = event_for(&format!("evt_dedupe_{n}"), "setup_intent.succeeded", &seti);
        // One second apart: "newer" is Stripe time, not delivery order.
        event["created"] = (1_763_900_000 + n as i64).into();
        app.deliver(&bytes(&event)).await;
        wait_for_action(&app, &format!("save_card:{}", id(&seti)), "done").await;
        saved.push(pm);
    }
    let customer = local_customer_by_ref(&app, "user_cy");
    assert_saved(&fake, &app, &customer, &saved[2]).await;
    assert_eq!(
        local_card(&app, &id(&saved[1])).status.as_str(),
        "superseded"
    );
    let older_copy = local_card(&app, &id(&saved[0]));
    assert_eq!(older_copy.status.as_str(), "detached");
    assert!(older_copy.detached_at.is_some());

    let cus = customer.stripe_customer_id.expect("cus");
    let listed = fake
        .get(&format!("/v1/payment_methods?customer={cus}&type=card"))
        .await;
    let mut ids: Vec<&str> = listed["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|pm| pm["id"].as_str())
        .collect();
    ids.sort_unstable();
    let mut expected = vec![
        saved[1]["id"].as_str().expect("id"),
        saved[2]["id"].as_str().expect("id"),
    ];
    expected.sort_unstable();
    assert_eq!(
        ids, expected,
        "the older copy of the repeated card is detached at Stripe"
    );
}
both_backends!(
    a_newer_card_supersedes_the_previous_one_and_a_repeated_card_detaches_its_older_copy
);

async fn two_events_for_one_user_arriving_together_make_one_stripe_customer(backend: Backend) {
    let Some(fake) = FakeStripe::start("concurrent events of one user") else {
        return;
    };
    let app = spawn_stripe_app(backend, &fake.base_url).await;
    let (seti_a, pm_a) =
        confirmed_setup_intent(&fake, "4242424242424242", "dee@example.com", "user_dee").await;
    let (seti_b, pm_b) =
        confirmed_setup_intent(&fake, "5555555555554444", "dee@example.com", "user_dee").await;
    let a = bytes(&event_for(
        "evt_together_a",
        "setup_intent.succeeded",
        &seti_a,
    ));
    let b = bytes(&event_for(
        "evt_together_b",
        "setup_intent.succeeded",
        &seti_b,
    ));
    tokio::join!(app.deliver(&a), app.deliver(&b));
    wait_for_action(&app, &format!("save_card:{}", id(&seti_a)), "done").await;
    wait_for_action(&app, &format!("save_card:{}", id(&seti_b)), "done").await;

    let customer = local_customer_by_ref(&app, "user_dee");
    let cus = customer.stripe_customer_id.expect("cus");
    for pm in [&pm_a, &pm_b] {
        let at_stripe = fake.get(&format!("/v1/payment_methods/{}", id(pm))).await;
        assert_eq!(
            at_stripe["customer"],
            cus.as_str(),
            "both cards on one customer"
        );
    }
    let all = fake.get("/v1/customers?limit=100").await;
    let of_dee = all["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|c| c["metadata"]["customer_ref"] == "user_dee")
        .count();
    assert_eq!(of_dee, 1, "one Stripe customer for user_dee");
}
both_backends!(two_events_for_one_user_arriving_together_make_one_stripe_customer);

async fn the_billing_email_finds_the_customer_when_the_intent_names_none(backend: Backend) {
    let Some(fake) = FakeStripe::start("billing email") else {
        return;
    };
    let app = spawn_stripe_app(backend, &fake.base_url).await;
    let pm = fake.card("4111111111111111", "eve@example.com").await;
    let seti = fake
        .post(
            "/v1/setup_intents",
            &[
                ("usage", "off_session"),
                ("payment_method", &id(&pm)),
                ("confirm", "true"),
            ],
        )
        .await;
    app.deliver(&bytes(&event_for(
        "evt_email",
        "setup_intent.succeeded",
        &seti,
    )))
    .await;
    wait_for_action(&app, &format!("save_card:{}", id(&seti)), "done").await;
    let customer = app
        .with_conn(|c| {
            customers::find_customer_by_email(c, None, "eve@example.com").expect("query")
        })
        .expect("customer found by billing email");
    assert_saved(&fake, &app, &customer, &pm).await;
    assert_eq!(checkout(&app, &id(&seti)).customer_id, Some(customer.id));
}
both_backends!(the_billing_email_finds_the_customer_when_the_intent_names_none);

async fn a_card_attached_to_another_customer_fails_with_the_reason_on_the_checkout(
    backend: Backend,
) {
    let Some(fake) = FakeStripe::start("attached elsewhere") else {
        return;
    };
    let app = spawn_stripe_app(backend, &fake.base_url).await;
    let (seti, pm) =
        confirmed_setup_intent(&fake, "4242424242424242", "fay@example.com", "user_fay").await;
    let other = fake
        .post("/v1/customers", &[("email", "mallory@example.com")])
        .await;
    fake.post(
        &format!("/v1/payment_methods/{}/attach", id(&pm)),
        &[("customer", &id(&other))],
    )
    .await;

    app.deliver(&bytes(&event_for(
        "evt_elsewhere",
        "setup_intent.succeeded",
        &seti,
    )))
    .await;
    let action = wait_for_action(&app, &format!("save_card:{}", id(&seti)), "failed").await;
    assert_eq!(
        action.last_error_code.as_deref(),
        Some("payment_method_attached_to_other_customer")
    );
    let (status, code, _) = crate::fake_stripe::card_of(&app, &id(&seti)).expect("card");
    assert_eq!(status, "failed");
    assert_eq!(
        code.as_deref(),
        Some("payment_method_attached_to_other_customer")
    );
    let pm_at_stripe = fake.get(&format!("/v1/payment_methods/{}", id(&pm))).await;
    assert_eq!(
        pm_at_stripe["customer"],
        id(&other).as_str(),
        "not taken over"
    );
}
both_backends!(a_card_attached_to_another_customer_fails_with_the_reason_on_the_checkout);

async fn without_a_secret_key_events_apply_and_actions_wait(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let mut event =
        crate::helpers::intent_event("evt_nokey", "setup_intent.succeeded", "seti_nokey", 1);
    event["data"]["object"]["payment_method"] = "pm_nokey".into();
    app.deliver(&bytes(&event)).await;
    app.settle().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let action = crate::fake_stripe::action(&app, "save_card:seti_nokey").expect("queued");
    assert_eq!(action.status.as_str(), "pending");
    assert_eq!(action.step, "resolve");
    let chk = checkout(&app, "seti_nokey");
    assert_eq!(chk.state.as_str(), "succeeded");
    assert_eq!(card_status(&app, "seti_nokey").as_deref(), Some("pending"));
}
both_backends!(without_a_secret_key_events_apply_and_actions_wait);

async fn payment_method_events_keep_card_records_in_step_with_changes_made_elsewhere(
    backend: Backend,
) {
    let Some(fake) = FakeStripe::start("attached/detached elsewhere") else {
        return;
    };
    let app = spawn_stripe_app(backend, &fake.base_url).await;
    let (seti, pm) =
        confirmed_setup_intent(&fake, "4242424242424242", "gil@example.com", "user_gil").await;
    app.deliver(&bytes(&event_for(
        "evt_gil_1",
        "setup_intent.succeeded",
        &seti,
    )))
    .await;
    wait_for_action(&app, &format!("save_card:{}", id(&seti)), "done").await;
    let customer = local_customer_by_ref(&app, "user_gil");
    let cus = customer.stripe_customer_id.clone().expect("cus");

    // Someone attaches another card in the dashboard...
    let other = fake.card("5555555555554444", "gil@example.com").await;
    let attached = fake
        .post(
            &format!("/v1/payment_methods/{}/attach", id(&other)),
            &[("customer", &cus)],
        )
        .await;
    app.deliver(&bytes(&event_for(
        "evt_gil_2",
        "payment_method.attached",
        &attached,
    )))
    .await;
    // ...and detaches the saved one.
    let detached = fake
        .post(&format!("/v1/payment_methods/{}/detach", id(&pm)), &[])
        .await;
    app.deliver(&bytes(&event_for(
        "evt_gil_3",
        "payment_method.detached",
        &detached,
    )))
    .await;
    app.settle().await;

    let other_row = local_card(&app, &id(&other));
    assert_eq!(other_row.status.as_str(), "attached");
    assert_eq!(other_row.customer_id, Some(customer.id));
    assert_eq!(other_row.last4.as_deref(), Some("4444"));
    assert_eq!(local_card(&app, &id(&pm)).status.as_str(), "detached");
    let customer = local_customer_by_ref(&app, "user_gil");
    assert_eq!(
        customer.default_payment_method_id, None,
        "a detached card is no default"
    );
}
both_backends!(payment_method_events_keep_card_records_in_step_with_changes_made_elsewhere);

async fn metadata_checkout_id_names_the_customer_of_a_checkout_payhook_knows(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    // A first intent of user_test (from intent_event's metadata) creates a checkout...
    app.deliver(&bytes(&crate::helpers::intent_event(
        "evt_known",
        "payment_intent.created",
        "pi_known",
        1,
    )))
    .await;
    app.settle().await;
    let known = checkout(&app, "pi_known");
    let customer = local_customer_by_ref(&app, "user_test");
    assert_eq!(known.customer_id, Some(customer.id));

    // ...and a SetupIntent that names only that checkout saves its card for the same user.
    let mut event =
        crate::helpers::intent_event("evt_by_chk", "setup_intent.succeeded", "seti_by_chk", 2);
    event["data"]["object"]["metadata"] = serde_json::json!({ "checkout_id": known.id });
    event["data"]["object"]["payment_method"] = "pm_by_chk".into();
    app.deliver(&bytes(&event)).await;
    app.settle().await;
    let action = crate::fake_stripe::action(&app, "save_card:seti_by_chk").expect("queued");
    assert_eq!(
        crate::fake_stripe::item_customer(&action),
        Some(customer.id)
    );
}
both_backends!(metadata_checkout_id_names_the_customer_of_a_checkout_payhook_knows);

/// Webhooks come in any order: a card saved earlier (by Stripe time) whose event arrives
/// last must not take the default from a card saved later, and of two copies of one card the
/// newer stays.
async fn a_card_saved_earlier_but_delivered_last_does_not_take_the_default(backend: Backend) {
    let Some(fake) = FakeStripe::start("saved out of order") else {
        return;
    };
    let app = spawn_stripe_app(backend, &fake.base_url).await;
    let email = "late@example.com";
    let t0 = 1_763_900_000;
    // (card number, Stripe time of its setup_intent.succeeded), in delivery order.
    let plan = [
        ("5555555555554444", t0 + 100), // newest: must end as the default
        ("4242424242424242", t0),       // oldest copy of a repeated card: detached
        ("4242424242424242", t0 + 50),  // newer copy of it: kept, but not the default
    ];
    let mut saved = Vec::new();
    for (n, (number, created)) in plan.into_iter().enumerate() {
        let (seti, pm) = confirmed_setup_intent(&fake, number, email, "user_late").await;
        let mut event = event_for(&format!("evt_late_{n}"), "setup_intent.succeeded", &seti);
        event["created"] = created.into();
        app.deliver(&bytes(&event)).await;
        wait_for_action(&app, &format!("save_card:{}", id(&seti)), "done").await;
        saved.push(pm);
    }
    let customer = local_customer_by_ref(&app, "user_late");
    assert_saved(&fake, &app, &customer, &saved[0]).await;
    assert_eq!(local_card(&app, &id(&saved[1])).status.as_str(), "detached");
    assert_eq!(
        local_card(&app, &id(&saved[2])).status.as_str(),
        "superseded"
    );
    let cus = customer.stripe_customer_id.expect("cus");
    let listed = fake
        .get(&format!("/v1/payment_methods?customer={cus}&type=card"))
        .await;
    let mut ids: Vec<String> = listed["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|pm| pm["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort_unstable();
    let mut expected = vec![id(&saved[0]), id(&saved[2])];
    expected.sort_unstable();
    assert_eq!(ids, expected);
}
both_backends!(a_card_saved_earlier_but_delivered_last_does_not_take_the_default);
