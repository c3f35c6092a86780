//! SQLite's WAL checkpointed outside commits (`WalCheckpoints::Background`, what `serve`
//! uses): no commit checkpoints, and `Pool::checkpoint_wal` copies the WAL so that the next
//! write starts it over, which keeps the WAL from growing without end.

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use payhook::store::events::insert_event;
use payhook::store::{Pool, PoolOptions, StoreError, WalCheckpoints};
use payhook::with_conn;

use crate::helpers::{bytes, intent_event, spawn_app_on, stored_event, Backend, TestDatabase};

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = BigInt)]
    wal_autocheckpoint: i64,
}

fn autocheckpoint(pool: &Pool) -> i64 {
    let mut conn = pool.get().expect("connection");
    with_conn!(&mut conn, c => diesel::sql_query("PRAGMA wal_autocheckpoint").get_result::<Setting>(c))
        .expect("setting")
        .wal_autocheckpoint
}

fn store_events(pool: &Pool, from: usize, n: usize) {
    for k in from..from + n {
        let event = intent_event(
            &format!("evt_wal_{k}"),
            "payment_intent.created",
            &format!("pi_wal_{k}"),
            1_700_000_000,
        );
        // One transaction each, as admission's batches at a low rate.
        pool.write::<_, StoreError>(|conn| insert_event(conn, &stored_event(&bytes(&event))))
            .expect("stored");
    }
}

#[tokio::test]
async fn a_background_checkpoint_lets_the_next_write_start_the_wal_over() {
    let db = TestDatabase::create(Backend::Sqlite);
    let pool = Pool::connect(
        &db.url(),
        PoolOptions {
            wal_checkpoints: WalCheckpoints::Background,
            ..PoolOptions::default()
        },
    )
    .expect("pool");
    pool.migrate().expect("migrate");
    assert_eq!(autocheckpoint(&pool), 0, "commits never checkpoint");

    store_events(&pool, 0, 100);
    let first = pool.checkpoint_wal().expect("checkpoint");
    assert!(
        first >= 100,
        "100 commits left their frames in the WAL: {first}"
    );
    store_events(&pool, 100, 1);
    let second = pool.checkpoint_wal().expect("checkpoint");
    assert!(
        second < 30,
        "one event's frames, from the start of the WAL: {second} after {first}"
    );

    // Commands' pools keep SQLite's own checkpoints.
    let own = Pool::connect(&db.url(), PoolOptions::default()).expect("pool");
    assert_eq!(autocheckpoint(&own), 1000);
}

/// `serve` checkpoints in the background (its checkpointer task is part of
/// `hardening::a_dead_task_or_writer_stops_the_service_with_an_error`), so its commits do not.
#[tokio::test]
async fn serve_turns_off_checkpoints_on_commit() {
    let app = spawn_app_on(Backend::Sqlite, |_| {}).await;
    assert_eq!(autocheckpoint(&app.pool), 0);
}
