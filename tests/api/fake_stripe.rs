//! A stateful fake Stripe API (localstripe via `.ci/fake_stripe.py`, see `.ci/fake-stripe.md`)
//! per test, killed on drop, plus the few calls a test makes to set the scene.
//!
//! Without python3 + localstripe the tests that need it pass without running (developer
//! machines): whether the fake can run is asked once per test binary, and the answer is one
//! `SKIPPED: fake-Stripe tests (…)` line straight to stderr, which `tests/run` collects into
//! its closing line; never a Python traceback per test. With `CI=true` they fail instead, so
//! CI can never skip them silently.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

pub const API_KEY: &str = "sk_test_payhook_fake";

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/fake_stripe.py");

pub struct FakeStripe {
    pub base_url: String,
    child: Child,
    /// Kept open: the fake exits on EOF, so it dies with the test process however that ends.
    _stdin: Option<ChildStdin>,
    client: reqwest::Client,
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        drop(self._stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The interpreter the fake runs on: `PAYHOOK_FAKE_STRIPE_PYTHON` (`tests/run` points it at
/// the venv it installed the pinned packages into), else `python3` from `PATH`.
pub fn python() -> String {
    std::env::var("PAYHOOK_FAKE_STRIPE_PYTHON")
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| "python3".to_owned())
}

/// Whether the fake can start with `python` (and its extra `flags`): `--help` runs the
/// script's imports and nothing else. `Err` is one line, such as "localstripe is not
/// installed", whatever the interpreter printed.
fn check_runnable(python: &str, flags: &[&str]) -> Result<(), String> {
    let out = Command::new(python)
        .args(flags)
        .args([SCRIPT, "--help"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("no message");
    // The script's own line ("fake Stripe: x is not installed (how)"), or the last line of
    // a traceback from an import outside its guard ("… No module named 'x'").
    let why = last.trim_start_matches("fake Stripe: ");
    let why = if let Some((_, name)) = why.split_once("No module named ") {
        format!("{} is not installed", name.trim_matches('\''))
    } else if let Some((what, _)) = why.split_once(" is not installed") {
        format!("{what} is not installed")
    } else {
        why.to_owned()
    };
    Err(why)
}

/// [`check_runnable`] with the configured interpreter, once per test binary.
fn runnable() -> &'static Result<(), String> {
    static RUNNABLE: OnceLock<Result<(), String>> = OnceLock::new();
    RUNNABLE.get_or_init(|| check_runnable(&python(), &[]))
}

impl FakeStripe {
    /// Starts the fake, or returns `None` (after saying why) when it cannot run here and
    /// this is not CI.
    pub fn start(test: &str) -> Option<Self> {
        let started = match runnable() {
            Ok(()) => Self::try_start(),
            Err(why) => Err(why.clone()),
        };
        match started {
            Ok(fake) => Some(fake),
            Err(why) if !in_ci() => {
                static SAID: OnceLock<()> = OnceLock::new();
                SAID.get_or_init(|| {
                    // Straight to stderr: the test harness captures eprintln! of passing tests.
                    let _ = writeln!(
                        std::io::stderr(),
                        "SKIPPED: fake-Stripe tests ({why}); `python3 -m pip install -r \
                         .ci/requirements-fake-stripe.txt` (tests/run does it in a venv) to run \
                         them"
                    );
                });
                // Captured: shown with `--nocapture`, naming each test that did not run.
                println!("SKIPPED {test}: fake Stripe unavailable ({why})");
                None
            }
            Err(why) => panic!("{test}: fake Stripe unavailable in CI: {why}"),
        }
    }

    fn try_start() -> Result<Self, String> {
        let python = python();
        let mut child = Command::new(&python)
            .args([SCRIPT, "--port", "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run {python}: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("reading its port: {e}"))?;
        let Some(port) = line.trim().strip_prefix("LISTENING ") else {
            let _ = child.kill();
            let status = child.wait().ok();
            return Err(format!(
                "it did not start (exit {status:?}; is localstripe installed?)"
            ));
        };
        Ok(Self {
            base_url: format!("http://127.0.0.1:{port}"),
            child,
            _stdin: stdin,
            client: reqwest::Client::new(),
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Value {
        let response = request
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("fake Stripe answers");
        let status = response.status();
        let body: Value = response.json().await.expect("JSON from fake Stripe");
        assert!(status.is_success(), "fake Stripe said {status}: {body}");
        body
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let url = format!("{}{path}", self.base_url);
        self.send(self.client.post(url).form(form)).await
    }

    pub async fn get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.base_url);
        self.send(self.client.get(url)).await
    }

    /// A card payment method (the fingerprint depends on the number only).
    pub async fn card(&self, number: &str, email: &str) -> Value {
        self.post(
            "/v1/payment_methods",
            &[
                ("type", "card"),
                ("card[number]", number),
                ("card[exp_month]", "12"),
                ("card[exp_year]", "2031"),
                ("card[cvc]", "123"),
                ("billing_details[email]", email),
            ],
        )
        .await
    }
}

/// The event Stripe would send for `object` (the fake sends none for most of our flows).
pub fn event_for(event_id: &str, event_type: &str, object: &Value) -> Value {
    serde_json::json!({
        "id": event_id, "object": "event", "api_version": "2025-09-30.clover",
        "created": payhook::store::now_secs(), "livemode": false, "pending_webhooks": 1,
        "type": event_type, "data": {"object": object}
    })
}

// --- apps wired to a Stripe API (the fake here, or a wiremock server) -------------------

use std::time::Duration;

use payhook::config::{ApiKey, Config};
use payhook::store::outbox::{self, OutboxRow};

use crate::helpers::{spawn_app_on, Backend, TestApp};

/// Test settings for the action worker: quick polling and retries, short timeouts.
pub fn stripe_config(config: &mut Config, base_url: &str) {
    config.stripe_secret_key = Some(ApiKey::new(API_KEY.to_owned()));
    config.stripe_api_base = base_url.to_owned();
    config.actions.poll_interval = Duration::from_millis(20);
    config.actions.retry_base = Duration::from_millis(20);
    config.actions.retry_cap = Duration::from_millis(200);
    config.actions.request_timeout = Duration::from_secs(5);
    config.actions.lease = Duration::from_secs(10);
    config.actions.shutdown_grace = Duration::ZERO;
    config.actions.max_rps = 1000.0;
    config.actions.burst = 1000.0;
}

pub async fn spawn_stripe_app(backend: Backend, base_url: &str) -> TestApp {
    spawn_app_on(backend, |c| stripe_config(c, base_url)).await
}

pub fn action(app: &TestApp, key: &str) -> Option<OutboxRow> {
    app.with_conn(|c| outbox::find_item_by_key(c, key).expect("query"))
}

/// Settles the app, then returns the item `key`, which must have `status`.
pub async fn wait_for_action(app: &TestApp, key: &str, status: &str) -> OutboxRow {
    app.settle().await;
    let found = action(app, key).unwrap_or_else(|| panic!("no outbox item {key}"));
    assert_eq!(
        found.status.as_str(),
        status,
        "outbox item {key}: {found:?}"
    );
    found
}

/// The local customer a `save_card` item is for (from its data).
pub fn item_customer(item: &OutboxRow) -> Option<i64> {
    let data: Value = serde_json::from_str(&item.data).expect("item data is JSON");
    data["customer_id"].as_i64()
}

/// The payment method a `save_card` item saves (from its data).
pub fn item_payment_method(item: &OutboxRow) -> String {
    let data: Value = serde_json::from_str(&item.data).expect("item data is JSON");
    data["payment_method_id"]
        .as_str()
        .expect("payment_method_id")
        .to_owned()
}

/// Every `save_card` item, oldest first.
pub fn save_card_items(app: &TestApp) -> Vec<OutboxRow> {
    app.with_conn(|c| outbox::list_items(c, payhook::outbox::save_card::KIND).expect("list"))
}

/// What became of the card of the checkout following `intent_id`: status, error code and
/// error message (`None` when the checkout saves no card).
pub fn card_of(app: &TestApp, intent_id: &str) -> Option<(String, Option<String>, Option<String>)> {
    let checkout = app.checkout(intent_id).expect("checkout exists");
    app.with_conn(|c| payhook::outbox::save_card::card_outcome(c, &checkout.id).expect("query"))
        .map(|card| (card.status.as_str().to_owned(), card.error_code, card.error))
}

pub fn card_status(app: &TestApp, intent_id: &str) -> Option<String> {
    card_of(app, intent_id).map(|c| c.0)
}

/// A machine without the pinned packages: the script says so in one line (no traceback, no
/// `LISTENING`), and the harness turns that into the reason of its single SKIPPED line.
#[test]
fn a_missing_fake_stripe_is_one_line_not_a_traceback() {
    let python = python();
    // `-S`: no site-packages, so neither localstripe nor aiohttp can be imported.
    let out = match Command::new(&python)
        .args(["-S", SCRIPT, "--port", "0"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            assert!(!in_ci(), "CI must have {python}: {e}");
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: fake-Stripe tests (cannot run {python}: {e}); install python3 to run them"
            );
            return;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "no LISTENING line expected: {:?}",
        out.stdout
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line, not a traceback:\n{stderr}"
    );
    assert!(
        stderr.starts_with("fake Stripe: localstripe is not installed"),
        "{stderr}"
    );
    assert_eq!(
        check_runnable(&python, &["-S"]),
        Err("localstripe is not installed".to_owned())
    );
}
