//! Saved payment methods and their card details (never a number or CVC).

use diesel::prelude::*;

use super::schema::payment_methods::{self, dsl};
use super::{Conn, StoreResult};
use crate::domain::cards::{self, PaymentMethodStatus};
use crate::with_conn;

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
// None as NULL in an insert too (every optional column is nullable without a default): the
// insert's SQL is then fixed, so diesel prepares it once per connection instead of PostgreSQL
// parsing and planning it for every event that names a card.
#[diesel(
    table_name = payment_methods,
    treat_none_as_null = true,
    treat_none_as_default_value = false
)]
pub struct PaymentMethodRow {
    pub id: String,
    pub customer_id: Option<i64>,
    pub stripe_customer_id: Option<String>,
    pub method_type: Option<String>,
    pub brand: Option<String>,
    pub last4: Option<String>,
    pub exp_month: Option<i32>,
    pub exp_year: Option<i32>,
    pub fingerprint: Option<String>,
    pub billing_email: Option<String>,
    pub status: PaymentMethodStatus,
    /// Stripe time of the latest attach seen.
    pub attached_at: Option<i64>,
    /// Stripe time of the latest detach seen.
    pub detached_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Stripe time of the succeeded intent that saved the card (None: not saved by payhook).
    /// The customer's newest saved card is the default.
    pub saved_at: Option<i64>,
}

impl PaymentMethodRow {
    pub fn new(id: &str, now: i64) -> Self {
        Self {
            id: id.to_owned(),
            customer_id: None,
            stripe_customer_id: None,
            method_type: None,
            brand: None,
            last4: None,
            exp_month: None,
            exp_year: None,
            fingerprint: None,
            billing_email: None,
            status: PaymentMethodStatus::Seen,
            attached_at: None,
            detached_at: None,
            created_at: now,
            updated_at: now,
            saved_at: None,
        }
    }

    /// Whether Stripe's latest word is that it is detached (see [`cards::is_detached`]).
    pub fn is_detached(&self) -> bool {
        cards::is_detached(self.attached_at, self.detached_at)
    }

    /// The card as the saved-card ordering sees it.
    pub fn saved(&self) -> cards::Saved<'_> {
        cards::Saved {
            id: &self.id,
            saved_at: self.saved_at,
        }
    }
}

pub fn find_payment_method(conn: &mut Conn, id: &str) -> StoreResult<Option<PaymentMethodRow>> {
    Ok(with_conn!(conn, c => dsl::payment_methods
        .find(id)
        .select(PaymentMethodRow::as_select())
        .get_result(c)
        .optional())?)
}

/// The record of `id` (a new one, stored, if there was none), locked for the rest of the
/// transaction: what a caller that reads a card, changes it and writes it back whole
/// ([`save_payment_method`]) must take first. On PostgreSQL the row lock (`FOR UPDATE`)
/// makes a concurrent attach, detach or save of the same card (another instance's
/// processor, the outbox worker) wait for this transaction instead of overwriting its
/// columns with what it read before; on SQLite the write transaction is the lock. Outside a
/// transaction it locks nothing.
pub fn lock_payment_method(conn: &mut Conn, id: &str, now: i64) -> StoreResult<PaymentMethodRow> {
    insert_payment_method_if_absent(conn, &PaymentMethodRow::new(id, now))?;
    macro_rules! query {
        () => {
            dsl::payment_methods
                .find(id)
                .select(PaymentMethodRow::as_select())
        };
    }
    Ok(match conn {
        Conn::Sqlite(c) => query!().get_result(&mut **c)?,
        Conn::Postgres(c) => query!().for_update().get_result(&mut **c)?,
    })
}

/// Inserts the record unless one with its id exists; returns whether it inserted.
pub fn insert_payment_method_if_absent(
    conn: &mut Conn,
    row: &PaymentMethodRow,
) -> StoreResult<bool> {
    let n = with_conn!(conn, c => diesel::insert_into(payment_methods::table)
        .values(row)
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(n == 1)
}

/// [`insert_payment_method_if_absent`] for several records: one statement on PostgreSQL.
pub fn insert_payment_methods_if_absent(
    conn: &mut Conn,
    rows: &[PaymentMethodRow],
) -> StoreResult<()> {
    for chunk in rows.chunks(super::ROWS_PER_STATEMENT) {
        match conn {
            Conn::Postgres(c) => {
                diesel::insert_into(payment_methods::table)
                    .values(chunk)
                    .on_conflict_do_nothing()
                    .execute(&mut **c)?;
            }
            Conn::Sqlite(_) => {
                for row in chunk {
                    insert_payment_method_if_absent(conn, row)?;
                }
            }
        }
    }
    Ok(())
}

/// Inserts or overwrites the whole record.
pub fn save_payment_method(conn: &mut Conn, row: &PaymentMethodRow) -> StoreResult<()> {
    with_conn!(conn, c => diesel::insert_into(payment_methods::table)
        .values(row)
        .on_conflict(dsl::id)
        .do_update()
        .set(row)
        .execute(c))?;
    Ok(())
}

/// A customer's card records that are not detached, oldest first.
pub fn list_customer_payment_methods(
    conn: &mut Conn,
    customer_id: i64,
) -> StoreResult<Vec<PaymentMethodRow>> {
    Ok(with_conn!(conn, c => dsl::payment_methods
        .filter(dsl::customer_id.eq(customer_id))
        .filter(dsl::status.ne(PaymentMethodStatus::Detached))
        .order((dsl::created_at.asc(), dsl::id.asc()))
        .select(PaymentMethodRow::as_select())
        .load(c))?)
}

/// Sets one card's status (and nothing else: a concurrent writer's details stay).
pub fn set_payment_method_status(
    conn: &mut Conn,
    id: &str,
    status: PaymentMethodStatus,
    now: i64,
) -> StoreResult<()> {
    with_conn!(conn, c => diesel::update(dsl::payment_methods.find(id))
        .set((dsl::status.eq(status), dsl::updated_at.eq(now)))
        .execute(c))?;
    Ok(())
}

/// Every card record of a customer, detached ones included, oldest first (the app API's
/// customer view).
pub fn list_all_customer_payment_methods(
    conn: &mut Conn,
    customer_id: i64,
) -> StoreResult<Vec<PaymentMethodRow>> {
    Ok(with_conn!(conn, c => dsl::payment_methods
        .filter(dsl::customer_id.eq(customer_id))
        .order((dsl::created_at.asc(), dsl::id.asc()))
        .select(PaymentMethodRow::as_select())
        .load(c))?)
}
