//! The outbox: Stripe side effects waiting for (or done by) the action worker.
//!
//! An action is written by [`crate::apply`] in the same transaction as the state change that
//! asks for it, so a committed change never loses its side effect and a rolled-back one never
//! has one. The worker ([`crate::outbox::save_card`]) claims actions with a lease (`locked_until_ms`,
//! `locked_by`) set by a conditional `UPDATE`, which works on both backends and survives a
//! crashed worker: its lease simply runs out. Claims never hand out two actions of one
//! customer at once, so one customer's Stripe calls run one at a time (two events of one user
//! converge on one Stripe customer even where idempotency keys alone would not suffice).

use diesel::prelude::*;

use super::schema::stripe_actions::{self, dsl};
use super::{Conn, StoreError, StoreResult};
use crate::with_conn;

/// Lifecycle of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionStatus {
    /// Waiting for its (next) try; `step` says where it resumes.
    Pending,
    Done,
    /// A permanent Stripe error or too many tries; `last_error_code`/`last_error` say why.
    /// `payhook retry` puts it back to pending.
    Failed,
}

impl ActionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

/// Kinds of action. One today.
pub const SAVE_CARD: &str = "save_card";

/// The step a new `save_card` action starts at (see [`crate::outbox::save_card::Step`]).
pub const FIRST_STEP: &str = "resolve";

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = stripe_actions)]
pub struct ActionRow {
    pub id: i64,
    pub kind: String,
    pub idempotency_key: String,
    pub checkout_id: Option<String>,
    pub customer_id: Option<i64>,
    pub payment_method_id: String,
    pub status: String,
    pub step: String,
    pub attempts: i32,
    pub next_attempt_at_ms: i64,
    pub locked_until_ms: i64,
    pub locked_by: Option<String>,
    pub last_error_code: Option<String>,
    pub last_error: Option<String>,
    pub result: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = stripe_actions)]
pub struct NewAction<'a> {
    pub kind: &'a str,
    pub idempotency_key: &'a str,
    pub checkout_id: Option<&'a str>,
    pub customer_id: Option<i64>,
    pub payment_method_id: &'a str,
    pub step: &'a str,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Inserts unless an action with the same idempotency key exists (a redelivered or replayed
/// event asks for the same side effect again); returns whether it inserted.
pub fn insert_action(conn: &mut Conn, new: &NewAction<'_>) -> StoreResult<bool> {
    let n = with_conn!(conn, c => diesel::insert_into(stripe_actions::table)
        .values(new)
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(n == 1)
}

pub fn find_action(conn: &mut Conn, id: i64) -> StoreResult<Option<ActionRow>> {
    Ok(with_conn!(conn, c => dsl::stripe_actions
        .find(id)
        .select(ActionRow::as_select())
        .get_result(c)
        .optional())?)
}

pub fn find_action_by_key(conn: &mut Conn, key: &str) -> StoreResult<Option<ActionRow>> {
    Ok(with_conn!(conn, c => dsl::stripe_actions
        .filter(dsl::idempotency_key.eq(key))
        .select(ActionRow::as_select())
        .get_result(c)
        .optional())?)
}

pub fn list_actions(conn: &mut Conn) -> StoreResult<Vec<ActionRow>> {
    Ok(with_conn!(conn, c => dsl::stripe_actions
        .order(dsl::id.asc())
        .select(ActionRow::as_select())
        .load(c))?)
}

/// Claims up to `limit` due actions for `worker` until `lease_until_ms`, oldest first, at
/// most one per customer, skipping customers that already have a leased action. Must run in
/// a (short) transaction: on SQLite `BEGIN IMMEDIATE` serializes claimers; on PostgreSQL the
/// candidate rows are taken `FOR UPDATE SKIP LOCKED` and each customer row is locked while
/// its lease is checked, so two instances cannot lease two actions of one customer.
pub fn claim_due_actions(
    conn: &mut Conn,
    worker: &str,
    now_ms: i64,
    lease_until_ms: i64,
    limit: i64,
) -> StoreResult<Vec<ActionRow>> {
    macro_rules! candidates {
        () => {
            dsl::stripe_actions
                .filter(dsl::status.eq(ActionStatus::Pending.as_str()))
                .filter(dsl::next_attempt_at_ms.le(now_ms))
                .filter(dsl::locked_until_ms.le(now_ms))
                .order(dsl::id.asc())
                // Over-fetch: some candidates are skipped for their customer's sake.
                .limit(limit.saturating_mul(4))
                .select(ActionRow::as_select())
        };
    }
    let candidates: Vec<ActionRow> = match conn {
        Conn::Sqlite(c) => candidates!().load(&mut **c)?,
        Conn::Postgres(c) => candidates!().for_update().skip_locked().load(&mut **c)?,
    };
    let mut claimed: Vec<ActionRow> = Vec::new();
    for mut action in candidates {
        if claimed.len() as i64 >= limit {
            break;
        }
        if let Some(customer) = action.customer_id {
            if claimed.iter().any(|a| a.customer_id == Some(customer)) {
                continue;
            }
            if let Conn::Postgres(c) = conn {
                use super::schema::customers::dsl as cdsl;
                cdsl::customers
                    .find(customer)
                    .select(cdsl::id)
                    .for_update()
                    .first::<i64>(&mut **c)
                    .optional()?;
            }
            let busy: i64 = with_conn!(conn, c => dsl::stripe_actions
                .filter(dsl::customer_id.eq(customer))
                .filter(dsl::locked_until_ms.gt(now_ms))
                .filter(dsl::id.ne(action.id))
                .count()
                .get_result(c))?;
            if busy > 0 {
                continue;
            }
        }
        let n = with_conn!(conn, c => diesel::update(dsl::stripe_actions.find(action.id))
            .filter(dsl::locked_until_ms.le(now_ms))
            .filter(dsl::status.eq(ActionStatus::Pending.as_str()))
            .set((
                dsl::locked_until_ms.eq(lease_until_ms),
                dsl::locked_by.eq(worker),
            ))
            .execute(c))?;
        if n == 1 {
            action.locked_until_ms = lease_until_ms;
            action.locked_by = Some(worker.to_owned());
            claimed.push(action);
        }
    }
    Ok(claimed)
}

/// The action's row, only while this worker still holds its lease and it is pending: a worker
/// whose lease ran out (and was taken over) updates nothing, which [`lease_held`] reports.
macro_rules! held_by_lease {
    ($action:expr) => {
        dsl::stripe_actions
            .find($action.id)
            .filter(dsl::locked_by.eq($action.locked_by.as_deref()))
            .filter(dsl::status.eq(ActionStatus::Pending.as_str()))
    };
}

/// Progress made by the current holder of the lease: the next step, and optionally the
/// resolved customer and a result summary. Extends the lease. Fails with
/// [`StoreError::Conflict`] when the lease was lost (another worker took the action over).
pub fn record_progress(
    conn: &mut Conn,
    action: &ActionRow,
    step: &str,
    customer_id: Option<i64>,
    lease_until_ms: i64,
    now_secs: i64,
) -> StoreResult<()> {
    let n = with_conn!(conn, c => diesel::update(held_by_lease!(action))
        .set((
            dsl::step.eq(step),
            dsl::customer_id.eq(customer_id.or(action.customer_id)),
            dsl::locked_until_ms.eq(lease_until_ms),
            dsl::updated_at.eq(now_secs),
        ))
        .execute(c))?;
    lease_held(n, action)
}

/// Ends the action: done (with a result summary) or failed (with Stripe's code and message).
pub fn finish_action(
    conn: &mut Conn,
    action: &ActionRow,
    status: ActionStatus,
    attempts: i32,
    error: Option<(&str, &str)>,
    result: Option<&str>,
    now_secs: i64,
) -> StoreResult<()> {
    let n = with_conn!(conn, c => diesel::update(held_by_lease!(action))
        .set((
            dsl::status.eq(status.as_str()),
            dsl::attempts.eq(attempts),
            dsl::last_error_code.eq(error.map(|e| e.0)),
            dsl::last_error.eq(error.map(|e| e.1)),
            dsl::result.eq(result),
            dsl::locked_until_ms.eq(0),
            dsl::locked_by.eq(None::<String>),
            dsl::updated_at.eq(now_secs),
        ))
        .execute(c))?;
    lease_held(n, action)
}

/// Gives the lease back and schedules the next try (after a retryable error, or at once to
/// let the claim re-check the customer once it is resolved).
pub fn schedule_action_retry(
    conn: &mut Conn,
    action: &ActionRow,
    attempts: i32,
    next_attempt_at_ms: i64,
    error: Option<(&str, &str)>,
    now_secs: i64,
) -> StoreResult<()> {
    let n = with_conn!(conn, c => diesel::update(held_by_lease!(action))
        .set((
            dsl::attempts.eq(attempts),
            dsl::next_attempt_at_ms.eq(next_attempt_at_ms),
            dsl::last_error_code.eq(error.map(|e| e.0)),
            dsl::last_error.eq(error.map(|e| e.1)),
            dsl::locked_until_ms.eq(0),
            dsl::locked_by.eq(None::<String>),
            dsl::updated_at.eq(now_secs),
        ))
        .execute(c))?;
    lease_held(n, action)
}

fn lease_held(updated: usize, action: &ActionRow) -> StoreResult<()> {
    if updated == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!(
            "lease on action {} ({}) lost",
            action.id, action.idempotency_key
        )))
    }
}

/// Puts failed actions back in the queue with a fresh count of tries, where they resume at
/// the step they stopped at; returns them as they were before.
pub fn requeue_failed_actions(conn: &mut Conn) -> StoreResult<Vec<ActionRow>> {
    let failed: Vec<ActionRow> = with_conn!(conn, c => dsl::stripe_actions
        .filter(dsl::status.eq(ActionStatus::Failed.as_str()))
        .select(ActionRow::as_select())
        .load(c))?;
    with_conn!(conn, c => diesel::update(
        dsl::stripe_actions.filter(dsl::status.eq(ActionStatus::Failed.as_str())),
    )
    .set((
        dsl::status.eq(ActionStatus::Pending.as_str()),
        dsl::attempts.eq(0),
        dsl::next_attempt_at_ms.eq(0),
        dsl::locked_until_ms.eq(0),
        dsl::locked_by.eq(None::<String>),
    ))
    .execute(c))?;
    Ok(failed)
}

/// How many actions are in each status.
pub fn count_actions_by_status(conn: &mut Conn) -> StoreResult<Vec<(String, i64)>> {
    Ok(with_conn!(conn, c => dsl::stripe_actions
        .group_by(dsl::status)
        .select((dsl::status, diesel::dsl::count_star()))
        .order(dsl::status)
        .load(c))?)
}
