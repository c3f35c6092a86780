//! Every configuration variable, once: its name, flag, default, range and help.
//!
//! This table is the single place a setting is described. The CLI turns it into `clap`
//! arguments (so `--help` documents each variable), the loader reads values and applies the
//! defaults from it, and a test holds the README's configuration table to it.
//! Variables whose names are built at run time (`STRIPE_ENDPOINT_<NAME>_…`) cannot be listed
//! here; [`ENDPOINT_VARS_HELP`] documents them.

/// Which commands read a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every command (a global flag).
    Global,
    /// `payhook serve`.
    Serve,
}

/// What a variable is when it is not set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DefaultValue {
    Value(&'static str),
    /// Depends on the database backend.
    PerBackend {
        sqlite: &'static str,
        postgres: &'static str,
    },
    /// Optional: unset means the feature is off.
    Unset,
    /// `serve` refuses to start without it.
    Required,
}

/// Which values are accepted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Range {
    /// A whole number from `min` to `max`, both included.
    Int { min: i64, max: i64 },
    /// A finite number from `min` to `max`, both included.
    Float { min: f64, max: f64 },
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// Described in words; checked by the loader.
    Text(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Var {
    pub name: &'static str,
    /// The flag's long name, without `--`.
    pub flag: &'static str,
    pub scope: Scope,
    pub default: DefaultValue,
    pub range: Range,
    /// Its value never appears in `--help`, a log line or an error.
    pub secret: bool,
    pub help: &'static str,
}

impl Var {
    /// The default as the README and `--help` show it.
    pub fn default_text(&self) -> String {
        match self.default {
            DefaultValue::Value(v) => format!("`{v}`"),
            DefaultValue::PerBackend { sqlite, postgres } => {
                format!("`{sqlite}` (SQLite), `{postgres}` (PostgreSQL)")
            }
            DefaultValue::Unset => "(none)".into(),
            DefaultValue::Required => "(required)".into(),
        }
    }

    /// The accepted values as the README and `--help` show them.
    pub fn range_text(&self) -> String {
        match self.range {
            Range::Int { min, max } => format!("{}–{}", group(min), group(max)),
            // Float ranges here end on whole numbers.
            Range::Float { min, max } => format!("{min}–{}", group(max as i64)),
            Range::OneOf(words) => words
                .iter()
                .map(|w| format!("`{w}`"))
                .collect::<Vec<_>>()
                .join(", "),
            Range::Text(text) => text.into(),
        }
    }
}

/// 86400 → "86 400": the README's way of writing large numbers.
fn group(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) && digits.len() > 4 {
            out.push(' ');
        }
        out.push(c);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

macro_rules! vars {
    ($($id:ident = $var:expr;)+) => {
        $(pub const $id: Var = $var;)+
        /// Every variable, in the order `--help` and the README list them.
        pub const ALL: &[Var] = &[$($id),+];
    };
}

const fn int(min: i64, max: i64) -> Range {
    Range::Int { min, max }
}

const fn var(name: &'static str, flag: &'static str, default: DefaultValue, range: Range) -> Var {
    Var {
        name,
        flag,
        scope: Scope::Serve,
        default,
        range,
        secret: false,
        help: "",
    }
}

const fn help(v: Var, help: &'static str) -> Var {
    Var { help, ..v }
}

const fn secret(v: Var) -> Var {
    Var { secret: true, ..v }
}

const fn global(v: Var) -> Var {
    Var {
        scope: Scope::Global,
        ..v
    }
}

use DefaultValue::{PerBackend, Required, Unset, Value};

vars! {
    DATABASE_URL = global(help(secret(var("DATABASE_URL", "database-url", Value("data/payhook.sqlite3"), Range::Text("URL, key=value string or path"))),
        "Database: postgres://user@host/db (or a libpq key=value string such as `host=h dbname=d`) for PostgreSQL; a file path, sqlite:path or sqlite://path for SQLite. Passwords are never shown."));
    RUST_LOG = global(help(var("RUST_LOG", "log", Value("info"), Range::Text("env_logger filter")),
        "Log filter, env_logger syntax (e.g. info, payhook=debug)."));
    BIND = help(var("BIND", "bind", Value("127.0.0.1:8080"), Range::Text("address:port")),
        "Address to listen on.");
    STRIPE_WEBHOOK_SECRET = help(secret(var("STRIPE_WEBHOOK_SECRET", "webhook-secret", Required, Range::Text("whsec_…, comma-separated"))),
        "Signing secret(s) of the default endpoint (POST /webhooks/stripe), whsec_...; comma-separated while rotating. An API key (sk_/rk_/pk_) is refused.");
    STRIPE_WEBHOOK_KIND = help(var("STRIPE_WEBHOOK_KIND", "webhook-kind", Value("account"), Range::OneOf(&["account", "connect"])),
        "Whose events the default endpoint receives: account (the platform's) or connect (connected accounts', which carry `account`).");
    STRIPE_WEBHOOK_LIVEMODE = help(var("STRIPE_WEBHOOK_LIVEMODE", "webhook-livemode", Value("any"), Range::OneOf(&["any", "live", "test"])),
        "Which events the default endpoint takes by livemode; the others are stored as ignored.");
    STRIPE_ENDPOINTS = help(var("STRIPE_ENDPOINTS", "endpoints", Unset, Range::Text("names: a-z, 0-9, -")),
        "Further endpoints, comma-separated names, each served at POST /webhooks/stripe/{name} and configured by STRIPE_ENDPOINT_<NAME>_* (see below).");
    WEBHOOK_TOLERANCE_SECS = help(var("WEBHOOK_TOLERANCE_SECS", "tolerance-secs", Value("300"), int(0, 2_592_000)),
        "Reject signatures older than this many seconds (0 disables the check).");
    MAX_BODY_BYTES = help(var("MAX_BODY_BYTES", "max-body-bytes", Value("1048576"), int(1024, 67_108_864)),
        "Largest accepted request body, in bytes (larger: 413).");
    STRIPE_SECRET_KEY = help(secret(var("STRIPE_SECRET_KEY", "stripe-secret-key", Unset, Range::Text("sk_… or rk_…"))),
        "Stripe API key for side effects; without it they wait.");
    STRIPE_API_BASE = help(var("STRIPE_API_BASE", "stripe-api-base", Value("https://api.stripe.com"), Range::Text("http(s) URL")),
        "Stripe API base URL (tests point it at a local fake).");
    CHECKOUT_EXPIRY_MINS = help(var("CHECKOUT_EXPIRY_MINS", "checkout-expiry-mins", Value("60"), int(1, 525_600)),
        "Minutes without news after which an unfinished checkout expires.");
    SQLITE_DURABILITY = help(var("SQLITE_DURABILITY", "sqlite-durability", Value("full"), Range::OneOf(&["full", "normal"])),
        "SQLite commit durability: full (fsync per commit that stores deliveries or the app's requests: what was acknowledged survives power loss; the processor's commits ride on the next fsync) or normal (survives a payhook crash, not an OS crash).");
    DATABASE_POOL_SIZE = help(var("DATABASE_POOL_SIZE", "pool-size", Value("8"), int(2, 1000)),
        "Database connections in the pool.");
    DATABASE_WAIT_MS = help(var("DATABASE_WAIT_MS", "database-wait-ms", Value("5000"), int(100, 600_000)),
        "Longest a delivery (or a worker) waits for a database connection, in milliseconds; a delivery that gets none is answered 503 and Stripe retries it.");
    PROCESS_MAX_ATTEMPTS = help(var("PROCESS_MAX_ATTEMPTS", "process-max-attempts", Value("8"), int(1, 1000)),
        "Tries before a failing event is marked dead.");
    PROCESS_RETRY_BASE_MS = help(var("PROCESS_RETRY_BASE_MS", "process-retry-base-ms", Value("1000"), int(1, 3_600_000)),
        "First retry delay of an event in milliseconds (doubles per try, with jitter, capped at 1 h).");
    PROCESS_BATCH_SIZE = help(var("PROCESS_BATCH_SIZE", "process-batch-size", Value("500"), int(1, 10_000)),
        "Events applied per processing transaction.");
    PROCESS_POLL_MS = help(var("PROCESS_POLL_MS", "process-poll-ms", Value("1000"), int(10, 3_600_000)),
        "How often the processor looks for due retries, in milliseconds (new events wake it, see PROCESS_GATHER_MS).");
    PROCESS_GATHER_MS = help(var("PROCESS_GATHER_MS", "process-gather-ms", Value("10"), int(0, 10_000)),
        "How long the processor lets new events gather after a delivery wakes it, in milliseconds: at a steady trickle it then applies several events per transaction instead of one each (0: at once).");
    PROCESS_WORKERS = help(var("PROCESS_WORKERS", "process-workers", PerBackend { sqlite: "1", postgres: "2" }, int(1, 64)),
        "Processor threads (SQLite has one writer at a time; on PostgreSQL a processor spends much of its time waiting for round trips).");
    PROCESS_MAX_TXN_MS = help(var("PROCESS_MAX_TXN_MS", "process-max-txn-ms", PerBackend { sqlite: "20", postgres: "100" }, int(1, 60_000)),
        "Longest a processing transaction runs before it commits, in milliseconds (SQLite: admission waits for its write lock; PostgreSQL: a batch's fixed cost, about 15 ms, is shared by the events applied in it).");
    PROCESS_NICE = help(var("PROCESS_NICE", "process-nice", Value("19"), int(0, 19)),
        "Nice value of the processor threads: when the CPU is short, acknowledging deliveries goes first and applying them catches up after.");
    ADMIT_MAX_BATCH = help(var("ADMIT_MAX_BATCH", "admit-max-batch", Value("512"), int(1, 10_000)),
        "Most events committed together by group commit.");
    ADMIT_MAX_WAIT_US = help(var("ADMIT_MAX_WAIT_US", "admit-max-wait-us", Value("0"), int(0, 1_000_000)),
        "Microseconds a batch may wait for company (0: commit as soon as the writer is free).");
    ADMIT_WRITERS = help(var("ADMIT_WRITERS", "admit-writers", PerBackend { sqlite: "1", postgres: "4" }, int(1, 64)),
        "Group-commit writer threads.");
    HTTP_WORKERS = help(var("HTTP_WORKERS", "http-workers", Value("0"), int(0, 1024)),
        "HTTP worker threads (0: one per core).");
    STRIPE_MAX_RPS = help(var("STRIPE_MAX_RPS", "stripe-max-rps", Value("20"), Range::Float { min: 0.1, max: 10_000.0 }),
        "Stripe API requests per second for this process (token bucket; Stripe allows ~100/s live, 25/s in test mode, per account).");
    ACTION_MAX_ATTEMPTS = help(var("ACTION_MAX_ATTEMPTS", "action-max-attempts", Value("10"), int(1, 1000)),
        "Tries before a Stripe action failing with retryable errors is marked failed.");
    ACTION_RETRY_BASE_MS = help(var("ACTION_RETRY_BASE_MS", "action-retry-base-ms", Value("2000"), int(1, 900_000)),
        "First retry delay of a Stripe action in milliseconds (doubles per try, with jitter, capped at 15 min).");
    ACTION_CONCURRENCY = help(var("ACTION_CONCURRENCY", "action-concurrency", Value("4"), int(1, 256)),
        "Stripe actions performed at once.");
    ACTION_LEASE_SECS = help(var("ACTION_LEASE_SECS", "action-lease-secs", Value("120"), int(1, 86_400)),
        "Seconds a claimed Stripe action stays leased without progress; after a crash its actions wait this long before another instance resumes them. Keep it well above the 30 s Stripe request timeout.");
    API_TOKEN = help(secret(var("API_TOKEN", "api-token", Unset, Range::Text("tokens, comma-separated"))),
        "Bearer token(s) of the app API /api/v1; comma-separated while rotating. Unset: /api/v1 answers 404.");
    ADMIN_TOKEN = help(secret(var("ADMIN_TOKEN", "admin-token", Unset, Range::Text("tokens, comma-separated"))),
        "Bearer token(s) of the admin API /admin/v1; comma-separated while rotating; none may also be an API_TOKEN. Unset: /admin/v1 answers 404.");
    NOTIFY_URL = help(var("NOTIFY_URL", "notify-url", Unset, Range::Text("http(s) URL")),
        "The app's endpoint for notifications (Standard Webhooks); needs NOTIFY_SECRET.");
    NOTIFY_SECRET = help(secret(var("NOTIFY_SECRET", "notify-secret", Unset, Range::Text("whsec_ + base64 of 24–64 bytes, comma-separated"))),
        "Signing secret(s) of notifications: whsec_ followed by the base64 of 24 to 64 random bytes (e.g. `echo whsec_$(openssl rand -base64 32)`); comma-separated while rotating.");
    RECONCILE_INTERVAL_SECS = help(var("RECONCILE_INTERVAL_SECS", "reconcile-interval-secs", Unset, int(1, 604_800)),
        "Seconds between reconciliation passes against Stripe's Events API inside serve. Unset: no periodic pass.");
}

/// `--help` text for the variables named after each endpoint of `STRIPE_ENDPOINTS`.
pub const ENDPOINT_VARS_HELP: &str = "\
Variables of each endpoint named in STRIPE_ENDPOINTS (name upper-cased, `-` → `_`):
  STRIPE_ENDPOINT_<NAME>_SECRET    its signing secret(s), whsec_..., comma-separated while rotating (required)
  STRIPE_ENDPOINT_<NAME>_KIND      account (default) or connect
  STRIPE_ENDPOINT_<NAME>_LIVEMODE  any (default), live or test";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_flags_are_unique() {
        let mut names: Vec<_> = ALL.iter().map(|v| v.name).collect();
        let mut flags: Vec<_> = ALL.iter().map(|v| v.flag).collect();
        names.sort_unstable();
        flags.sort_unstable();
        names.dedup();
        flags.dedup();
        assert_eq!(names.len(), ALL.len());
        assert_eq!(flags.len(), ALL.len());
        assert!(
            ALL.iter().all(|v| !v.help.is_empty()),
            "every variable has help"
        );
    }

    #[test]
    fn texts_for_the_readme() {
        assert_eq!(DATABASE_POOL_SIZE.range_text(), "2–1000");
        assert_eq!(ACTION_LEASE_SECS.range_text(), "1–86 400");
        assert_eq!(STRIPE_MAX_RPS.range_text(), "0.1–10 000");
        assert_eq!(
            ADMIT_WRITERS.default_text(),
            "`1` (SQLite), `4` (PostgreSQL)"
        );
        assert_eq!(STRIPE_WEBHOOK_KIND.range_text(), "`account`, `connect`");
    }
}
