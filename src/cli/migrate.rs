//! `payhook migrate`: creates the database if needed and applies pending migrations, e.g.
//! from a deploy step (`serve` also does it at start).

use std::process::ExitCode;

use anyhow::Context;
use payhook::store::{DatabaseUrl, Pool};

pub fn run(url: &DatabaseUrl) -> anyhow::Result<ExitCode> {
    let pool = Pool::connect(url, super::one_connection())
        .with_context(|| format!("opening the database at {url}"))?;
    let applied = pool.migrate()?;
    println!("{applied} migrations applied to {url}");
    Ok(ExitCode::SUCCESS)
}
