//! `payhook reconcile [--since 2h] [--dry-run] [--account acct_…]` and `payhook resync <id>`:
//! the admin API's reconcile and resync verbs from the command line, against an existing
//! database, with the Stripe key of the environment (`STRIPE_SECRET_KEY`, `STRIPE_API_BASE`,
//! `STRIPE_MAX_RPS`).
//!
//! Events a pass finds go through the same admission as deliveries (a writer of this
//! process); a running `serve` applies them. Connected accounts' events are recorded under
//! the first endpoint of kind `connect` that the environment's `STRIPE_ENDPOINTS` (or
//! `STRIPE_WEBHOOK_KIND`) configures, as `serve` records them. Only one pass runs at a time
//! per account, across this command and every `serve`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use payhook::config::{
    load_connect_endpoint, load_stripe_access, AdmissionConfig, Layered, ProcessEnv,
};
use payhook::inbox::admission::Admitter;
use payhook::inbox::reconcile::{PassOptions, Reconciler};
use payhook::metrics::Metrics;
use payhook::ops::{resync, OpsError};
use payhook::store::{open_existing, DatabaseUrl, PoolOptions};
use payhook::stripe::gateway::StripeGateway;

use super::flags::GlobalFlags;
use super::table::{or_dash, print_json, time};

#[derive(Args)]
pub struct ReconcileArgs {
    /// Also list the events created this long ago and since (`2h`, `3d`, `90m`), besides
    /// those after the stored cursor.
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// List and count new and known events; store nothing.
    #[arg(long)]
    dry_run: bool,
    /// Only this connected account's events (acct_…); without it, the platform's and every
    /// connected account's payhook knows.
    #[arg(long, value_parser = |s: &str| payhook::stripe::ids::AccountId::parse(s))]
    account: Option<payhook::stripe::ids::AccountId>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ResyncArgs {
    /// A pi_…, seti_… or pm_… id.
    stripe_id: String,
    /// The connected account the object belongs to (acct_…); the platform's when absent.
    #[arg(long, value_parser = |s: &str| payhook::stripe::ids::AccountId::parse(s))]
    account: Option<payhook::stripe::ids::AccountId>,
    #[arg(long)]
    json: bool,
}

/// The Stripe gateway of this command, from the environment.
fn gateway(global: &GlobalFlags, metrics: Arc<Metrics>) -> anyhow::Result<Arc<StripeGateway>> {
    let access = load_stripe_access(&Layered(global, ProcessEnv))?.ok_or(OpsError::NoStripeKey)?;
    let gateway = StripeGateway::connect(&access, metrics)
        .map_err(|e| anyhow::anyhow!("configuring the Stripe API client: {e}"))?;
    Ok(Arc::new(gateway))
}

fn pool_options() -> PoolOptions {
    // The admission writer and the pass's own reads.
    PoolOptions {
        max_size: 3,
        ..PoolOptions::default()
    }
}

pub async fn run(
    url: &DatabaseUrl,
    global: &GlobalFlags,
    args: &ReconcileArgs,
) -> anyhow::Result<ExitCode> {
    let metrics = Arc::new(Metrics::new(&[]));
    let stripe = gateway(global, metrics.clone())?;
    let connect_endpoint = load_connect_endpoint(&Layered(global, ProcessEnv))?;
    let pool = open_existing(url, pool_options())?;
    let committed = Arc::new(payhook::inbox::admission::Committed::new());
    // One pass, reported by its own outcome: no `/readyz` to tell.
    let health = Arc::new(payhook::health::Health::default());
    let (admitter, writers) =
        Admitter::start(pool.clone(), AdmissionConfig::default(), committed, health)
            .context("starting the admission writer")?;
    let reconciler =
        Reconciler::new(pool, stripe, admitter, metrics).with_connect_endpoint(connect_endpoint);
    let pass = reconciler
        .run_pass(&PassOptions {
            since: args.since,
            dry_run: args.dry_run,
            account: args.account.clone(),
        })
        .await;
    // The writer ends once every admitter is gone.
    drop(reconciler);
    tokio::task::spawn_blocking(move || writers.join()).await?;
    let report = pass.map_err(OpsError::from)?;
    if args.json {
        print_json(&report)?;
    } else {
        println!(
            "{}{} events listed ({} to {}): {} new, {} known; cursor {}",
            if report.dry_run { "dry run: " } else { "" },
            report.fetched,
            time(report.from),
            time(report.until),
            report.new,
            report.known,
            or_dash(report.cursor.map(time)),
        );
        for part in report.accounts.iter().filter(|_| report.accounts.len() > 1) {
            let account = part.account.as_deref().unwrap_or("platform");
            match &part.error {
                Some(error) => println!("  {account}: not listed ({error})"),
                None => println!(
                    "  {account}: {} listed: {} new, {} known; cursor {}",
                    part.fetched,
                    part.new,
                    part.known,
                    or_dash(part.cursor.map(time)),
                ),
            }
        }
        if let Some(warning) = &report.warning {
            for line in warning.lines() {
                eprintln!("payhook: warning: {line}");
            }
        }
    }
    // An account that could not be listed (another pass holding it is not a failure).
    let failed = report.accounts.iter().any(|p| p.error.is_some() && !p.busy);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub async fn run_resync(
    url: &DatabaseUrl,
    global: &GlobalFlags,
    args: &ResyncArgs,
) -> anyhow::Result<ExitCode> {
    let metrics = Arc::new(Metrics::new(&[]));
    let stripe = gateway(global, metrics.clone())?;
    let pool = open_existing(url, super::one_connection())?;
    let resynced = resync::resync(
        &pool,
        Some(&stripe),
        &metrics,
        &args.stripe_id,
        args.account.as_ref(),
    )
    .await?;
    if args.json {
        return print_json(&resynced).map(|()| ExitCode::SUCCESS);
    }
    match resynced {
        resync::Resynced::Checkout(c) => println!(
            "checkout {} ({}) is {}{}",
            c.id,
            c.intent_id,
            c.state,
            c.last_error
                .and_then(|e| e.code)
                .map(|code| format!(" ({code})"))
                .unwrap_or_default()
        ),
        resync::Resynced::Card(c) => println!(
            "card {} is {} (customer {})",
            c.id,
            c.status,
            or_dash(c.customer.as_deref())
        ),
    }
    Ok(ExitCode::SUCCESS)
}
