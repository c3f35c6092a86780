//! Checkouts (one per intent) and their audit trail of transitions and refusals.

use diesel::prelude::*;

use super::prepared::Fixed;
use super::schema::checkout_transitions::{self, dsl as tdsl};
use super::schema::checkouts::{self, dsl};
use super::{Conn, StoreResult, ROWS_PER_STATEMENT};
use crate::domain::checkout::{
    self as rules, CheckoutKind, CheckoutState, Current, TransitionOutcome,
};
use crate::with_conn;

// None as NULL in inserts (fixed SQL, a cached prepared statement); nullable columns
// default to NULL anyway. Updates go through `update_checkout`.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = checkouts, treat_none_as_default_value = false)]
pub struct CheckoutRow {
    pub id: String,
    pub kind: CheckoutKind,
    pub intent_id: String,
    pub customer_id: Option<i64>,
    pub stripe_customer_id: Option<String>,
    pub payment_method_id: Option<String>,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub setup_future_usage: Option<String>,
    pub state: CheckoutState,
    pub state_event_id: Option<String>,
    pub state_event_created: i64,
    pub last_error_code: Option<String>,
    pub decline_code: Option<String>,
    pub last_error_message: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The connected account the intent belongs to (`acct_…`), or '' for the platform
    /// ([`crate::store::customers::PLATFORM`]).
    pub account: String,
}

impl CheckoutRow {
    /// The state and the Stripe time of the event that set it, as the machine sees them.
    pub fn current(&self) -> Current {
        Current {
            state: self.state,
            since: self.state_event_created,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = checkout_transitions)]
pub struct TransitionRow {
    pub id: i64,
    pub checkout_id: String,
    pub event_id: Option<String>,
    pub from_state: Option<CheckoutState>,
    pub to_state: CheckoutState,
    pub outcome: TransitionOutcome,
    pub reason: Option<String>,
    pub error_code: Option<String>,
    pub decline_code: Option<String>,
    pub event_created: Option<i64>,
    pub at: i64,
}

// None as NULL keeps the insert's SQL fixed, so diesel caches the prepared statement.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = checkout_transitions, treat_none_as_default_value = false)]
pub struct NewTransition<'a> {
    pub checkout_id: &'a str,
    pub event_id: Option<&'a str>,
    pub from_state: Option<CheckoutState>,
    pub to_state: CheckoutState,
    pub outcome: TransitionOutcome,
    pub reason: Option<&'a str>,
    pub error_code: Option<&'a str>,
    pub decline_code: Option<&'a str>,
    pub event_created: Option<i64>,
    pub at: i64,
}

/// The checkout following `intent_id`; on PostgreSQL the row is locked for the transaction
/// so two instances applying events of one intent take turns.
pub fn find_checkout_by_intent(
    conn: &mut Conn,
    intent_id: &str,
) -> StoreResult<Option<CheckoutRow>> {
    macro_rules! query {
        () => {
            dsl::checkouts
                .filter(dsl::intent_id.eq(intent_id))
                .select(CheckoutRow::as_select())
        };
    }
    Ok(match conn {
        Conn::Sqlite(c) => query!().get_result(&mut **c).optional()?,
        Conn::Postgres(c) => query!().for_update().get_result(&mut **c).optional()?,
    })
}

/// The checkouts following any of `intent_ids`, read in one query; on PostgreSQL locked for
/// the transaction in intent order, the order every batch takes them in (see
/// [`crate::inbox::processor`]), so two batches never wait on each other in a cycle here.
pub fn lock_checkouts_by_intents(
    conn: &mut Conn,
    intent_ids: &[&str],
) -> StoreResult<Vec<CheckoutRow>> {
    Ok(match conn {
        Conn::Sqlite(c) => dsl::checkouts
            .filter(dsl::intent_id.eq_any(intent_ids))
            .order(dsl::intent_id.asc())
            .select(CheckoutRow::as_select())
            .load(&mut **c)?,
        // Sent unprepared, so planned each time for the ids it is given. As a prepared
        // statement its generic plan, made while the table was nearly empty, scanned the
        // whole table and tested each row against the whole array, for the connection's
        // life: the set-wise apply ran at a third of its speed (BENCHMARKS.md). Planned
        // fresh, it still scanned while the table had no statistics; the processor's batches
        // rule that out with `Conn::keyed_access_only`.
        Conn::Postgres(c) => diesel::sql_query(
            "SELECT * FROM checkouts WHERE intent_id = ANY($1) ORDER BY intent_id FOR UPDATE",
        )
        .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(intent_ids)
        .load(&mut **c)?,
    })
}

pub fn find_checkout(conn: &mut Conn, id: &str) -> StoreResult<Option<CheckoutRow>> {
    Ok(
        with_conn!(conn, c => dsl::checkouts.find(id).select(CheckoutRow::as_select()).get_result(c).optional())?,
    )
}

/// Inserts a checkout unless one follows the same intent already (another instance may
/// have created it a moment ago); returns whether this call created it.
pub fn insert_checkout(conn: &mut Conn, row: &CheckoutRow) -> StoreResult<bool> {
    let n = with_conn!(conn, c => diesel::insert_into(checkouts::table)
        .values((row, watch(row)))
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(n == 1)
}

/// The sweeper's watch of a new checkout (see [`rules::expiry_watch`]).
fn watch(row: &CheckoutRow) -> diesel::dsl::Eq<dsl::expiry_watch, Option<i64>> {
    dsl::expiry_watch.eq(rules::expiry_watch(row.state, row.updated_at))
}

/// Writes every column a checkout's life changes (identity and `created_at` never change),
/// and starts the sweeper's watch if the new state can expire and none is on.
/// Once per applied intent event: a [`Fixed`] statement, prepared once per connection.
pub fn update_checkout(conn: &mut Conn, row: &CheckoutRow) -> StoreResult<()> {
    struct UpdateCheckout;
    let statement = Fixed::<UpdateCheckout>::new()
        .sql("UPDATE checkouts SET customer_id = ")
        .nullable_big_int(row.customer_id)
        .sql(", stripe_customer_id = ")
        .nullable_text(row.stripe_customer_id.as_deref())
        .sql(", payment_method_id = ")
        .nullable_text(row.payment_method_id.as_deref())
        .sql(", amount = ")
        .nullable_big_int(row.amount)
        .sql(", currency = ")
        .nullable_text(row.currency.as_deref())
        .sql(", setup_future_usage = ")
        .nullable_text(row.setup_future_usage.as_deref())
        .sql(", state = ")
        .text(row.state.as_str())
        .sql(", state_event_id = ")
        .nullable_text(row.state_event_id.as_deref())
        .sql(", state_event_created = ")
        .big_int(row.state_event_created)
        .sql(", last_error_code = ")
        .nullable_text(row.last_error_code.as_deref())
        .sql(", decline_code = ")
        .nullable_text(row.decline_code.as_deref())
        .sql(", last_error_message = ")
        .nullable_text(row.last_error_message.as_deref())
        .sql(", updated_at = ")
        .big_int(row.updated_at)
        .sql(", expiry_watch = COALESCE(expiry_watch, ")
        .nullable_big_int(rules::expiry_watch(row.state, row.updated_at))
        .sql(") WHERE id = ")
        .text(&row.id);
    with_conn!(conn, c => statement.execute(c))?;
    Ok(())
}

/// Inserts `rows`, skipping any whose intent has a checkout already; returns how many it
/// inserted.
pub fn insert_checkouts(conn: &mut Conn, rows: &[CheckoutRow]) -> StoreResult<usize> {
    let mut inserted = 0;
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        inserted += match conn {
            Conn::Postgres(c) => diesel::insert_into(checkouts::table)
                .values(
                    chunk
                        .iter()
                        .map(|row| (row, watch(row)))
                        .collect::<Vec<_>>(),
                )
                .on_conflict_do_nothing()
                .execute(&mut **c)?,
            Conn::Sqlite(_) => {
                let mut n = 0;
                for row in chunk {
                    n += usize::from(insert_checkout(conn, row)?);
                }
                n
            }
        };
    }
    Ok(inserted)
}

/// One column of `rows`, as the array a multi-row statement binds (`unnest($n::…[])`).
fn column<'r, R, T>(rows: &'r [R], field: impl Fn(&'r R) -> T) -> Vec<T> {
    rows.iter().map(field).collect()
}

/// [`update_checkout`] for several rows; on PostgreSQL one statement (the rows' values as
/// arrays, `unnest`ed) instead of a round trip per row. Returns how many rows it updated.
pub fn update_checkouts(conn: &mut Conn, rows: &[&CheckoutRow]) -> StoreResult<usize> {
    use diesel::sql_types::{Array, BigInt, Nullable, Text};
    let Conn::Postgres(c) = conn else {
        for row in rows {
            update_checkout(conn, row)?;
        }
        return Ok(rows.len());
    };
    let mut updated = 0;
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        updated += diesel::sql_query(
            "UPDATE checkouts AS c SET customer_id = v.customer_id, \
             stripe_customer_id = v.stripe_customer_id, payment_method_id = v.payment_method_id, \
             amount = v.amount, currency = v.currency, setup_future_usage = v.setup_future_usage, \
             state = v.state, state_event_id = v.state_event_id, \
             state_event_created = v.state_event_created, last_error_code = v.last_error_code, \
             decline_code = v.decline_code, last_error_message = v.last_error_message, \
             updated_at = v.updated_at, expiry_watch = COALESCE(c.expiry_watch, v.watch) \
             FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], \
             $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], $11::text[], \
             $12::text[], $13::text[], $14::bigint[], $15::bigint[]) \
             AS v(id, customer_id, stripe_customer_id, payment_method_id, amount, currency, \
             setup_future_usage, state, state_event_id, state_event_created, last_error_code, \
             decline_code, last_error_message, updated_at, watch) \
             WHERE c.id = v.id",
        )
        .bind::<Array<Text>, _>(column(chunk, |r| &r.id))
        .bind::<Array<Nullable<BigInt>>, _>(column(chunk, |r| r.customer_id))
        .bind::<Array<Nullable<Text>>, _>(column(chunk, |r| r.stripe_customer_id.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(column(chunk, |r| r.payment_method_id.as_deref()))
        .bind::<Array<Nullable<BigInt>>, _>(column(chunk, |r| r.amount))
        .bind::<Array<Nullable<Text>>, _>(column(chunk, |r| r.currency.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(column(chunk, |r| r.setup_future_usage.as_deref()))
        .bind::<Array<Text>, _>(column(chunk, |r| r.state.as_str()))
        .bind::<Array<Nullable<Text>>, _>(column(chunk, |r| r.state_event_id.as_deref()))
        .bind::<Array<BigInt>, _>(column(chunk, |r| r.state_event_created))
        .bind::<Array<Nullable<Text>>, _>(column(chunk, |r| r.last_error_code.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(column(chunk, |r| r.decline_code.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(column(chunk, |r| r.last_error_message.as_deref()))
        .bind::<Array<BigInt>, _>(column(chunk, |r| r.updated_at))
        .bind::<Array<Nullable<BigInt>>, _>(column(chunk, |r| {
            rules::expiry_watch(r.state, r.updated_at)
        }))
        .execute(&mut **c)?;
    }
    Ok(updated)
}

/// Inserts several transitions, in order.
pub fn insert_transitions(conn: &mut Conn, rows: &[NewTransition<'_>]) -> StoreResult<()> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        match conn {
            // The rows as arrays, `unnest`ed: a multi-row `VALUES` of 1 000 rows has 10 000
            // parameters, and parsing and binding them cost PostgreSQL as much as the insert
            // (statement profile, BENCHMARKS.md). `unnest` yields the rows in array order,
            // so their ids follow the order of `rows`.
            Conn::Postgres(c) => {
                use diesel::sql_types::{Array, BigInt, Nullable, Text};
                diesel::sql_query(
                    "INSERT INTO checkout_transitions (checkout_id, event_id, from_state, \
                     to_state, outcome, reason, error_code, decline_code, event_created, at) \
                     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], \
                     $5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[], $10::bigint[])",
                )
                .bind::<Array<Text>, _>(column(chunk, |r| r.checkout_id))
                .bind::<Array<Nullable<Text>>, _>(column(chunk, |r| r.event_id))
                .bind::<Array<Nullable<Text>>, _>(column(chunk, |r| {
                    r.from_state.map(|s| s.as_str())
                }))
                .bind::<Array<Text>, _>(column(chunk, |r| r.to_state.as_str()))
                .bind::<Array<Text>, _>(column(chunk, |r| r.outcome.as_str()))
                .bind::<Array<Nullable<Text>>, _>(column(chunk, |r| r.reason))
                .bind::<Array<Nullable<Text>>, _>(column(chunk, |r| r.error_code))
                .bind::<Array<Nullable<Text>>, _>(column(chunk, |r| r.decline_code))
                .bind::<Array<Nullable<BigInt>>, _>(column(chunk, |r| r.event_created))
                .bind::<Array<BigInt>, _>(column(chunk, |r| r.at))
                .execute(&mut **c)?;
            }
            Conn::Sqlite(_) => {
                for row in chunk {
                    insert_transition(conn, row)?;
                }
            }
        }
    }
    Ok(())
}

pub fn insert_transition(conn: &mut Conn, transition: &NewTransition<'_>) -> StoreResult<()> {
    with_conn!(conn, c => diesel::insert_into(checkout_transitions::table).values(transition).execute(c))?;
    Ok(())
}

/// A checkout's transitions and refusals, oldest first.
pub fn list_transitions(conn: &mut Conn, checkout_id: &str) -> StoreResult<Vec<TransitionRow>> {
    Ok(with_conn!(conn, c => tdsl::checkout_transitions
        .filter(tdsl::checkout_id.eq(checkout_id))
        .order(tdsl::id.asc())
        .select(TransitionRow::as_select())
        .load(c))?)
}

/// Checkouts watched since `quiet_since` (local seconds) or earlier, oldest watch first:
/// every checkout that can expire and has not changed since then, and others whose watch
/// is out of date (see [`rules::expiry_watch`]); on PostgreSQL locked, skipping locked ones.
pub fn find_watched_checkouts(
    conn: &mut Conn,
    quiet_since: i64,
    limit: i64,
) -> StoreResult<Vec<CheckoutRow>> {
    macro_rules! query {
        () => {
            dsl::checkouts
                .filter(dsl::expiry_watch.le(quiet_since))
                .order(dsl::expiry_watch.asc())
                .limit(limit)
                .select(CheckoutRow::as_select())
        };
    }
    Ok(match conn {
        Conn::Sqlite(c) => query!().load(&mut **c)?,
        Conn::Postgres(c) => query!().for_update().skip_locked().load(&mut **c)?,
    })
}

/// How many checkouts are in each state.
pub fn count_checkouts_by_state(conn: &mut Conn) -> StoreResult<Vec<(CheckoutState, i64)>> {
    Ok(with_conn!(conn, c => dsl::checkouts
        .group_by(dsl::state)
        .select((dsl::state, diesel::dsl::count_star()))
        .order(dsl::state)
        .load(c))?)
}

/// Moves the sweeper's watch of a checkout on (`Some`) or ends it (`None`).
pub fn set_expiry_watch(conn: &mut Conn, checkout_id: &str, watch: Option<i64>) -> StoreResult<()> {
    with_conn!(conn, c => diesel::update(dsl::checkouts.find(checkout_id))
        .set(dsl::expiry_watch.eq(watch))
        .execute(c))?;
    Ok(())
}

/// Records the local customer a checkout belongs to, if none is known yet.
pub fn set_checkout_customer(
    conn: &mut Conn,
    checkout_id: &str,
    customer_id: i64,
) -> StoreResult<()> {
    with_conn!(conn, c => diesel::update(dsl::checkouts.find(checkout_id))
        .filter(dsl::customer_id.is_null())
        .set(dsl::customer_id.eq(customer_id))
        .execute(c))?;
    Ok(())
}

/// Records the Stripe customer a checkout's card was saved to, if none is known yet.
pub fn set_checkout_stripe_customer(
    conn: &mut Conn,
    checkout_id: &str,
    stripe_customer_id: &str,
    customer_id: i64,
) -> StoreResult<()> {
    with_conn!(conn, c => diesel::update(dsl::checkouts.find(checkout_id))
        .filter(dsl::stripe_customer_id.is_null())
        .set(dsl::stripe_customer_id.eq(stripe_customer_id))
        .execute(c))?;
    with_conn!(conn, c => diesel::update(dsl::checkouts.find(checkout_id))
        .filter(dsl::customer_id.is_null())
        .set(dsl::customer_id.eq(customer_id))
        .execute(c))?;
    Ok(())
}
