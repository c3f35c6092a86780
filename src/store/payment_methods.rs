//! Saved payment methods and their card details (never a number or CVC).

use diesel::prelude::*;

use super::schema::payment_methods::{self, dsl};
use super::{Conn, StoreResult};
use crate::with_conn;

/// Lifecycle of a local card record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentMethodStatus {
    /// Named by an event; not (yet) known to be attached to a customer.
    Seen,
    Attached,
    /// Attached and the customer's default.
    Default,
    /// Replaced as the customer's card by a newer one (still attached at Stripe).
    Superseded,
    Detached,
}

impl PaymentMethodStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Seen => "seen",
            Self::Attached => "attached",
            Self::Default => "default",
            Self::Superseded => "superseded",
            Self::Detached => "detached",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = payment_methods, treat_none_as_null = true)]
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
    pub status: String,
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
            status: PaymentMethodStatus::Seen.as_str().to_owned(),
            attached_at: None,
            detached_at: None,
            created_at: now,
            updated_at: now,
            saved_at: None,
        }
    }

    /// Whether Stripe's latest word is that it is detached (attach/detach may arrive in
    /// either order, so the later Stripe time wins).
    pub fn is_detached(&self) -> bool {
        match (self.attached_at, self.detached_at) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(a), Some(d)) => d >= a,
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

/// The record, locked for the transaction on PostgreSQL (SQLite has one writer anyway).
pub fn lock_payment_method(conn: &mut Conn, id: &str) -> StoreResult<Option<PaymentMethodRow>> {
    macro_rules! query {
        () => {
            dsl::payment_methods
                .find(id)
                .select(PaymentMethodRow::as_select())
        };
    }
    Ok(match conn {
        Conn::Sqlite(c) => query!().get_result(&mut **c).optional()?,
        Conn::Postgres(c) => query!().for_update().get_result(&mut **c).optional()?,
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

impl PaymentMethodRow {
    /// Orders saved cards: newest Stripe time first wins, and on a tie (one-second
    /// resolution) the id decides, so every worker, whatever it saw first, picks the same card.
    pub fn saved_key(&self) -> (Option<i64>, &str) {
        (self.saved_at, &self.id)
    }
}

/// Whether `card` is the newest saved card among itself and `others`.
pub fn is_newest_saved(card: &PaymentMethodRow, others: &[PaymentMethodRow]) -> bool {
    others.iter().all(|o| o.saved_key() <= card.saved_key())
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
        .filter(dsl::status.ne(PaymentMethodStatus::Detached.as_str()))
        .order((dsl::created_at.asc(), dsl::id.asc()))
        .select(PaymentMethodRow::as_select())
        .load(c))?)
}
