//! The inbox: every verified event, stored raw, with its processing status, and the queue
//! of the events still to apply.
//!
//! The rule this module keeps, and the only place that writes either table: an event has a
//! row in `webhook_event_queue` exactly while its status is `pending`. The processor claims
//! from the queue, so recording an outcome changes no indexed column of `webhook_events`
//! (on PostgreSQL a HOT update; see the migration `000090_event_queue`). Admission on
//! PostgreSQL writes both tables in one statement; every other write of both runs in the
//! caller's transaction, and every caller has one open.

use diesel::prelude::*;

use super::prepared::Fixed;
use super::schema::webhook_event_queue::{self, dsl as qdsl};
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

/// Where a pending event sits in the queue: its claim order, which is the queue's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueKey<'a> {
    pub created: i64,
    pub received_at: i64,
    pub id: &'a str,
}

/// A queue row, as admission on SQLite writes it.
#[derive(Debug, Insertable)]
#[diesel(table_name = webhook_event_queue, treat_none_as_default_value = false)]
struct QueueEntry<'a> {
    created: i64,
    received_at: i64,
    id: &'a str,
    object_id: Option<&'a str>,
    next_attempt_at_ms: i64,
}

impl<'a> QueueEntry<'a> {
    fn new(id: &'a str, created: i64, received_at: i64, object_id: Option<&'a str>) -> Self {
        Self {
            created,
            received_at,
            id,
            object_id,
            next_attempt_at_ms: 0,
        }
    }
}

/// Inserts the event unless its id is already stored, and queues it if it is to be applied;
/// returns whether it was new. On PostgreSQL one statement (see [`insert_events`]); on
/// SQLite two, in the caller's transaction.
pub fn insert_event(conn: &mut Conn, event: &NewWebhookEvent) -> StoreResult<bool> {
    let c = match conn {
        Conn::Postgres(c) => return Ok(admit_on_postgres(c, &[event])?.contains(&event.id)),
        Conn::Sqlite(c) => c,
    };
    let inserted = diesel::insert_into(webhook_events::table)
        .values(event)
        .on_conflict_do_nothing()
        .execute(&mut **c)?
        == 1;
    if inserted && event.status == EventStatus::Pending {
        let entry = QueueEntry::new(
            &event.id,
            event.created,
            event.received_at,
            event.object_id.as_deref(),
        );
        diesel::insert_into(webhook_event_queue::table)
            .values(&entry)
            .execute(&mut **c)?;
    }
    Ok(inserted)
}

/// Inserts each event unless its id is stored already, and queues those to apply; returns,
/// per event, whether this call stored it (of two events with one id in `events`, only the
/// first).
///
/// PostgreSQL gets one statement per admission batch (see [`admit_on_postgres`]). SQLite
/// runs in-process, where cached one-row statements per event cost less than preparing new
/// multi-row ones per batch.
pub fn insert_events(conn: &mut Conn, events: &[&NewWebhookEvent]) -> StoreResult<Vec<bool>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let stored = match conn {
        Conn::Sqlite(_) => {
            return events.iter().map(|e| insert_event(conn, e)).collect();
        }
        Conn::Postgres(c) => admit_on_postgres(c, events)?,
    };
    let mut seen = std::collections::HashSet::with_capacity(events.len());
    Ok(events
        .iter()
        .map(|e| stored.contains(&e.id) && seen.insert(e.id.as_str()))
        .collect())
}

/// Stores and queues `events` in one statement, returning the ids it stored. One statement
/// because admission on PostgreSQL sends it without `BEGIN` and `COMMIT` (see
/// `Pool::write_statement`): it is atomic and durable by itself, one round trip and one WAL
/// flush per batch, and an event is never stored without its queue row. Its SQL is the same
/// for any number of events (arrays through `unnest`), so it is prepared once per connection.
fn admit_on_postgres(
    c: &mut diesel::PgConnection,
    events: &[&NewWebhookEvent],
) -> StoreResult<std::collections::HashSet<String>> {
    #[derive(QueryableByName)]
    struct Stored {
        #[diesel(sql_type = diesel::sql_types::Text)]
        id: String,
    }
    let statement = AdmitOnPostgres {
        id: events.iter().map(|e| e.id.as_str()).collect(),
        event_type: events.iter().map(|e| e.event_type.as_str()).collect(),
        api_version: events.iter().map(|e| e.api_version.as_deref()).collect(),
        created: events.iter().map(|e| e.created).collect(),
        livemode: events.iter().map(|e| e.livemode).collect(),
        account: events.iter().map(|e| e.account.as_deref()).collect(),
        object_id: events.iter().map(|e| e.object_id.as_deref()).collect(),
        object_type: events.iter().map(|e| e.object_type.as_deref()).collect(),
        payload: events.iter().map(|e| e.payload.as_str()).collect(),
        received_at: events.iter().map(|e| e.received_at).collect(),
        endpoint: events.iter().map(|e| e.endpoint.as_str()).collect(),
        secret_index: events.iter().map(|e| e.secret_index).collect(),
        status: events.iter().map(|e| e.status.as_str()).collect(),
        last_error: events.iter().map(|e| e.last_error.as_deref()).collect(),
    };
    Ok(statement
        .load::<Stored>(c)?
        .into_iter()
        .map(|s| s.id)
        .collect())
}

/// The columns of [`NewWebhookEvent`], one array each, in the order the SQL names them.
struct AdmitOnPostgres<'a> {
    id: Vec<&'a str>,
    event_type: Vec<&'a str>,
    api_version: Vec<Option<&'a str>>,
    created: Vec<i64>,
    livemode: Vec<bool>,
    account: Vec<Option<&'a str>>,
    object_id: Vec<Option<&'a str>>,
    object_type: Vec<Option<&'a str>>,
    payload: Vec<&'a str>,
    received_at: Vec<i64>,
    endpoint: Vec<&'a str>,
    secret_index: Vec<Option<i32>>,
    status: Vec<&'a str>,
    last_error: Vec<Option<&'a str>>,
}

/// The prepared-statement cache's key for [`AdmitOnPostgres`].
struct AdmitOnPostgresSql;

impl diesel::query_builder::QueryId for AdmitOnPostgres<'_> {
    type QueryId = AdmitOnPostgresSql;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl diesel::query_builder::Query for AdmitOnPostgres<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for AdmitOnPostgres<'_> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> QueryResult<()> {
        use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text};
        // Rows go in in the order given (admission sorts them by id: see `commit_batch`).
        out.push_sql(
            "WITH stored AS (INSERT INTO webhook_events (id, event_type, api_version, \
               created, livemode, account, object_id, object_type, payload, received_at, \
               endpoint, secret_index, status, last_error) \
             SELECT * FROM unnest(",
        );
        out.push_bind_param::<Array<Text>, _>(&self.id)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Text>, _>(&self.event_type)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.api_version)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<BigInt>, _>(&self.created)?;
        out.push_sql("::int8[], ");
        out.push_bind_param::<Array<Bool>, _>(&self.livemode)?;
        out.push_sql("::bool[], ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.account)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.object_id)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.object_type)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Text>, _>(&self.payload)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<BigInt>, _>(&self.received_at)?;
        out.push_sql("::int8[], ");
        out.push_bind_param::<Array<Text>, _>(&self.endpoint)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Nullable<Integer>>, _>(&self.secret_index)?;
        out.push_sql("::int4[], ");
        out.push_bind_param::<Array<Text>, _>(&self.status)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.last_error)?;
        out.push_sql(
            "::text[]) \
             ON CONFLICT DO NOTHING \
             RETURNING id, created, received_at, object_id, status), \
           queued AS (INSERT INTO webhook_event_queue (created, received_at, id, object_id) \
             SELECT created, received_at, id, object_id FROM stored WHERE status = 'pending') \
           SELECT id FROM stored",
        );
        Ok(())
    }
}

impl RunQueryDsl<diesel::PgConnection> for AdmitOnPostgres<'_> {}

/// A claimed event: its queue row, not its payload. The processor reads each event whole
/// only when it applies it, so a claim's memory does not grow with payload sizes (a claim
/// of 500 events of 100 KB each held 50 MB at once).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_event_queue)]
pub struct ClaimedEvent {
    pub id: String,
    pub object_id: Option<String>,
    pub created: i64,
    pub received_at: i64,
}

impl ClaimedEvent {
    /// The claimed queue row's key: what recording the event's outcome deletes.
    pub fn queue_key(&self) -> QueueKey<'_> {
        QueueKey {
            created: self.created,
            received_at: self.received_at,
            id: &self.id,
        }
    }
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
            qdsl::webhook_event_queue
                .filter(qdsl::next_attempt_at_ms.le(now_ms))
                .order((qdsl::created.asc(), qdsl::received_at.asc(), qdsl::id.asc()))
                .limit(limit)
                .select(ClaimedEvent::as_select())
        };
    }
    Ok(match conn {
        Conn::Sqlite(c) => query!().load(&mut **c)?,
        Conn::Postgres(c) => query!().for_update().skip_locked().load(&mut **c)?,
    })
}

/// Takes the event at `key` out of the queue: it is no longer pending. The processor calls
/// it alone only for a queue row whose event is settled already.
pub fn dequeue(conn: &mut Conn, key: QueueKey<'_>) -> StoreResult<()> {
    struct Dequeue;
    let statement = Fixed::<Dequeue>::new()
        .sql("DELETE FROM webhook_event_queue WHERE created = ")
        .big_int(key.created)
        .sql(" AND received_at = ")
        .big_int(key.received_at)
        .sql(" AND id = ")
        .text(key.id);
    with_conn!(conn, c => statement.execute(c))?;
    Ok(())
}

/// Records a final outcome (processed, ignored, failed, dead) of the pending event at `key`.
pub fn finish_event(
    conn: &mut Conn,
    key: QueueKey<'_>,
    status: EventStatus,
    attempts: i32,
    error: Option<&str>,
    now: i64,
) -> StoreResult<()> {
    debug_assert_ne!(status, EventStatus::Pending, "an outcome is final");
    dequeue(conn, key)?;
    let id = key.id;
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
    pub created: i64,
    pub received_at: i64,
    pub status: EventStatus,
    pub attempts: i32,
    pub error: Option<String>,
}

impl Finished {
    fn key(&self) -> QueueKey<'_> {
        QueueKey {
            created: self.created,
            received_at: self.received_at,
            id: &self.id,
        }
    }
}

/// Records the final outcomes of a batch's events at `now`, in the batch's transaction: on
/// PostgreSQL one statement for all of them, queue rows and statuses (a round trip per event
/// was a tenth of applying one), on SQLite [`finish_event`] per event (prepared once, no
/// round trip to save).
pub fn finish_events(conn: &mut Conn, finished: &[Finished], now: i64) -> StoreResult<()> {
    use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text};
    if let Conn::Postgres(c) = conn {
        if finished.is_empty() {
            return Ok(());
        }
        debug_assert!(finished.iter().all(|f| f.status != EventStatus::Pending));
        let ids: Vec<&str> = finished.iter().map(|f| f.id.as_str()).collect();
        let statuses: Vec<&str> = finished.iter().map(|f| f.status.as_str()).collect();
        let attempts: Vec<i32> = finished.iter().map(|f| f.attempts).collect();
        let errors: Vec<Option<&str>> = finished.iter().map(|f| f.error.as_deref()).collect();
        let created: Vec<i64> = finished.iter().map(|f| f.created).collect();
        let received: Vec<i64> = finished.iter().map(|f| f.received_at).collect();
        diesel::sql_query(
            "WITH v AS MATERIALIZED ( \
               SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], \
                                    $6::int8[], $7::int8[]) \
                 AS v(id, status, attempts, last_error, created, received_at)), \
             dequeued AS ( \
               DELETE FROM webhook_event_queue AS q USING v \
               WHERE q.created = v.created AND q.received_at = v.received_at AND q.id = v.id) \
             UPDATE webhook_events AS e SET status = v.status, attempts = v.attempts, \
               last_error = v.last_error, processed_at = $5 \
             FROM v WHERE e.id = v.id",
        )
        .bind::<Array<Text>, _>(ids)
        .bind::<Array<Text>, _>(statuses)
        .bind::<Array<Integer>, _>(attempts)
        .bind::<Array<Nullable<Text>>, _>(errors)
        .bind::<BigInt, _>(now)
        .bind::<Array<BigInt>, _>(created)
        .bind::<Array<BigInt>, _>(received)
        .execute(&mut **c)?;
        return Ok(());
    }
    for f in finished {
        finish_event(conn, f.key(), f.status, f.attempts, f.error.as_deref(), now)?;
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

/// Records a failed try of the pending event at `key` and when to try again.
pub fn schedule_event_retry(
    conn: &mut Conn,
    key: QueueKey<'_>,
    attempts: i32,
    next_attempt_at_ms: i64,
    error: &str,
) -> StoreResult<()> {
    with_conn!(conn, c => diesel::update(dsl::webhook_events.find(key.id))
        .set((
            dsl::attempts.eq(attempts),
            dsl::next_attempt_at_ms.eq(next_attempt_at_ms),
            dsl::last_error.eq(error),
        ))
        .execute(c))?;
    with_conn!(conn, c => diesel::update(
            qdsl::webhook_event_queue.find((key.created, key.received_at, key.id)),
        )
        .set(qdsl::next_attempt_at_ms.eq(next_attempt_at_ms))
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
    // A pending event is queued already.
    let statuses: Vec<EventStatus> = statuses
        .iter()
        .copied()
        .filter(|s| *s != EventStatus::Pending)
        .collect();
    let reset = (
        dsl::status.eq(EventStatus::Pending),
        dsl::attempts.eq(0),
        dsl::next_attempt_at_ms.eq(0),
    );
    let queue_columns = (
        qdsl::created,
        qdsl::received_at,
        qdsl::id,
        qdsl::object_id,
        qdsl::next_attempt_at_ms,
    );
    let queue_row = (
        dsl::created,
        dsl::received_at,
        dsl::id,
        dsl::object_id,
        0_i64.into_sql::<diesel::sql_types::BigInt>(),
    );
    // Queued first, from the statuses the update is about to change. A concurrent requeue of
    // the same event finds its queue row there already and then changes no status.
    conn.transaction(|conn| {
        let of_status = dsl::status.eq_any(&statuses);
        Ok(match ids {
            None => {
                with_conn!(conn, c => diesel::insert_into(webhook_event_queue::table)
                    .values(dsl::webhook_events.filter(of_status.clone()).select(queue_row))
                    .into_columns(queue_columns)
                    .on_conflict_do_nothing()
                    .execute(c))?;
                with_conn!(conn, c => diesel::update(dsl::webhook_events.filter(of_status))
                    .set(reset)
                    .execute(c))?
            }
            Some(ids) => {
                let chosen = dsl::webhook_events
                    .filter(of_status)
                    .filter(dsl::id.eq_any(ids));
                with_conn!(conn, c => diesel::insert_into(webhook_event_queue::table)
                    .values(chosen.clone().select(queue_row))
                    .into_columns(queue_columns)
                    .on_conflict_do_nothing()
                    .execute(c))?;
                with_conn!(conn, c => diesel::update(chosen)
                    .set(reset)
                    .execute(c))?
            }
        })
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
    Ok(with_conn!(conn, c => qdsl::webhook_event_queue
        .select(diesel::dsl::min(qdsl::next_attempt_at_ms))
        .get_result(c))?)
}

/// How many events are pending: the queue's rows.
pub fn count_pending_events(conn: &mut Conn) -> StoreResult<i64> {
    Ok(with_conn!(conn, c => qdsl::webhook_event_queue.count().get_result(c))?)
}

/// How many events are in each status.
pub fn count_events_by_status(conn: &mut Conn) -> StoreResult<Vec<(EventStatus, i64)>> {
    Ok(with_conn!(conn, c => dsl::webhook_events
        .group_by(dsl::status)
        .select((dsl::status, diesel::dsl::count_star()))
        .order(dsl::status)
        .load(c))?)
}
