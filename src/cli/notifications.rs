//! `payhook notifications list|retry`: notifications to the app (the outbox's `notify` work),
//! from an existing database (never created or migrated here).
//!
//! `list` prints one tab-separated row per notification, newest first: id, status, type,
//! checkout, sequence, tries, the last attempt's HTTP status and error. `retry` puts failed
//! ones back in the queue (all, or the ids named); a running `serve` delivers them, with the
//! same `webhook-id` and body as before.

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use payhook::outbox::notify::KIND;
use payhook::store::outbox::{self, OutboxStatus};
use payhook::store::{open_existing, DatabaseUrl, StoreError};
use serde_json::Value;

#[derive(Args)]
pub struct NotificationsArgs {
    #[command(subcommand)]
    command: NotificationsCommand,
}

#[derive(Subcommand)]
enum NotificationsCommand {
    /// List notifications, newest first.
    List {
        /// Only notifications in this status.
        #[arg(long, value_enum)]
        status: Option<Status>,
        /// At most this many rows.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Requeue failed notifications: all of them, or the ids named.
    Retry {
        /// Notification ids (the first column of `list`).
        ids: Vec<i64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Status {
    Pending,
    Done,
    Failed,
}

impl From<Status> for OutboxStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Pending => Self::Pending,
            Status::Done => Self::Done,
            Status::Failed => Self::Failed,
        }
    }
}

pub fn run(url: &DatabaseUrl, args: &NotificationsArgs) -> anyhow::Result<ExitCode> {
    let pool = open_existing(url, super::one_connection())?;
    let mut conn = pool.get()?;
    match &args.command {
        NotificationsCommand::List { status, limit } => {
            let mut items = outbox::list_items(&mut conn, KIND)?;
            items.reverse();
            println!("id\tstatus\ttype\tcheckout\tsequence\ttries\tlast_http\tlast_error");
            for item in items
                .iter()
                .filter(|i| status.is_none_or(|s| i.status == OutboxStatus::from(s)))
                .take(*limit)
            {
                let data: Value = serde_json::from_str(&item.data).unwrap_or_default();
                let sequence = data["body"]
                    .as_str()
                    .and_then(|b| serde_json::from_str::<Value>(b).ok())
                    .and_then(|b| b["data"]["sequence"].as_i64());
                let last = outbox::list_attempts(&mut conn, item.id)?.pop();
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    item.id,
                    item.status,
                    data["type"].as_str().unwrap_or("-"),
                    item.checkout_id.as_deref().unwrap_or("-"),
                    sequence.map_or("-".to_owned(), |s| s.to_string()),
                    outbox::list_attempts(&mut conn, item.id)?.len(),
                    last.as_ref()
                        .and_then(|a| a.status_code)
                        .map_or("-".to_owned(), |s| s.to_string()),
                    item.last_error_code.as_deref().unwrap_or("-"),
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        NotificationsCommand::Retry { ids } => {
            let requeued = conn.transaction(|conn| -> Result<Vec<i64>, StoreError> {
                if ids.is_empty() {
                    Ok(outbox::requeue_failed_items(conn, &[KIND])?
                        .into_iter()
                        .map(|i| i.id)
                        .collect())
                } else {
                    outbox::requeue_failed_items_by_id(conn, KIND, ids)
                }
            })?;
            println!("{} failed notifications requeued", requeued.len());
            let refused: Vec<&i64> = ids.iter().filter(|id| !requeued.contains(id)).collect();
            for id in &refused {
                eprintln!("payhook: not requeued: {id}: no such failed notification");
            }
            Ok(if refused.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
