//! Upgrading across the migration that turned `stripe_actions` into the generic `outbox`: a
//! save_card interrupted before the upgrade resumes after it where it stopped, with the same
//! idempotency keys at Stripe, so the upgrade can never make Stripe do anything twice.

use diesel::connection::SimpleConnection;
use diesel_migrations::MigrationHarness;
use payhook::store::outbox::{find_item_by_key, OutboxStatus};
use payhook::store::{Pool, PoolOptions, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};
use payhook::with_conn;
use serde_json::json;

use crate::fake_stripe::stripe_config;
use crate::helpers::{both_backends, spawn_app_with_url, Backend, TestDatabase};
use crate::stripe_faults::{happy_stripe, keys_of};

/// The schema as it was before the outbox (the first four migrations), with one save_card
/// action stopped at `attach` and one not yet resolved.
fn database_before_the_upgrade(pool: &Pool, backend: Backend) {
    let mut conn = pool.get().expect("connection");
    with_conn!(&mut conn, c => {
        for _ in 0..4 {
            match backend {
                Backend::Sqlite => c.run_next_migration(SQLITE_MIGRATIONS),
                Backend::Postgres => c.run_next_migration(POSTGRES_MIGRATIONS),
            }
            .expect("an old migration");
        }
        c.batch_execute(
            "INSERT INTO customers (id, customer_ref, stripe_customer_id, created_at, updated_at)
                 VALUES (7, 'user_up', 'cus_up', 1, 1);
             INSERT INTO checkouts (id, kind, intent_id, customer_id, stripe_customer_id,
                 payment_method_id, state, state_event_created, created_at, updated_at,
                 card_status)
                 VALUES ('chk_up', 'setup', 'seti_up', 7, 'cus_up', 'pm_up', 'succeeded',
                         1763900000, 1, 1, 'pending'),
                        ('chk_anon', 'setup', 'seti_anon', NULL, NULL, 'pm_anon', 'succeeded',
                         1763900000, 1, 1, 'pending');
             INSERT INTO stripe_actions (id, kind, idempotency_key, checkout_id, customer_id,
                 payment_method_id, status, step, attempts, created_at, updated_at)
                 VALUES (41, 'save_card', 'save_card:seti_up', 'chk_up', 7, 'pm_up',
                         'pending', 'attach', 2, 1, 1),
                        (42, 'save_card', 'save_card:seti_anon', 'chk_anon', NULL, 'pm_anon',
                         'failed', 'resolve', 1, 1, 1);",
        )
    })
    .expect("rows of the old schema");
}

async fn an_action_interrupted_before_the_upgrade_resumes_after_it_with_the_same_keys(
    backend: Backend,
) {
    let db = TestDatabase::create(backend);
    let url = db.url();
    let old = Pool::connect(&url, PoolOptions::default()).expect("pool");
    tokio::task::spawn_blocking(move || database_before_the_upgrade(&old, backend))
        .await
        .expect("old schema");

    let stripe = happy_stripe().await;
    let app = spawn_app_with_url(url, |c| stripe_config(c, &stripe.uri())).await;

    let resumed = app
        .with_conn(|c| find_item_by_key(c, "save_card:seti_up"))
        .expect("query")
        .expect("migrated");
    assert_eq!(
        (
            resumed.id,
            resumed.kind.as_str(),
            resumed.step.as_str(),
            resumed.attempts
        ),
        (41, "save_card", "attach", 2)
    );
    assert_eq!(resumed.lane.as_deref(), Some("customer:7"));
    assert_eq!(resumed.checkout_id.as_deref(), Some("chk_up"));
    let data: serde_json::Value = serde_json::from_str(&resumed.data).expect("JSON");
    assert_eq!(
        data,
        json!({"payment_method_id": "pm_up", "customer_id": 7})
    );
    let unresolved = app
        .with_conn(|c| find_item_by_key(c, "save_card:seti_anon"))
        .expect("query")
        .expect("migrated");
    assert_eq!(unresolved.status, OutboxStatus::Failed);
    assert_eq!(unresolved.lane, None);
    let data: serde_json::Value = serde_json::from_str(&unresolved.data).expect("JSON");
    assert_eq!(
        data,
        json!({"payment_method_id": "pm_anon", "customer_id": null})
    );

    app.settle().await;
    let done = app
        .with_conn(|c| find_item_by_key(c, "save_card:seti_up"))
        .expect("query")
        .expect("item");
    assert_eq!(done.status, OutboxStatus::Done, "{done:?}");
    // The keys the interrupted action would have used before the upgrade, byte for byte.
    assert_eq!(
        keys_of(&stripe, "POST", "/v1/payment_methods/pm_up/attach").await,
        [Some("save_card:seti_up:attach:cus_up".to_owned())]
    );
    assert_eq!(
        keys_of(&stripe, "POST", "/v1/customers/cus_up").await,
        [Some("save_card:seti_up:default:cus_up".to_owned())]
    );
    assert!(
        keys_of(&stripe, "POST", "/v1/customers").await.is_empty(),
        "the customer existed: no Stripe customer is created"
    );
    // A card status is derived from the item now, not copied onto the checkout.
    assert_eq!(
        crate::fake_stripe::card_of(&app, "seti_up")
            .map(|c| c.0)
            .as_deref(),
        Some("saved")
    );
    drop(app);
    drop(db);
}
both_backends!(an_action_interrupted_before_the_upgrade_resumes_after_it_with_the_same_keys);
