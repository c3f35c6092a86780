//! `payhook replay`: signs event files as Stripe does and POSTs them (see
//! [`payhook::replay`]); exits non-zero if any delivery was not acknowledged.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use payhook::config;

#[derive(Args)]
pub struct ReplayArgs {
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

pub async fn run(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
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
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
