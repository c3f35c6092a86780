//! The outbox table: work waiting for (or done by) the outbox runner, of any kind.
//!
//! An item is written in the same transaction as the state change that asks for it, so a
//! committed change never loses its work and a rolled-back one never has any. The runner
//! ([`crate::outbox::runner`]) claims items with a lease (`locked_until_ms`, `locked_by`) set by a
//! conditional `UPDATE`, which works on both backends and survives a crashed worker: its lease
//! simply runs out. Items that share a `lane` (one customer's Stripe work, say) are never
//! leased at the same time, so they run one after the other even across instances.
//!
//! This module knows no kind: `data` is the kind's JSON and `step` its progress, both opaque
//! here.

use diesel::prelude::*;

use super::schema::outbox::{self, dsl};
use super::schema::outbox_attempts;
use super::{Conn, StoreError, StoreResult};
use crate::text_enum::text_enum;
use crate::with_conn;

text_enum! {
    /// Lifecycle of an outbox item.
    pub enum OutboxStatus {
        /// Waiting for its (next) try; `step` says where it resumes.
        Pending = "pending",
        Done = "done",
        /// A permanent error or too many tries; `last_error_code`/`last_error` say why.
        /// `payhook retry` puts it back to pending.
        Failed = "failed",
    }
}

text_enum! {
    /// How one run of an item's step ended, as recorded in `outbox_attempts`.
    pub enum AttemptOutcome {
        Ok = "ok",
        Retryable = "retryable",
        Permanent = "permanent",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = outbox)]
pub struct OutboxRow {
    pub id: i64,
    pub kind: String,
    pub idempotency_key: String,
    pub lane: Option<String>,
    pub checkout_id: Option<String>,
    pub data: String,
    pub status: OutboxStatus,
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

// None as NULL keeps the insert's SQL fixed, so diesel caches the prepared statement.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = outbox, treat_none_as_default_value = false)]
pub struct NewOutboxItem<'a> {
    pub kind: &'a str,
    pub idempotency_key: &'a str,
    pub lane: Option<&'a str>,
    pub checkout_id: Option<&'a str>,
    pub data: &'a str,
    pub step: &'a str,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Inserts unless an item with the same idempotency key exists (a redelivered or replayed
/// event asks for the same work again); returns whether it inserted.
pub fn insert_item(conn: &mut Conn, new: &NewOutboxItem<'_>) -> StoreResult<bool> {
    let n = with_conn!(conn, c => diesel::insert_into(outbox::table)
        .values(new)
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(n == 1)
}

/// An outbox item to insert, owning its values: what a batch of events gathers to insert
/// together ([`insert_queued_items`]).
#[derive(Debug, Clone, PartialEq, Eq, Insertable)]
#[diesel(table_name = outbox, treat_none_as_default_value = false)]
pub struct QueuedItem {
    pub kind: String,
    pub idempotency_key: String,
    pub lane: Option<String>,
    pub checkout_id: Option<String>,
    pub data: String,
    pub step: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Inserts each item unless one with its idempotency key exists; returns the keys of those
/// it inserted. One statement per thousand items on PostgreSQL.
pub fn insert_queued_items(conn: &mut Conn, items: &[QueuedItem]) -> StoreResult<Vec<String>> {
    let mut inserted = Vec::new();
    for chunk in items.chunks(super::ROWS_PER_STATEMENT) {
        match conn {
            Conn::Postgres(c) => inserted.extend(
                diesel::insert_into(outbox::table)
                    .values(chunk)
                    .on_conflict_do_nothing()
                    .returning(dsl::idempotency_key)
                    .get_results::<String>(&mut **c)?,
            ),
            Conn::Sqlite(c) => {
                for item in chunk {
                    let n = diesel::insert_into(outbox::table)
                        .values(item)
                        .on_conflict_do_nothing()
                        .execute(&mut **c)?;
                    if n == 1 {
                        inserted.push(item.idempotency_key.clone());
                    }
                }
            }
        }
    }
    Ok(inserted)
}

pub fn find_item(conn: &mut Conn, id: i64) -> StoreResult<Option<OutboxRow>> {
    Ok(with_conn!(conn, c => dsl::outbox
        .find(id)
        .select(OutboxRow::as_select())
        .get_result(c)
        .optional())?)
}

pub fn find_item_by_key(conn: &mut Conn, key: &str) -> StoreResult<Option<OutboxRow>> {
    Ok(with_conn!(conn, c => dsl::outbox
        .filter(dsl::idempotency_key.eq(key))
        .select(OutboxRow::as_select())
        .get_result(c)
        .optional())?)
}

/// The item of `kind` that `checkout_id` asked for (kinds queue at most one per checkout).
pub fn find_item_of_checkout(
    conn: &mut Conn,
    kind: &str,
    checkout_id: &str,
) -> StoreResult<Option<OutboxRow>> {
    Ok(with_conn!(conn, c => dsl::outbox
        .filter(dsl::kind.eq(kind))
        .filter(dsl::checkout_id.eq(checkout_id))
        .order(dsl::id.asc())
        .select(OutboxRow::as_select())
        .get_result(c)
        .optional())?)
}

/// Every item of `kind`, oldest first.
pub fn list_items(conn: &mut Conn, kind: &str) -> StoreResult<Vec<OutboxRow>> {
    Ok(with_conn!(conn, c => dsl::outbox
        .filter(dsl::kind.eq(kind))
        .order(dsl::id.asc())
        .select(OutboxRow::as_select())
        .load(c))?)
}

/// A stable 64-bit number for a lane, the key of its PostgreSQL advisory lock (the same on
/// every instance and every run).
fn lane_lock_key(lane: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(lane.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// Claims up to `limit` due items of the given kinds for `worker` until `lease_until_ms`,
/// oldest first, at most one per lane, skipping lanes that already have a leased item.
///
/// Must run in a (short) transaction: on SQLite `BEGIN IMMEDIATE` serializes claimers; on
/// PostgreSQL the candidate rows are taken `FOR UPDATE SKIP LOCKED` and each lane's advisory
/// lock is held while its lease is checked, so two instances cannot lease two items of one
/// lane.
pub fn claim_due_items(
    conn: &mut Conn,
    kinds: &[&str],
    worker: &str,
    now_ms: i64,
    lease_until_ms: i64,
    limit: i64,
) -> StoreResult<Vec<OutboxRow>> {
    macro_rules! candidates {
        () => {
            dsl::outbox
                .filter(dsl::status.eq(OutboxStatus::Pending))
                .filter(dsl::kind.eq_any(kinds))
                .filter(dsl::next_attempt_at_ms.le(now_ms))
                .filter(dsl::locked_until_ms.le(now_ms))
                .order(dsl::id.asc())
                // Over-fetch: some candidates are skipped for their lane's sake.
                .limit(limit.saturating_mul(4))
                .select(OutboxRow::as_select())
        };
    }
    let candidates: Vec<OutboxRow> = match conn {
        Conn::Sqlite(c) => candidates!().load(&mut **c)?,
        Conn::Postgres(c) => candidates!().for_update().skip_locked().load(&mut **c)?,
    };
    let mut claimed: Vec<OutboxRow> = Vec::new();
    for mut item in candidates {
        if claimed.len() as i64 >= limit {
            break;
        }
        if let Some(lane) = item.lane.clone() {
            if claimed
                .iter()
                .any(|a| a.lane.as_deref() == Some(lane.as_str()))
            {
                continue;
            }
            if let Conn::Postgres(c) = conn {
                diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
                    .bind::<diesel::sql_types::BigInt, _>(lane_lock_key(&lane))
                    .execute(&mut **c)?;
            }
            let busy: i64 = with_conn!(conn, c => dsl::outbox
                .filter(dsl::lane.eq(&lane))
                .filter(dsl::locked_until_ms.gt(now_ms))
                .filter(dsl::id.ne(item.id))
                .count()
                .get_result(c))?;
            if busy > 0 {
                continue;
            }
        }
        let n = with_conn!(conn, c => diesel::update(dsl::outbox.find(item.id))
            .filter(dsl::locked_until_ms.le(now_ms))
            .filter(dsl::status.eq(OutboxStatus::Pending))
            .set((
                dsl::locked_until_ms.eq(lease_until_ms),
                dsl::locked_by.eq(worker),
            ))
            .execute(c))?;
        if n == 1 {
            item.locked_until_ms = lease_until_ms;
            item.locked_by = Some(worker.to_owned());
            claimed.push(item);
        }
    }
    Ok(claimed)
}

/// The item's row, only while this worker still holds its lease and it is pending: a worker
/// whose lease ran out (and was taken over) updates nothing, which [`lease_held`] reports.
macro_rules! held_by_lease {
    ($item:expr) => {
        dsl::outbox
            .find($item.id)
            .filter(dsl::locked_by.eq($item.locked_by.as_deref()))
            .filter(dsl::status.eq(OutboxStatus::Pending))
    };
}

/// Progress made by the holder of the lease: the next step, the kind's data and lane (both
/// as they are now). Extends the lease. Fails with [`StoreError::Conflict`] when the lease was
/// lost (another worker took the item over).
pub fn record_progress(
    conn: &mut Conn,
    item: &OutboxRow,
    lease_until_ms: i64,
    now_secs: i64,
) -> StoreResult<()> {
    let n = with_conn!(conn, c => diesel::update(held_by_lease!(item))
        .set((
            dsl::step.eq(&item.step),
            dsl::data.eq(&item.data),
            dsl::lane.eq(item.lane.as_deref()),
            dsl::locked_until_ms.eq(lease_until_ms),
            dsl::updated_at.eq(now_secs),
        ))
        .execute(c))?;
    lease_held(n, item)
}

/// Ends the item: done (with a result summary) or failed (with the error's code and message).
pub fn finish_item(
    conn: &mut Conn,
    item: &OutboxRow,
    status: OutboxStatus,
    attempts: i32,
    error: Option<(&str, &str)>,
    result: Option<&str>,
    now_secs: i64,
) -> StoreResult<()> {
    let n = with_conn!(conn, c => diesel::update(held_by_lease!(item))
        .set((
            dsl::status.eq(status),
            dsl::attempts.eq(attempts),
            dsl::last_error_code.eq(error.map(|e| e.0)),
            dsl::last_error.eq(error.map(|e| e.1)),
            dsl::result.eq(result),
            dsl::locked_until_ms.eq(0),
            dsl::locked_by.eq(None::<String>),
            dsl::updated_at.eq(now_secs),
        ))
        .execute(c))?;
    lease_held(n, item)
}

/// Gives the lease back and schedules the next try (after a retryable error, or at once to
/// let the claim re-check a lane that just became known).
pub fn schedule_item_retry(
    conn: &mut Conn,
    item: &OutboxRow,
    attempts: i32,
    next_attempt_at_ms: i64,
    error: Option<(&str, &str)>,
    now_secs: i64,
) -> StoreResult<()> {
    let n = with_conn!(conn, c => diesel::update(held_by_lease!(item))
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
    lease_held(n, item)
}

fn lease_held(updated: usize, item: &OutboxRow) -> StoreResult<()> {
    if updated == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!(
            "lease on outbox item {} ({}) lost",
            item.id, item.idempotency_key
        )))
    }
}

/// Puts failed items of `kinds` back in the queue with a fresh count of tries, where they
/// resume at the step they stopped at; returns them as they were before.
pub fn requeue_failed_items(conn: &mut Conn, kinds: &[&str]) -> StoreResult<Vec<OutboxRow>> {
    let failed: Vec<OutboxRow> = with_conn!(conn, c => dsl::outbox
        .filter(dsl::status.eq(OutboxStatus::Failed))
        .filter(dsl::kind.eq_any(kinds))
        .select(OutboxRow::as_select())
        .load(c))?;
    let ids: Vec<i64> = failed.iter().map(|item| item.id).collect();
    with_conn!(conn, c => diesel::update(dsl::outbox.filter(dsl::id.eq_any(&ids)))
        .set((
            dsl::status.eq(OutboxStatus::Pending),
            dsl::attempts.eq(0),
            dsl::next_attempt_at_ms.eq(0),
            dsl::locked_until_ms.eq(0),
            dsl::locked_by.eq(None::<String>),
        ))
        .execute(c))?;
    Ok(failed)
}

/// Puts the named items of `kind` back in the queue if they are failed (fresh count of tries,
/// resuming where they stopped); returns the ids it requeued.
pub fn requeue_failed_items_by_id(
    conn: &mut Conn,
    kind: &str,
    ids: &[i64],
) -> StoreResult<Vec<i64>> {
    let failed: Vec<i64> = with_conn!(conn, c => dsl::outbox
        .filter(dsl::status.eq(OutboxStatus::Failed))
        .filter(dsl::kind.eq(kind))
        .filter(dsl::id.eq_any(ids))
        .select(dsl::id)
        .load(c))?;
    with_conn!(conn, c => diesel::update(dsl::outbox.filter(dsl::id.eq_any(&failed)))
        .set((
            dsl::status.eq(OutboxStatus::Pending),
            dsl::attempts.eq(0),
            dsl::next_attempt_at_ms.eq(0),
            dsl::locked_until_ms.eq(0),
            dsl::locked_by.eq(None::<String>),
        ))
        .execute(c))?;
    Ok(failed)
}

/// When the earliest pending item of `kinds` is due (unix milliseconds; a leased item when
/// its lease ends), if any is pending.
pub fn next_pending_at_ms(conn: &mut Conn, kinds: &[&str]) -> StoreResult<Option<i64>> {
    let due: Vec<(i64, i64)> = with_conn!(conn, c => dsl::outbox
        .filter(dsl::status.eq(OutboxStatus::Pending))
        .filter(dsl::kind.eq_any(kinds))
        .select((dsl::next_attempt_at_ms, dsl::locked_until_ms))
        .load(c))?;
    Ok(due.into_iter().map(|(next, lease)| next.max(lease)).min())
}

/// How many items of `kinds` are in each status.
pub fn count_items_by_status(
    conn: &mut Conn,
    kinds: &[&str],
) -> StoreResult<Vec<(OutboxStatus, i64)>> {
    Ok(with_conn!(conn, c => dsl::outbox
        .filter(dsl::kind.eq_any(kinds))
        .group_by(dsl::status)
        .select((dsl::status, diesel::dsl::count_star()))
        .order(dsl::status)
        .load(c))?)
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = outbox_attempts, treat_none_as_default_value = false)]
pub struct NewAttempt<'a> {
    pub item_id: i64,
    pub step: &'a str,
    pub started_at_ms: i64,
    pub duration_ms: i64,
    pub outcome: AttemptOutcome,
    pub status_code: Option<i32>,
    pub error_code: Option<&'a str>,
    pub error: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = outbox_attempts)]
pub struct AttemptRow {
    pub id: i64,
    pub item_id: i64,
    pub step: String,
    pub started_at_ms: i64,
    pub duration_ms: i64,
    pub outcome: AttemptOutcome,
    pub status_code: Option<i32>,
    pub error_code: Option<String>,
    pub error: Option<String>,
}

pub fn insert_attempt(conn: &mut Conn, attempt: &NewAttempt<'_>) -> StoreResult<()> {
    with_conn!(conn, c => diesel::insert_into(outbox_attempts::table)
        .values(attempt)
        .execute(c))?;
    Ok(())
}

/// An item's attempts, oldest first.
pub fn list_attempts(conn: &mut Conn, item_id: i64) -> StoreResult<Vec<AttemptRow>> {
    use super::schema::outbox_attempts::dsl as adsl;
    Ok(with_conn!(conn, c => adsl::outbox_attempts
        .filter(adsl::item_id.eq(item_id))
        .order(adsl::id.asc())
        .select(AttemptRow::as_select())
        .load(c))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_lock_keys_are_stable_and_distinct() {
        assert_eq!(lane_lock_key("customer:1"), lane_lock_key("customer:1"));
        assert_ne!(lane_lock_key("customer:1"), lane_lock_key("customer:2"));
    }
}
