use payhook::store::now_secs;
use payhook::stripe::signature::header_for;
use serde_json::json;

use crate::helpers::{both_backends, bytes, fixture, intent_event, spawn_app_on, Backend, SECRET};

async fn a_duplicate_delivery_is_acknowledged_stored_once_and_processed_once(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let body = fixture("payment_intent.created.json");
    let first = app.deliver(&body).await;
    assert_eq!(first["duplicate"], false);
    // Concurrent re-deliveries of the same event, as Stripe's retries can overlap.
    let again = futures_util::future::join_all((0..5).map(|_| app.deliver(&body))).await;
    assert!(again.iter().all(|a| a["duplicate"] == true));
    app.settle().await;
    assert_eq!(app.count_events(), 1);
    let trail = app.transitions("pi_3SWkCFLr8QmW2xNcEnQpP95l");
    assert_eq!(trail.len(), 1, "applied once: {trail:?}");
    assert_eq!(
        app.event("evt_3SWkCFLr8QmW2xNcZywrPADZ").unwrap().attempts,
        1
    );
}
both_backends!(a_duplicate_delivery_is_acknowledged_stored_once_and_processed_once);

async fn malformed_bodies_under_a_valid_signature_are_400_and_not_stored(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "malformed_json"),
        (b"[]".to_vec(), "malformed_json"),
        (
            bytes(&json!({"type": "payment_intent.created", "data": {}})),
            "missing_event_id",
        ),
        (
            bytes(&json!({"id": "evt_123", "data": {}})),
            "missing_event_type",
        ),
        (
            bytes(&json!({"id": "pi_123", "type": "payment_intent.created"})),
            "invalid_event_id",
        ),
    ];
    for (body, kind) in cases {
        let response = app.post_signed(&body).await;
        assert_eq!(response.status(), 400);
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["error"], kind);
    }
    assert_eq!(app.count_events(), 0);
}
both_backends!(malformed_bodies_under_a_valid_signature_are_400_and_not_stored);

async fn a_body_over_the_limit_is_413_whether_declared_or_streamed(backend: Backend) {
    let app = spawn_app_on(backend, |c| c.max_body_bytes = 4096).await;
    let mut event = intent_event("evt_big", "payment_intent.created", "pi_big", 1);
    event["data"]["object"]["description"] = json!("x".repeat(5000));
    let body = bytes(&event);
    let response = app.post_signed(&body).await;
    assert_eq!(response.status(), 413);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["error"], "payload_too_large");

    // No Content-Length: the limit holds while streaming.
    let header = header_for(&body, SECRET, now_secs());
    let stream = futures_util::stream::iter(
        body.chunks(1000)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let response = app
        .client
        .post(app.webhook_url())
        .header("Stripe-Signature", header)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(app.count_events(), 0);

    // Just under the limit is fine.
    let mut event = intent_event("evt_fits", "payment_intent.created", "pi_fits", 1);
    event["data"]["object"]["description"] = json!("x".repeat(3000));
    app.deliver(&bytes(&event)).await;
}
both_backends!(a_body_over_the_limit_is_413_whether_declared_or_streamed);

async fn the_default_limit_is_one_mebibyte(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let mut event = intent_event("evt_mib", "payment_intent.created", "pi_mib", 1);
    event["data"]["object"]["description"] = json!("x".repeat(1024 * 1024));
    assert_eq!(app.post_signed(&bytes(&event)).await.status(), 413);
    event["data"]["object"]["description"] = json!("x".repeat(1000 * 1000));
    assert_eq!(app.post_signed(&bytes(&event)).await.status(), 200);
}
both_backends!(the_default_limit_is_one_mebibyte);

async fn unknown_event_types_are_stored_acknowledged_and_ignored(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    app.deliver(&fixture("customer.updated.json")).await;
    app.settle().await;
    let event = app.event("evt_1SWkp5Lr8QmW2xNcEktTIRUn").unwrap();
    assert_eq!(event.status.as_str(), "ignored");
    assert_eq!(event.event_type, "customer.updated");
}
both_backends!(unknown_event_types_are_stored_acknowledged_and_ignored);

async fn a_handled_type_that_cannot_be_applied_is_acknowledged_and_marked_failed_with_the_reason(
    backend: Backend,
) {
    let app = spawn_app_on(backend, |_| {}).await;
    let body = bytes(
        &json!({"id": "evt_noobject", "type": "payment_intent.succeeded", "created": 5, "data": {}}),
    );
    app.deliver(&body).await;
    // An id of another object is refused at the door (object_type_mismatch); one with the
    // right prefix that is still not an id is found when applying.
    let body = bytes(
        &json!({"id": "evt_badid", "type": "payment_intent.succeeded", "data": {"object": {"id": "ch_1"}}}),
    );
    assert_eq!(app.post_signed(&body).await.status(), 400);
    let body = bytes(
        &json!({"id": "evt_badid", "type": "payment_intent.succeeded", "data": {"object": {"id": "pi_"}}}),
    );
    app.deliver(&body).await;
    app.settle().await;
    let first = app.event("evt_noobject").unwrap();
    assert_eq!(first.status.as_str(), "failed");
    assert!(first.last_error.unwrap().contains("data.object"));
    let second = app.event("evt_badid").unwrap();
    assert_eq!(second.status.as_str(), "failed");
    assert!(second
        .last_error
        .unwrap()
        .contains("nothing after the prefix"));
}
both_backends!(
    a_handled_type_that_cannot_be_applied_is_acknowledged_and_marked_failed_with_the_reason
);

async fn a_database_failure_is_503_so_stripe_retries_and_service_recovers(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    app.with_conn(|c| {
        payhook::with_conn!(c, conn => diesel::connection::SimpleConnection::batch_execute(
            conn,
            "ALTER TABLE webhook_events RENAME TO webhook_events_away"
        ))
        .unwrap()
    });
    let body = fixture("payment_intent.created.json");
    let response = app.post_signed(&body).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers().get("Retry-After").unwrap(), "5");
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["error"], "storage_unavailable");

    app.with_conn(|c| {
        payhook::with_conn!(c, conn => diesel::connection::SimpleConnection::batch_execute(
            conn,
            "ALTER TABLE webhook_events_away RENAME TO webhook_events"
        ))
        .unwrap()
    });
    app.deliver(&body).await;
    app.settle().await;
    assert_eq!(
        app.event("evt_3SWkCFLr8QmW2xNcZywrPADZ")
            .unwrap()
            .status
            .as_str(),
        "processed"
    );
}
both_backends!(a_database_failure_is_503_so_stripe_retries_and_service_recovers);

async fn health_and_readiness_answer(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let health = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready: serde_json::Value = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["database"], backend.name());
}
both_backends!(health_and_readiness_answer);

/// One admission batch may hold the same event twice (Stripe retried while the first
/// delivery waited) and events stored before: each is stored once, and only the first of a
/// pair counts as new. On PostgreSQL this is one multi-row statement.
async fn a_batch_stores_each_new_id_once_and_reports_which_were_new(backend: Backend) {
    use payhook::store::events::{find_event, insert_event, insert_events};

    use crate::helpers::{fresh_pool, stored_event};

    let (_db, pool) = fresh_pool(backend).await;
    let event = |id: &str| {
        stored_event(&bytes(&intent_event(
            id,
            "payment_intent.created",
            &format!("pi_{id}"),
            10,
        )))
    };
    let (a, b, old) = (event("evt_a"), event("evt_b"), event("evt_old"));
    let mut conn = pool.get().expect("connection");
    assert!(insert_event(&mut conn, &old).expect("insert"));
    let batch = [&a, &b, &a, &old];
    let stored = insert_events(&mut conn, &batch).expect("batch");
    assert_eq!(stored, [true, true, false, false]);
    assert!(insert_events(&mut conn, &[]).expect("empty").is_empty());
    for id in ["evt_a", "evt_b", "evt_old"] {
        assert!(find_event(&mut conn, id).expect("query").is_some(), "{id}");
    }
}
both_backends!(a_batch_stores_each_new_id_once_and_reports_which_were_new);
