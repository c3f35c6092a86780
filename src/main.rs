//! The `payhook` command line: a thin layer over the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use payhook::config::{
    self, ActionConfig, AdmissionConfig, ApiKey, Config, ProcessorConfig, DEFAULT_STRIPE_API_BASE,
};
use payhook::store::{self, DatabaseUrl, Durability, Pool, PoolOptions};
use payhook::Application;

/// Turns Stripe webhooks into trustworthy local state.
///
/// Every option is also an environment variable (shown in brackets); flags win.
#[derive(Parser)]
#[command(name = "payhook", version, about, long_about = None)]
struct Cli {
    /// Database: postgres://user@host/db for PostgreSQL, or a SQLite file path / sqlite://path.
    /// Default: a SQLite file at ./data/payhook.sqlite3.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,

    /// Log filter, env_logger syntax (e.g. info, payhook=debug).
    #[arg(long = "log", env = "RUST_LOG", global = true, default_value = "info")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the webhook receiver and its background workers.
    Serve(Box<ServeArgs>),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Sign event files with the current time, as Stripe does, and POST them.
    Replay(ReplayArgs),
    /// Put dead events and failed Stripe actions back in the queue (a running `serve` picks
    /// them up).
    Retry,
    /// Print event and checkout counts by status.
    Stats,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "BIND", default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// Webhook signing secret(s), whsec_...; comma-separated while rotating.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// Reject signatures older than this many seconds (0 disables the check).
    #[arg(long, env = "WEBHOOK_TOLERANCE_SECS", default_value_t = 300)]
    tolerance_secs: i64,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    max_body_bytes: usize,
    /// Stripe API secret key for side effects; without it they wait.
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true)]
    stripe_secret_key: Option<String>,
    /// Stripe API base URL (point tests at a local fake).
    #[arg(long, env = "STRIPE_API_BASE", default_value = DEFAULT_STRIPE_API_BASE)]
    stripe_api_base: String,
    /// Minutes without news after which an unfinished checkout expires.
    #[arg(long, env = "CHECKOUT_EXPIRY_MINS", default_value_t = 60)]
    checkout_expiry_mins: u64,
    /// SQLite commit durability: full (fsync per commit, survives power loss) or normal.
    #[arg(long, env = "SQLITE_DURABILITY", value_enum, default_value_t = Durability::Full)]
    sqlite_durability: Durability,
    /// Database connections in the pool.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 8)]
    pool_size: u32,
    /// Longest a delivery (or a worker) waits for a database connection, in milliseconds;
    /// a delivery that gets none is answered 503 and Stripe retries it.
    #[arg(long, env = "DATABASE_WAIT_MS", default_value_t = 5000)]
    database_wait_ms: u64,
    /// Tries before a failing event is marked dead.
    #[arg(long, env = "PROCESS_MAX_ATTEMPTS", default_value_t = 8)]
    process_max_attempts: i32,
    /// First retry delay in milliseconds (doubles per try, with jitter, capped at 1 h).
    #[arg(long, env = "PROCESS_RETRY_BASE_MS", default_value_t = 1000)]
    process_retry_base_ms: u64,
    /// Events applied per processing transaction.
    #[arg(long, env = "PROCESS_BATCH_SIZE", default_value_t = 500)]
    process_batch_size: i64,
    /// How often the processor looks for due retries, in milliseconds.
    #[arg(long, env = "PROCESS_POLL_MS", default_value_t = 1000)]
    process_poll_ms: u64,
    /// Processor threads (default: 1 on SQLite, which has one writer at a time; 2 on
    /// PostgreSQL, where a processor spends much of its time waiting for round trips).
    #[arg(long, env = "PROCESS_WORKERS")]
    process_workers: Option<usize>,
    /// Longest a processing transaction runs before it commits, in milliseconds. Deliveries
    /// of an event the transaction has updated wait for it on PostgreSQL.
    #[arg(long, env = "PROCESS_MAX_TXN_MS", default_value_t = 20)]
    process_max_txn_ms: u64,
    /// Nice value of the processor thread, 0 (same as the HTTP workers) to 19: when the CPU
    /// is short, acknowledging deliveries goes first and applying them catches up after.
    #[arg(long, env = "PROCESS_NICE", default_value_t = 19, value_parser = clap::value_parser!(i32).range(0..=19))]
    process_nice: i32,
    /// Most events committed together by group commit.
    #[arg(long, env = "ADMIT_MAX_BATCH", default_value_t = 512)]
    admit_max_batch: usize,
    /// Microseconds a batch may wait for company (0: commit as soon as the writer is free).
    #[arg(long, env = "ADMIT_MAX_WAIT_US", default_value_t = 0)]
    admit_max_wait_us: u64,
    /// Admission writer threads (default: 1 on SQLite, 4 on PostgreSQL).
    #[arg(long, env = "ADMIT_WRITERS")]
    admit_writers: Option<usize>,
    /// Stripe API requests per second for this process (token bucket; Stripe allows ~100/s
    /// live, 25/s in test mode, per account).
    #[arg(long, env = "STRIPE_MAX_RPS", default_value_t = 20.0)]
    stripe_max_rps: f64,
    /// Tries before a Stripe action failing with retryable errors is marked failed.
    #[arg(long, env = "ACTION_MAX_ATTEMPTS", default_value_t = 10)]
    action_max_attempts: i32,
    /// First retry delay of a Stripe action in milliseconds (doubles per try, with jitter,
    /// capped at 15 min).
    #[arg(long, env = "ACTION_RETRY_BASE_MS", default_value_t = 2000)]
    action_retry_base_ms: u64,
    /// Stripe actions performed at once.
    #[arg(long, env = "ACTION_CONCURRENCY", default_value_t = 4)]
    action_concurrency: usize,
    /// Seconds a claimed Stripe action stays leased without progress; after a crash its
    /// actions wait this long before another instance resumes them. Keep it well above
    /// the 30 s Stripe request timeout.
    #[arg(long, env = "ACTION_LEASE_SECS", default_value_t = 120)]
    action_lease_secs: u64,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "HTTP_WORKERS", default_value_t = 0)]
    http_workers: usize,
}

#[derive(Args)]
struct ReplayArgs {
    /// Event JSON files or directories of them (sent in name order).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Endpoint to deliver to.
    #[arg(
        long,
        env = "PAYHOOK_URL",
        default_value = "http://127.0.0.1:8080/webhooks/stripe"
    )]
    url: String,
    /// Secret to sign with (whsec_...); the first one if several are given.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    secret: String,
}

fn database_url(cli: &Cli) -> DatabaseUrl {
    cli.database_url
        .as_deref()
        .map(DatabaseUrl::parse)
        .unwrap_or_else(DatabaseUrl::default_sqlite)
}

fn serve_config(url: DatabaseUrl, args: ServeArgs) -> anyhow::Result<Config> {
    let secrets = args
        .webhook_secret
        .as_deref()
        .map(config::parse_webhook_secrets)
        .unwrap_or_default();
    anyhow::ensure!(!secrets.is_empty(), config::MISSING_SECRET_HELP);
    let writers = args.admit_writers.unwrap_or(match url {
        DatabaseUrl::Sqlite(_) => 1,
        DatabaseUrl::Postgres(_) => 4,
    });
    let process_workers = args.process_workers.unwrap_or(match url {
        DatabaseUrl::Sqlite(_) => 1,
        DatabaseUrl::Postgres(_) => 2,
    });
    let mut config = Config::new(url, secrets);
    config.bind = args.bind;
    config.tolerance_secs = args.tolerance_secs;
    config.max_body_bytes = args.max_body_bytes;
    config.stripe_secret_key = args
        .stripe_secret_key
        .filter(|k| !k.is_empty())
        .map(ApiKey::new);
    config.stripe_api_base = args.stripe_api_base;
    config.durability = args.sqlite_durability;
    config.pool_size = args.pool_size.max(2);
    config.database_wait = Duration::from_millis(args.database_wait_ms.max(100));
    config.http_workers = args.http_workers;
    config.admission = AdmissionConfig {
        max_batch: args.admit_max_batch.max(1),
        max_wait: Duration::from_micros(args.admit_max_wait_us),
        writers,
        ..AdmissionConfig::default()
    };
    config.processor = ProcessorConfig {
        batch_size: args.process_batch_size.max(1),
        max_attempts: args.process_max_attempts.max(1),
        retry_base: Duration::from_millis(args.process_retry_base_ms),
        poll_interval: Duration::from_millis(args.process_poll_ms.max(10)),
        checkout_expiry: Duration::from_secs(args.checkout_expiry_mins * 60),
        nice: args.process_nice,
        workers: process_workers.max(1),
        max_transaction: Duration::from_millis(args.process_max_txn_ms.max(1)),
        ..ProcessorConfig::default()
    };
    config.actions = ActionConfig {
        max_rps: args.stripe_max_rps.max(0.1),
        burst: args.stripe_max_rps.max(1.0),
        max_attempts: args.action_max_attempts.max(1),
        retry_base: Duration::from_millis(args.action_retry_base_ms),
        concurrency: args.action_concurrency.max(1),
        lease: Duration::from_secs(args.action_lease_secs.max(1)),
        ..ActionConfig::default()
    };
    Ok(config)
}

fn open_pool(url: &DatabaseUrl) -> anyhow::Result<Pool> {
    let pool = Pool::connect(
        url,
        PoolOptions {
            max_size: 2,
            ..PoolOptions::default()
        },
    )
    .with_context(|| format!("opening the database at {url}"))?;
    let applied = pool.migrate()?;
    if applied > 0 {
        log::info!("{applied} migrations applied to {url}");
    }
    Ok(pool)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let url = database_url(&cli);
    match cli.command {
        Command::Serve(args) => {
            let config = serve_config(url, *args)?;
            Application::build(config)
                .await?
                .run_until_stopped()
                .await?;
        }
        Command::Migrate => {
            let pool = Pool::connect(
                &url,
                PoolOptions {
                    max_size: 1,
                    ..PoolOptions::default()
                },
            )?;
            let applied = pool.migrate()?;
            println!("{applied} migrations applied to {url}");
        }
        Command::Replay(args) => {
            let secret = config::parse_webhook_secrets(&args.secret)
                .into_iter()
                .next()
                .context("--secret is empty")?;
            let deliveries = payhook::replay::replay(&args.paths, &args.url, &secret).await?;
            let failed = deliveries
                .iter()
                .filter(|d| !(200..300).contains(&d.status))
                .count();
            println!("{} delivered, {failed} not acknowledged", deliveries.len());
            if failed > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Retry => {
            let pool = open_pool(&url)?;
            let mut conn = pool.get()?;
            let n = store::events::requeue_dead_events(&mut conn)?;
            println!("{n} dead events requeued");
            let kinds = [payhook::outbox::save_card::KIND];
            let actions = payhook::outbox::runner::requeue_failed(&mut conn, &kinds)?;
            println!("{actions} failed Stripe actions requeued");
        }
        Command::Stats => {
            let pool = open_pool(&url)?;
            let mut conn = pool.get()?;
            for (status, n) in store::events::count_events_by_status(&mut conn)? {
                println!("events\t{status}\t{n}");
            }
            for (state, n) in store::checkouts::count_checkouts_by_state(&mut conn)? {
                println!("checkouts\t{state}\t{n}");
            }
            let kinds = [payhook::outbox::save_card::KIND];
            for (status, n) in store::outbox::count_items_by_status(&mut conn, &kinds)? {
                println!("stripe_actions\t{status}\t{n}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::new()
        .parse_filters(&cli.log)
        .format_timestamp_millis()
        .init();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            // One line, no backtrace noise: the error chain says what to do.
            eprintln!("payhook: {e:#}");
            ExitCode::FAILURE
        }
    }
}
