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
    // Below the threshold a pass never takes the write gate: it completes while a write
    // holds the gate open.
    let (holding, held) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let writer = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            pool.write::<_, StoreError>(|_| {
                holding.send(()).expect("test waits");
                released.recv().expect("test releases");
                Ok(())
            })
        })
    };
    held.recv().expect("the writer holds the gate");
    let (done, first) = std::sync::mpsc::channel();
    {
        let pool = pool.clone();
        std::thread::spawn(move || done.send(pool.checkpoint_wal(i64::MAX)));
    }
    let first = first
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("a pass below the threshold does not wait for the gate")
        .expect("checkpoint");
    assert!(
        first >= 100,
        "100 commits left their frames in the WAL: {first}"
    );
    release.send(()).expect("writer waits");
    writer.join().expect("writer").expect("write");

    // At the threshold the pass under the gate copies the rest, and the next write starts
    // the WAL over.
    store_events(&pool, 100, 50);
    let full = pool.checkpoint_wal(0).expect("checkpoint");
    store_events(&pool, 150, 1);
    let second = pool.checkpoint_wal(0).expect("checkpoint");
    assert!(
        second < 30,
        "one event's frames, from the start of the WAL: {second} after {full}"
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
