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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, warn};
use tokio_util::sync::CancellationToken;

use crate::apply::staging::Staging;
use crate::apply::{apply_event_notifying, Applied, Effects};
use crate::config::ProcessorConfig;
use crate::domain::checkout::{CheckoutState, TransitionOutcome};
use crate::inbox::admission::Committed;
use crate::metrics::Metrics;
use crate::retry;
use crate::store::events::{self, EventStatus};
use crate::store::{now_ms, BackgroundThread, Commit, Conn, Pool, StoreError, StoreResult};

/// What one batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchReport {
    pub claimed: usize,
    pub processed: usize,
    pub ignored: usize,
    /// Ended `failed`: handled types whose payload cannot be applied.
    pub invalid: usize,
    pub retried: usize,
    pub dead: usize,
    /// Rolled back by contention with another transaction; rescheduled, try not counted.
    pub contended: usize,
    /// Committed early because another writer was waiting for the SQLite write lock; the
    /// claimed events not yet applied stay pending for the next batch.
    pub yielded: bool,
    /// When the batch ran (unix milliseconds).
    pub at_ms: i64,
    /// An optimistic try failed (an event, or a gathered write) and the batch ran again
    /// event by event ([`Isolation`]).
    pub rerun_event_by_event: bool,
    /// Each event that reached a final status, with its Stripe `created` and the endpoint
    /// it came through: for the metrics, counted by the caller once the batch has committed
    /// ([`BatchReport::record`]).
    pub finished: Vec<(EventStatus, i64, String)>,
    /// Checkout transitions the batch recorded: the state asked for, and the outcome.
    pub transitions: Vec<(CheckoutState, TransitionOutcome)>,
}

impl BatchReport {
    /// Counts the committed batch in `metrics`: events by final status, their lag, and the
    /// checkout transitions.
    pub fn record(&self, metrics: &Metrics) {
        for (status, created, endpoint) in &self.finished {
            let lag = self.at_ms as f64 / 1000.0 - *created as f64;
            metrics.event_finished(endpoint, *status, lag);
        }
        for &(to, outcome) in &self.transitions {
            metrics.transitions(to, outcome, 1);
        }
    }

    /// Events whose try ended in this batch, whatever the outcome.
    pub fn done(&self) -> usize {
        self.processed + self.ignored + self.invalid + self.retried + self.dead + self.contended
    }
}

/// How long the processor stays off the SQLite write lock after yielding it to admission:
/// about one admission commit (an fsync) under a burst. Only batches that yielded pause, so
/// a quiet service applies at once and a backlog without deliveries drains at full speed.
const YIELD_PAUSE: Duration = Duration::from_millis(4);

/// The smallest claim after yielding: small enough that a claim which is cut short wastes
/// little, large enough that each transaction's fixed cost is shared by several events.
const MIN_CLAIM: i64 = 16;

/// The next claim size: after a yield, about twice what fitted between two admission
/// batches; otherwise doubling back up to the configured batch size.
fn next_claim(limit: i64, report: &BatchReport, batch_size: i64) -> i64 {
    if report.yielded {
        (report.done() as i64 * 2).clamp(MIN_CLAIM.min(batch_size), batch_size)
    } else {
        limit.saturating_mul(2).min(batch_size)
    }
}

/// How many claimed events to read (payloads included) per query. On PostgreSQL each read
/// is a round trip, so a chunk of the claim is read at once, bounded so that large payloads
/// do not all sit in memory together (see `ClaimedEvent`). SQLite has no round trip to save
/// and yields after any event, so it reads one at a time with a statement prepared once.
fn read_ahead(conn: &Conn) -> usize {
    if conn.is_postgres() {
        32
    } else {
        1
    }
}

/// Delay before try number `attempts + 1` (see [`retry`]): ±50 % jitter.
fn retry_delay(config: &ProcessorConfig, attempts: i32) -> Duration {
    retry::jitter(
        retry::backoff(config.retry_base, config.retry_cap, attempts),
        0.5,
    )
}

/// Claims and applies one batch of due events (at most `config.batch_size`).
pub fn process_batch(pool: &Pool, config: &ProcessorConfig) -> StoreResult<BatchReport> {
    process_up_to(pool, config, config.batch_size, || pool.writers_waiting())
}

/// Claims up to `limit` due events and applies them, committing early (after at least one)
/// when `yield_now` says so (the processor passes [`Pool::writers_waiting`]: another writer
/// waits for the SQLite write lock) or when the transaction has run for `max_transaction`.
/// On PostgreSQL a delivery of an event the batch has already updated
/// waits in `INSERT … ON CONFLICT` for the batch to commit (the updated row's new index
/// entry belongs to an open transaction), and admission batches hold requests open until they
/// commit: a long batch shows up directly in admission's tail latency (BENCHMARKS.md).
pub fn process_up_to(
    pool: &Pool,
    config: &ProcessorConfig,
    limit: i64,
    yield_now: impl Fn() -> bool,
) -> StoreResult<BatchReport> {
    process_with(pool, config, limit, &yield_now, Isolation::for_pool(pool))
}

/// How one event's failure is kept from the rest of its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Each event in a savepoint of its own: a failing event rolls back alone.
    SavepointPerEvent,
    /// No savepoints (on PostgreSQL each costs two round trips, a fifth of applying an
    /// event); the first failing event rolls the whole batch back, which then runs again
    /// with [`Isolation::SavepointPerEvent`]. Batches without a failure, nearly all of
    /// them, pay nothing for the isolation they did not need.
    Optimistic,
}

impl Isolation {
    /// SQLite's savepoints cost no round trip: always one per event there.
    pub fn for_pool(pool: &Pool) -> Self {
        if pool.is_postgres() {
            Self::Optimistic
        } else {
            Self::SavepointPerEvent
        }
    }
}

/// Why an optimistic batch stopped: a database error, or an event that failed and took
/// the batch's transaction down with it.
enum Attempt {
    Store(StoreError),
    EventFailed,
}

impl From<StoreError> for Attempt {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<diesel::result::Error> for Attempt {
    fn from(e: diesel::result::Error) -> Self {
        Self::Store(e.into())
    }
}

/// [`process_up_to`] with the isolation given; an optimistic batch in which an event fails
/// is rolled back and run again with a savepoint per event.
pub fn process_with(
    pool: &Pool,
    config: &ProcessorConfig,
    limit: i64,
    yield_now: &impl Fn() -> bool,
    isolation: Isolation,
) -> StoreResult<BatchReport> {
    if isolation == Isolation::Optimistic {
        match run_batch(pool, config, limit, yield_now, isolation) {
            Ok(report) => return Ok(report),
            Err(Attempt::Store(e)) => return Err(e),
            Err(Attempt::EventFailed) => {
                debug!("an event failed in an optimistic batch; applying it again event by event")
            }
        }
    }
    match run_batch(pool, config, limit, yield_now, Isolation::SavepointPerEvent) {
        Ok(report) => Ok(BatchReport {
            rerun_event_by_event: isolation == Isolation::Optimistic,
            ..report
        }),
        Err(Attempt::Store(e)) => Err(e),
        Err(Attempt::EventFailed) => Err(StoreError::Task(
            "an event failed outside its savepoint".to_owned(),
        )),
    }
}

fn run_batch(
    pool: &Pool,
    config: &ProcessorConfig,
    limit: i64,
    yield_now: &impl Fn() -> bool,
    isolation: Isolation,
) -> Result<BatchReport, Attempt> {
    // Deferred: the events are durable already, and on SQLite the fsync this saves was
    // taken under the write lock admission waits for (see `Commit::Deferred`).
    pool.write_with(Commit::Deferred, |conn| {
        // From here, not from the call: waiting for the write lock is not the transaction's.
        let started = Instant::now();
        let yield_now = || yield_now() || started.elapsed() >= config.max_transaction;
        let now = now_ms();
        conn.keyed_access_only()?;
        let mut due = events::claim_due_events(conn, now, limit.max(1))?;
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
        // Optimistic batches gather their writes and make them set-wise (see `Staging`),
        // starting with one read of every checkout the batch may move, locked in intent
        // order; a batch run event by event writes as it goes.
        let mut staging = match isolation {
            Isolation::Optimistic => Staging::batch(),
            Isolation::SavepointPerEvent => Staging::immediate(),
        };
        let mut objects: Vec<&str> = due.iter().filter_map(|c| c.object_id.as_deref()).collect();
        objects.dedup();
        staging.lock_checkouts(conn, &objects)?;
        let mut report = BatchReport {
            claimed: due.len(),
            at_ms: now,
            ..BatchReport::default()
        };
        // On PostgreSQL outcomes are written together when the batch ends (same transaction,
        // so still atomic with each event's effects; see `events::finish_events`). SQLite
        // has no round trip to save and writes each as it is known, so that a batch which
        // yields to admission commits at once instead of first writing every outcome.
        let outcomes_at_end = conn.is_postgres();
        let mut finished = Vec::with_capacity(due.len());
        let read_ahead = read_ahead(conn);
        let mut read: HashMap<String, events::WebhookEvent> = HashMap::new();
        for (n, claimed) in due.iter().enumerate() {
            if n % read_ahead == 0 {
                let ids: Vec<&str> = due[n..due.len().min(n + read_ahead)]
                    .iter()
                    .map(|c| c.id.as_str())
                    .collect();
                let chunk: Vec<events::WebhookEvent> = if let [id] = ids.as_slice() {
                    events::find_event(conn, id)?.into_iter().collect()
                } else {
                    events::find_events(conn, &ids)?
                };
                staging.read_ahead(conn, &chunk)?;
                read = chunk.into_iter().map(|e| (e.id.clone(), e)).collect();
            }
            // The claim holds the row for this transaction, so it is there.
            let event = &read.remove(&claimed.id).ok_or_else(|| {
                StoreError::Corrupt(format!("claimed event {} vanished", claimed.id))
            })?;
            if event.status != EventStatus::Pending {
                // Only a hand-made change of `webhook_events` leaves a queue row behind
                // (events.rs keeps the two in step); applying the event again would not be
                // exactly once.
                warn!(
                    "event {} was queued though {}; dropped from the queue, not applied",
                    event.id, event.status
                );
                events::dequeue(conn, claimed.queue_key())?;
                continue;
            }
            let attempts = event.attempts + 1;
            let mut effects = Effects::default();
            let applied = match isolation {
                Isolation::SavepointPerEvent => conn.savepoint(|conn| {
                    apply_event_notifying(
                        conn,
                        event,
                        now / 1000,
                        config.notifications,
                        &mut effects,
                        &mut staging,
                    )
                }),
                Isolation::Optimistic => {
                    match apply_event_notifying(
                        conn,
                        event,
                        now / 1000,
                        config.notifications,
                        &mut effects,
                        &mut staging,
                    ) {
                        Err(_) => return Err(Attempt::EventFailed),
                        applied => applied,
                    }
                }
            };
            if applied.is_ok() {
                report.transitions.append(&mut effects.transitions);
            }
            let finish = |status, error| events::Finished {
                id: claimed.id.clone(),
                created: claimed.created,
                received_at: claimed.received_at,
                status,
                attempts,
                error,
            };
            match applied {
                Ok(Applied::Processed) => {
                    report.processed += 1;
                    report.finished.push((
                        EventStatus::Processed,
                        event.created,
                        event.endpoint.clone(),
                    ));
                    finished.push(finish(EventStatus::Processed, None));
                }
                Ok(Applied::Ignored) => {
                    report.ignored += 1;
                    report.finished.push((
                        EventStatus::Ignored,
                        event.created,
                        event.endpoint.clone(),
                    ));
                    debug!("event {} of type {} ignored", event.id, event.event_type);
                    finished.push(finish(EventStatus::Ignored, None));
                }
                Ok(Applied::Invalid(reason)) => {
                    report.invalid += 1;
                    report.finished.push((
                        EventStatus::Failed,
                        event.created,
                        event.endpoint.clone(),
                    ));
                    warn!(
                        "event {} ({}) cannot be applied: {reason}",
                        event.id, event.event_type
                    );
                    finished.push(finish(EventStatus::Failed, Some(reason)));
                }
                Err(e) => {
                    let key = claimed.queue_key();
                    record_failure(conn, config, event, key, &e, now, &mut report)?
                }
            }
            if !outcomes_at_end {
                events::finish_events(conn, &finished, now / 1000)?;
                finished.clear();
            }
            if n + 1 < due.len() && yield_now() {
                report.yielded = true;
                break;
            }
        }
        // A gathered write that fails (a checkout another instance created meanwhile) fails
        // the try, which runs again event by event, where each event's failure is its own.
        if let Err(e) = staging.flush(conn) {
            debug!("writing the batch's gathered changes failed: {e}");
            return Err(Attempt::EventFailed);
        }
        events::finish_events(conn, &finished, now / 1000)?;
        Ok(report)
    })
}

/// Records a failed try of `event`, claimed as `key`: its try number is one more than the
/// tries it had.
fn record_failure(
    conn: &mut Conn,
    config: &ProcessorConfig,
    event: &events::WebhookEvent,
    key: events::QueueKey<'_>,
    error: &StoreError,
    now: i64,
    report: &mut BatchReport,
) -> StoreResult<()> {
    let attempts = event.attempts + 1;
    let message = error.to_string();
    if error.is_contention() {
        report.contended += 1;
        let delay = retry::jitter(config.retry_base, 0.5);
        debug!(
            "event {} ({}) met a concurrent transaction, again in {delay:?}: {message}",
            event.id, event.event_type
        );
        let next = now.saturating_add(delay.as_millis() as i64);
        return events::schedule_event_retry(
            conn,
            key,
            event.attempts,
            next,
            &format!("contention, try not counted: {message}"),
        );
    }
    if attempts >= config.max_attempts {
        report.dead += 1;
        report
            .finished
            .push((EventStatus::Dead, event.created, event.endpoint.clone()));
        error!(
            "event {} ({}) is dead after {attempts} tries: {message}",
            event.id, event.event_type
        );
        events::finish_event(
            conn,
            key,
            EventStatus::Dead,
            attempts,
            Some(&message),
            now / 1000,
        )
    } else {
        report.retried += 1;
        let delay = retry_delay(config, attempts);
        warn!(
            "event {} ({}) try {attempts} failed, retrying in {delay:?}: {message}",
            event.id, event.event_type
        );
        let next = now.saturating_add(delay.as_millis() as i64);
        events::schedule_event_retry(conn, key, attempts, next, &message)
    }
}

/// Which part a processor plays among the `PROCESS_WORKERS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Applies whenever there is work: woken by each commit of new events.
    First,
    /// Joins only while no delivery is being stored. A batch applied set-wise keeps its
    /// PostgreSQL backend busy for milliseconds at a time, and those backends run at the
    /// priority admission's do (only payhook's own threads are niced): two of them at once
    /// took both cores from deliveries and doubled the p99 of acknowledging at 1 000/s
    /// (BENCHMARKS.md). One processor keeps up with deliveries; the others drain a backlog
    /// once they stop.
    Helper,
}

impl Role {
    /// The first of `n` processors is [`Role::First`], the others [`Role::Helper`]s.
    pub fn of(n: usize) -> Self {
        if n == 0 {
            Self::First
        } else {
            Self::Helper
        }
    }
}

/// How long a helper waits for deliveries to stop (no new events committed meanwhile). An
/// idle helper looks for a backlog every `poll_interval`; it never waits for a wake-up, which
/// would take it from the first processor.
const HELPER_QUIET: Duration = Duration::from_millis(100);

/// Runs batches until `shutdown`: at once while there is a backlog, `gather` after `committed`
/// (new events committed) or every `poll_interval` (due retries) otherwise; a [`Role::Helper`]
/// only while no deliveries are being stored.
///
/// Why `gather`: woken by every commit, the processor applied a steady trickle of deliveries
/// one event per transaction, each with its fixed cost (on PostgreSQL round trips, on both
/// backends the pages of the checkout, the transition, the queue and their indexes written
/// again). Waiting a few milliseconds lets the events of that interval share one transaction.
/// At 1 000 deliveries/s, 10 ms took the whole machine's CPU per event from 976–1 108 µs to
/// 396–500 µs on PostgreSQL and from 292–374 µs to 184–308 µs on SQLite, and the disk writes
/// per event from 102–121 KB to 64–66 KB on SQLite. The price: events are applied up to
/// `gather` later, and SQLite's p99 acknowledgement rose from 0.62–1.68 ms to 0.90–2.27 ms
/// (its p50 fell from 0.22–0.32 ms to 0.14–0.20 ms), since an admission now meets a longer
/// processor transaction now and then (BENCHMARKS.md, 1 December, 11:37–11:49). A backlog
/// is not delayed: after a full batch the next one runs at once.
///
/// Batches run on `thread`, which [`crate::inbox::background`] starts at a lower CPU priority.
pub async fn run(
    pool: Pool,
    config: ProcessorConfig,
    role: Role,
    thread: BackgroundThread,
    committed: Arc<Committed>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut failures = 0;
    let mut limit = config.batch_size;
    let mut isolation = Isolation::for_pool(&pool);
    let mut commits_seen = committed.count();
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        if role == Role::Helper {
            let commits = committed.count();
            if commits != commits_seen {
                commits_seen = commits;
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(HELPER_QUIET) => {}
                }
                continue;
            }
        }
        let result = pool
            .run_on(&thread, move |p| {
                process_with(p, &config, limit, &|| p.writers_waiting(), isolation)
            })
            .await;
        let pause = match result {
            Ok(report) => {
                report.record(&metrics);
                // A batch in which events failed (contention between instances comes in
                // runs) is followed by a careful one; a clean careful one ends the caution.
                isolation = if report.retried + report.dead + report.contended > 0 {
                    Isolation::SavepointPerEvent
                } else {
                    Isolation::for_pool(&pool)
                };
                failures = 0;
                let claimed_all = report.claimed as i64 >= limit;
                limit = next_claim(limit, &report, config.batch_size);
                if report.yielded {
                    // Admission waited for the write lock during this batch: a burst is on.
                    // Leave it a commit or two before taking the lock again (acknowledging
                    // first, applying just after; BENCHMARKS.md).
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(YIELD_PAUSE) => {}
                    }
                    continue;
                }
                if claimed_all {
                    continue;
                }
                config.poll_interval
            }
            // The thread is gone: this processor cannot work any more, and its task ending
            // tells the supervisor so.
            Err(e @ StoreError::ThreadStopped) => {
                error!("processor stops: {e}");
                return;
            }
            Err(e) => {
                failures += 1;
                let pause = retry_delay(&config, failures).min(Duration::from_secs(30));
                warn!("processing batch failed (database unavailable?), pausing {pause:?}: {e}");
                pause
            }
        };
        if role == Role::Helper {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
            continue;
        }
        let woken_by_a_delivery = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = committed.notified() => true,
            _ = tokio::time::sleep(pause) => false,
        };
        if woken_by_a_delivery && !config.gather.is_zero() {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(config.gather) => {}
            }
        }
    }
    debug!("processor stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yielded_after(done: usize) -> BatchReport {
        BatchReport {
            claimed: 500,
            processed: done,
            yielded: true,
            ..BatchReport::default()
        }
    }

    #[test]
    fn claims_shrink_to_what_fitted_between_writers_and_grow_back_by_doubling() {
        assert_eq!(next_claim(500, &yielded_after(40), 500), 80);
        assert_eq!(next_claim(500, &yielded_after(1), 500), MIN_CLAIM);
        assert_eq!(next_claim(80, &yielded_after(400), 500), 500);
        let full = BatchReport {
            claimed: 80,
            processed: 80,
            ..BatchReport::default()
        };
        assert_eq!(next_claim(80, &full, 500), 160);
        assert_eq!(next_claim(400, &full, 500), 500);
        // A configured batch below the floor is still respected.
        assert_eq!(next_claim(4, &yielded_after(1), 4), 4);
    }

    #[test]
    fn every_outcome_counts_as_done() {
        let report = BatchReport {
            claimed: 9,
            processed: 1,
            ignored: 2,
            invalid: 1,
            retried: 1,
            dead: 1,
            contended: 1,
            ..BatchReport::default()
        };
        assert_eq!(report.done(), 7);
    }
}
