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
//! - **Per account.** Stripe's Events API lists one account's events per call. A pass lists
//!   the platform's (payhook's key alone), then each connected account payhook knows
//!   ([`crate::store::reconcile::list_known_accounts`]) with `Stripe-Account: acct_…`, each a
//!   scope with its own cursor and lease (scope `platform`, or the account's id). A connected
//!   account's events keep their `account` (set from the scope when Stripe's copy lacks it)
//!   and are recorded under the first `connect` endpoint, so they look as if that endpoint
//!   had received them; the platform's under `default`. One account failing (access revoked,
//!   its lease held by another instance) does not stop the others.
//! - **One pass at a time** per scope across instances: a lease on the scope's cursor row
//!   ([`crate::store::reconcile`]); a scope whose lease is taken is skipped, and a pass that
//!   finds every scope taken ends at once ([`ReconcileError::Busy`]).
//! - Stripe keeps events 30 days: a cursor older than 25 days is warned about.

use std::sync::Arc;
use std::time::Duration;

use log::{debug, info, warn};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use super::admission::{Admission, AdmitError, Admitter};
use super::ingest::inbox_row;
use crate::config::EndpointName;
use crate::metrics::Metrics;
use crate::store::events::NewWebhookEvent;
use crate::store::{self, now_ms, now_secs, Pool, StoreError};
use crate::stripe::client::ApiError;
use crate::stripe::gateway::StripeGateway;
use crate::stripe::ids::AccountId;
use crate::stripe::payload::{PAYMENT_INTENT_EVENT_TYPES, SETUP_INTENT_EVENT_TYPES};
use crate::stripe::rest::RestError;

pub use crate::store::reconcile::PLATFORM_SCOPE;
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassOptions {
    /// Also list the events created this long ago and since.
    pub since: Option<Duration>,
    /// List and count, but store nothing (no events, no cursor, no lease).
    pub dry_run: bool,
    /// Only this connected account's events (`payhook reconcile --account`); `None`: the
    /// platform's and those of every connected account payhook knows.
    pub account: Option<AccountId>,
}

/// What a pass did, over all the accounts it listed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PassReport {
    /// Events listed.
    pub fetched: u64,
    /// Listed events payhook did not have (stored by this pass, or would be in a dry run).
    pub new: u64,
    /// Listed events payhook had already.
    pub known: u64,
    /// The start of the listed range (unix seconds, inclusive; the earliest of the accounts').
    pub from: i64,
    /// The end of the listed range (unix seconds, exclusive).
    pub until: i64,
    /// The oldest cursor stored at the end among the accounts listed (unix seconds): events
    /// created before it were listed in each of them.
    pub cursor: Option<i64>,
    pub dry_run: bool,
    /// Something the operator should know (a cursor nears Stripe's retention, an account
    /// could not be listed).
    pub warning: Option<String>,
    /// Each account's part, the platform's first.
    pub accounts: Vec<ScopeReport>,
}

/// What a pass did in one account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScopeReport {
    /// The connected account (`acct_…`); `null` for the platform.
    pub account: Option<String>,
    pub fetched: u64,
    pub new: u64,
    pub known: u64,
    pub from: i64,
    pub until: i64,
    pub cursor: Option<i64>,
    pub warning: Option<String>,
    /// Why this account was not listed to the end (the others were listed all the same).
    pub error: Option<String>,
    /// Not listed because another pass (another instance, or a CLI run) was listing it.
    pub busy: bool,
}

impl ScopeReport {
    fn scope(&self) -> &str {
        self.account.as_deref().unwrap_or(PLATFORM_SCOPE)
    }
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
    /// The endpoint name connected accounts' events are recorded under.
    connect_endpoint: EndpointName,
}

#[derive(Deserialize)]
struct EventPage<'a> {
    #[serde(borrow)]
    data: Vec<&'a RawValue>,
    has_more: bool,
}

/// The id of a listed event: the next page starts after the last one listed, whether payhook
/// could store it or not.
#[derive(Deserialize)]
struct Listed {
    id: String,
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
            connect_endpoint: EndpointName::default_endpoint(),
        }
    }

    /// Records connected accounts' events under `endpoint` (the first endpoint of kind
    /// `connect`), as if it had received them; without one they are recorded under `default`.
    pub fn with_connect_endpoint(mut self, endpoint: Option<EndpointName>) -> Self {
        self.connect_endpoint = endpoint.unwrap_or_else(EndpointName::default_endpoint);
        self
    }

    /// Runs one pass: over the platform's events and those of every connected account
    /// payhook knows, or over `options.account`'s alone. Fails only when no account could be
    /// listed (each account's failure is in its part of the report otherwise).
    pub async fn run_pass(&self, options: &PassOptions) -> Result<PassReport, ReconcileError> {
        let accounts: Vec<Option<AccountId>> = match &options.account {
            Some(account) => vec![Some(account.clone())],
            None => {
                let known = self.pool.run(store::reconcile::list_known_accounts).await?;
                std::iter::once(None)
                    .chain(
                        known
                            .into_iter()
                            .filter_map(|a| match AccountId::parse(&a) {
                                Ok(id) => Some(Some(id)),
                                Err(e) => {
                                    warn!("reconcile: skipping account {a:?} ({e})");
                                    None
                                }
                            }),
                    )
                    .collect()
            }
        };
        let mut report = PassReport {
            dry_run: options.dry_run,
            ..PassReport::default()
        };
        let mut first_error = None;
        let mut listed = 0;
        for account in accounts {
            match self.run_scope(account.as_ref(), options).await {
                Ok(part) => {
                    listed += 1;
                    report.fetched += part.fetched;
                    report.new += part.new;
                    report.known += part.known;
                    report.from = if listed == 1 {
                        part.from
                    } else {
                        report.from.min(part.from)
                    };
                    report.until = report.until.max(part.until);
                    report.cursor = match (report.cursor, part.cursor) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    if let Some(w) = &part.warning {
                        add_warning(&mut report.warning, format!("{}: {w}", part.scope()));
                    }
                    report.accounts.push(part);
                }
                Err(e) => {
                    let part = ScopeReport {
                        account: account.map(AccountId::into_string),
                        error: Some(e.to_string()),
                        busy: matches!(e, ReconcileError::Busy),
                        ..ScopeReport::default()
                    };
                    match &e {
                        ReconcileError::Busy => {
                            debug!("reconcile ({}): another pass is listing it", part.scope())
                        }
                        _ => {
                            warn!(
                                "reconcile ({}): {e}; the other accounts go on",
                                part.scope()
                            );
                            add_warning(
                                &mut report.warning,
                                format!("{}: not listed: {e}", part.scope()),
                            );
                        }
                    }
                    report.accounts.push(part);
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if listed == 0 => Err(e),
            _ => Ok(report),
        }
    }

    /// Runs one pass over one account's events (`None`: the platform's).
    async fn run_scope(
        &self,
        account: Option<&AccountId>,
        options: &PassOptions,
    ) -> Result<ScopeReport, ReconcileError> {
        let scope = account.map_or(PLATFORM_SCOPE, AccountId::as_str);
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
        let result = self.pass(account, now, stored, options).await;
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
            "reconcile{} ({scope}): {} events listed from {} to {}: {} new, {} known",
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
        account: Option<&AccountId>,
        now: i64,
        stored: Option<i64>,
        options: &PassOptions,
    ) -> Result<ScopeReport, ReconcileError> {
        let scope = account.map_or(PLATFORM_SCOPE, AccountId::as_str);
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
        let mut report = ScopeReport {
            account: account.map(|a| a.as_str().to_owned()),
            from,
            until,
            cursor: stored,
            ..ScopeReport::default()
        };
        if let Some(cursor) = stored.filter(|c| now - c > RETENTION_WARNING_SECS) {
            let days = (now - cursor) / 86_400;
            let warning = format!(
                "the reconciliation cursor is {days} days old: Stripe keeps events for 30 days, \
                 so events older than that can no longer be recovered; run passes more often \
                 (RECONCILE_INTERVAL_SECS)"
            );
            warn!("reconcile ({scope}): {warning}");
            report.warning = Some(warning);
        }
        let cap = now - SETTLE_SECS;
        let mut cursor = stored;
        let mut lo = from;
        let mut width = (until - from).max(1);
        while lo < until {
            let hi = lo.saturating_add(width).min(until);
            let Some(window) = self.list_window(account, lo, hi, cursor, options).await? else {
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

    /// Every handled event of `account` (`None`: the platform) created in `[lo, hi)`, oldest
    /// first, as the rows to admit; `None` when the window holds more than [`WINDOW_EVENTS`]
    /// and spans more than a second.
    async fn list_window(
        &self,
        account: Option<&AccountId>,
        lo: i64,
        hi: i64,
        cursor: Option<i64>,
        options: &PassOptions,
    ) -> Result<Option<Vec<NewWebhookEvent>>, ReconcileError> {
        let scope = account.map_or(PLATFORM_SCOPE, AccountId::as_str);
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
            let body = self.get_page(account, &query).await?;
            let page: EventPage<'_> =
                serde_json::from_str(&body).map_err(|e| ReconcileError::BadPage(e.to_string()))?;
            let now = now_secs();
            let mut last_listed = None;
            for raw in &page.data {
                // An event without an id cannot be stored either (warned about below).
                if let Ok(listed) = serde_json::from_str::<Listed>(raw.get()) {
                    last_listed = Some(listed.id);
                }
                // Listed by Stripe now, so created by now (give or take the clocks).
                match inbox_row(raw.get().as_bytes(), now, now + CLOCK_SKEW_SECS) {
                    Ok(row) => {
                        if let Some(row) = self.in_scope(row, account) {
                            events.push(row);
                        }
                    }
                    Err(e) => {
                        warn!("reconcile ({scope}): an event Stripe listed cannot be stored: {e}")
                    }
                }
            }
            if !options.dry_run {
                // Renews the lease during long windows.
                self.store_cursor(scope, cursor).await?;
            }
            if events.len() > WINDOW_EVENTS && hi - lo > 1 {
                return Ok(None);
            }
            match (page.has_more, last_listed) {
                (true, Some(last)) => after = Some(last),
                _ => break,
            }
        }
        // Stripe lists newest first (same-second events too): turned around, oldest first.
        events.reverse();
        events.sort_by_key(|e| e.created);
        Ok(Some(events))
    }

    /// The row of an event listed in `account` (`None`: the platform), as a delivery to the
    /// endpoint that takes such events would have made it: a connected account's event keeps
    /// its account (Stripe's copy names it; if it does not, the account it was listed in) and
    /// is recorded under the `connect` endpoint, a platform event under `default`. An event
    /// that names another account than the one it was listed in is not stored.
    fn in_scope(
        &self,
        mut row: NewWebhookEvent,
        account: Option<&AccountId>,
    ) -> Option<NewWebhookEvent> {
        match (row.account.as_deref(), account) {
            (None, Some(listed_in)) => row.account = Some(listed_in.as_str().to_owned()),
            (Some(named), Some(listed_in)) if named != listed_in.as_str() => {
                warn!(
                    "reconcile ({listed_in}): event {} names account {named}; not stored",
                    row.id
                );
                return None;
            }
            _ => {}
        }
        row.endpoint = match row.account {
            Some(_) => self.connect_endpoint.as_str().to_owned(),
            None => EndpointName::DEFAULT.to_owned(),
        };
        Some(row)
    }

    /// One page of `account`'s events (`Stripe-Account`; `None`: the platform's), asked
    /// again after a 429 (waiting out `Retry-After`) or another transient error, a few times.
    async fn get_page(
        &self,
        account: Option<&AccountId>,
        query: &[(&str, String)],
    ) -> Result<String, ReconcileError> {
        let scope = account.map(|a| ("Stripe-Account", a.as_str()));
        let mut tries = 0;
        loop {
            tries += 1;
            match self
                .stripe
                .get_json_in("list_events", "/v1/events", query, scope)
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

/// Adds `more` to a report's warning (one line per warning).
fn add_warning(warning: &mut Option<String>, more: String) {
    match warning {
        Some(w) => {
            w.push('\n');
            w.push_str(&more);
        }
        None => *warning = Some(more),
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
        let options = PassOptions::default();
        let pass = tokio::select! {
            _ = shutdown.cancelled() => break,
            pass = reconciler.run_pass(&options) => pass,
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
