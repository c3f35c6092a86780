//! Configuration: every setting typed and validated, built by one loader.
//!
//! - [`vars`]: the table of variables (name, flag, default, range, help), the only place a
//!   default is written;
//! - [`loader`]: flags over environment over defaults, validation, backend-dependent defaults;
//! - [`secrets`]: redacting secret types and the checks on their shapes;
//! - [`database_url`]: `DATABASE_URL` parsing and password redaction;
//! - [`endpoints`]: the default and the named webhook endpoints;
//! - [`stripe_access`]: the Stripe settings alone, for commands that call Stripe.
//!
//! Every setting is an environment variable (12-factor) and a flag of the same name; flags win.
//! Secrets are held in redacting wrappers whose `Debug` prints `[redacted]`, so no log line or
//! error body can carry one.

pub mod database_url;
pub mod endpoints;
pub mod loader;
pub mod secrets;
pub mod stripe_access;
pub mod vars;

use crate::app::notifications::Notifications;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

pub use database_url::{DatabaseUrl, DatabaseUrlError};
pub use endpoints::{
    EndpointConfig, EndpointKind, EndpointName, EndpointVerdict, LivemodePolicy, WrongEndpointKind,
};
pub use loader::{ConfigError, Layered, Loaded, ProcessEnv, Source};
pub use secrets::{
    parse_webhook_secrets, AdminToken, ApiKey, ApiToken, NotifySecret, WebhookSecret,
};
pub use stripe_access::{load_connect_endpoint, load_stripe_access, StripeAccess};

use crate::store::Durability;

/// Where a webhook signing secret comes from: said whenever one is missing.
macro_rules! where_to_get_a_secret {
    () => {
        "copy the endpoint's signing secret (whsec_...) from the Stripe dashboard (Developers > \
         Webhooks > your endpoint > Signing secret), or run `stripe listen --forward-to \
         localhost:8080/webhooks/stripe` and use the secret it prints."
    };
}

/// Said when the default endpoint has no signing secret.
pub const WHERE_TO_GET_A_SECRET: &str = where_to_get_a_secret!();

/// Shown when `serve` starts without a webhook secret.
pub const MISSING_SECRET_HELP: &str = concat!(
    "STRIPE_WEBHOOK_SECRET is not set: ",
    where_to_get_a_secret!()
);

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
    /// The default endpoint's kind and livemode policy (its secrets are `webhook_secrets`).
    pub webhook_kind: EndpointKind,
    pub webhook_livemode: LivemodePolicy,
    /// The endpoints of `STRIPE_ENDPOINTS`, in their order; never the default one (see
    /// [`Config::endpoints`]).
    pub named_endpoints: Vec<EndpointConfig>,
    /// Bearer tokens of the app API; empty: the API is off.
    pub api_tokens: Vec<ApiToken>,
    /// Bearer tokens of the admin API; empty: the API is off.
    pub admin_tokens: Vec<AdminToken>,
    /// Notifications to the app; `None`: none are sent.
    pub notify: Option<NotifyConfig>,
    /// Time between reconciliation passes inside `serve`; `None`: no periodic pass.
    pub reconcile_interval: Option<Duration>,
}

/// Where and how notifications to the app go.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    pub url: NotifyUrl,
    /// One signature per secret; several while rotating. Never empty.
    pub secrets: Vec<NotifySecret>,
    /// The n-th retry waits about `retry_schedule[n-1]`; then the notification is `failed`.
    /// The contract's schedule (not a variable: tests shorten it).
    pub retry_schedule: Vec<Duration>,
}

/// The app's notification endpoint: an http(s) URL. `Debug` hides a password in it.
#[derive(Clone, PartialEq, Eq)]
pub struct NotifyUrl(pub(crate) url::Url);

impl NotifyUrl {
    /// The URL itself, password included: call only where the request is made.
    pub fn as_url(&self) -> &url::Url {
        &self.0
    }
}

impl fmt::Debug for NotifyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.clone();
        if shown.password().is_some() {
            // Only fails for URLs that cannot have a password, which this one has.
            let _ = shown.set_password(Some("***"));
        }
        write!(f, "NotifyUrl({shown})")
    }
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

/// The table's defaults (SQLite's where they depend on the backend).
impl Default for AdmissionConfig {
    fn default() -> Self {
        defaults()
            .admission()
            .expect("the built-in defaults are valid (unit-tested)")
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
    /// How long new events may gather once one has woken the processor (zero: none).
    pub gather: Duration,
    /// A checkout that has not moved for this long (and can expire) becomes `expired`.
    pub checkout_expiry: Duration,
    pub sweep_interval: Duration,
    /// Processor threads; more than one only pays on PostgreSQL.
    pub workers: usize,
    /// Longest a processing transaction runs before it commits (after the current event).
    pub max_transaction: Duration,
    /// Nice value of the processor's thread (0 to 19): when the CPU is short, acknowledging
    /// deliveries goes first and applying them catches up after (see [`crate::background`]).
    pub nice: i32,
    /// Whether applied transitions and expiries queue notifications to the app: set from
    /// `NOTIFY_URL` when the application starts ([`Notifications::for_config`]); `Queue` by
    /// default.
    pub notifications: Notifications,
}

/// The table's defaults (SQLite's where they depend on the backend).
impl Default for ProcessorConfig {
    fn default() -> Self {
        defaults()
            .processor()
            .expect("the built-in defaults are valid (unit-tested)")
    }
}

/// The action worker that performs Stripe side effects (see [`crate::actions`]).
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

/// The table's defaults (SQLite's where they depend on the backend).
impl Default for ActionConfig {
    fn default() -> Self {
        defaults()
            .actions()
            .expect("the built-in defaults are valid (unit-tested)")
    }
}

/// A reader of an empty source: every default, SQLite's where they depend on the backend.
fn defaults() -> loader::Reader<'static> {
    const NOTHING: [(&str, &str); 0] = [];
    loader::Reader::new(&NOTHING, &DatabaseUrl::default_sqlite())
}

impl Config {
    /// Loads from `(VAR, value)` pairs alone (no process environment): what tests use.
    /// Warnings are dropped; [`loader::load`] returns them.
    pub fn from_vars(pairs: &[(&str, &str)]) -> Result<Self, ConfigError> {
        loader::load(&pairs).map(|loaded| loaded.config)
    }

    /// Every webhook endpoint: the default one first, then those of `STRIPE_ENDPOINTS`.
    pub fn endpoints(&self) -> Vec<EndpointConfig> {
        let default = EndpointConfig {
            name: EndpointName::default_endpoint(),
            secrets: self.webhook_secrets.clone(),
            kind: self.webhook_kind,
            livemode: self.webhook_livemode,
        };
        std::iter::once(default)
            .chain(self.named_endpoints.iter().cloned())
            .collect()
    }

    /// The endpoint called `name` (`default` included).
    pub fn endpoint(&self, name: &str) -> Option<EndpointConfig> {
        self.endpoints()
            .into_iter()
            .find(|e| e.name.as_str() == name)
    }

    /// The first endpoint of kind `connect` (the default one first): where reconciliation
    /// records the connected accounts' events it finds.
    pub fn connect_endpoint(&self) -> Option<EndpointName> {
        self.endpoints()
            .into_iter()
            .find(|e| e.kind == EndpointKind::Connect)
            .map(|e| e.name)
    }
}

pub const DEFAULT_STRIPE_API_BASE: &str = "https://api.stripe.com";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_never_print_secrets() {
        let mut config = Config::from_vars(&[
            ("STRIPE_WEBHOOK_SECRET", "whsec_abc"),
            ("STRIPE_SECRET_KEY", "sk_test_abc"),
            (
                "DATABASE_URL",
                "postgres://u:dbpass@h/db?sslpassword=sslsecret",
            ),
            ("API_TOKEN", "apitok"),
            ("ADMIN_TOKEN", "admintok"),
            ("NOTIFY_URL", "https://user:urlpass@app.example/hook"),
            ("NOTIFY_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            ("STRIPE_ENDPOINTS", "eu"),
            ("STRIPE_ENDPOINT_EU_SECRET", "whsec_eu"),
        ])
        .expect("valid");
        config.stripe_secret_key = Some(ApiKey::new("sk_test_abc".into()));
        let printed = format!("{config:?}");
        for secret in [
            "whsec_abc",
            "sk_test_abc",
            "dbpass",
            "sslsecret",
            "apitok",
            "admintok",
            "urlpass",
            "MfKQ9r8",
            "whsec_eu",
        ] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
    }
}
