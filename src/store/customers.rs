//! Local customers: the app's user (`customer_ref`) and its Stripe customer, linked.

use diesel::prelude::*;

use super::schema::customers::{self, dsl};
use super::{Conn, StoreResult};
use crate::with_conn;

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = customers)]
pub struct CustomerRow {
    pub id: i64,
    pub customer_ref: Option<String>,
    pub email: Option<String>,
    pub stripe_customer_id: Option<String>,
    pub default_payment_method_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

// None as NULL keeps the insert's SQL fixed, so diesel caches the prepared statement.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = customers, treat_none_as_default_value = false)]
pub struct NewCustomer<'a> {
    pub customer_ref: Option<&'a str>,
    pub email: Option<&'a str>,
    pub stripe_customer_id: Option<&'a str>,
    pub created_at: i64,
    pub updated_at: i64,
}

pub fn find_customer(conn: &mut Conn, id: i64) -> StoreResult<Option<CustomerRow>> {
    Ok(
        with_conn!(conn, c => dsl::customers.find(id).select(CustomerRow::as_select()).get_result(c).optional())?,
    )
}

pub fn find_customer_by_stripe_id(
    conn: &mut Conn,
    stripe_id: &str,
) -> StoreResult<Option<CustomerRow>> {
    Ok(with_conn!(conn, c => dsl::customers
        .filter(dsl::stripe_customer_id.eq(stripe_id))
        .select(CustomerRow::as_select())
        .get_result(c)
        .optional())?)
}

pub fn find_customer_by_ref(
    conn: &mut Conn,
    customer_ref: &str,
) -> StoreResult<Option<CustomerRow>> {
    Ok(with_conn!(conn, c => dsl::customers
        .filter(dsl::customer_ref.eq(customer_ref))
        .select(CustomerRow::as_select())
        .get_result(c)
        .optional())?)
}

pub fn find_customer_by_email(conn: &mut Conn, email: &str) -> StoreResult<Option<CustomerRow>> {
    Ok(with_conn!(conn, c => dsl::customers
        .filter(dsl::email.eq(email))
        .order(dsl::id.asc())
        .select(CustomerRow::as_select())
        .get_result(c)
        .optional())?)
}

/// Inserts unless a unique key (customer_ref, stripe_customer_id) is taken; returns whether
/// it inserted. Callers re-read by the key, so concurrent creators converge on one row.
pub fn insert_customer(conn: &mut Conn, new: &NewCustomer<'_>) -> StoreResult<bool> {
    let n = with_conn!(conn, c => diesel::insert_into(customers::table)
        .values(new)
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(n == 1)
}

// Customers are written column by column, each update conditional where it links an id:
// the processor (on several instances) and the outbox runner touch one customer at the
// same time, and writing a whole row read earlier would undo another's change.

/// Records `customer_ref` on the customer unless it has one; returns whether it did.
pub fn link_customer_ref(
    conn: &mut Conn,
    id: i64,
    customer_ref: &str,
    now: i64,
) -> StoreResult<bool> {
    let n = with_conn!(conn, c => diesel::update(dsl::customers.find(id))
        .filter(dsl::customer_ref.is_null())
        .set((dsl::customer_ref.eq(customer_ref), dsl::updated_at.eq(now)))
        .execute(c))?;
    Ok(n == 1)
}

/// Records the Stripe customer id on the customer unless it has one; returns whether it did.
pub fn link_stripe_customer(
    conn: &mut Conn,
    id: i64,
    stripe_id: &str,
    now: i64,
) -> StoreResult<bool> {
    let n = with_conn!(conn, c => diesel::update(dsl::customers.find(id))
        .filter(dsl::stripe_customer_id.is_null())
        .set((dsl::stripe_customer_id.eq(stripe_id), dsl::updated_at.eq(now)))
        .execute(c))?;
    Ok(n == 1)
}

pub fn set_default_payment_method(
    conn: &mut Conn,
    id: i64,
    payment_method_id: &str,
    now: i64,
) -> StoreResult<()> {
    with_conn!(conn, c => diesel::update(dsl::customers.find(id))
        .set((dsl::default_payment_method_id.eq(payment_method_id), dsl::updated_at.eq(now)))
        .execute(c))?;
    Ok(())
}

/// Clears the customer's default payment method if it is `payment_method_id`.
pub fn clear_default_payment_method(
    conn: &mut Conn,
    id: i64,
    payment_method_id: &str,
    now: i64,
) -> StoreResult<bool> {
    let n = with_conn!(conn, c => diesel::update(dsl::customers.find(id))
        .filter(dsl::default_payment_method_id.eq(payment_method_id))
        .set((dsl::default_payment_method_id.eq(None::<String>), dsl::updated_at.eq(now)))
        .execute(c))?;
    Ok(n == 1)
}
