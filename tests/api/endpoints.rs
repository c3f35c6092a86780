//! Several webhook endpoints (API.md section 4): each verified with its own secrets, its kind
//! rule (account or connect) before its livemode rule, the endpoint recorded on each event
//! and counted in the metrics.

use payhook::config::{EndpointConfig, EndpointKind, EndpointName, LivemodePolicy, WebhookSecret};
use payhook::store::events::EventStatus;
use payhook::store::now_secs;
use payhook::stripe::signature::header_for;
use serde_json::{json, Value};

use crate::helpers::{both_backends, bytes, intent_event, spawn_app_on, Backend, TestApp};
use crate::metrics::scrape;

pub const CONNECT_SECRET: &str = "whsec_connect_0123456789";
pub const LIVE_SECRETS: [&str; 2] = ["whsec_live_old_0123456789", "whsec_live_new_0123456789"];

pub fn endpoint(
    name: &str,
    secrets: &[&str],
    kind: EndpointKind,
    livemode: LivemodePolicy,
) -> EndpointConfig {
    EndpointConfig {
        name: EndpointName::parse(name).expect("endpoint name"),
        secrets: secrets
            .iter()
            .map(|s| WebhookSecret::new((*s).to_owned()))
            .collect(),
        kind,
        livemode,
    }
}

/// The default endpoint (test secret, account, any), `connect` (Connect, any) and `live`
/// (account, live only, rotating two secrets).
pub async fn spawn_endpoints_app(backend: Backend) -> TestApp {
    spawn_app_on(backend, |config| {
        config.named_endpoints = vec![
            endpoint(
                "connect",
                &[CONNECT_SECRET],
                EndpointKind::Connect,
                LivemodePolicy::Any,
            ),
            endpoint(
                "live",
                &LIVE_SECRETS,
                EndpointKind::Account,
                LivemodePolicy::Live,
            ),
        ];
    })
    .await
}

/// POSTs `body` to `/webhooks/stripe/{name}` signed with `secret`: `(status, JSON answer)`.
pub async fn post_to(app: &TestApp, name: &str, body: &[u8], secret: &str) -> (u16, Value) {
    let response = app
        .client
        .post(format!("{}/webhooks/stripe/{name}", app.address))
        .header("Stripe-Signature", header_for(body, secret, now_secs()))
        .body(body.to_vec())
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn event(id: &str, account: Option<&str>, livemode: bool) -> Vec<u8> {
    let mut event = intent_event(
        id,
        "payment_intent.created",
        &format!("pi_{id}"),
        now_secs(),
    );
    event["livemode"] = json!(livemode);
    if let Some(account) = account {
        event["account"] = json!(account);
    }
    bytes(&event)
}

async fn each_endpoint_accepts_only_its_own_secrets(backend: Backend) {
    let app = spawn_endpoints_app(backend).await;
    let platform = event("evt_ep_platform", None, true);
    let connected = event("evt_ep_connected", Some("acct_A"), false);

    // The default endpoint's secret on the others, and theirs on it: signature_mismatch.
    assert_eq!(post_to(&app, "live", &platform, &app.secret).await.0, 400);
    assert_eq!(
        post_to(&app, "connect", &connected, LIVE_SECRETS[1])
            .await
            .0,
        400
    );
    let (status, body) = post_to(&app, "connect", &connected, &app.secret).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("signature_mismatch"))
    );
    let header = header_for(&platform, CONNECT_SECRET, now_secs());
    assert_eq!(
        app.post_with_header(&platform, Some(header)).await.status(),
        400
    );
    assert_eq!(
        app.count_events(),
        0,
        "nothing stored from a foreign signature"
    );

    // Each with its own: stored, with the endpoint and the matched secret's position.
    let (status, body) = post_to(&app, "connect", &connected, CONNECT_SECRET).await;
    assert_eq!(
        (status, &body),
        (200, &json!({"received": true, "duplicate": false}))
    );
    // Rotation on `live` (old and new both valid) leaves the others alone.
    assert_eq!(
        post_to(&app, "live", &platform, LIVE_SECRETS[0]).await.0,
        200
    );
    assert_eq!(
        post_to(&app, "live", &platform, LIVE_SECRETS[1]).await.1["duplicate"],
        true
    );
    let default_event = event("evt_ep_default", None, false);
    app.deliver(&default_event).await;

    let stored = app.event("evt_ep_connected").expect("stored");
    assert_eq!(
        (stored.endpoint.as_str(), stored.secret_index),
        ("connect", Some(0))
    );
    assert_eq!(stored.account.as_deref(), Some("acct_A"));
    let stored = app.event("evt_ep_platform").expect("stored");
    assert_eq!(
        (stored.endpoint.as_str(), stored.secret_index),
        ("live", Some(0))
    );
    let stored = app.event("evt_ep_default").expect("stored");
    assert_eq!(
        (stored.endpoint.as_str(), stored.secret_index),
        ("default", Some(0))
    );

    // An endpoint not configured: 404 not_found, whatever the signature.
    let (status, body) = post_to(&app, "nope", &platform, &app.secret).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));

    let Some(metrics) = scrape(&app).await else {
        return;
    };
    let requests = "payhook_webhook_requests_total";
    let count = |endpoint: &str, outcome: &str| {
        metrics.value(requests, &[("endpoint", endpoint), ("outcome", outcome)])
    };
    assert_eq!(count("connect", "accepted"), 1.0);
    assert_eq!(count("connect", "signature_mismatch"), 2.0);
    assert_eq!(count("live", "accepted"), 1.0);
    assert_eq!(count("live", "duplicate"), 1.0);
    assert_eq!(count("live", "signature_mismatch"), 1.0);
    assert_eq!(count("default", "accepted"), 1.0);
    assert_eq!(count("default", "signature_mismatch"), 1.0);
    let matched = "payhook_signing_secret_matched_total";
    let matched = |endpoint: &str, index: &str| {
        metrics.value(matched, &[("endpoint", endpoint), ("index", index)])
    };
    assert_eq!(matched("live", "0"), 1.0);
    assert_eq!(matched("live", "1"), 1.0);
    assert_eq!(matched("connect", "0"), 1.0);
    assert_eq!(matched("default", "0"), 1.0);
}
both_backends!(each_endpoint_accepts_only_its_own_secrets);

async fn an_event_of_the_wrong_kind_is_refused_before_its_livemode_is_looked_at(backend: Backend) {
    let app = spawn_endpoints_app(backend).await;
    // A platform event on the Connect endpoint, a connected account's on account endpoints
    // (`live` would also ignore it for its test mode: the kind rule comes first).
    let platform = event("evt_kind_1", None, false);
    let connected = event("evt_kind_2", Some("acct_A"), false);
    for (name, body, secret) in [
        ("connect", &platform, CONNECT_SECRET),
        ("live", &connected, LIVE_SECRETS[0]),
        ("default", &connected, crate::helpers::SECRET),
    ] {
        let (status, answer) = post_to(&app, name, body, secret).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("wrong_endpoint_kind")),
            "{name}: {answer}"
        );
    }
    assert_eq!(app.count_events(), 0, "nothing stored");
    let Some(metrics) = scrape(&app).await else {
        return;
    };
    let refused = |endpoint: &str| {
        metrics.value(
            "payhook_webhook_requests_total",
            &[("endpoint", endpoint), ("outcome", "wrong_endpoint_kind")],
        )
    };
    assert_eq!(
        (refused("connect"), refused("live"), refused("default")),
        (1.0, 1.0, 1.0)
    );
}
both_backends!(an_event_of_the_wrong_kind_is_refused_before_its_livemode_is_looked_at);

async fn a_test_mode_event_on_a_live_endpoint_is_acknowledged_stored_ignored_and_counted(
    backend: Backend,
) {
    let app = spawn_endpoints_app(backend).await;
    let test_mode = event("evt_test_mode", None, false);
    let (status, body) = post_to(&app, "live", &test_mode, LIVE_SECRETS[1]).await;
    assert_eq!(
        (status, &body),
        (200, &json!({"received": true, "ignored": "livemode"}))
    );
    let stored = app.event("evt_test_mode").expect("stored");
    assert_eq!(stored.status, EventStatus::Ignored);
    assert!(
        stored
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("livemode")),
        "the reason is kept: {:?}",
        stored.last_error
    );
    // Never applied: no checkout for its intent, even once the inbox is drained.
    app.settle().await;
    assert!(app.checkout("pi_evt_test_mode").is_none());
    // A live-mode event on the same endpoint is applied.
    let live = event("evt_live_mode", None, true);
    assert_eq!(post_to(&app, "live", &live, LIVE_SECRETS[1]).await.0, 200);
    app.settle().await;
    assert_eq!(
        app.event("evt_live_mode").expect("stored").status,
        EventStatus::Processed
    );

    let Some(metrics) = scrape(&app).await else {
        return;
    };
    let events = |status: &str| {
        metrics.value(
            "payhook_events_total",
            &[("endpoint", "live"), ("status", status)],
        )
    };
    assert_eq!((events("ignored"), events("processed")), (1.0, 1.0));
    assert_eq!(
        metrics.value(
            "payhook_webhook_requests_total",
            &[("endpoint", "live"), ("outcome", "accepted")]
        ),
        2.0
    );
}
both_backends!(a_test_mode_event_on_a_live_endpoint_is_acknowledged_stored_ignored_and_counted);

async fn stored_snapshot_events_are_counted_by_api_version(backend: Backend) {
    let app = spawn_endpoints_app(backend).await;
    for (id, version) in [
        ("evt_v1", "2024-06-20"),
        ("evt_v2", "2025-09-30.clover"),
        ("evt_v3", "2025-09-30.clover"),
    ] {
        let mut body = intent_event(id, "payment_intent.created", "pi_versions", now_secs());
        body["api_version"] = json!(version);
        app.deliver(&bytes(&body)).await;
        if id == "evt_v3" {
            // A duplicate is not stored again, so not counted again.
            app.deliver(&bytes(&body)).await;
        }
    }
    let Some(metrics) = scrape(&app).await else {
        return;
    };
    let by_version =
        |v: &str| metrics.value("payhook_events_by_api_version_total", &[("api_version", v)]);
    assert_eq!(
        (by_version("2024-06-20"), by_version("2025-09-30.clover")),
        (1.0, 2.0)
    );
}
both_backends!(stored_snapshot_events_are_counted_by_api_version);

async fn the_admin_api_shows_and_filters_events_by_endpoint(backend: Backend) {
    let app = spawn_app_on(backend, |config| {
        config.named_endpoints = vec![endpoint(
            "connect",
            &[CONNECT_SECRET],
            EndpointKind::Connect,
            LivemodePolicy::Any,
        )];
        config.admin_tokens = vec![payhook::config::AdminToken::new("admtok_endpoints".into())];
    })
    .await;
    app.deliver(&event("evt_adm_default", None, false)).await;
    let connected = event("evt_adm_connect", Some("acct_A"), false);
    assert_eq!(
        post_to(&app, "connect", &connected, CONNECT_SECRET).await.0,
        200
    );
    let get = |path: String| {
        let request = app
            .client
            .get(format!("{}{path}", app.address))
            .bearer_auth("admtok_endpoints");
        async move {
            let response = request.send().await.expect("request sent");
            assert_eq!(response.status().as_u16(), 200);
            response.json::<Value>().await.expect("JSON")
        }
    };
    let page = get("/admin/v1/events?endpoint=connect".into()).await;
    let ids: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["evt_adm_connect"]);
    assert_eq!(page["data"][0]["endpoint"], "connect");
    let one = get("/admin/v1/events/evt_adm_default".into()).await;
    assert_eq!(one["endpoint"], "default");
}
both_backends!(the_admin_api_shows_and_filters_events_by_endpoint);
