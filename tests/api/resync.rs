//! Resync: a `pi_`/`seti_`/`pm_` fetched from the fake Stripe and applied as observed state,
//! through the same state machine as events.

use payhook::store::now_secs;
use serde_json::Value;

use crate::admin::{admin, with_admin};
use crate::fake_stripe::{stripe_config, FakeStripe};
use crate::helpers::{both_backends, bytes, intent_event, spawn_app_on, Backend};
use crate::reconcile::paid_intent;

async fn resync(app: &crate::helpers::TestApp, id: &str) -> (u16, Value) {
    admin(app, "POST", &format!("/resync/{id}"), None).await
}

async fn an_intent_payhook_never_heard_of_gets_its_checkout(backend: Backend) {
    let Some(fake) = FakeStripe::start("resync_unknown_intent") else {
        return;
    };
    let app = spawn_app_on(backend, |c| {
        stripe_config(c, &fake.base_url);
        with_admin(c);
    })
    .await;
    let pi = paid_intent(&fake).await;
    let (status, checkout) = resync(&app, &pi).await;
    assert_eq!(status, 200, "{checkout}");
    assert_eq!(checkout["object"], "checkout");
    assert_eq!(checkout["state"], "succeeded");
    assert_eq!(checkout["intent_id"], pi.as_str());
    assert_eq!(checkout["mode"], "payment");
    assert_eq!(checkout["amount"], 1500);
    assert_eq!(checkout["customer_ref"], "user_reconcile");
    let transitions = app.transitions(&pi);
    assert_eq!(transitions.len(), 1, "{transitions:?}");
    let observed = &transitions[0];
    assert_eq!(observed.event_id, None, "no event: an observation");
    assert_eq!(observed.outcome.as_str(), "applied");
    assert_eq!(observed.reason.as_deref(), Some("observed"));
    // Resynced twice: the same state is a duplicate, recorded, nothing moves.
    let (_, again) = resync(&app, &pi).await;
    assert_eq!(again["state"], "succeeded");
    assert_eq!(app.transitions(&pi)[1].outcome.as_str(), "refused");

    // A declined card: Stripe says requires_payment_method with last_payment_error.
    let declined = fake.card("4000000000009995", "declined@example.com").await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/payment_intents", fake.base_url))
        .bearer_auth(crate::fake_stripe::API_KEY)
        .form(&[
            ("amount", "900"),
            ("currency", "usd"),
            ("payment_method", declined["id"].as_str().unwrap()),
            ("confirm", "true"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 402);
    let error: Value = response.json().await.unwrap();
    let failed_pi = error["error"]["payment_intent"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, checkout) = resync(&app, &failed_pi).await;
    assert_eq!(status, 200, "{checkout}");
    assert_eq!(checkout["state"], "failed");
    assert_eq!(checkout["last_error"]["code"], "card_declined");
    assert_eq!(checkout["last_error"]["decline_code"], "insufficient_funds");
}
both_backends!(an_intent_payhook_never_heard_of_gets_its_checkout);

async fn an_observation_never_regresses_a_newer_state(backend: Backend) {
    let Some(fake) = FakeStripe::start("resync_no_regression") else {
        return;
    };
    let app = spawn_app_on(backend, |c| {
        stripe_config(c, &fake.base_url);
        with_admin(c);
    })
    .await;
    let open = |amount: &'static str| {
        let fake = &fake;
        async move {
            let pi = fake
                .post(
                    "/v1/payment_intents",
                    &[("amount", amount), ("currency", "usd")],
                )
                .await;
            assert_eq!(pi["status"], "requires_payment_method");
            pi["id"].as_str().unwrap().to_owned()
        }
    };
    // Succeeded by its event (final): Stripe's requires_payment_method must not undo it.
    let final_pi = open("100").await;
    let now = now_secs();
    app.deliver(&bytes(&intent_event(
        "evt_r1",
        "payment_intent.succeeded",
        &final_pi,
        now,
    )))
    .await;
    // Processing by an event Stripe created after the observation is made (its `created` is
    // ahead of Stripe's clock at the fetch): the older observation yields to it.
    let newer_pi = open("200").await;
    app.deliver(&bytes(&intent_event(
        "evt_r2",
        "payment_intent.processing",
        &newer_pi,
        now + 120,
    )))
    .await;
    // Pending by an older event: the observation moves nothing either way, and creates
    // nothing new (same state).
    app.settle().await;

    for (pi, state, reason) in [
        (&final_pi, "succeeded", "final"),
        (&newer_pi, "processing", "stale"),
    ] {
        let (status, checkout) = resync(&app, pi).await;
        assert_eq!(status, 200, "{checkout}");
        assert_eq!(checkout["state"], state, "{pi}");
        let transitions = app.transitions(pi);
        let last = transitions.last().unwrap();
        assert_eq!(
            (
                last.event_id.as_deref(),
                last.to_state.as_str(),
                last.outcome.as_str()
            ),
            (None, "pending", "refused"),
            "{transitions:?}"
        );
        assert_eq!(last.reason.as_deref(), Some(reason));
        assert_eq!(app.checkout(pi).unwrap().state.as_str(), state);
    }

    // An older state is moved on by the observation: pending (old event) → succeeded.
    let paid = paid_intent(&fake).await;
    app.deliver(&bytes(&intent_event(
        "evt_r3",
        "payment_intent.created",
        &paid,
        now - 600,
    )))
    .await;
    app.settle().await;
    assert_eq!(app.checkout(&paid).unwrap().state.as_str(), "pending");
    let (_, checkout) = resync(&app, &paid).await;
    assert_eq!(checkout["state"], "succeeded");
}
both_backends!(an_observation_never_regresses_a_newer_state);

async fn resync_answers_404_for_unknown_objects_and_422_for_other_ids(backend: Backend) {
    let Some(fake) = FakeStripe::start("resync_errors") else {
        return;
    };
    let app = spawn_app_on(backend, |c| {
        stripe_config(c, &fake.base_url);
        with_admin(c);
    })
    .await;
    let (status, body) = resync(&app, "pi_doesnotexist").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, body) = resync(&app, "cus_123").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("invalid_request"))
    );
    assert!(app.checkout("pi_doesnotexist").is_none());

    // A card attached to a customer is recorded attached to it.
    let customer = fake
        .post("/v1/customers", &[("email", "c@example.com")])
        .await;
    let pm = fake.card("4242424242424242", "c@example.com").await;
    let pm_id = pm["id"].as_str().unwrap();
    fake.post(
        &format!("/v1/payment_methods/{pm_id}/attach"),
        &[("customer", customer["id"].as_str().unwrap())],
    )
    .await;
    let (status, card) = resync(&app, pm_id).await;
    assert_eq!(status, 200, "{card}");
    assert_eq!(card["object"], "card");
    assert_eq!(card["status"], "attached");
    assert_eq!(card["last4"], "4242");
    assert_eq!(card["customer"], customer["id"]);

    let without_key = spawn_app_on(backend, with_admin).await;
    let (status, body) = resync(&without_key, "pi_123").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("stripe_not_configured"))
    );
}
both_backends!(resync_answers_404_for_unknown_objects_and_422_for_other_ids);
