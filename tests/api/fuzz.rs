//! Property test through the database: any permutation with duplicates of one checkout's
//! events, applied through the real processor against a real database, ends where in-order
//! delivery ends. (The parsers' own properties live beside them, in `src/stripe/`.)

use std::time::Duration;

use proptest::prelude::*;

use payhook::config::ProcessorConfig;
use payhook::domain::checkout::{fold, CheckoutState};
use payhook::inbox::processor::process_batch;
use payhook::store::checkouts::find_checkout_by_intent;
use payhook::store::events::insert_event;
use payhook::store::{DatabaseUrl, Pool, PoolOptions};

use crate::helpers::{bytes, intent_event, stored_event};

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
