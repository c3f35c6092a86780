//! The admin API, `/admin/v1`: its token rules, event lists (filters, pages), one event with
//! its payload, retries of events and outbox work.

use payhook::config::AdminToken;
use payhook::store::now_secs;
use serde_json::{json, Value};

use crate::helpers::{both_backends, bytes, intent_event, spawn_app_on, Backend, TestApp};

pub const ADMIN_TOKEN: &str = "adm_test_token_new";
const OLD_ADMIN_TOKEN: &str = "adm_test_token_old";

pub fn with_admin(config: &mut payhook::config::Config) {
    config.admin_tokens = vec![
        AdminToken::new(OLD_ADMIN_TOKEN.into()),
        AdminToken::new(ADMIN_TOKEN.into()),
    ];
}

/// `method path` with the admin token; returns the status and the JSON body.
pub async fn admin(app: &TestApp, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    admin_as(app, method, path, body, Some(ADMIN_TOKEN)).await
}

async fn admin_as(
    app: &TestApp,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let url = format!("{}/admin/v1{path}", app.address);
    let mut request = match method {
        "GET" => app.client.get(url),
        "POST" => app.client.post(url),
        other => panic!("{other}"),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, value)
}

async fn the_admin_api_is_404_without_a_token_and_401_with_a_wrong_one(backend: Backend) {
    let off = spawn_app_on(backend, |_| {}).await;
    for (method, path) in [
        ("GET", "/events"),
        ("POST", "/reconcile"),
        ("GET", "/nothing"),
    ] {
        let (status, body) = admin_as(&off, method, path, None, Some(ADMIN_TOKEN)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (404, Some("not_found")),
            "{path}"
        );
    }

    let app = spawn_app_on(backend, with_admin).await;
    for token in [None, Some("wrong"), Some("adm_test_token_ne"), Some("")] {
        let (status, body) = admin_as(&app, "GET", "/events", None, token).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unauthorized")),
            "{token:?}"
        );
        assert!(!body["message"].as_str().unwrap().contains(ADMIN_TOKEN));
    }
    // Both tokens work while rotating.
    for token in [OLD_ADMIN_TOKEN, ADMIN_TOKEN] {
        let (status, body) = admin_as(&app, "GET", "/events", None, Some(token)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({"data": [], "has_more": false}));
    }
    // Not `Bearer <token>`: refused.
    let response = app
        .client
        .get(format!("{}/admin/v1/events", app.address))
        .header("Authorization", format!("Basic {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // Unknown admin paths answer only behind the token.
    assert_eq!(admin_as(&app, "GET", "/nothing", None, None).await.0, 401);
    assert_eq!(admin(&app, "GET", "/nothing", None).await.0, 404);
}
both_backends!(the_admin_api_is_404_without_a_token_and_401_with_a_wrong_one);

fn ids(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn events_are_listed_newest_first_filtered_and_paged(backend: Backend) {
    let app = spawn_app_on(backend, with_admin).await;
    let t = now_secs() - 100;
    // Two same-second events (evt_a3, evt_a4) are ordered by id.
    let events = [
        ("evt_a1", "payment_intent.created", "pi_a", t),
        ("evt_a2", "payment_intent.succeeded", "pi_a", t + 1),
        ("evt_a3", "setup_intent.created", "seti_b", t + 2),
        ("evt_a4", "customer.created", "cus_c", t + 2),
        ("evt_a5", "payment_intent.created", "pi_d", t + 3),
    ];
    for (id, kind, object, created) in events {
        app.deliver(&bytes(&intent_event(id, kind, object, created)))
            .await;
    }
    app.settle().await;

    let (status, all) = admin(&app, "GET", "/events", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        ids(&all),
        ["evt_a5", "evt_a4", "evt_a3", "evt_a2", "evt_a1"]
    );
    assert_eq!(all["has_more"], false);
    let first = &all["data"][4];
    for field in [
        "id",
        "type",
        "status",
        "attempts",
        "created",
        "received_at",
        "last_error",
    ] {
        assert!(first.get(field).is_some(), "{field} in {first}");
    }
    assert_eq!(first["type"], "payment_intent.created");
    assert_eq!(first["status"], "processed");
    assert_eq!(first["created"], t);
    assert!(first.get("payload").is_none(), "lists carry no payload");

    // Pages of two, following starting_after.
    let (_, page1) = admin(&app, "GET", "/events?limit=2", None).await;
    assert_eq!(ids(&page1), ["evt_a5", "evt_a4"]);
    assert_eq!(page1["has_more"], true);
    let (_, page2) = admin(&app, "GET", "/events?limit=2&starting_after=evt_a4", None).await;
    assert_eq!(ids(&page2), ["evt_a3", "evt_a2"]);
    assert_eq!(page2["has_more"], true);
    let (_, page3) = admin(&app, "GET", "/events?limit=2&starting_after=evt_a2", None).await;
    assert_eq!(ids(&page3), ["evt_a1"]);
    assert_eq!(page3["has_more"], false);

    let (_, by_type) = admin(&app, "GET", "/events?type=payment_intent.created", None).await;
    assert_eq!(ids(&by_type), ["evt_a5", "evt_a1"]);
    let (_, wildcard) = admin(&app, "GET", "/events?type=payment_intent.*", None).await;
    assert_eq!(ids(&wildcard), ["evt_a5", "evt_a2", "evt_a1"]);
    let (_, by_object) = admin(&app, "GET", "/events?object_id=pi_a", None).await;
    assert_eq!(ids(&by_object), ["evt_a2", "evt_a1"]);
    let (_, ignored) = admin(&app, "GET", "/events?status=ignored", None).await;
    assert_eq!(ids(&ignored), ["evt_a4"]);
    let (_, combined) = admin(
        &app,
        "GET",
        "/events?status=processed&type=payment_intent.*&limit=1",
        None,
    )
    .await;
    assert_eq!(ids(&combined), ["evt_a5"]);
    assert_eq!(combined["has_more"], true);

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("status=done", "status"),
        ("starting_after=evt_nope", "starting_after"),
        ("colour=blue", "colour"),
    ] {
        let (status, body) = admin(&app, "GET", &format!("/events?{query}"), None).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["error"], "invalid_request");
        assert!(
            body["message"].as_str().unwrap().contains(field),
            "{query}: {body}"
        );
    }
}
both_backends!(events_are_listed_newest_first_filtered_and_paged);

async fn a_failed_event_is_shown_with_its_payload_and_retried(backend: Backend) {
    let app = spawn_app_on(backend, with_admin).await;
    // A handled type that cannot be applied: no data.object.
    let broken = format!(
        r#"{{"id":"evt_broken","object":"event","type":"payment_intent.succeeded","created":{},  "data":{{}}}}"#,
        now_secs()
    );
    app.deliver(broken.as_bytes()).await;
    let fine = intent_event("evt_fine", "payment_intent.created", "pi_fine", now_secs());
    app.deliver(&bytes(&fine)).await;
    app.settle().await;

    let (status, shown) = admin(&app, "GET", "/events/evt_broken", None).await;
    assert_eq!(status, 200);
    assert_eq!(shown["status"], "failed");
    assert_eq!(shown["attempts"], 1);
    assert!(shown["last_error"]
        .as_str()
        .unwrap()
        .contains("data.object"));
    let expected: Value = serde_json::from_str(&broken).unwrap();
    assert_eq!(shown["payload"], expected, "the payload as received");
    // Embedded as received, not re-encoded: the odd spacing survives.
    let response = app
        .client
        .get(format!("{}/admin/v1/events/evt_broken", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(response.text().await.unwrap().contains(r#",  "data":{}}"#));

    let (status, retried) = admin(&app, "POST", "/events/evt_broken/retry", None).await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["status"], "pending");
    assert_eq!(retried["attempts"], 0);
    assert_eq!(app.event("evt_broken").unwrap().status.as_str(), "pending");
    // Pending now: not retryable again.
    let (status, body) = admin(&app, "POST", "/events/evt_broken/retry", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("not_retryable"))
    );
    app.settle().await;
    assert_eq!(app.event("evt_broken").unwrap().status.as_str(), "failed");

    let (status, body) = admin(&app, "POST", "/events/evt_fine/retry", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("not_retryable"))
    );
    assert!(body["message"].as_str().unwrap().contains("processed"));
    let (status, body) = admin(&app, "POST", "/events/evt_nope/retry", None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    assert_eq!(admin(&app, "GET", "/events/evt_nope", None).await.0, 404);
}
both_backends!(a_failed_event_is_shown_with_its_payload_and_retried);

async fn actions_and_notifications_are_listed_apart_and_retried(backend: Backend) {
    let app = spawn_app_on(backend, with_admin).await;
    let now = now_secs();
    app.exec(&format!(
        "INSERT INTO outbox (kind, idempotency_key, data, status, step, attempts, last_error_code, \
         last_error, created_at, updated_at) VALUES \
         ('save_card', 'save_card:pi_1', '{{}}', 'failed', 'attach', 3, 'resource_missing', 'No such PaymentMethod', {now}, {now}), \
         ('save_card', 'save_card:pi_2', '{{}}', 'done', 'done', 0, NULL, NULL, {now}, {now}), \
         ('notify', 'notify:chk_1:1', '{{}}', 'failed', 'send', 7, 'http_500', 'HTTP 500', {now}, {now})"
    ));
    let (status, actions) = admin(&app, "GET", "/actions", None).await;
    assert_eq!(status, 200);
    let keys: Vec<&str> = actions["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["idempotency_key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["save_card:pi_2", "save_card:pi_1"],
        "newest first, no notification"
    );
    let (_, failed) = admin(&app, "GET", "/actions?status=failed", None).await;
    assert_eq!(failed["data"].as_array().unwrap().len(), 1);
    let action = &failed["data"][0];
    assert_eq!(action["last_error_code"], "resource_missing");
    assert_eq!(action["step"], "attach");
    let id = action["id"].as_i64().unwrap();

    let (_, notifications) = admin(&app, "GET", "/notifications", None).await;
    assert_eq!(notifications["data"].as_array().unwrap().len(), 1);
    assert_eq!(notifications["data"][0]["kind"], "notify");
    let notification = notifications["data"][0]["id"].as_i64().unwrap();

    // An action is not retried through /notifications, and the other way round.
    let (status, _) = admin(&app, "POST", &format!("/notifications/{id}/retry"), None).await;
    assert_eq!(status, 404);
    let (status, _) = admin(
        &app,
        "POST",
        &format!("/actions/{notification}/retry"),
        None,
    )
    .await;
    assert_eq!(status, 404);

    let (status, retried) = admin(&app, "POST", &format!("/actions/{id}/retry"), None).await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["status"], "pending");
    assert_eq!(retried["attempts"], 0);
    assert_eq!(retried["step"], "attach", "resumes where it stopped");
    let (status, body) = admin(&app, "POST", &format!("/actions/{id}/retry"), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("not_retryable"))
    );
    let (status, retried) = admin(
        &app,
        "POST",
        &format!("/notifications/{notification}/retry"),
        None,
    )
    .await;
    assert_eq!((status, retried["status"].as_str()), (200, Some("pending")));
    let (status, _) = admin(&app, "GET", "/actions?status=lost", None).await;
    assert_eq!(status, 422);
}
both_backends!(actions_and_notifications_are_listed_apart_and_retried);
