//! Property tests in place of fuzzing (cargo-fuzz needs nightly): the two parsers that see
//! attacker-controlled bytes never panic, and any permutation with duplicates of one
//! checkout's events, applied through the real processor against a real database, ends where
//! in-order delivery ends.

use std::time::Duration;

use proptest::prelude::*;

use payhook::config::{ProcessorConfig, WebhookSecret};
use payhook::domain::checkout::{fold, CheckoutState};
use payhook::inbox::processor::process_batch;
use payhook::store::checkouts::find_checkout_by_intent;
use payhook::store::events::insert_event;
use payhook::store::{DatabaseUrl, Pool, PoolOptions};
use payhook::stripe::envelope::parse_envelope;
use payhook::stripe::signature::{header_for, parse_header, verify};
use serde_json::{json, Value};

use crate::helpers::{bytes, intent_event, stored_event};

/// Header-shaped strings: the pieces a parser cares about, glued in any order.
fn header_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("t=".to_owned()),
        Just("v1=".to_owned()),
        Just("v0=".to_owned()),
        Just(",".to_owned()),
        Just("=".to_owned()),
        Just(" ".to_owned()),
        "[0-9a-f]{64}",
        "[0-9a-fA-F]{0,70}",
        "-?[0-9]{1,25}",
        "\\PC{0,8}",
        Just("\u{0}".to_owned()),
        Just("é".to_owned()),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

/// JSON values shaped like (broken) events: the envelope's keys with any value types.
fn event_like() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,12}".prop_map(Value::String),
        "evt_[A-Za-z0-9]{0,12}".prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "id",
                        "type",
                        "created",
                        "data",
                        "object",
                        "account",
                        "livemode",
                        "api_version",
                        "x",
                    ]),
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    });
    prop::collection::vec(
        (
            prop::sample::select(vec![
                "id",
                "type",
                "created",
                "data",
                "api_version",
                "livemode",
                "account",
                "object",
            ]),
            value,
        ),
        0..8,
    )
    .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn the_signature_header_parser_never_panics_on_any_string(header in "\\PC{0,200}") {
        let _ = parse_header(&header);
        let _ = verify(b"{}", Some(&header), &[WebhookSecret::new("whsec_x".into())], 300, 1_700_000_000);
    }

    #[test]
    fn the_signature_header_parser_never_panics_on_header_like_strings(header in header_like()) {
        if let Ok(parsed) = parse_header(&header) {
            prop_assert!(!parsed.v1.is_empty());
        }
        let _ = verify(b"{}", Some(&header), &[WebhookSecret::new("whsec_x".into())], 300, 1_700_000_000);
    }

    #[test]
    fn the_envelope_parser_never_panics_on_any_bytes(body in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_envelope(&body);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    #[test]
    fn the_envelope_parser_never_panics_on_event_shaped_json(event in event_like()) {
        let body = serde_json::to_vec(&event).expect("serialize");
        if let Ok(envelope) = parse_envelope(&body) {
            // Whatever it accepts has the two required fields, as strings, in the JSON.
            prop_assert_eq!(event["id"].as_str(), Some(envelope.id.as_str()));
            prop_assert_eq!(event["type"].as_str(), Some(envelope.event_type.as_str()));
        }
    }

    #[test]
    fn whatever_is_signed_with_the_secret_verifies(
        body in prop::collection::vec(any::<u8>(), 0..2000),
        secret in "whsec_[A-Za-z0-9]{1,40}",
        t in 0i64..4_000_000_000,
    ) {
        let header = header_for(&body, &secret, t);
        prop_assert_eq!(verify(&body, Some(&header), &[WebhookSecret::new(secret)], 0, t), Ok(0));
    }
}

const INTENT_TYPES: [(&str, CheckoutState); 6] = [
    ("payment_intent.created", CheckoutState::Pending),
    (
        "payment_intent.requires_action",
        CheckoutState::RequiresAction,
    ),
    ("payment_intent.processing", CheckoutState::Processing),
    ("payment_intent.payment_failed", CheckoutState::Failed),
    ("payment_intent.succeeded", CheckoutState::Succeeded),
    ("payment_intent.canceled", CheckoutState::Canceled),
];

/// Stores `body` as admission does, then runs one processor batch (so events apply in
/// delivery order, not in the processor's `created` order).
fn deliver_and_apply(pool: &Pool, config: &ProcessorConfig, body: &[u8]) {
    let event = stored_event(body);
    let mut conn = pool.get().expect("connection");
    insert_event(&mut conn, &event).expect("insert");
    drop(conn);
    let report = process_batch(pool, config).expect("batch");
    assert_eq!(report.retried + report.dead, 0, "{report:?}");
}

fn state_of(pool: &Pool, intent: &str) -> Option<String> {
    let mut conn = pool.get().expect("connection");
    find_checkout_by_intent(&mut conn, intent)
        .expect("query")
        .map(|c| c.state.to_string())
}

proptest! {
    // Each case builds a fresh SQLite database: fewer cases, each a real end-to-end run.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_permutation_with_duplicates_applied_through_the_database_ends_like_in_order_delivery(
        events in prop::collection::vec((0usize..INTENT_TYPES.len(), 0i64..3), 1..7),
        dup_mask in prop::collection::vec(any::<bool>(), 7),
        seed in any::<u64>(),
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let pool = Pool::connect(
            &DatabaseUrl::Sqlite(dir.path().join("p.sqlite3")),
            PoolOptions { max_size: 2, ..PoolOptions::default() },
        )
        .expect("pool");
        pool.migrate().expect("migrate");
        let config = ProcessorConfig { retry_base: Duration::from_millis(1), ..ProcessorConfig::default() };
        let body = |prefix: &str, i: usize| {
            let (kind, dt) = events[i];
            bytes(&intent_event(
                &format!("evt_{prefix}{i}"),
                INTENT_TYPES[kind].0,
                &format!("pi_{prefix}"),
                1_763_900_000 + dt,
            ))
        };

        // In order: by Stripe time, ties in the order of a checkout's life (INTENT_TYPES).
        let mut order: Vec<usize> = (0..events.len()).collect();
        order.sort_by_key(|&i| (events[i].1, events[i].0));
        for &i in &order {
            deliver_and_apply(&pool, &config, &body("inorder", i));
        }
        let expected = fold(order.iter().map(|&i| (INTENT_TYPES[events[i].0].1, events[i].1)))
            .map(|c| c.state.as_str().to_owned());
        prop_assert_eq!(state_of(&pool, "pi_inorder"), expected.clone());

        // Shuffled, with re-deliveries of the same events.
        let mut delivered: Vec<usize> = (0..events.len()).collect();
        delivered.extend((0..events.len()).filter(|&i| dup_mask[i]));
        let mut s = seed;
        for i in (1..delivered.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            delivered.swap(i, (s >> 33) as usize % (i + 1));
        }
        for &i in &delivered {
            deliver_and_apply(&pool, &config, &body("shuffled", i));
        }
        prop_assert_eq!(state_of(&pool, "pi_shuffled"), expected);
    }
}
