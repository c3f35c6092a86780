//! The inbox: every verified event, stored raw, with its processing status.

use diesel::prelude::*;

use super::prepared::Fixed;
use super::schema::webhook_events::{self, dsl};
use super::{Conn, StoreResult};
use crate::text_enum::text_enum;
use crate::with_conn;

text_enum! {
    /// Processing status of a stored event.
    pub enum EventStatus {
        /// Waiting for (another) try.
        Pending = "pending",
        Processed = "processed",
        /// A type payhook does not handle: stored for the record.
        Ignored = "ignored",
        /// A handled type whose payload cannot be applied; `last_error` says why. Not retried.
        Failed = "failed",
        /// Every try failed; `last_error` holds the last reason. Requeue with `payhook retry`.
        Dead = "dead",
    }
}

/// A verified event on its way into the inbox. Owned: it crosses to the writer thread.
///
/// `None` is written as NULL, not as "use the column default": diesel renders the latter
/// differently per row and so never caches the prepared statement, which cost a full SQL
/// parse per admitted event. The nullable columns default to NULL anyway.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = webhook_events, treat_none_as_default_value = false)]
pub struct NewWebhookEvent {
    pub id: String,
    pub event_type: String,
    pub api_version: Option<String>,
    pub created: i64,
    pub livemode: bool,
    pub account: Option<String>,
    pub object_id: Option<String>,
    pub object_type: Option<String>,
    pub payload: String,
    pub received_at: i64,
    /// The endpoint it came through (`default` for `/webhooks/stripe`, and for events
    /// found by reconciliation, which lists the platform account's events).
    pub endpoint: String,
    /// Which of that endpoint's secrets matched; `None` when no signature was checked.
    pub secret_index: Option<i32>,
    /// `Pending` for an event to apply; `Ignored` for one stored for the record only (an
    /// event whose livemode its endpoint does not take), with the reason in `last_error`.
    pub status: EventStatus,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_events)]
pub struct WebhookEvent {
    pub id: String,
    pub event_type: String,
    pub api_version: Option<String>,
    pub created: i64,
    pub livemode: bool,
    pub account: Option<String>,
    pub object_id: Option<String>,
    pub object_type: Option<String>,
    pub payload: String,
    pub received_at: i64,
    pub status: EventStatus,
    pub attempts: i32,
    pub next_attempt_at_ms: i64,
    pub last_error: Option<String>,
    pub processed_at: Option<i64>,
    pub endpoint: String,
    pub secret_index: Option<i32>,
}

/// Inserts the event unless its id is already stored; returns whether it was new.
pub fn insert_event(conn: &mut Conn, event: &NewWebhookEvent) -> StoreResult<bool> {
    let inserted = with_conn!(conn, c => diesel::insert_into(webhook_events::table)
        .values(event)
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(inserted == 1)
}

/// Inserts each event unless its id is stored already; returns, per event, whether this
/// call stored it (of two events with one id in `events`, only the first).
///
/// PostgreSQL gets one multi-row `INSERT … ON CONFLICT DO NOTHING RETURNING id`: one round
/// trip per admission batch instead of one per event. SQLite runs in-process, where a cached
/// one-row statement per event costs less than preparing a new multi-row one per batch.
pub fn insert_events(conn: &mut Conn, events: &[&NewWebhookEvent]) -> StoreResult<Vec<bool>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let stored: std::collections::HashSet<String> = match conn {
        Conn::Sqlite(_) => {
            return events.iter().map(|e| insert_event(conn, e)).collect();
        }
        Conn::Postgres(c) => diesel::insert_into(webhook_events::table)
            .values(events.to_vec())
            .on_conflict_do_nothing()
            .returning(dsl::id)
            .get_results::<String>(&mut **c)?
            .into_iter()
            .collect(),
    };
    let mut seen = std::collections::HashSet::with_capacity(events.len());
    Ok(events
        .iter()
        .map(|e| stored.contains(&e.id) && seen.insert(e.id.as_str()))
        .collect())
}

/// A claimed event: what orders it, not its payload. The processor reads each event whole
/// only when it applies it, so a claim's memory does not grow with payload sizes (a claim
/// of 500 events of 100 KB each held 50 MB at once).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_events)]
pub struct ClaimedEvent {
    pub id: String,
    pub object_id: Option<String>,
    pub created: i64,
    pub received_at: i64,
}

/// Claims up to `limit` due events, oldest Stripe time first, for the current transaction.
/// On PostgreSQL the rows stay locked (`FOR UPDATE SKIP LOCKED`) until it ends, so other
/// instances pass over them, and a dead instance's claims vanish with its connection. SQLite
/// has one writer at a time, so the `BEGIN IMMEDIATE` transaction is the claim.
pub fn claim_due_events(
    conn: &mut Conn,
    now_ms: i64,
    limit: i64,
) -> StoreResult<Vec<ClaimedEvent>> {
    macro_rules! query {
        () => {
            dsl::webhook_events
                .filter(dsl::status.eq(EventStatus::Pending))
                .filter(dsl::next_attempt_at_ms.le(now_ms))
                .order((dsl::created.asc(), dsl::received_at.asc(), dsl::id.asc()))
                .limit(limit)
                .select(ClaimedEvent::as_select())
        };
    }
    Ok(match conn {
        Conn::Sqlite(c) => query!().load(&mut **c)?,
        Conn::Postgres(c) => query!().for_update().skip_locked().load(&mut **c)?,
    })
}

/// Records a final outcome (processed, ignored, failed, dead).
pub fn finish_event(
    conn: &mut Conn,
    id: &str,
    status: EventStatus,
    attempts: i32,
    error: Option<&str>,
    now: i64,
) -> StoreResult<()> {
    // Once per event: a Fixed statement, prepared once per connection.
    struct FinishEvent;
    let statement = Fixed::<FinishEvent>::new()
        .sql("UPDATE webhook_events SET status = ")
        .text(status.as_str())
        .sql(", attempts = ")
        .integer(attempts)
        .sql(", last_error = ")
        .nullable_text(error)
        .sql(", processed_at = ")
        .big_int(now)
        .sql(" WHERE id = ")
        .text(id);
    with_conn!(conn, c => statement.execute(c))?;
    Ok(())
}

/// A final outcome of a batch's event, for [`finish_events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub id: String,
    pub status: EventStatus,
    pub attempts: i32,
    pub error: Option<String>,
}

/// Records the final outcomes of a batch's events at `now`, in the batch's transaction: on
/// PostgreSQL one statement for all of them (a round trip per event was a tenth of applying
/// one), on SQLite [`finish_event`] per event (prepared once, no round trip to save).
pub fn finish_events(conn: &mut Conn, finished: &[Finished], now: i64) -> StoreResult<()> {
    use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text};
    if let Conn::Postgres(c) = conn {
        if finished.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = finished.iter().map(|f| f.id.as_str()).collect();
        let statuses: Vec<&str> = finished.iter().map(|f| f.status.as_str()).collect();
        let attempts: Vec<i32> = finished.iter().map(|f| f.attempts).collect();
        let errors: Vec<Option<&str>> = finished.iter().map(|f| f.error.as_deref()).collect();
        diesel::sql_query(
            "UPDATE webhook_events AS e SET status = v.status, attempts = v.attempts, \
             last_error = v.last_error, processed_at = $5 \
             FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[]) \
               AS v(id, status, attempts, last_error) \
             WHERE e.id = v.id",
        )
        .bind::<Array<Text>, _>(ids)
        .bind::<Array<Text>, _>(statuses)
        .bind::<Array<Integer>, _>(attempts)
        .bind::<Array<Nullable<Text>>, _>(errors)
        .bind::<BigInt, _>(now)
        .execute(&mut **c)?;
        return Ok(());
    }
    for f in finished {
        finish_event(conn, &f.id, f.status, f.attempts, f.error.as_deref(), now)?;
    }
    Ok(())
}

/// The whole events of `ids` (payloads included), in no particular order; ids not stored
/// are left out. One query for a chunk of a claim instead of one per event.
pub fn find_events(conn: &mut Conn, ids: &[&str]) -> StoreResult<Vec<WebhookEvent>> {
    Ok(with_conn!(conn, c => dsl::webhook_events
        .filter(dsl::id.eq_any(ids))
        .select(WebhookEvent::as_select())
        .load(c))?)
}

/// Records a failed try and when to try again.
pub fn schedule_event_retry(
    conn: &mut Conn,
    id: &str,
    attempts: i32,
    next_attempt_at_ms: i64,
    error: &str,
) -> StoreResult<()> {
    with_conn!(conn, c => diesel::update(dsl::webhook_events.find(id))
        .set((
            dsl::attempts.eq(attempts),
            dsl::next_attempt_at_ms.eq(next_attempt_at_ms),
            dsl::last_error.eq(error),
        ))
        .execute(c))?;
    Ok(())
}

/// Puts dead events back in the queue with a fresh count of tries; returns how many.
pub fn requeue_dead_events(conn: &mut Conn) -> StoreResult<usize> {
    requeue_events(conn, &[EventStatus::Dead], None)
}

/// Puts events in one of `statuses` back in the queue with a fresh count of tries: all of
/// them, or only those of `ids`. Events in other statuses are left as they are (a processed
/// event is never applied twice). Returns how many were requeued.
pub fn requeue_events(
    conn: &mut Conn,
    statuses: &[EventStatus],
    ids: Option<&[String]>,
) -> StoreResult<usize> {
    let reset = (
        dsl::status.eq(EventStatus::Pending),
        dsl::attempts.eq(0),
        dsl::next_attempt_at_ms.eq(0),
    );
    let of_status = dsl::status.eq_any(statuses);
    Ok(match ids {
        None => with_conn!(conn, c => diesel::update(dsl::webhook_events.filter(of_status))
            .set(reset)
            .execute(c))?,
        Some(ids) => with_conn!(conn, c => diesel::update(
                dsl::webhook_events.filter(of_status).filter(dsl::id.eq_any(ids)),
            )
            .set(reset)
            .execute(c))?,
    })
}

pub fn find_event(conn: &mut Conn, id: &str) -> StoreResult<Option<WebhookEvent>> {
    Ok(with_conn!(conn, c => dsl::webhook_events
        .find(id)
        .select(WebhookEvent::as_select())
        .get_result(c)
        .optional())?)
}

/// The stored body of event `id`, if it is stored.
pub fn find_payload(conn: &mut Conn, id: &str) -> StoreResult<Option<String>> {
    Ok(with_conn!(conn, c => dsl::webhook_events
        .find(id)
        .select(dsl::payload)
        .get_result(c)
        .optional())?)
}

/// When the earliest pending event is due (unix milliseconds), if any is pending.
pub fn next_pending_at_ms(conn: &mut Conn) -> StoreResult<Option<i64>> {
    Ok(with_conn!(conn, c => dsl::webhook_events
        .filter(dsl::status.eq(EventStatus::Pending))
        .select(diesel::dsl::min(dsl::next_attempt_at_ms))
        .get_result(c))?)
}

/// How many events are in each status.
pub fn count_events_by_status(conn: &mut Conn) -> StoreResult<Vec<(EventStatus, i64)>> {
    Ok(with_conn!(conn, c => dsl::webhook_events
        .group_by(dsl::status)
        .select((dsl::status, diesel::dsl::count_star()))
        .order(dsl::status)
        .load(c))?)
}
