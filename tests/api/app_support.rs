//! What the app API tests share: an app with the API (and notifications) on, requests with a
//! bearer token, the fake Stripe wired to send its webhooks to payhook, a notification sink
//! (wiremock standing in for the app), and the independent verifier of notification
//! signatures (the Standard Webhooks reference library for Python, `.ci/notify-oracle`).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use payhook::config::{ApiToken, Config};
use serde_json::{json, Value};
use wiremock::MockServer;

use crate::fake_stripe::{stripe_config, FakeStripe};
use crate::helpers::{spawn_app_on, Backend, TestApp};

pub const TOKEN: &str = "apitok_test_0123456789";
/// Two notification secrets: payhook signs with both (a rotation).
pub const NOTIFY_SECRETS: [&str; 2] = [
    "whsec_pt0kU9VOyOIMveEMuw2eGRCSRxN802YRrvigaZuSCP4=",
    "whsec_Q7QdFfenq9n0mL3v4/aaJKC0YXwl2wr1Rpx/eRNbi2U=",
];

/// Turns the app API on (one token), and notifications to `notify_url` when given, with a
/// retry schedule of `retry_ms` per retry (the contract's is minutes to hours).
pub fn api_config(config: &mut Config, notify_url: Option<&str>, retry_ms: u64) {
    config.api_tokens = vec![ApiToken::new(TOKEN.to_owned())];
    if let Some(url) = notify_url {
        let secrets = NOTIFY_SECRETS.join(",");
        let mut notify = Config::from_vars(&[
            ("STRIPE_WEBHOOK_SECRET", "whsec_unused"),
            ("NOTIFY_URL", url),
            ("NOTIFY_SECRET", &secrets),
        ])
        .expect("notify config")
        .notify
        .expect("notify on");
        notify.retry_schedule = vec![Duration::from_millis(retry_ms); 7];
        config.notify = Some(notify);
    }
}

/// An app with the API on, Stripe at `stripe_base`, and notifications to `notify_url`.
pub async fn spawn_api_app(
    backend: Backend,
    stripe_base: &str,
    notify_url: Option<&str>,
) -> TestApp {
    spawn_app_on(backend, |c| {
        stripe_config(c, stripe_base);
        api_config(c, notify_url, 50);
    })
    .await
}

/// A request to the app API with the test token; `(status, JSON body, Retry-After)`.
pub async fn api(
    app: &TestApp,
    method: &str,
    path: &str,
    body: Option<Value>,
    idempotency_key: Option<&str>,
) -> (u16, Value, Option<String>) {
    api_as(app, Some(TOKEN), method, path, body, idempotency_key).await
}

pub async fn api_as(
    app: &TestApp,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
    idempotency_key: Option<&str>,
) -> (u16, Value, Option<String>) {
    let url = format!("{}{path}", app.address);
    let mut request = match method {
        "GET" => app.client.get(url),
        _ => app.client.post(url),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(key) = idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body, retry_after)
}

/// Asserts `status` and returns the body.
pub async fn api_ok(
    app: &TestApp,
    method: &str,
    path: &str,
    body: Option<Value>,
    key: Option<&str>,
    status: u16,
) -> Value {
    let (got, body, _) = api(app, method, path, body, key).await;
    assert_eq!(got, status, "{method} {path}: {body}");
    body
}

/// The fake sends every event of the platform to payhook at once, signed with its secret.
pub async fn wire_webhooks(fake: &FakeStripe, app: &TestApp) {
    fake.post(
        "/_config/webhooks/payhook",
        &[
            ("url", &app.webhook_url()),
            ("secret", &app.secret),
            ("delay_ms", "0"),
        ],
    )
    .await;
}

/// Waits (bounded: 15 s) until payhook has stored an event of `event_type` for `object_id`
/// (the fake sends webhooks on its own schedule), then settles the app.
pub async fn wait_for_event(app: &TestApp, event_type: &str, object_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let sql_type = event_type.to_owned();
    let object = object_id.to_owned();
    loop {
        let found = app.with_conn(|c| {
            use diesel::prelude::*;
            use payhook::store::schema::webhook_events::dsl;
            payhook::with_conn!(c, conn => dsl::webhook_events
                .filter(dsl::event_type.eq(&sql_type))
                .filter(dsl::object_id.eq(&object))
                .count()
                .get_result::<i64>(conn))
            .expect("count")
        });
        if found > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no {event_type} for {object_id} arrived from the fake"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.settle().await;
}

/// The notifications the sink received, as the verifier reads them.
pub async fn deliveries(sink: &MockServer) -> Vec<Value> {
    sink.received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let header = |name: &str| {
                r.headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            json!({
                "path": r.url.path(),
                "headers": {
                    "webhook-id": header("webhook-id"),
                    "webhook-timestamp": header("webhook-timestamp"),
                    "webhook-signature": header("webhook-signature"),
                },
                "body": String::from_utf8_lossy(&r.body),
            })
        })
        .collect()
}

/// The parsed body of each delivery.
pub fn bodies(deliveries: &[Value]) -> Vec<Value> {
    deliveries
        .iter()
        .map(|d| serde_json::from_str(d["body"].as_str().expect("body")).expect("JSON body"))
        .collect()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// One `SKIPPED:` line per test binary, on stderr (tests/run collects them).
fn say_skipped(why: &str) {
    static SAID: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    SAID.get_or_init(|| {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: notification signatures checked by the Standard Webhooks library ({why}); \
             run .ci/prepare to install it"
        );
    });
}

/// Runs the Standard Webhooks reference library (Python) over `deliveries` with both secrets;
/// asserts every one verifies under each. Without the library (not installed by
/// `.ci/prepare`) outside CI, says so and checks nothing.
pub fn verify_independently(deliveries: &[Value]) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/notify-oracle");
    let mut child = match Command::new("python3")
        .arg(format!("{dir}/verify.py"))
        .args(NOTIFY_SECRETS)
        .env("PYTHONPATH", format!("{dir}/python"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            assert!(!in_ci(), "python3 unavailable in CI: {e}");
            say_skipped(&format!("python3 unavailable: {e}"));
            return;
        }
    };
    let input = serde_json::to_vec(deliveries).expect("JSON");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("write");
    let out = child.wait_with_output().expect("verifier ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named 'standardwebhooks'") && !in_ci() {
        say_skipped("the standardwebhooks Python package is not installed");
        return;
    }
    assert!(
        out.status.success(),
        "Standard Webhooks verifier refused: {stdout}{stderr}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        deliveries.len(),
        "{stdout}"
    );
}

/// A Stripe event's object id as a string.
pub fn id(v: &Value) -> String {
    v["id"].as_str().expect("object id").to_owned()
}

/// Starts the fake Stripe and an app on it (API on, webhooks wired, notifications to a fresh
/// sink that answers 200); `None` when the fake cannot run here (outside CI).
pub async fn stripe_scene(
    backend: Backend,
    test: &str,
) -> Option<(FakeStripe, TestApp, MockServer)> {
    let fake = FakeStripe::start(test)?;
    let sink = MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(&sink)
        .await;
    let app = spawn_api_app(
        backend,
        &fake.base_url,
        Some(&format!("{}/hooks", sink.uri())),
    )
    .await;
    wire_webhooks(&fake, &app).await;
    Some((fake, app, sink))
}
