//! `payhook stats`: counts of events, checkouts and Stripe actions by status, from an
//! existing database (never created or migrated here).

use std::process::ExitCode;

use payhook::outbox::save_card;
use payhook::store::{self, open_existing, DatabaseUrl};

use super::output::print_counts;

pub fn run(url: &DatabaseUrl) -> anyhow::Result<ExitCode> {
    let pool = open_existing(url, super::one_connection())?;
    let mut conn = pool.get()?;
    print_counts("events", &store::events::count_events_by_status(&mut conn)?);
    print_counts(
        "checkouts",
        &store::checkouts::count_checkouts_by_state(&mut conn)?,
    );
    print_counts(
        "stripe_actions",
        &store::outbox::count_items_by_status(&mut conn, &[save_card::KIND])?,
    );
    Ok(ExitCode::SUCCESS)
}
