//! `payhook events list|show|retry`: the inbox as the admin API shows it ([`payhook::ops::events`]),
//! from an existing database (never created or migrated here).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use payhook::ops::events::{self, EventQuery};
use payhook::store::{open_existing, DatabaseUrl};

use super::table::{or_dash, print_json, print_table, time};

#[derive(Args)]
pub struct EventsArgs {
    #[command(subcommand)]
    command: EventsCommand,
}

#[derive(Subcommand)]
enum EventsCommand {
    /// List events, newest first.
    List(ListArgs),
    /// Show one event with its payload as received.
    Show {
        id: String,
        /// Print JSON, as the admin API answers.
        #[arg(long)]
        json: bool,
    },
    /// Put a failed or dead event back in the queue (a running `serve` applies it).
    Retry {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct ListArgs {
    /// pending, processed, ignored, failed or dead.
    #[arg(long)]
    status: Option<String>,
    /// An event type; a trailing `*` matches any suffix (`payment_intent.*`).
    #[arg(long = "type")]
    event_type: Option<String>,
    /// The Stripe object the events are about (pi_…, seti_…, pm_…).
    #[arg(long)]
    object_id: Option<String>,
    /// The endpoint the events came through (`default` for /webhooks/stripe).
    #[arg(long)]
    endpoint: Option<String>,
    /// 1 to 100.
    #[arg(long, default_value_t = 20)]
    limit: i64,
    /// The last event id of the previous page.
    #[arg(long)]
    starting_after: Option<String>,
    #[arg(long)]
    json: bool,
}

pub fn run(url: &DatabaseUrl, args: &EventsArgs) -> anyhow::Result<ExitCode> {
    let pool = open_existing(url, super::one_connection())?;
    let mut conn = pool.get()?;
    match &args.command {
        EventsCommand::List(list) => {
            let query = EventQuery {
                status: list.status.clone(),
                event_type: list.event_type.clone(),
                object_id: list.object_id.clone(),
                endpoint: list.endpoint.clone(),
                limit: Some(list.limit),
                starting_after: list.starting_after.clone(),
            };
            let page = events::list(&mut conn, &query)?;
            if list.json {
                return print_json(&page).map(|()| ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = page
                .data
                .iter()
                .map(|e| {
                    vec![
                        e.id.clone(),
                        e.event_type.clone(),
                        e.status.to_string(),
                        e.attempts.to_string(),
                        time(e.created),
                        or_dash(e.last_error.as_deref()),
                    ]
                })
                .collect();
            print_table(
                &["ID", "TYPE", "STATUS", "ATTEMPTS", "CREATED", "LAST ERROR"],
                &rows,
            );
            if page.has_more {
                if let Some(last) = page.data.last() {
                    println!("(more: --starting-after {})", last.id);
                }
            }
        }
        EventsCommand::Show { id, json } => {
            let event = events::show(&mut conn, id)?;
            if *json {
                return print_json(&event).map(|()| ExitCode::SUCCESS);
            }
            let e = &event.summary;
            for (name, value) in [
                ("id", e.id.clone()),
                ("type", e.event_type.clone()),
                ("status", e.status.to_string()),
                ("attempts", e.attempts.to_string()),
                ("created", time(e.created)),
                ("received_at", time(e.received_at)),
                ("processed_at", or_dash(e.processed_at.map(time))),
                ("object_id", or_dash(e.object_id.as_deref())),
                ("account", or_dash(e.account.as_deref())),
                ("livemode", e.livemode.to_string()),
                ("api_version", or_dash(e.api_version.as_deref())),
                ("last_error", or_dash(e.last_error.as_deref())),
            ] {
                println!("{name:<13} {value}");
            }
            let payload: serde_json::Value = serde_json::from_str(event.payload.get())?;
            println!("payload:\n{}", serde_json::to_string_pretty(&payload)?);
        }
        EventsCommand::Retry { id, json } => {
            // `retry` runs in a transaction of its own (BEGIN IMMEDIATE on SQLite).
            let event = events::retry(&mut conn, id)?;
            if *json {
                return print_json(&event).map(|()| ExitCode::SUCCESS);
            }
            println!("event {} requeued: {}", event.id, event.status);
        }
    }
    Ok(ExitCode::SUCCESS)
}
