//! What the app asked for through the app API: one row per checkout or off-session charge,
//! written before any Stripe call (see the migration `2026-11-30-000020_app_api`).
//!
//! The row's id is the checkout's id. Its intent is recorded once Stripe answered; until then
//! the checkout exists for nobody but a retry of the same request (same `Idempotency-Key`),
//! which resumes with the same Stripe key. The state machine's row (`checkouts`, same id) is
//! written by whoever learns of the intent first: the API, or the processor applying a webhook
//! whose metadata names this id.

use diesel::prelude::*;

use super::customers::account_key;
use super::schema::app_checkouts::{self, dsl};
use super::schema::checkouts::dsl as cdsl;
use super::{Conn, StoreResult};
use crate::domain::checkout::{CheckoutKind, CheckoutState};
use crate::with_conn;

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = app_checkouts, treat_none_as_default_value = false)]
pub struct AppCheckoutRow {
    pub id: String,
    pub kind: CheckoutKind,
    pub customer_id: Option<i64>,
    pub customer_ref: Option<String>,
    pub email: Option<String>,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub save_card: bool,
    pub off_session: bool,
    pub description: Option<String>,
    /// The app's metadata, a JSON object as text.
    pub metadata: Option<String>,
    pub payment_method_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub request_hash: String,
    pub intent_id: Option<String>,
    /// Sent only in answers to the app; never logged.
    pub client_secret: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The account the checkout is made in: `acct_…`, or
    /// [`PLATFORM`](crate::store::customers::PLATFORM).
    pub account: String,
}

impl AppCheckoutRow {
    /// The connected account the checkout is made in; `None` for the platform.
    pub fn connected_account(&self) -> Option<&str> {
        Some(self.account.as_str()).filter(|a| *a != super::customers::PLATFORM)
    }
}

pub fn find_app_checkout(conn: &mut Conn, id: &str) -> StoreResult<Option<AppCheckoutRow>> {
    Ok(with_conn!(conn, c => dsl::app_checkouts
        .find(id)
        .select(AppCheckoutRow::as_select())
        .get_result(c)
        .optional())?)
}

/// The row an earlier request with `idempotency_key` wrote in `account` (`None`: the
/// platform): keys are the app's within one account, as Stripe's are.
pub fn find_app_checkout_by_key(
    conn: &mut Conn,
    account: Option<&str>,
    idempotency_key: &str,
) -> StoreResult<Option<AppCheckoutRow>> {
    Ok(with_conn!(conn, c => dsl::app_checkouts
        .filter(dsl::account.eq(account_key(account)))
        .filter(dsl::idempotency_key.eq(idempotency_key))
        .select(AppCheckoutRow::as_select())
        .get_result(c)
        .optional())?)
}

/// Inserts unless the id or the idempotency key (in the row's account) is taken (a concurrent duplicate request);
/// returns whether it inserted. The caller then reads the winner back by its key.
pub fn insert_app_checkout(conn: &mut Conn, row: &AppCheckoutRow) -> StoreResult<bool> {
    let n = with_conn!(conn, c => diesel::insert_into(app_checkouts::table)
        .values(row)
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(n == 1)
}

/// Records the intent Stripe made for the checkout (and the secret the browser needs).
pub fn record_intent(
    conn: &mut Conn,
    id: &str,
    intent_id: &str,
    client_secret: Option<&str>,
    now: i64,
) -> StoreResult<()> {
    with_conn!(conn, c => diesel::update(dsl::app_checkouts.find(id))
        .set((
            dsl::intent_id.eq(intent_id),
            dsl::client_secret.eq(client_secret),
            dsl::updated_at.eq(now),
        ))
        .execute(c))?;
    Ok(())
}

/// Records the Stripe customer's local customer, found or created before the intent.
pub fn set_customer(conn: &mut Conn, id: &str, customer_id: i64, now: i64) -> StoreResult<()> {
    with_conn!(conn, c => diesel::update(dsl::app_checkouts.find(id))
        .set((dsl::customer_id.eq(customer_id), dsl::updated_at.eq(now)))
        .execute(c))?;
    Ok(())
}

/// Adds one to the checkout's notification sequence and returns the new value (1 for its
/// first notification). Runs in the transaction that queues the notification, so two
/// transactions of one checkout never get the same number (PostgreSQL: the update's row lock;
/// SQLite: one writer at a time).
pub fn next_notify_sequence(conn: &mut Conn, checkout_id: &str) -> StoreResult<i64> {
    #[derive(QueryableByName)]
    struct Sequence {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        notify_sequence: i64,
    }
    // One statement (RETURNING: SQLite 3.35+, PostgreSQL) on the processor's path.
    let query = |placeholder: &str| {
        format!(
            "UPDATE checkouts SET notify_sequence = notify_sequence + 1 WHERE id = {placeholder} \
             RETURNING notify_sequence"
        )
    };
    let row: Sequence = match conn {
        Conn::Sqlite(c) => diesel::sql_query(query("?"))
            .bind::<diesel::sql_types::Text, _>(checkout_id)
            .get_result(&mut **c)?,
        Conn::Postgres(c) => diesel::sql_query(query("$1"))
            .bind::<diesel::sql_types::Text, _>(checkout_id)
            .get_result(&mut **c)?,
    };
    Ok(row.notify_sequence)
}

/// Filters of the checkout list (all optional), newest first.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// The account whose checkouts are listed ('' for the platform).
    pub account: String,
    /// Only checkouts of this local customer.
    pub customer_id: Option<i64>,
    pub state: Option<CheckoutState>,
    pub intent_id: Option<String>,
    /// Only checkouts older than this one (`created_at`, then id), as Stripe's
    /// `starting_after`.
    pub after: Option<(i64, String)>,
    pub limit: i64,
}

/// The ids of the checkouts `filter` selects, newest first (`created_at`, then id, both
/// descending), at most `filter.limit`.
pub fn list_checkout_ids(conn: &mut Conn, filter: &ListFilter) -> StoreResult<Vec<String>> {
    macro_rules! query {
        () => {{
            let mut q = cdsl::checkouts
                .select(cdsl::id)
                .order((cdsl::created_at.desc(), cdsl::id.desc()))
                .limit(filter.limit)
                .into_boxed();
            q = q.filter(cdsl::account.eq(filter.account.clone()));
            if let Some(customer) = filter.customer_id {
                q = q.filter(cdsl::customer_id.eq(customer));
            }
            if let Some(state) = filter.state {
                q = q.filter(cdsl::state.eq(state));
            }
            if let Some(intent) = &filter.intent_id {
                q = q.filter(cdsl::intent_id.eq(intent.clone()));
            }
            if let Some((created, id)) = &filter.after {
                q = q.filter(
                    cdsl::created_at
                        .lt(*created)
                        .or(cdsl::created_at.eq(*created).and(cdsl::id.lt(id.clone()))),
                );
            }
            q
        }};
    }
    Ok(match conn {
        Conn::Sqlite(c) => query!().load(&mut **c)?,
        Conn::Postgres(c) => query!().load(&mut **c)?,
    })
}
