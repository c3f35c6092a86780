//! `spawn_app()` and friends: a fresh database and a running payhook per test.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use payhook::config::{parse_webhook_secrets, Config};
use payhook::signature;
use payhook::store::checkouts::{self, CheckoutRow, TransitionRow};
use payhook::store::events::{self, WebhookEvent};
use payhook::store::{now_secs, DatabaseUrl, Pool};
use payhook::Application;
use serde_json::{json, Value};

pub const SECRET: &str = "whsec_test_0123456789abcdef";

pub struct TestApp {
    pub address: String,
    pub pool: Pool,
    pub client: reqwest::Client,
    pub secret: String,
    handle: ServerHandle,
    _dir: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop without waiting; the runtime ends with the test anyway.
        drop(self.handle.stop(false));
    }
}

pub fn init_logs() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// A config for a test: fresh SQLite file, port 0, quick polling.
pub fn test_config(dir: &tempfile::TempDir) -> Config {
    let mut config = Config::new(
        DatabaseUrl::Sqlite(dir.path().join("payhook.sqlite3")),
        parse_webhook_secrets(SECRET),
    );
    config.bind = "127.0.0.1:0".parse().expect("address");
    config.processor.poll_interval = Duration::from_millis(20);
    config.processor.retry_base = Duration::from_millis(10);
    config.http_workers = 2;
    config
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(customize: impl FnOnce(&mut Config)) -> TestApp {
    init_logs();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(&dir);
    customize(&mut config);
    let secret = config
        .webhook_secrets
        .last()
        .expect("a secret")
        .expose()
        .to_owned();
    let app = Application::build(config).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let pool = app.pool();
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        pool,
        client: reqwest::Client::new(),
        secret,
        handle,
        _dir: dir,
    }
}

impl TestApp {
    pub fn webhook_url(&self) -> String {
        format!("{}/webhooks/stripe", self.address)
    }

    /// POSTs `body` signed now with the app's secret.
    pub async fn post_signed(&self, body: &[u8]) -> reqwest::Response {
        let header = signature::header_for(body, &self.secret, now_secs());
        self.post_with_header(body, Some(header)).await
    }

    pub async fn post_with_header(&self, body: &[u8], header: Option<String>) -> reqwest::Response {
        let mut request = self.client.post(self.webhook_url()).body(body.to_vec());
        if let Some(h) = header {
            request = request.header("Stripe-Signature", h);
        }
        request.send().await.expect("request sent")
    }

    /// POSTs and asserts a 200.
    pub async fn deliver(&self, body: &[u8]) -> Value {
        let response = self.post_signed(body).await;
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        assert_eq!(status, 200, "delivery refused: {text}");
        serde_json::from_str(&text).expect("JSON answer")
    }

    /// Waits (bounded) until no event is pending.
    pub async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let counts = self.with_conn(|c| events::count_events_by_status(c).expect("counts"));
            if !counts.iter().any(|(s, n)| s == "pending" && *n > 0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "events still pending: {counts:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn with_conn<T>(&self, f: impl FnOnce(&mut payhook::store::Conn) -> T) -> T {
        let mut conn = self.pool.get().expect("connection");
        f(&mut conn)
    }

    pub fn event(&self, id: &str) -> Option<WebhookEvent> {
        self.with_conn(|c| events::find_event(c, id).expect("query"))
    }

    pub fn checkout(&self, intent_id: &str) -> Option<CheckoutRow> {
        self.with_conn(|c| checkouts::find_checkout_by_intent(c, intent_id).expect("query"))
    }

    pub fn transitions(&self, intent_id: &str) -> Vec<TransitionRow> {
        let checkout = self.checkout(intent_id).expect("checkout exists");
        self.with_conn(|c| checkouts::list_transitions(c, &checkout.id).expect("query"))
    }

    pub fn count_events(&self) -> i64 {
        self.with_conn(|c| events::count_events_by_status(c).expect("counts"))
            .iter()
            .map(|(_, n)| n)
            .sum()
    }
}

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).expect("fixture is JSON")
}

/// A minimal but well-formed intent event.
pub fn intent_event(event_id: &str, event_type: &str, intent_id: &str, created: i64) -> Value {
    let object = if intent_id.starts_with("seti_") {
        "setup_intent"
    } else {
        "payment_intent"
    };
    let mut data = json!({
        "id": intent_id, "object": object, "amount": 1000, "currency": "usd",
        "customer": null, "metadata": {"customer_ref": "user_test"}, "status": "requires_payment_method"
    });
    if event_type.ends_with("failed") {
        let field = if object == "setup_intent" {
            "last_setup_error"
        } else {
            "last_payment_error"
        };
        data[field] = json!({"code": "card_declined", "decline_code": "generic_decline", "type": "card_error"});
    }
    json!({
        "id": event_id, "object": "event", "api_version": "2025-09-30.clover", "created": created,
        "livemode": false, "pending_webhooks": 1, "type": event_type, "data": {"object": data}
    })
}

pub fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialize")
}
