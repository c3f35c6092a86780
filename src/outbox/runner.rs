//! The outbox runner: claims due items, runs their kind's steps, records every attempt,
//! retries with backoff, and knows no kind.
//!
//! Each kind of work implements [`Kind`] and is registered when the runner is built; an
//! item runs one step at a time from the step its row records, and the runner records the
//! next step after each one, so a crash or a lost lease resumes where it stopped (with the
//! same idempotency keys: kinds derive them from the item's key).
//!
//! Rules that make it safe:
//! - No database transaction is held across a step's remote call: claim (short
//!   transaction) → run the step → record (short transaction).
//! - A claim is a lease: another worker may take an item over only once it runs out, and
//!   every record first checks the lease is still held (see [`crate::store::outbox`]).
//! - Items of one lane never run at the same time (the claim skips busy lanes).
//! - A retryable failure waits as the kind's [`RetryPolicy`] says (at least the remote's
//!   `Retry-After`), a permanent one ends the item `failed` at once; either way the error
//!   stays on the row and every attempt is in `outbox_attempts`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use log::{debug, error, info, warn};
use tokio_util::sync::CancellationToken;

use crate::config::ActionConfig;
use crate::retry;
use crate::store::outbox::{self as store, AttemptOutcome, NewAttempt, OutboxRow, OutboxStatus};
use crate::store::{now_ms, now_secs, Conn, Pool, StoreError, StoreResult};

/// One kind of outbox work.
pub trait Kind: Send + Sync + 'static {
    /// Stored in `outbox.kind`.
    fn name(&self) -> &'static str;

    /// Runs the step the item's row records, and says what comes next.
    fn run_step<'a>(&'a self, ctx: &'a StepContext<'a>)
        -> BoxFuture<'a, Result<Progress, Failure>>;

    /// How long to wait after failed tries.
    fn retry_policy(&self) -> &RetryPolicy;

    /// Runs in the transaction that ends the item (done or failed), to keep what depends
    /// on it in step, e.g. queue a notification.
    fn on_end(&self, conn: &mut Conn, item: &OutboxRow, end: &End) -> StoreResult<()> {
        let _ = (conn, item, end);
        Ok(())
    }
}

/// What a step sees: the database and the item as claimed.
pub struct StepContext<'a> {
    pub pool: &'a Pool,
    pub item: &'a OutboxRow,
    status: Mutex<Option<u16>>,
}

impl StepContext<'_> {
    /// Notes the HTTP status of the remote answer, recorded with the attempt.
    pub fn observed_status(&self, status: u16) {
        *self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(status);
    }

    /// The item's data, as its kind wrote it.
    pub fn data<T: serde::de::DeserializeOwned>(&self) -> Result<T, Failure> {
        serde_json::from_str(&self.item.data).map_err(|e| {
            Failure::permanent(
                "invalid_data",
                format!("outbox item data does not parse: {e}"),
            )
        })
    }
}

/// What comes after a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Go on with the step (and data, lane) in the update, recorded first.
    Next(Update),
    /// Record the update, give the lease back and wait for the next claim: the item's lane
    /// just became known and the claim must serialize it with the lane's other items.
    Requeue(Update),
    /// Finished; `result` is kept on the row.
    Done { result: serde_json::Value },
}

/// The item's new progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub step: &'static str,
    /// New data (the kind's JSON), when it changed.
    pub data: Option<serde_json::Value>,
    /// New lane, when it changed.
    pub lane: Option<String>,
}

impl Update {
    pub fn step(step: &'static str) -> Self {
        Self {
            step,
            data: None,
            lane: None,
        }
    }
}

/// Why a step did not complete.
#[derive(Debug)]
pub struct Failure {
    pub class: FailureClass,
    /// Machine-readable: the remote's error code, or one of ours.
    pub code: String,
    pub message: String,
    /// The remote asked us to wait at least this long (`Retry-After`).
    pub retry_after: Option<Duration>,
}

#[derive(Debug)]
pub enum FailureClass {
    /// Worth trying again later: network, timeouts, 5xx, 429.
    Retryable,
    /// Will fail the same way again.
    Permanent,
    /// The database failed while recording: the lease runs out and the item is resumed
    /// later (a corrupt row is permanent instead).
    Database(StoreError),
}

impl Failure {
    pub fn retryable(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            class: FailureClass::Retryable,
            code: code.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn permanent(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            class: FailureClass::Permanent,
            code: code.into(),
            message: message.into(),
            retry_after: None,
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self {
            code: "database".to_owned(),
            message: e.to_string(),
            class: FailureClass::Database(e),
            retry_after: None,
        }
    }
}

/// How an item ended, for [`Kind::on_end`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    Done,
    Failed { code: String, message: String },
}

/// How long a kind waits between tries.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryPolicy {
    /// `base * 2^(tries-1)` capped at `cap`, times a random factor in [0.5, 1.5) so retries
    /// of many items do not land together; failed after `max_attempts` tries.
    Exponential {
        base: Duration,
        cap: Duration,
        max_attempts: i32,
    },
    /// The n-th retry waits about `delays[n-1]` (±10 % jitter); failed after the last one.
    Schedule(Vec<Duration>),
}

impl RetryPolicy {
    /// The Stripe side effects' policy, from configuration.
    pub fn from_config(config: &ActionConfig) -> Self {
        Self::Exponential {
            base: config.retry_base,
            cap: config.retry_cap,
            max_attempts: config.max_attempts,
        }
    }

    /// The wait before the next try after `tries` failed ones, or `None` to give up.
    pub fn delay(&self, tries: i32) -> Option<Duration> {
        match self {
            Self::Exponential {
                base,
                cap,
                max_attempts,
            } => {
                if tries >= *max_attempts {
                    return None;
                }
                Some(retry::jitter(retry::backoff(*base, *cap, tries), 0.5))
            }
            Self::Schedule(delays) => {
                let index = usize::try_from(tries.max(1) - 1).unwrap_or(0);
                delays.get(index).map(|d| retry::jitter(*d, 0.1))
            }
        }
    }
}

/// The runner: the registered kinds and what claiming needs.
pub struct Runner {
    pool: Pool,
    config: ActionConfig,
    kinds: HashMap<&'static str, Arc<dyn Kind>>,
    names: Vec<&'static str>,
    /// Written into `locked_by`: which process holds a lease.
    worker_id: String,
}

impl Runner {
    pub fn new(pool: Pool, config: ActionConfig, kinds: Vec<Arc<dyn Kind>>) -> Self {
        let names: Vec<&'static str> = kinds.iter().map(|k| k.name()).collect();
        Self {
            pool,
            config,
            kinds: kinds.into_iter().map(|k| (k.name(), k)).collect(),
            names,
            worker_id: format!("{}-{:08x}", std::process::id(), rand::random::<u32>()),
        }
    }

    /// The kinds this runner performs.
    pub fn kinds(&self) -> &[&'static str] {
        &self.names
    }

    fn lease_until(&self) -> i64 {
        now_ms().saturating_add(self.config.lease.as_millis() as i64)
    }

    /// Runs `f` on a pooled connection. A busy or briefly unreachable database is tried
    /// again a few times: most records here follow a remote call that already happened, and
    /// giving up would leave the item idle until its lease runs out. A lost lease
    /// ([`StoreError::Conflict`]) is final.
    async fn db<T: Send + 'static>(
        &self,
        f: impl Fn(&mut Conn) -> StoreResult<T> + Send + Sync + 'static,
    ) -> StoreResult<T> {
        let f = Arc::new(f);
        let mut tries = 0;
        loop {
            tries += 1;
            let f = f.clone();
            match self.pool.run(move |conn| f(conn)).await {
                Err(StoreError::Pool(_) | StoreError::Query(_)) if tries < 5 => {
                    tokio::time::sleep(Duration::from_millis(25 << tries)).await;
                }
                other => return other,
            }
        }
    }

    /// Claims due items and runs them concurrently; returns how many were claimed.
    pub async fn run_batch(&self) -> StoreResult<usize> {
        let (worker, limit, lease_until) = (
            self.worker_id.clone(),
            self.config.concurrency.max(1) as i64,
            self.lease_until(),
        );
        let kinds = self.names.clone();
        let claimed = self
            .db(move |conn| {
                conn.transaction(|conn| {
                    store::claim_due_items(conn, &kinds, &worker, now_ms(), lease_until, limit)
                })
            })
            .await?;
        let n = claimed.len();
        futures_util::future::join_all(claimed.into_iter().map(|item| self.execute(item))).await;
        Ok(n)
    }

    /// Runs batches until a claim finds nothing due; returns how many items were claimed.
    /// Tests drain the outbox with it instead of waiting for the background loop.
    pub async fn run_until_idle(&self) -> StoreResult<usize> {
        let mut total = 0;
        loop {
            match self.run_batch().await? {
                0 => return Ok(total),
                n => total += n,
            }
        }
    }

    /// Runs one claimed item from its recorded step until it is done, fails, or has to wait.
    async fn execute(&self, mut item: OutboxRow) {
        let Some(kind) = self.kinds.get(item.kind.as_str()).cloned() else {
            // The claim only takes registered kinds.
            return error!(
                "outbox item {} has unregistered kind {}",
                item.id, item.kind
            );
        };
        loop {
            let ctx = StepContext {
                pool: &self.pool,
                item: &item,
                status: Mutex::new(None),
            };
            let started = (now_ms(), Instant::now());
            let outcome = kind.run_step(&ctx).await;
            let status = *ctx
                .status
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.record_attempt(&item, started, status, &outcome).await;
            match outcome {
                Ok(Progress::Next(update)) => {
                    let Some(next) = self.record_progress(&item, update).await else {
                        return;
                    };
                    item = next;
                }
                Ok(Progress::Requeue(update)) => {
                    if let Some(next) = self.record_progress(&item, update).await {
                        self.requeue_now(&next).await;
                    }
                    return;
                }
                Ok(Progress::Done { result }) => {
                    return self.finish(kind.as_ref(), &item, result).await
                }
                Err(failure) => return self.handle_failure(kind.as_ref(), &item, failure).await,
            }
        }
    }

    async fn record_attempt(
        &self,
        item: &OutboxRow,
        (started_ms, started): (i64, Instant),
        status: Option<u16>,
        outcome: &Result<Progress, Failure>,
    ) {
        let (result, error) = match outcome {
            Ok(_) => (AttemptOutcome::Ok, None),
            Err(f) => (
                match f.class {
                    FailureClass::Permanent => AttemptOutcome::Permanent,
                    FailureClass::Retryable | FailureClass::Database(_) => {
                        AttemptOutcome::Retryable
                    }
                },
                Some((f.code.clone(), f.message.clone())),
            ),
        };
        let (id, step) = (item.id, item.step.clone());
        let duration_ms = started.elapsed().as_millis() as i64;
        let recorded = self
            .db(move |conn| {
                store::insert_attempt(
                    conn,
                    &NewAttempt {
                        item_id: id,
                        step: &step,
                        started_at_ms: started_ms,
                        duration_ms,
                        outcome: result,
                        status_code: status.map(i32::from),
                        error_code: error.as_ref().map(|e| e.0.as_str()),
                        error: error.as_ref().map(|e| e.1.as_str()),
                    },
                )
            })
            .await;
        if let Err(e) = recorded {
            // The attempt is history; losing its record must not stop the item.
            warn!("outbox item {}: recording the attempt failed: {e}", item.id);
        }
    }

    /// Records `update` under the lease; returns the item as recorded, or `None` when the
    /// lease is gone (whoever takes over resumes at the recorded step, with the same keys).
    async fn record_progress(&self, item: &OutboxRow, update: Update) -> Option<OutboxRow> {
        let mut next = item.clone();
        next.step = update.step.to_owned();
        if let Some(data) = update.data {
            next.data = data.to_string();
        }
        if let Some(lane) = update.lane {
            next.lane = Some(lane);
        }
        let (row, lease) = (next.clone(), self.lease_until());
        match self
            .db(move |conn| store::record_progress(conn, &row, lease, now_secs()))
            .await
        {
            Ok(()) => Some(next),
            Err(e) => {
                warn!("outbox item {} ({}): {e}", item.id, item.idempotency_key);
                None
            }
        }
    }

    async fn finish(&self, kind: &dyn Kind, item: &OutboxRow, result: serde_json::Value) {
        let (row, result) = (item.clone(), result.to_string());
        let recorded = self
            .end(kind, item, End::Done, move |conn| {
                store::finish_item(
                    conn,
                    &row,
                    OutboxStatus::Done,
                    row.attempts,
                    None,
                    Some(&result),
                    now_secs(),
                )
            })
            .await;
        match recorded {
            Ok(()) => info!("outbox item {} ({}) done", item.id, item.idempotency_key),
            Err(e) => warn!("outbox item {}: recording done failed: {e}", item.id),
        }
    }

    async fn fail(&self, kind: &dyn Kind, item: &OutboxRow, code: String, message: String) {
        error!(
            "outbox item {} ({}) failed at step {}: {code}: {message}",
            item.id, item.idempotency_key, item.step
        );
        let row = item.clone();
        let attempts = item.attempts + 1;
        let end = End::Failed {
            code: code.clone(),
            message: message.clone(),
        };
        let recorded = self
            .end(kind, item, end, move |conn| {
                store::finish_item(
                    conn,
                    &row,
                    OutboxStatus::Failed,
                    attempts,
                    Some((&code, &message)),
                    None,
                    now_secs(),
                )
            })
            .await;
        if let Err(e) = recorded {
            warn!("outbox item {}: recording the failure failed: {e}", item.id);
        }
    }

    /// Ends the item with `record` and the kind's [`Kind::on_end`] in one transaction.
    async fn end(
        &self,
        kind: &dyn Kind,
        item: &OutboxRow,
        end: End,
        record: impl Fn(&mut Conn) -> StoreResult<()> + Send + Sync + 'static,
    ) -> StoreResult<()> {
        let kind = self
            .kinds
            .get(kind.name())
            .cloned()
            .ok_or_else(|| StoreError::Corrupt(format!("kind {} vanished", kind.name())))?;
        let row = item.clone();
        self.db(move |conn| {
            conn.transaction(|conn| {
                record(conn)?;
                kind.on_end(conn, &row, &end)
            })
        })
        .await
    }

    async fn handle_failure(&self, kind: &dyn Kind, item: &OutboxRow, failure: Failure) {
        match failure.class {
            FailureClass::Permanent | FailureClass::Database(StoreError::Corrupt(_)) => {
                self.fail(kind, item, failure.code, failure.message).await
            }
            FailureClass::Database(e) => warn!(
                "outbox item {} ({}) step {}: database error, resuming after the lease: {e}",
                item.id, item.idempotency_key, item.step
            ),
            FailureClass::Retryable => {
                let tries = item.attempts + 1;
                let Some(delay) = kind.retry_policy().delay(tries) else {
                    let message =
                        format!("{tries} tries; last: {}: {}", failure.code, failure.message);
                    return self
                        .fail(kind, item, "retries_exhausted".to_owned(), message)
                        .await;
                };
                let delay = delay.max(failure.retry_after.unwrap_or_default());
                warn!(
                    "outbox item {} ({}) step {} try {tries} failed, retrying in {delay:?}: {}: {}",
                    item.id, item.idempotency_key, item.step, failure.code, failure.message
                );
                let row = item.clone();
                let next = now_ms().saturating_add(delay.as_millis() as i64);
                let (code, message) = (failure.code, failure.message);
                let recorded = self
                    .db(move |conn| {
                        store::schedule_item_retry(
                            conn,
                            &row,
                            tries,
                            next,
                            Some((&code, &message)),
                            now_secs(),
                        )
                    })
                    .await;
                if let Err(e) = recorded {
                    warn!("outbox item {}: recording the retry failed: {e}", item.id);
                }
            }
        }
    }

    async fn requeue_now(&self, item: &OutboxRow) {
        let row = item.clone();
        let recorded = self
            .db(move |conn| {
                store::schedule_item_retry(conn, &row, row.attempts, 0, None, now_secs())
            })
            .await;
        if let Err(e) = recorded {
            warn!("outbox item {}: giving the lease back failed: {e}", item.id);
        }
    }

    /// Runs batches until `shutdown`: at once while there is a backlog, every `poll_interval`
    /// otherwise. On shutdown in-flight items get `shutdown_grace` to finish; abandoning them
    /// after that is safe (their lease runs out, the next run resumes with the same keys).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        info!(
            "outbox runner {} started ({}; {} at once)",
            self.worker_id,
            self.names.join(", "),
            self.config.concurrency
        );
        let mut failures = 0;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let grace = self.config.shutdown_grace;
            let batch = tokio::select! {
                r = self.run_batch() => r,
                _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                    warn!("outbox runner stopped with items in flight; they resume after their lease");
                    break;
                }
            };
            let pause = match batch {
                Ok(n) => {
                    failures = 0;
                    if n > 0 {
                        continue;
                    }
                    self.config.poll_interval
                }
                Err(e) => {
                    failures += 1;
                    let pause =
                        retry::backoff(self.config.retry_base, Duration::from_secs(30), failures);
                    warn!("claiming outbox items failed (database unavailable?), pausing {pause:?}: {e}");
                    pause
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        debug!("outbox runner stopped");
    }
}

/// `payhook retry`: failed items of `kinds` go back to pending, resuming at the step they
/// stopped at with a fresh count of tries and the same idempotency keys. Returns how many.
pub fn requeue_failed(conn: &mut Conn, kinds: &[&str]) -> StoreResult<usize> {
    conn.transaction(|conn| Ok(store::requeue_failed_items(conn, kinds)?.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_doubles_up_to_the_cap_then_gives_up() {
        let policy = RetryPolicy::Exponential {
            base: Duration::from_secs(2),
            cap: Duration::from_secs(10),
            max_attempts: 4,
        };
        for (tries, raw) in [(1, 2), (2, 4), (3, 8)] {
            let d = policy.delay(tries).unwrap().as_secs_f64();
            assert!(
                (raw as f64 * 0.5..raw as f64 * 1.5).contains(&d),
                "{tries}: {d}"
            );
        }
        assert_eq!(policy.delay(4), None);
    }

    #[test]
    fn a_schedule_is_followed_then_gives_up() {
        let policy = RetryPolicy::Schedule(vec![Duration::from_secs(5), Duration::from_secs(300)]);
        let first = policy.delay(1).unwrap().as_secs_f64();
        assert!((4.5..5.5).contains(&first), "{first}");
        let second = policy.delay(2).unwrap().as_secs_f64();
        assert!((270.0..330.0).contains(&second), "{second}");
        assert_eq!(policy.delay(3), None);
    }
}
