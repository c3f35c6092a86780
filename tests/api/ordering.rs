use payhook::domain::checkout::{self, CheckoutState};

use crate::helpers::{
    both_backends, bytes, fixture, fixture_json, intent_event, spawn_app_on, Backend,
};

const PAYMENT_TYPES: [&str; 6] = payhook::stripe::payload::PAYMENT_INTENT_EVENT_TYPES;
const SETUP_TYPES: [&str; 5] = payhook::stripe::payload::SETUP_INTENT_EVENT_TYPES;

fn target(event_type: &str) -> CheckoutState {
    crate::helpers::target_of(event_type)
}

/// Every pair of handled events for one intent, delivered over HTTP in both orders, at the
/// same second and a second apart: both orders end in the same state, the one the pure
/// machine predicts.
async fn every_pair_of_events_ends_in_the_same_state_in_both_orders(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let mut cases = Vec::new();
    for (prefix, types) in [("pi", &PAYMENT_TYPES[..]), ("seti", &SETUP_TYPES[..])] {
        for (i, a) in types.iter().enumerate() {
            for b in &types[i + 1..] {
                for (ta, tb) in [(100, 100), (100, 101), (101, 100)] {
                    for order in ["ab", "ba"] {
                        let n = cases.len();
                        let intent = format!("{prefix}_pair{n}");
                        let ea = intent_event(&format!("evt_{n}a"), a, &intent, ta);
                        let eb = intent_event(&format!("evt_{n}b"), b, &intent, tb);
                        let (first, second) = if order == "ab" { (ea, eb) } else { (eb, ea) };
                        app.deliver(&bytes(&first)).await;
                        // Settle between the two so the second really is applied second.
                        app.settle().await;
                        app.deliver(&bytes(&second)).await;
                        cases.push((intent, *a, ta, *b, tb));
                    }
                }
            }
        }
    }
    app.settle().await;
    assert_eq!(cases.len(), (15 + 10) * 3 * 2);
    for pair in cases.chunks(2) {
        let (forward, a, ta, b, tb) = &pair[0];
        let backward = &pair[1].0;
        let state_forward = app.checkout(forward).unwrap().state;
        let state_backward = app.checkout(backward).unwrap().state;
        let expected = checkout::fold([(target(a), *ta), (target(b), *tb)])
            .unwrap()
            .state;
        assert_eq!(state_forward, state_backward, "{a}@{ta} / {b}@{tb}");
        assert_eq!(state_forward, expected, "{a}@{ta} / {b}@{tb}");
        assert_eq!(
            app.transitions(forward).len(),
            2,
            "both events are recorded"
        );
    }
}
both_backends!(every_pair_of_events_ends_in_the_same_state_in_both_orders);

async fn the_setup_flow_in_reverse_order_ends_where_it_ends_in_order(backend: Backend) {
    let in_order = spawn_app_on(backend, |_| {}).await;
    let reversed = spawn_app_on(backend, |_| {}).await;
    let files = [
        "setup_intent.created.json",
        "setup_intent.requires_action.json",
        "setup_intent.setup_failed.json",
        "setup_intent.succeeded.json",
    ];
    for f in files {
        in_order.deliver(&fixture(f)).await;
        in_order.settle().await;
    }
    for f in files.iter().rev() {
        reversed.deliver(&fixture(f)).await;
        reversed.settle().await;
    }
    let intent = fixture_json("setup_intent.succeeded.json")["data"]["object"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = in_order.checkout(&intent).unwrap();
    let b = reversed.checkout(&intent).unwrap();
    assert_eq!(a.state.as_str(), "succeeded");
    assert_eq!(
        (a.state.as_str(), a.state_event_id.as_deref()),
        (b.state.as_str(), b.state_event_id.as_deref())
    );
    assert_eq!(a.payment_method_id, b.payment_method_id);
    let refused = reversed
        .transitions(&intent)
        .iter()
        .filter(|t| t.outcome.as_str() == "refused")
        .count();
    assert_eq!(refused, 3, "the three older events are refused as stale");
}
both_backends!(the_setup_flow_in_reverse_order_ends_where_it_ends_in_order);

async fn the_payment_flow_ends_succeeded_with_amount_currency_and_customer(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    for f in [
        "payment_intent.succeeded.json",
        "payment_intent.created.json",
        "payment_intent.processing.json",
        "payment_intent.requires_action.json",
    ] {
        app.deliver(&fixture(f)).await;
    }
    app.settle().await;
    let checkout = app.checkout("pi_3SWkCFLr8QmW2xNcEnQpP95l").unwrap();
    assert_eq!(checkout.state.as_str(), "succeeded");
    assert_eq!(checkout.kind.as_str(), "payment");
    assert_eq!(checkout.amount, Some(4200));
    assert_eq!(checkout.currency.as_deref(), Some("eur"));
    assert_eq!(
        checkout.stripe_customer_id.as_deref(),
        Some("cus_T2t9prrX0WyivK")
    );
    assert_eq!(checkout.setup_future_usage.as_deref(), Some("off_session"));
    assert!(checkout.customer_id.is_some());
}
both_backends!(the_payment_flow_ends_succeeded_with_amount_currency_and_customer);

async fn off_session_declines_are_never_lost(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    app.deliver(&fixture(
        "payment_intent.payment_failed.authentication_required.json",
    ))
    .await;
    app.deliver(&fixture(
        "payment_intent.payment_failed.insufficient_funds.json",
    ))
    .await;
    app.settle().await;
    let auth = app.checkout("pi_3SWknKLr8QmW2xNcpnYeB8m4").unwrap();
    assert_eq!(auth.state.as_str(), "requires_action");
    assert_eq!(
        auth.last_error_code.as_deref(),
        Some("authentication_required")
    );
    let funds = app.checkout("pi_3SWkxiLr8QmW2xNc9pGd4t9w").unwrap();
    assert_eq!(funds.state.as_str(), "failed");
    assert_eq!(funds.decline_code.as_deref(), Some("insufficient_funds"));
    assert_eq!(funds.last_error_code.as_deref(), Some("card_declined"));
    let trail = app.transitions("pi_3SWkxiLr8QmW2xNc9pGd4t9w");
    assert_eq!(trail[0].decline_code.as_deref(), Some("insufficient_funds"));
}
both_backends!(off_session_declines_are_never_lost);

async fn a_stale_failure_after_success_is_refused_and_recorded(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    app.deliver(&bytes(&intent_event(
        "evt_s1",
        "payment_intent.succeeded",
        "pi_stale",
        200,
    )))
    .await;
    app.settle().await;
    app.deliver(&bytes(&intent_event(
        "evt_s2",
        "payment_intent.payment_failed",
        "pi_stale",
        100,
    )))
    .await;
    app.settle().await;
    let checkout = app.checkout("pi_stale").unwrap();
    assert_eq!(checkout.state.as_str(), "succeeded");
    assert_eq!(
        checkout.last_error_code, None,
        "a refused event does not touch the error"
    );
    let trail = app.transitions("pi_stale");
    assert_eq!(trail[1].outcome.as_str(), "refused");
    assert_eq!(trail[1].reason.as_deref(), Some("final"));
    assert_eq!(
        trail[1].error_code.as_deref(),
        Some("card_declined"),
        "its error is kept in the trail"
    );
}
both_backends!(a_stale_failure_after_success_is_refused_and_recorded);
