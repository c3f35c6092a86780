//! Configuration: environment variables with CLI flag overrides, parsed into typed values.
//!
//! Every setting is an environment variable (12-factor) and the flag of the same name; `clap`
//! reads both so `payhook --help` documents them in one place. Secrets are held in redacting
//! wrappers whose `Debug` prints `[redacted]`, so no log line or error body can carry one.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::store::{DatabaseUrl, Durability};

macro_rules! secret_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: String) -> Self {
                Self(value)
            }
            /// The secret itself: call only where it is used (HMAC key, Authorization header).
            pub fn expose(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }
    };
}

secret_type!(
    /// A webhook endpoint's signing secret (`whsec_…`).
    WebhookSecret
);
secret_type!(
    /// A Stripe API secret key (`sk_…` or a restricted `rk_…`).
    ApiKey
);

/// Splits `STRIPE_WEBHOOK_SECRET` on commas: several secrets are accepted during a rotation.
pub fn parse_webhook_secrets(raw: &str) -> Vec<WebhookSecret> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| WebhookSecret::new(s.to_owned()))
        .collect()
}

/// Shown when `serve` starts without a webhook secret.
pub const MISSING_SECRET_HELP: &str = "STRIPE_WEBHOOK_SECRET is not set: copy the endpoint's signing secret (whsec_...) from the Stripe dashboard (Developers > Webhooks > your endpoint > Signing secret), or run `stripe listen --forward-to localhost:8080/webhooks/stripe` and use the secret it prints.";

/// Everything `payhook serve` needs, already validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: DatabaseUrl,
    pub bind: SocketAddr,
    pub webhook_secrets: Vec<WebhookSecret>,
    /// Oldest acceptable signature timestamp, in seconds; 0 disables the check.
    pub tolerance_secs: i64,
    pub max_body_bytes: usize,
    pub stripe_secret_key: Option<ApiKey>,
    pub stripe_api_base: String,
    pub durability: Durability,
    pub pool_size: u32,
    /// Longest anything waits for a pooled connection before giving up.
    pub database_wait: Duration,
    pub admission: AdmissionConfig,
    pub processor: ProcessorConfig,
    pub actions: ActionConfig,
    /// HTTP worker threads; 0 lets actix pick one per core.
    pub http_workers: usize,
    /// How long a client may take to send its request headers and body.
    pub client_request_timeout: Duration,
}

/// Group commit of admitted events.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionConfig {
    /// Most events committed in one transaction.
    pub max_batch: usize,
    /// How long a batch may wait for company once the first event arrived. Zero is usually
    /// right: while one batch commits the next one fills up by itself.
    pub max_wait: Duration,
    /// Writer threads (SQLite allows one writer at a time, so more only helps PostgreSQL).
    pub writers: usize,
    /// Admissions waiting for a writer before the HTTP handlers wait too.
    pub queue_depth: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            max_batch: 512,
            max_wait: Duration::ZERO,
            writers: 1,
            queue_depth: 8192,
        }
    }
}

/// The background processor and the expiry sweeper.
#[derive(Debug, Clone, Copy)]
pub struct ProcessorConfig {
    /// Events applied per transaction.
    pub batch_size: i64,
    /// Tries before an event is marked `dead`.
    pub max_attempts: i32,
    /// First retry delay; doubles per attempt, with jitter.
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// How often to look for due retries when no new event wakes the processor.
    pub poll_interval: Duration,
    /// A checkout that has not moved for this long (and can expire) becomes `expired`.
    pub checkout_expiry: Duration,
    pub sweep_interval: Duration,
    /// Processor threads; more than one only pays on PostgreSQL.
    pub workers: usize,
    /// Longest a processing transaction runs before it commits (after the current event).
    pub max_transaction: Duration,
    /// Nice value of the processor's thread (0 to 19): when the CPU is short, acknowledging
    /// deliveries goes first and applying them catches up after (see [`crate::inbox::background`]).
    pub nice: i32,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            max_attempts: 8,
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(3600),
            poll_interval: Duration::from_secs(1),
            checkout_expiry: Duration::from_secs(60 * 60),
            sweep_interval: Duration::from_secs(30),
            workers: 1,
            max_transaction: Duration::from_millis(20),
            nice: 19,
        }
    }
}

/// The action worker that performs Stripe side effects (see [`crate::outbox::save_card`]).
#[derive(Debug, Clone, Copy)]
pub struct ActionConfig {
    /// Stripe requests per second, on average, for the whole process (token bucket). Stripe
    /// allows ~100/s in live mode and 25/s in test mode per account, shared with every other
    /// user of the key; the default leaves room for them.
    pub max_rps: f64,
    /// Requests that may go out back to back after a quiet spell.
    pub burst: f64,
    /// Tries before an action failing with retryable errors is marked `failed`.
    pub max_attempts: i32,
    /// First retry delay; doubles per try, with jitter, up to `retry_cap`.
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// How often the worker looks for due actions.
    pub poll_interval: Duration,
    /// Actions performed at once (each one's calls are sequential).
    pub concurrency: usize,
    /// How long a claim lasts without progress before another worker may take over; every
    /// recorded step extends it. Longer than a few Stripe calls with their timeout.
    pub lease: Duration,
    /// Per-request timeout of Stripe calls.
    pub request_timeout: Duration,
    /// On shutdown, how long in-flight actions may finish before they are abandoned (safe:
    /// their lease runs out and the next start resumes them with the same keys).
    pub shutdown_grace: Duration,
}

impl Default for ActionConfig {
    fn default() -> Self {
        Self {
            max_rps: 20.0,
            burst: 20.0,
            max_attempts: 10,
            retry_base: Duration::from_secs(2),
            retry_cap: Duration::from_secs(15 * 60),
            poll_interval: Duration::from_millis(500),
            concurrency: 4,
            lease: Duration::from_secs(120),
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// A configuration with every default, for tests and embedding.
    pub fn new(database_url: DatabaseUrl, webhook_secrets: Vec<WebhookSecret>) -> Self {
        Self {
            database_url,
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            webhook_secrets,
            tolerance_secs: 300,
            max_body_bytes: 1024 * 1024,
            stripe_secret_key: None,
            stripe_api_base: DEFAULT_STRIPE_API_BASE.to_owned(),
            durability: Durability::Full,
            pool_size: 8,
            database_wait: Duration::from_secs(5),
            admission: AdmissionConfig::default(),
            processor: ProcessorConfig::default(),
            actions: ActionConfig::default(),
            http_workers: 0,
            client_request_timeout: Duration::from_secs(10),
        }
    }
}

pub const DEFAULT_STRIPE_API_BASE: &str = "https://api.stripe.com";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = WebhookSecret::new("whsec_abc".into());
        assert_eq!(format!("{s:?}"), "WebhookSecret([redacted])");
        let k = ApiKey::new("sk_test_abc".into());
        assert!(!format!("{k:?}").contains("sk_test"));
        let mut config = Config::new(DatabaseUrl::default_sqlite(), vec![s]);
        config.stripe_secret_key = Some(k);
        let printed = format!("{config:?}");
        assert!(!printed.contains("whsec_abc") && !printed.contains("sk_test_abc"));
    }

    #[test]
    fn rotated_secrets_are_comma_separated() {
        let secrets = parse_webhook_secrets(" whsec_a, whsec_b ,,");
        assert_eq!(
            secrets
                .iter()
                .map(WebhookSecret::expose)
                .collect::<Vec<_>>(),
            ["whsec_a", "whsec_b"]
        );
    }
}
