//! `GET /metrics` read by a real Prometheus parser: the official Python client's OpenMetrics
//! parser (strict: it checks types, suffixes, histogram buckets and `# EOF`) and its classic
//! text-format parser, both of which must accept the exposition. Counters move by exactly
//! the deliveries a test makes, per outcome.

use std::io::Write;
use std::process::{Command, Stdio};

use payhook::config::WebhookSecret;
use payhook::store::now_secs;
use payhook::stripe::signature::header_for;
use serde_json::Value;

use crate::helpers::{both_backends, bytes, intent_event, spawn_app_on, Backend, TestApp};

/// One sample as the parser read it.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Every sample of one scrape.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// The value of the sample `name` with exactly `labels`; 0 when absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .collect();
        assert!(found.len() <= 1, "{name} {labels:?} twice");
        found.first().map_or(0.0, |s| s.value)
    }

    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.samples.iter().any(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
    }
}

const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as classic
text = sys.stdin.read()
samples = [
    {"name": s.name, "labels": sorted(s.labels.items()), "value": s.value}
    for family in openmetrics(text) for s in family.samples
]
classic_count = sum(len(family.samples) for family in classic(text))
print(json.dumps({"samples": samples, "classic": classic_count}))
"#;

/// Says once, straight to stderr (where `tests/run` collects it), that the parser tests did
/// not run.
fn skipped(why: &str) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: /metrics parser checks ({why}); `python3 -m pip install -r \
             .ci/requirements-metrics.txt` (tests/run does it in a venv) to run them"
        );
    });
}

/// Parses `text` with the official parsers (the interpreter of the fake Stripe, which
/// `tests/run` installs them beside); `None` (after saying why) when they are not installed
/// outside CI.
fn parse(text: &str) -> Option<Vec<Sample>> {
    let python = crate::fake_stripe::python();
    let child = Command::new(&python)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if !crate::helpers::in_ci() => {
            skipped(&format!("cannot run {python}: {e}"));
            return None;
        }
        Err(e) => panic!("{python}: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        if stderr.contains("No module named 'prometheus_client'") && !crate::helpers::in_ci() {
            skipped(&format!("{python} has no prometheus_client"));
            return None;
        }
        panic!("the Prometheus parser refused /metrics: {stderr}\n{text}");
    }
    let parsed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let samples: Vec<Sample> = parsed["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Sample {
            name: s["name"].as_str().unwrap().to_owned(),
            labels: s["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|kv| {
                    (
                        kv[0].as_str().unwrap().to_owned(),
                        kv[1].as_str().unwrap().to_owned(),
                    )
                })
                .collect(),
            value: s["value"].as_f64().unwrap(),
        })
        .collect();
    assert_eq!(
        parsed["classic"].as_u64().unwrap() as usize,
        samples.len(),
        "both parsers read the same samples"
    );
    Some(samples)
}

/// `GET /metrics`, parsed; `None` when the parser is not installed (outside CI).
pub async fn scrape(app: &TestApp) -> Option<Scrape> {
    let response = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let samples = parse(&text)?;
    // Label values are bounded: never an id of an event, object or customer.
    for sample in &samples {
        for (key, value) in &sample.labels {
            for prefix in ["evt_", "pi_", "seti_", "pm_", "cus_", "chk_", "acct_"] {
                assert!(
                    !value.starts_with(prefix),
                    "{} has {key}={value}",
                    sample.name
                );
            }
        }
    }
    Some(Scrape { samples })
}

async fn post(app: &TestApp, body: &[u8], header: Option<String>) -> u16 {
    app.post_with_header(body, header).await.status().as_u16()
}

async fn every_delivery_is_counted_once_by_outcome_and_secret(backend: Backend) {
    let app = spawn_app_on(backend, |config| {
        // Rotating: the old secret first (index 0), the new one second (index 1).
        config.webhook_secrets = vec![
            WebhookSecret::new("whsec_old_0123456789".into()),
            WebhookSecret::new(crate::helpers::SECRET.into()),
        ];
    })
    .await;
    let Some(before) = scrape(&app).await else {
        return;
    };
    let requests = "payhook_webhook_requests_total";
    for outcome in [
        "accepted",
        "duplicate",
        "signature_mismatch",
        "stale_timestamp",
    ] {
        assert!(
            before.has(requests, &[("endpoint", "default"), ("outcome", outcome)]),
            "{outcome} exists from the start"
        );
        assert_eq!(
            before.value(requests, &[("endpoint", "default"), ("outcome", outcome)]),
            0.0
        );
    }
    // A dashboard's rate() needs the Stripe-call series before the first call.
    let stripe = "payhook_stripe_requests_total";
    for outcome in ["ok", "retryable", "permanent"] {
        let labels = [("operation", "attach"), ("outcome", outcome)];
        assert!(before.has(stripe, &labels), "{stripe} {labels:?} at start");
        assert_eq!(before.value(stripe, &labels), 0.0);
    }

    let now = now_secs();
    let created = bytes(&intent_event(
        "evt_m1",
        "payment_intent.created",
        "pi_m1",
        now - 10,
    ));
    let succeeded = bytes(&intent_event(
        "evt_m2",
        "payment_intent.succeeded",
        "pi_m1",
        now - 5,
    ));
    // The success's second, less progress: refused by the state machine when applied.
    let stale = bytes(&intent_event(
        "evt_m3",
        "payment_intent.processing",
        "pi_m1",
        now - 5,
    ));
    let other = bytes(&intent_event("evt_m4", "customer.created", "pi_m9", now));
    // New secret (index 1): three new events, one of them delivered twice.
    for body in [&created, &succeeded, &stale, &created] {
        assert_eq!(
            post(&app, body, Some(header_for(body, &app.secret, now))).await,
            200
        );
    }
    // Old secret (index 0): one new event.
    assert_eq!(
        post(
            &app,
            &other,
            Some(header_for(&other, "whsec_old_0123456789", now))
        )
        .await,
        200
    );
    // Rejections: one of each kind.
    assert_eq!(post(&app, &created, None).await, 400);
    assert_eq!(
        post(
            &app,
            &created,
            Some(header_for(&created, "whsec_wrong", now))
        )
        .await,
        400
    );
    assert_eq!(
        post(
            &app,
            &created,
            Some(header_for(&created, &app.secret, now - 3600))
        )
        .await,
        400
    );

    let Some(after) = scrape(&app).await else {
        return;
    };
    let count =
        |outcome: &str| after.value(requests, &[("endpoint", "default"), ("outcome", outcome)]);
    assert_eq!(count("accepted"), 4.0);
    assert_eq!(count("duplicate"), 1.0);
    assert_eq!(count("missing_signature_header"), 1.0);
    assert_eq!(count("signature_mismatch"), 1.0);
    assert_eq!(count("stale_timestamp"), 1.0);
    let matched = "payhook_signing_secret_matched_total";
    assert_eq!(
        after.value(matched, &[("endpoint", "default"), ("index", "0")]),
        1.0
    );
    assert_eq!(
        after.value(matched, &[("endpoint", "default"), ("index", "1")]),
        4.0,
        "duplicates included, stale signatures not"
    );
    assert_eq!(after.value("payhook_webhook_ack_seconds_count", &[]), 5.0);
    assert_eq!(
        after.value("payhook_webhook_ack_seconds_bucket", &[("le", "+Inf")]),
        5.0
    );
    // Read from the database at scrape time: nothing is applied yet.
    assert_eq!(after.value("payhook_events_pending", &[]), 4.0);
    assert_eq!(
        after.value(
            "payhook_events_total",
            &[("endpoint", "default"), ("status", "processed")]
        ),
        0.0
    );

    app.settle().await;
    let Some(applied) = scrape(&app).await else {
        return;
    };
    let events = "payhook_events_total";
    assert_eq!(
        applied.value(events, &[("endpoint", "default"), ("status", "processed")]),
        3.0
    );
    assert_eq!(
        applied.value(events, &[("endpoint", "default"), ("status", "ignored")]),
        1.0
    );
    assert_eq!(
        applied.value(events, &[("endpoint", "default"), ("status", "failed")]),
        0.0
    );
    assert_eq!(applied.value("payhook_events_pending", &[]), 0.0);
    assert_eq!(applied.value("payhook_event_lag_seconds_count", &[]), 4.0);
    assert!(applied.value("payhook_event_lag_seconds_sum", &[]) >= 4.0 * 4.0);
    let transitions = "payhook_checkout_transitions_total";
    let t =
        |to: &str, outcome: &str| applied.value(transitions, &[("to", to), ("outcome", outcome)]);
    assert_eq!(t("pending", "applied"), 1.0);
    assert_eq!(t("succeeded", "applied"), 1.0);
    assert_eq!(t("processing", "refused"), 1.0);
    assert_eq!(t("processing", "applied"), 0.0);
    // Nothing was counted twice by settling again.
    app.settle().await;
    let again = scrape(&app).await.unwrap();
    assert_eq!(
        again.value(events, &[("endpoint", "default"), ("status", "processed")]),
        3.0
    );
    assert_eq!(
        again.value(
            requests,
            &[("endpoint", "default"), ("outcome", "accepted")]
        ),
        4.0
    );
}
both_backends!(every_delivery_is_counted_once_by_outcome_and_secret);

async fn outbox_gauges_mirror_the_database_by_status(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let now = now_secs();
    app.exec(&format!(
        "INSERT INTO outbox (kind, idempotency_key, data, status, step, created_at, updated_at) VALUES \
         ('save_card', 'k1', '{{}}', 'failed', 'customer', {now}, {now}), \
         ('save_card', 'k2', '{{}}', 'pending', 'customer', {now}, {now}), \
         ('save_card', 'k3', '{{}}', 'pending', 'customer', {now}, {now}), \
         ('notify', 'k4', '{{}}', 'failed', 'send', {now}, {now})"
    ));
    let Some(scrape) = scrape(&app).await else {
        return;
    };
    assert_eq!(
        scrape.value("payhook_actions", &[("status", "pending")]),
        2.0
    );
    assert_eq!(
        scrape.value("payhook_actions", &[("status", "failed")]),
        1.0
    );
    assert_eq!(scrape.value("payhook_actions", &[("status", "done")]), 0.0);
    assert_eq!(
        scrape.value("payhook_notifications", &[("status", "failed")]),
        1.0
    );
    assert_eq!(
        scrape.value("payhook_notifications", &[("status", "pending")]),
        0.0
    );
}
both_backends!(outbox_gauges_mirror_the_database_by_status);
