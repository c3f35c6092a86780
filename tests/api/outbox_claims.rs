//! The outbox claim: one lane's items are leased one at a time, leases expire and are taken
//! over, a worker that lost its lease can record nothing, and only registered kinds are
//! claimed.

use payhook::store::outbox::*;
use payhook::store::{Conn, Pool, StoreError};

use crate::helpers::{both_backends, fresh_pool, Backend};

fn item(conn: &mut Conn, kind: &str, key: &str, lane: Option<&str>) -> bool {
    insert_item(
        conn,
        &NewOutboxItem {
            kind,
            idempotency_key: key,
            lane,
            checkout_id: None,
            data: "{}",
            step: "first",
            created_at: 0,
            updated_at: 0,
        },
    )
    .unwrap()
}

fn claim(pool: &Pool, kinds: &[&str], worker: &str, now: i64) -> Vec<String> {
    let mut conn = pool.get().unwrap();
    conn.transaction(|c| claim_due_items(c, kinds, worker, now, now + 1000, 10))
        .unwrap()
        .into_iter()
        .map(|a| a.idempotency_key)
        .collect()
}

/// One lane's items are leased one at a time; other lanes are not held up; an expired lease
/// can be taken over; a duplicate key is not inserted twice; other kinds are left alone.
async fn claims_serialize_each_lane(backend: Backend) {
    let (_db, pool) = fresh_pool(backend).await;
    tokio::task::spawn_blocking(move || {
        let mut conn = pool.get().unwrap();
        let (a, b) = (Some("customer:1"), Some("customer:2"));
        assert!(item(&mut conn, "k", "a1", a));
        assert!(!item(&mut conn, "k", "a1", a), "insert-if-absent");
        assert!(item(&mut conn, "k", "a2", a));
        assert!(item(&mut conn, "k", "b1", b));
        assert!(item(&mut conn, "k", "none", None));
        assert!(item(&mut conn, "other", "o1", None));

        let now = 1_000_000;
        assert_eq!(claim(&pool, &["k"], "w1", now), ["a1", "b1", "none"]);
        assert!(
            claim(&pool, &["k"], "w2", now + 1).is_empty(),
            "a2 waits for a1"
        );

        let a1 = find_item_by_key(&mut conn, "a1").unwrap().unwrap();
        finish_item(&mut conn, &a1, OutboxStatus::Done, 0, None, None, 0).unwrap();
        assert_eq!(claim(&pool, &["k"], "w2", now + 2), ["a2"]);

        // w1's leases on b1 and none run out: w3 takes them over, and w1 can no longer
        // record anything for them.
        assert_eq!(claim(&pool, &["k"], "w3", now + 5000), ["a2", "b1", "none"]);
        let stale_b1 = OutboxRow {
            locked_by: Some("w1".into()),
            step: "second".into(),
            ..find_item_by_key(&mut conn, "b1").unwrap().unwrap()
        };
        assert!(matches!(
            record_progress(&mut conn, &stale_b1, 0, 0),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(claim(&pool, &["other"], "w4", now + 5000), ["o1"]);
    })
    .await
    .unwrap();
}
both_backends!(claims_serialize_each_lane);
