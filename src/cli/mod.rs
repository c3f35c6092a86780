//! The `payhook` command line: parsing, and one module per command group, each a thin layer
//! over the library.
//!
//! Only `serve` and `migrate` may create a database or apply migrations; every other command
//! opens an existing, migrated one ([`payhook::store::open_existing`]).

mod events;
pub mod flags;
pub mod logging;
mod migrate;
mod notifications;
mod output;
mod reconcile;
mod replay;
mod retry;
mod serve;
mod stats;
mod table;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use payhook::config::{loader, vars, Layered, ProcessEnv};
use payhook::store::{DatabaseUrl, PoolOptions};

use self::flags::{GlobalFlags, ServeFlags};

/// Turns Stripe webhooks into trustworthy local state.
///
/// Every option is also an environment variable (shown in brackets); flags win.
#[derive(Parser)]
#[command(name = "payhook", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalFlags,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the webhook receiver and its background workers (creates and migrates the
    /// database if needed).
    Serve(ServeFlags),
    /// Create the database if needed, apply pending migrations and exit.
    Migrate,
    /// Sign event files with the current time, as Stripe does, and POST them.
    Replay(replay::ReplayArgs),
    /// Put dead (or failed) events and failed Stripe actions back in the queue (a running
    /// `serve` picks them up).
    Retry(retry::RetryArgs),
    /// Print event and checkout counts by status.
    Stats,
    /// List notifications to the app, or requeue failed ones (`list`, `retry`).
    Notifications(notifications::NotificationsArgs),
    /// List, show or retry events (as the admin API does).
    Events(events::EventsArgs),
    /// List Stripe's events for the handled types and store those payhook missed (needs
    /// STRIPE_SECRET_KEY); a running `serve` applies them.
    Reconcile(reconcile::ReconcileArgs),
    /// Fetch a pi_…, seti_… or pm_… from Stripe and apply it as observed state (needs
    /// STRIPE_SECRET_KEY).
    Resync(reconcile::ResyncArgs),
}

impl Cli {
    /// The log filter: `--log`, else `RUST_LOG`, else the default.
    pub fn log_filter(&self) -> String {
        self.global.value_or_default(&vars::RUST_LOG)
    }

    /// `DATABASE_URL` as flags and environment give it.
    fn database_url(&self) -> anyhow::Result<DatabaseUrl> {
        Ok(loader::load_database_url(&Layered(
            &self.global,
            ProcessEnv,
        ))?)
    }
}

/// Runs the command; an error becomes one line on stderr, with any database password in it
/// replaced by `***`, and a failure exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let scrubber = cli.database_url().ok();
    match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            output::report_error(&e, scrubber.as_ref());
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Serve(flags) => serve::run(flags, &cli.global).await,
        Command::Migrate => migrate::run(&cli.database_url()?),
        Command::Replay(args) => replay::run(args).await,
        Command::Retry(args) => retry::run(&cli.database_url()?, args),
        Command::Stats => stats::run(&cli.database_url()?),
        Command::Notifications(args) => notifications::run(&cli.database_url()?, args),
        Command::Events(args) => events::run(&cli.database_url()?, args),
        Command::Reconcile(args) => reconcile::run(&cli.database_url()?, &cli.global, args).await,
        Command::Resync(args) => {
            reconcile::run_resync(&cli.database_url()?, &cli.global, args).await
        }
    }
}

/// One connection is all a one-shot command needs.
fn one_connection() -> PoolOptions {
    PoolOptions {
        max_size: 1,
        ..PoolOptions::default()
    }
}
