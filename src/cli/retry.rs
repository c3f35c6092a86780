//! `payhook retry [--status dead|failed] [EVENT_ID…]`: puts events back in the queue (all of
//! a status, or the ones named) and, when no id is named, failed Stripe actions too. A running
//! `serve` picks them up. The database must exist and be migrated.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use payhook::store::events::{self, EventStatus};
use payhook::store::{open_existing, DatabaseUrl, StoreError};

#[derive(Args)]
pub struct RetryArgs {
    /// Which events to requeue. Default: dead ones; with event ids, dead or failed ones.
    #[arg(long, value_enum)]
    status: Option<RequeueStatus>,
    /// Requeue only these events (each must be dead or failed, or of --status).
    event_ids: Vec<String>,
}

/// The statuses an event can be requeued from: the ones no further try will change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RequeueStatus {
    /// Every try failed.
    Dead,
    /// Could not be applied (for example no `data.object`); never retried by itself.
    Failed,
}

impl From<RequeueStatus> for EventStatus {
    fn from(status: RequeueStatus) -> Self {
        match status {
            RequeueStatus::Dead => Self::Dead,
            RequeueStatus::Failed => Self::Failed,
        }
    }
}

pub fn run(url: &DatabaseUrl, args: &RetryArgs) -> anyhow::Result<ExitCode> {
    let pool = open_existing(url, super::one_connection())?;
    let mut conn = pool.get()?;
    let statuses: Vec<EventStatus> = match (args.status, args.event_ids.is_empty()) {
        (Some(status), _) => vec![status.into()],
        (None, true) => vec![EventStatus::Dead],
        (None, false) => vec![EventStatus::Dead, EventStatus::Failed],
    };
    if args.event_ids.is_empty() {
        let n = events::requeue_events(&mut conn, &statuses, None)?;
        println!("{n} {} events requeued", statuses[0].as_str());
        let actions = payhook::outbox::runner::requeue_failed(
            &mut conn,
            &[payhook::outbox::save_card::KIND],
        )?;
        println!("{actions} failed Stripe actions requeued");
        return Ok(ExitCode::SUCCESS);
    }
    // Checked and requeued in one transaction, so each refusal is about the state that was
    // requeued from.
    let (n, refused) = conn.transaction(|conn| -> Result<_, StoreError> {
        let mut refused = Vec::new();
        for id in &args.event_ids {
            match events::find_event(conn, id)? {
                None => refused.push(format!("{id}: no such event")),
                Some(event) if !statuses.contains(&event.status) => {
                    refused.push(format!(
                        "{id}: is {}, not {}",
                        event.status,
                        statuses
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ));
                }
                Some(_) => {}
            }
        }
        let n = events::requeue_events(conn, &statuses, Some(&args.event_ids))?;
        Ok((n, refused))
    })?;
    println!("{n} events requeued");
    for line in &refused {
        eprintln!("payhook: not requeued: {line}");
    }
    Ok(if refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
