//! The `notify` kind: notifications to the app, signed per the Standard Webhooks
//! specification (API.md section 2).
//!
//! [`enqueue`] writes one item in the transaction of the change it reports, with the body
//! fixed then (the checkout object and its `sequence`), so every attempt sends the same bytes
//! under the same `webhook-id`; only `webhook-timestamp` and the signatures are made per
//! attempt. The signing is the `standardwebhooks` crate's (the specification's own Rust
//! library): `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, one per secret of
//! `NOTIFY_SECRET`, space-separated.
//!
//! Delivery (one step, `deliver`): any 2xx is delivered; 410 stops at once (`failed`, code
//! `gone`); anything else, a 3xx included (redirects are never followed: the app's URL is the
//! one configured), a timeout (15 s) or a network error is retried on the contract's schedule,
//! waiting at least the answer's `Retry-After`; after the last try the item is `failed`,
//! visible (`payhook notifications list`) and retryable (`payhook notifications retry`). The
//! runner records every attempt in `outbox_attempts` with its latency and response code.

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::runner::{Failure, Kind, Progress, RetryPolicy, StepContext};
use crate::config::NotifyConfig;
use crate::store::outbox::{self as store, NewOutboxItem};
use crate::store::{now_secs, Conn, StoreResult};

/// `outbox.kind` of this work.
pub const KIND: &str = "notify";

/// The only step.
const DELIVER: &str = "deliver";

/// How long one delivery may take.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// The contract's retry schedule: the n-th retry waits about this long.
pub fn default_schedule() -> Vec<Duration> {
    [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000]
        .into_iter()
        .map(Duration::from_secs)
        .collect()
}

/// The item's data (`outbox.data`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Data {
    /// `webhook-id`: the same on every attempt, so the app can drop a repeat.
    webhook_id: String,
    #[serde(rename = "type")]
    event_type: String,
    /// The exact body, fixed when queued.
    body: String,
}

/// Queues notification number `sequence` of `checkout_id`: `{"type", "timestamp", "data"}`
/// with `data` the checkout object plus `sequence`. Runs in the caller's transaction.
pub fn enqueue(
    conn: &mut Conn,
    checkout_id: &str,
    event_type: &str,
    sequence: i64,
    mut object: Value,
    now: i64,
) -> StoreResult<()> {
    object["sequence"] = json!(sequence);
    let body = json!({
        "type": event_type,
        "timestamp": rfc3339(now),
        "data": object,
    })
    .to_string();
    let data = json!(Data {
        webhook_id: format!("msg_{:032x}", rand::random::<u128>()),
        event_type: event_type.to_owned(),
        body,
    })
    .to_string();
    let key = format!("{KIND}:{checkout_id}:{sequence}");
    let lane = format!("{KIND}:{checkout_id}");
    store::insert_item(
        conn,
        &NewOutboxItem {
            kind: KIND,
            idempotency_key: &key,
            lane: Some(&lane),
            checkout_id: Some(checkout_id),
            data: &data,
            step: DELIVER,
            created_at: now,
            updated_at: now,
        },
    )?;
    log::debug!("checkout {checkout_id}: queued {event_type} notification #{sequence}");
    Ok(())
}

/// The kind, with the app's endpoint and the signers.
pub struct NotifyKind {
    client: reqwest::Client,
    url: url::Url,
    signers: Vec<standardwebhooks::Webhook>,
    policy: RetryPolicy,
}

impl NotifyKind {
    pub fn new(config: &NotifyConfig) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .user_agent(concat!("payhook/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let signers = config
            .secrets
            .iter()
            .map(|s| standardwebhooks::Webhook::from_bytes(s.key().to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| anyhow::anyhow!("NOTIFY_SECRET cannot sign"))?;
        Ok(Self {
            client,
            url: config.url.as_url().clone(),
            signers,
            policy: RetryPolicy::Schedule(config.retry_schedule.clone()),
        })
    }

    /// `webhook-signature`: one `v1,<base64>` per secret, space-separated.
    fn signature(&self, data: &Data, timestamp: i64) -> Result<String, Failure> {
        let signed: Result<Vec<String>, _> = self
            .signers
            .iter()
            .map(|s| s.sign(&data.webhook_id, timestamp, data.body.as_bytes()))
            .collect();
        signed
            .map(|s| s.join(" "))
            .map_err(|e| Failure::permanent("unsignable", e.to_string()))
    }

    async fn deliver(&self, ctx: &StepContext<'_>) -> Result<Progress, Failure> {
        let data: Data = ctx.data()?;
        let timestamp = now_secs();
        let signature = self.signature(&data, timestamp)?;
        let response = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &data.webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(data.body.clone())
            .send()
            .await
            // Without the URL: it may hold credentials.
            .map_err(|e| {
                let kind = if e.is_timeout() {
                    "timeout"
                } else {
                    "unreachable"
                };
                Failure::retryable(kind, e.without_url().to_string())
            })?;
        let status = response.status();
        ctx.observed_status(status.as_u16());
        if status.is_success() {
            return Ok(Progress::Done {
                result: json!({ "status": status.as_u16(), "webhook_id": data.webhook_id }),
            });
        }
        if status == reqwest::StatusCode::GONE {
            return Err(Failure::permanent(
                "gone",
                "the app answered 410 Gone: no more tries",
            ));
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let what = if status.is_redirection() {
            "a redirect (never followed)"
        } else {
            "not a 2xx"
        };
        let mut failure = Failure::retryable(
            format!("http_{}", status.as_u16()),
            format!("the app answered {status}: {what}"),
        );
        failure.retry_after = retry_after;
        Err(failure)
    }
}

impl Kind for NotifyKind {
    fn name(&self) -> &'static str {
        KIND
    }

    fn run_step<'a>(
        &'a self,
        ctx: &'a StepContext<'a>,
    ) -> BoxFuture<'a, Result<Progress, Failure>> {
        Box::pin(self.deliver(ctx))
    }

    fn retry_policy(&self) -> &RetryPolicy {
        &self.policy
    }
}

/// Unix seconds as `2026-11-30T05:00:00Z` (UTC), for the body's `timestamp`.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_764_478_800), "2025-11-30T05:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_014_800), "2026-11-30T05:00:00Z");
    }

    /// The specification's own test vector (standard-webhooks, spec/standard-webhooks.md).
    #[test]
    fn signatures_match_the_specification_example() {
        let secret =
            crate::config::NotifySecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signer = standardwebhooks::Webhook::from_bytes(secret.key().to_vec()).unwrap();
        let signature = signer
            .sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#,
            )
            .unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn the_schedule_is_the_contracts() {
        let secs: Vec<u64> = default_schedule().iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [5, 300, 1800, 7200, 18000, 36000, 36000]);
    }
}
