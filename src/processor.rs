//! The background processor: claims due events from the inbox and applies them.
//!
//! A batch is one transaction: claim (on PostgreSQL with `FOR UPDATE SKIP LOCKED`), apply
//! each event inside its own savepoint, record each outcome, commit. An event's effects and
//! its new status therefore commit together or not at all, so a crash never half-applies one
//! and a retry never applies one twice. A database error inside one event's savepoint rolls
//! back only that event, which is retried later with exponential backoff and jitter and ends
//! `dead` after `max_attempts` tries.
//!
//! # Several instances on one PostgreSQL
//!
//! The claim is a row lock held by the batch transaction (`FOR UPDATE SKIP LOCKED`): other
//! instances skip claimed events instead of waiting, and nothing is applied twice because an
//! event's status changes in the same transaction that applies it. Claims expire by
//! themselves: when an instance dies, its connection drops, PostgreSQL aborts its
//! transaction (none of the batch's effects survive) and releases the locks, so the events
//! are claimable again at once. No lease column or timeout to tune.
//!
//! Instances applying events of the same objects still meet on row locks (the checkout, its
//! customer, the payment method). Each batch applies its events grouped by object (sorted by
//! object id, then Stripe time), so two batches take checkout locks in the same order. Rarer
//! cycles through customers or payment methods remain possible; PostgreSQL then aborts one
//! statement with a deadlock error. That is contention, not a fault of the event: the
//! savepoint rolls back that event alone, it is rescheduled after a short jittered delay and
//! its count of tries is left alone (see [`StoreError::is_contention`]). Bounded: each such
//! abort lets the other transaction commit, so contention retries cannot outnumber the
//! conflicting events that completed; an event is never made `dead` by contention.

use std::sync::Arc;
use std::time::Duration;

use log::{debug, error, warn};
use rand::Rng;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::apply::{apply_event, Applied};
use crate::config::ProcessorConfig;
use crate::store::events::{self, EventStatus};
use crate::store::{now_ms, Conn, Pool, StoreError, StoreResult};

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchReport {
    pub claimed: usize,
    pub processed: usize,
    pub ignored: usize,
    pub failed: usize,
    pub retried: usize,
    pub dead: usize,
    /// Rolled back by contention with another transaction; rescheduled, try not counted.
    pub contended: usize,
}

/// Delay before try number `attempts + 1`: `base * 2^(attempts-1)`, capped, times a random
/// factor in [0.5, 1.5) so retries of many events do not land together.
pub fn backoff(config: &ProcessorConfig, attempts: i32) -> Duration {
    let exp = attempts.saturating_sub(1).clamp(0, 30) as u32;
    let raw = config
        .retry_base
        .saturating_mul(1u32 << exp.min(20))
        .min(config.retry_cap);
    raw.mul_f64(rand::rng().random_range(0.5..1.5))
}

/// Claims and applies one batch of due events.
pub fn process_batch(pool: &Pool, config: &ProcessorConfig) -> StoreResult<BatchReport> {
    pool.write(|conn| {
        let now = now_ms();
        let mut due = events::claim_due_events(conn, now, config.batch_size)?;
        // Claimed oldest first across all objects; applied grouped by object so concurrent
        // batches lock checkouts in one order (see the module docs). Per object, Stripe
        // time order is kept.
        due.sort_by(|a, b| {
            (&a.object_id, a.created, a.received_at, &a.id).cmp(&(
                &b.object_id,
                b.created,
                b.received_at,
                &b.id,
            ))
        });
        let mut report = BatchReport {
            claimed: due.len(),
            ..BatchReport::default()
        };
        for event in &due {
            let attempts = event.attempts + 1;
            match conn.transaction(|conn| apply_event(conn, event, now / 1000)) {
                Ok(Applied::Processed) => {
                    report.processed += 1;
                    events::finish_event(
                        conn,
                        &event.id,
                        EventStatus::Processed,
                        attempts,
                        None,
                        now / 1000,
                    )?;
                }
                Ok(Applied::Ignored) => {
                    report.ignored += 1;
                    debug!("event {} of type {} ignored", event.id, event.event_type);
                    events::finish_event(
                        conn,
                        &event.id,
                        EventStatus::Ignored,
                        attempts,
                        None,
                        now / 1000,
                    )?;
                }
                Ok(Applied::Invalid(reason)) => {
                    report.failed += 1;
                    warn!(
                        "event {} ({}) cannot be applied: {reason}",
                        event.id, event.event_type
                    );
                    events::finish_event(
                        conn,
                        &event.id,
                        EventStatus::Failed,
                        attempts,
                        Some(&reason),
                        now / 1000,
                    )?;
                }
                Err(e) => record_failure(conn, config, event, attempts, &e, now, &mut report)?,
            }
        }
        Ok(report)
    })
}

fn record_failure(
    conn: &mut Conn,
    config: &ProcessorConfig,
    event: &events::WebhookEvent,
    attempts: i32,
    error: &StoreError,
    now: i64,
    report: &mut BatchReport,
) -> StoreResult<()> {
    let message = error.to_string();
    if error.is_contention() {
        report.contended += 1;
        let delay = config
            .retry_base
            .mul_f64(rand::rng().random_range(0.5..1.5));
        debug!(
            "event {} ({}) met a concurrent transaction, again in {delay:?}: {message}",
            event.id, event.event_type
        );
        let next = now.saturating_add(delay.as_millis() as i64);
        return events::schedule_event_retry(
            conn,
            &event.id,
            event.attempts,
            next,
            &format!("contention, try not counted: {message}"),
        );
    }
    if attempts >= config.max_attempts {
        report.dead += 1;
        error!(
            "event {} ({}) is dead after {attempts} tries: {message}",
            event.id, event.event_type
        );
        events::finish_event(
            conn,
            &event.id,
            EventStatus::Dead,
            attempts,
            Some(&message),
            now / 1000,
        )
    } else {
        report.retried += 1;
        let delay = backoff(config, attempts);
        warn!(
            "event {} ({}) try {attempts} failed, retrying in {delay:?}: {message}",
            event.id, event.event_type
        );
        let next = now.saturating_add(delay.as_millis() as i64);
        events::schedule_event_retry(conn, &event.id, attempts, next, &message)
    }
}

/// Runs batches until `shutdown`: at once while there is a backlog, on `wake` (new events
/// committed) or every `poll_interval` (due retries) otherwise.
pub async fn run(
    pool: Pool,
    config: ProcessorConfig,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut failures = 0;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let (p, c) = (pool.clone(), config);
        let result = tokio::task::spawn_blocking(move || process_batch(&p, &c)).await;
        let pause = match result {
            Ok(Ok(report)) => {
                failures = 0;
                if report.claimed as i64 >= config.batch_size {
                    continue;
                }
                config.poll_interval
            }
            Ok(Err(e)) => {
                failures += 1;
                let pause = backoff(&config, failures).min(Duration::from_secs(30));
                warn!("processing batch failed (database unavailable?), pausing {pause:?}: {e}");
                pause
            }
            Err(e) => {
                error!("processing batch panicked: {e}");
                config.poll_interval
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
    debug!("processor stopped");
}
