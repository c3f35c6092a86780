//! The action claim: one customer's actions are leased one at a time, leases expire and
//! are taken over, and a worker that lost its lease can record nothing.

use payhook::store::customers::{self, NewCustomer};
use payhook::store::outbox::*;
use payhook::store::{Conn, Pool, PoolOptions, StoreError};

use crate::helpers::{both_backends, Backend, TestDatabase};

fn customer(conn: &mut Conn, r: &str) -> i64 {
    customers::insert_customer(
        conn,
        &NewCustomer {
            customer_ref: Some(r),
            email: None,
            stripe_customer_id: None,
            created_at: 0,
            updated_at: 0,
        },
    )
    .unwrap();
    customers::find_customer_by_ref(conn, r)
        .unwrap()
        .unwrap()
        .id
}

fn action(conn: &mut Conn, key: &str, customer_id: Option<i64>) -> bool {
    insert_action(
        conn,
        &NewAction {
            kind: SAVE_CARD,
            idempotency_key: key,
            checkout_id: None,
            customer_id,
            payment_method_id: "pm_1",
            step: FIRST_STEP,
            created_at: 0,
            updated_at: 0,
        },
    )
    .unwrap()
}

fn claim(pool: &Pool, worker: &str, now: i64) -> Vec<String> {
    let mut conn = pool.get().unwrap();
    conn.transaction(|c| claim_due_actions(c, worker, now, now + 1000, 10))
        .unwrap()
        .into_iter()
        .map(|a| a.idempotency_key)
        .collect()
}

/// One customer's actions are leased one at a time; other customers' are not held up;
/// an expired lease can be taken over; a duplicate key is not inserted twice.
fn claims_serialize_each_customers_actions(pool: &Pool, tag: &str) {
    let mut conn = pool.get().unwrap();
    let a = customer(&mut conn, &format!("{tag}_a"));
    let b = customer(&mut conn, &format!("{tag}_b"));
    let key = |n: &str| format!("{tag}:{n}");
    assert!(action(&mut conn, &key("a1"), Some(a)));
    assert!(!action(&mut conn, &key("a1"), Some(a)), "insert-if-absent");
    assert!(action(&mut conn, &key("a2"), Some(a)));
    assert!(action(&mut conn, &key("b1"), Some(b)));
    assert!(action(&mut conn, &key("none"), None));

    let now = 1_000_000;
    assert_eq!(claim(pool, "w1", now), [key("a1"), key("b1"), key("none")]);
    assert!(claim(pool, "w2", now + 1).is_empty(), "a2 waits for a1");

    let a1 = find_action_by_key(&mut conn, &key("a1")).unwrap().unwrap();
    finish_action(&mut conn, &a1, ActionStatus::Done, 0, None, None, 0).unwrap();
    assert_eq!(claim(pool, "w2", now + 2), [key("a2")]);

    // w1's leases on b1 and none run out: w3 takes them over, and w1 can no longer
    // record anything for them.
    assert_eq!(
        claim(pool, "w3", now + 5000),
        [key("a2"), key("b1"), key("none")]
    );
    let stale_b1 = ActionRow {
        locked_by: Some("w1".into()),
        ..find_action_by_key(&mut conn, &key("b1")).unwrap().unwrap()
    };
    assert!(matches!(
        record_progress(&mut conn, &stale_b1, "customer", None, 0, 0),
        Err(StoreError::Conflict(_))
    ));
}

async fn claims_serialize_each_customers_actions_on(backend: Backend) {
    tokio::task::spawn_blocking(move || {
        let db = TestDatabase::create(backend);
        let pool = Pool::connect(&db.url(), PoolOptions::default()).unwrap();
        pool.migrate().unwrap();
        claims_serialize_each_customers_actions(&pool, "t");
    })
    .await
    .unwrap();
}
both_backends!(claims_serialize_each_customers_actions_on);
