//! Reconciliation: events Stripe has but payhook may have missed (an outage longer than
//! Stripe's retries, a disabled endpoint, a wrong secret for an afternoon), found through
//! Stripe's Events API and admitted exactly like deliveries.
//!
//! A pass lists `GET /v1/events` for the handled types (`types[]`) from the stored cursor
//! minus an overlap up to now, and hands every event to the same row builder and admission
//! as the webhook handler ([`super::ingest`], [`super::admission`]); the insert-if-absent on
//! the event id makes an event payhook already has a no-op (`known`).
//!
//! - **Oldest first.** Stripe lists newest first. The range is cut into windows of
//!   `created` seconds, oldest window first; each window is listed whole (newest first,
//!   page by page), turned around, admitted, and the cursor stored. A window that holds more
//!   than [`WINDOW_EVENTS`] events is halved before anything of it is admitted, and windows
//!   grow again while they stay small, so memory is bounded and a quiet range costs one call.
//! - **Nothing missed.** The cursor is stored only up to now − [`SETTLE_SECS`] (events listed
//!   late are still in the next pass's range), and each pass starts [`OVERLAP_SECS`] before
//!   it (events of the cursor's own second, and more late ones). Windows end on whole
//!   seconds, so the events of one second are never split.
//! - **Pace.** Every call goes through the process's token bucket ([`StripeGateway`]); a 429
//!   waits out Stripe's `Retry-After` and asks again.
//! - **One pass at a time** per scope across instances: a lease on the scope's cursor row
//!   ([`crate::store::reconcile`]); a pass that finds it taken ends at once ([`ReconcileError::Busy`]).
//! - Stripe keeps events 30 days: a cursor older than 25 days is warned about.

use std::sync::Arc;
use std::time::Duration;

use log::{debug, info, warn};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use super::admission::{Admission, AdmitError, Admitter};
use super::ingest::inbox_row;
use crate::metrics::Metrics;
use crate::store::events::NewWebhookEvent;
use crate::store::{self, now_ms, now_secs, Pool, StoreError};
use crate::stripe::client::ApiError;
use crate::stripe::gateway::StripeGateway;
use crate::stripe::payload::{PAYMENT_INTENT_EVENT_TYPES, SETUP_INTENT_EVENT_TYPES};
use crate::stripe::rest::RestError;

/// The scope of the platform account's events (Connect accounts get scopes of their own).
pub const PLATFORM_SCOPE: &str = "platform";
/// How far before the stored cursor a pass starts.
pub const OVERLAP_SECS: i64 = 60;
/// The stored cursor stays at least this far behind now: Stripe's list is not instantly
/// complete, and events listed late must still fall in the next pass's range.
pub const SETTLE_SECS: i64 = 60;
/// Where a first pass (no cursor, no `since`) starts: this long ago.
pub const FIRST_PASS_SECS: i64 = 86_400;
/// A cursor older than this is close to Stripe's 30-day retention of events.
pub const RETENTION_WARNING_SECS: i64 = 25 * 86_400;
/// Most events held in memory for one window before it is halved.
pub const WINDOW_EVENTS: usize = 1000;
const PAGE_SIZE: u32 = 100;
/// How far Stripe's clock may run ahead of ours: an event listed now has a `created` no
/// later than now plus this (Stripe's default webhook tolerance).
const CLOCK_SKEW_SECS: i64 = 300;
/// How long the lease lasts without renewal (renewed after every page).
const LEASE: Duration = Duration::from_secs(120);
/// Tries of one page before the pass gives up (429s and other transient errors).
const PAGE_TRIES: u32 = 6;

/// The event types payhook applies: the only ones a pass lists.
pub fn handled_types() -> Vec<&'static str> {
    PAYMENT_INTENT_EVENT_TYPES
        .iter()
        .chain(SETUP_INTENT_EVENT_TYPES.iter())
        .copied()
        .chain(["payment_method.attached", "payment_method.detached"])
        .collect()
}

/// What a pass is asked to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassOptions {
    /// Also list the events created this long ago and since.
    pub since: Option<Duration>,
    /// List and count, but store nothing (no events, no cursor, no lease).
    pub dry_run: bool,
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PassReport {
    /// Events listed.
    pub fetched: u64,
    /// Listed events payhook did not have (stored by this pass, or would be in a dry run).
    pub new: u64,
    /// Listed events payhook had already.
    pub known: u64,
    /// The start of the listed range (unix seconds, inclusive).
    pub from: i64,
    /// The end of the listed range (unix seconds, exclusive).
    pub until: i64,
    /// The cursor stored at the end (unix seconds).
    pub cursor: Option<i64>,
    pub dry_run: bool,
    /// Something the operator should know (the cursor nears Stripe's retention).
    pub warning: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("another reconciliation pass is running")]
    Busy,
    #[error("the pass lost its lease to another instance")]
    LeaseLost,
    #[error("listing events at Stripe: {0}")]
    Stripe(#[from] ApiError),
    #[error("Stripe's event list did not parse: {0}")]
    BadPage(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("storing events: {0}")]
    Admit(#[from] AdmitError),
}

/// What a pass needs; cheap to clone.
#[derive(Clone)]
pub struct Reconciler {
    pool: Pool,
    stripe: Arc<StripeGateway>,
    admitter: Admitter,
    metrics: Arc<Metrics>,
    /// Written into the lease: which process runs the pass.
    worker: String,
}

#[derive(Deserialize)]
struct EventPage<'a> {
    #[serde(borrow)]
    data: Vec<&'a RawValue>,
    has_more: bool,
}

impl Reconciler {
    pub fn new(
        pool: Pool,
        stripe: Arc<StripeGateway>,
        admitter: Admitter,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            pool,
            stripe,
            admitter,
            metrics,
            worker: format!("{}-{:08x}", std::process::id(), rand::random::<u32>()),
        }
    }

    /// Runs one pass over the platform's events.
    pub async fn run_pass(&self, options: PassOptions) -> Result<PassReport, ReconcileError> {
        let scope = PLATFORM_SCOPE;
        let now = now_secs();
        let stored = if options.dry_run {
            let scope = scope.to_owned();
            self.pool
                .run(move |conn| store::reconcile::find_cursor(conn, &scope))
                .await?
                .and_then(|row| row.cursor_at)
        } else {
            self.take_lease(scope).await?
        };
        let result = self.pass(scope, now, stored, options).await;
        if !options.dry_run {
            let (scope, worker) = (scope.to_owned(), self.worker.clone());
            let released = self
                .pool
                .run_pool(move |pool| {
                    pool.write(|conn| store::reconcile::release_lease(conn, &scope, &worker))
                })
                .await;
            if let Err(e) = released {
                warn!("reconcile: giving the lease back failed (it runs out by itself): {e}");
            }
        }
        let report = result?;
        if !options.dry_run {
            self.metrics.reconciled(report.new, report.known);
        }
        info!(
            "reconcile{}: {} events listed from {} to {}: {} new, {} known",
            if options.dry_run { " (dry run)" } else { "" },
            report.fetched,
            report.from,
            report.until,
            report.new,
            report.known
        );
        Ok(report)
    }

    /// Takes the scope's lease; returns its stored cursor.
    async fn take_lease(&self, scope: &str) -> Result<Option<i64>, ReconcileError> {
        let (scope, worker) = (scope.to_owned(), self.worker.clone());
        let row = self
            .pool
            .run_pool(move |pool| {
                pool.write(|conn| {
                    let now = now_ms();
                    store::reconcile::take_lease(
                        conn,
                        &scope,
                        &worker,
                        now,
                        now + LEASE.as_millis() as i64,
                    )
                })
            })
            .await?;
        match row {
            Some(row) => Ok(row.cursor_at),
            None => Err(ReconcileError::Busy),
        }
    }

    /// Stores `cursor` and renews the lease.
    async fn store_cursor(&self, scope: &str, cursor: Option<i64>) -> Result<(), ReconcileError> {
        let (scope, worker) = (scope.to_owned(), self.worker.clone());
        let held = self
            .pool
            .run_pool(move |pool| {
                pool.write(|conn| {
                    store::reconcile::store_cursor(
                        conn,
                        &scope,
                        &worker,
                        cursor,
                        now_ms() + LEASE.as_millis() as i64,
                        now_secs(),
                    )
                })
            })
            .await?;
        if held {
            Ok(())
        } else {
            Err(ReconcileError::LeaseLost)
        }
    }

    async fn pass(
        &self,
        scope: &str,
        now: i64,
        stored: Option<i64>,
        options: PassOptions,
    ) -> Result<PassReport, ReconcileError> {
        let from = [
            stored.map(|c| c - OVERLAP_SECS),
            options
                .since
                .map(|s| now - i64::try_from(s.as_secs()).unwrap_or(i64::MAX / 2)),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now - FIRST_PASS_SECS);
        let until = now + 1;
        let mut report = PassReport {
            from,
            until,
            dry_run: options.dry_run,
            cursor: stored,
            ..PassReport::default()
        };
        if let Some(cursor) = stored.filter(|c| now - c > RETENTION_WARNING_SECS) {
            let days = (now - cursor) / 86_400;
            let warning = format!(
                "the reconciliation cursor is {days} days old: Stripe keeps events for 30 days, \
                 so events older than that can no longer be recovered; run passes more often \
                 (RECONCILE_INTERVAL_SECS)"
            );
            warn!("reconcile: {warning}");
            report.warning = Some(warning);
        }
        let cap = now - SETTLE_SECS;
        let mut cursor = stored;
        let mut lo = from;
        let mut width = (until - from).max(1);
        while lo < until {
            let hi = lo.saturating_add(width).min(until);
            let Some(window) = self.list_window(scope, lo, hi, cursor, options).await? else {
                // More than a window's worth: halve it and list again.
                width = ((hi - lo) / 2).max(1);
                debug!("reconcile: window {lo}..{hi} too full, narrowing to {width} s");
                continue;
            };
            let n = window.len();
            report.fetched += n as u64;
            let (new, known) = self.admit(window, options.dry_run).await?;
            report.new += new;
            report.known += known;
            if !options.dry_run {
                // Never backwards (a `since` pass lists older events), never past now − 60 s.
                let next = hi.min(cap);
                cursor = Some(cursor.map_or(next, |c| c.max(next)));
                self.store_cursor(scope, cursor).await?;
            }
            lo = hi;
            if n < WINDOW_EVENTS / 4 {
                width = width.saturating_mul(2);
            }
        }
        report.cursor = cursor;
        Ok(report)
    }

    /// Every handled event created in `[lo, hi)`, oldest first; `None` when the window
    /// holds more than [`WINDOW_EVENTS`] and spans more than a second.
    async fn list_window(
        &self,
        scope: &str,
        lo: i64,
        hi: i64,
        cursor: Option<i64>,
        options: PassOptions,
    ) -> Result<Option<Vec<NewWebhookEvent>>, ReconcileError> {
        let mut events: Vec<NewWebhookEvent> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut query: Vec<(&str, String)> = handled_types()
                .into_iter()
                .map(|t| ("types[]", t.to_owned()))
                .collect();
            query.push(("created[gte]", lo.to_string()));
            query.push(("created[lt]", hi.to_string()));
            query.push(("limit", PAGE_SIZE.to_string()));
            if let Some(id) = &after {
                query.push(("starting_after", id.clone()));
            }
            let body = self.get_page(&query).await?;
            let page: EventPage<'_> =
                serde_json::from_str(&body).map_err(|e| ReconcileError::BadPage(e.to_string()))?;
            let now = now_secs();
            for raw in &page.data {
                // Listed by Stripe now, so created by now (give or take the clocks).
                match inbox_row(raw.get().as_bytes(), now, now + CLOCK_SKEW_SECS) {
                    Ok(row) => events.push(row),
                    Err(e) => warn!("reconcile: an event Stripe listed cannot be stored: {e}"),
                }
            }
            if !options.dry_run {
                // Renews the lease during long windows.
                self.store_cursor(scope, cursor).await?;
            }
            if events.len() > WINDOW_EVENTS && hi - lo > 1 {
                return Ok(None);
            }
            match (page.has_more, events.last()) {
                (true, Some(last)) => after = Some(last.id.clone()),
                _ => break,
            }
        }
        // Stripe lists newest first (same-second events too): turned around, oldest first.
        events.reverse();
        events.sort_by_key(|e| e.created);
        Ok(Some(events))
    }

    /// One page, asked again after a 429 (waiting out `Retry-After`) or another transient
    /// error, a few times.
    async fn get_page(&self, query: &[(&str, String)]) -> Result<String, ReconcileError> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self
                .stripe
                .get_json("list_events", "/v1/events", query)
                .await
            {
                Ok(response) => return Ok(response.body),
                Err(RestError { error, retry_after })
                    if matches!(error, ApiError::Retryable { .. }) && tries < PAGE_TRIES =>
                {
                    let wait = retry_after
                        .unwrap_or_else(|| Duration::from_millis(500 << tries.min(6)))
                        .min(Duration::from_secs(60));
                    warn!("reconcile: Stripe answered {error}; asking again in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
                Err(RestError { error, .. }) => return Err(error.into()),
            }
        }
    }

    /// Admits `events` (or, in a dry run, looks them up); returns (new, known).
    async fn admit(
        &self,
        events: Vec<NewWebhookEvent>,
        dry_run: bool,
    ) -> Result<(u64, u64), ReconcileError> {
        if events.is_empty() {
            return Ok((0, 0));
        }
        if dry_run {
            let ids: Vec<String> = events.into_iter().map(|e| e.id).collect();
            let total = ids.len() as u64;
            let known = self
                .pool
                .run(move |conn| {
                    let mut known = 0;
                    for id in &ids {
                        known += u64::from(store::events::find_event(conn, id)?.is_some());
                    }
                    Ok(known)
                })
                .await?;
            return Ok((total - known, known));
        }
        // Handed over together, so they share group-commit batches.
        let outcomes =
            futures_util::future::join_all(events.into_iter().map(|e| self.admitter.admit(e)))
                .await;
        let (mut new, mut known) = (0, 0);
        for outcome in outcomes {
            match outcome? {
                Admission::Stored => new += 1,
                Admission::Duplicate => known += 1,
            }
        }
        Ok((new, known))
    }
}

/// Runs a pass every `interval` until `shutdown` (inside `serve`, when
/// `RECONCILE_INTERVAL_SECS` is set). A failed pass is logged and the next one tries again;
/// a pass that finds another instance's running is skipped.
pub async fn run_periodically(
    reconciler: Reconciler,
    interval: Duration,
    shutdown: CancellationToken,
) {
    info!("reconciliation with Stripe's Events API every {interval:?}");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
        let pass = tokio::select! {
            _ = shutdown.cancelled() => break,
            pass = reconciler.run_pass(PassOptions::default()) => pass,
        };
        match pass {
            Ok(_) => {}
            Err(ReconcileError::Busy) => debug!("reconcile: another instance's pass is running"),
            Err(e) => warn!("reconcile: the pass failed, the next one tries again: {e}"),
        }
    }
    debug!("reconciliation stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handled_types_fit_in_one_list_call() {
        let types = handled_types();
        // Stripe accepts up to 20 `types[]`.
        assert!(types.len() <= 20, "{}", types.len());
        for t in &types {
            assert!(
                crate::stripe::payload::EventKind::from_type(t).is_some(),
                "{t}"
            );
        }
    }
}
