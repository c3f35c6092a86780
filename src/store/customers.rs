//! Local customers: the app's user (`customer_ref`) and its Stripe customer, linked; and
//! [`resolve`], which finds, links or creates the customer that an event, a save or a request
//! names, by the rule in [`crate::domain::customer`] (this module only looks the names up and
//! carries out the decision).

use diesel::prelude::*;

use super::schema::customers::{self, dsl};
use super::{Conn, StoreError, StoreResult};
use log::warn;

use crate::domain::customer::{self as identity, ByEmail, Found, Identity, Known, Names};
use crate::with_conn;

/// The `account` column of the platform's rows: '' rather than NULL, so the unique index on
/// (account, customer_ref) holds for the platform too (NULLs are all distinct in an index).
pub const PLATFORM: &str = "";

/// The `account` column for a connected account, or the platform's (`None`).
pub fn account_key(account: Option<&str>) -> &str {
    account.unwrap_or(PLATFORM)
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = customers)]
pub struct CustomerRow {
    pub id: i64,
    pub customer_ref: Option<String>,
    pub email: Option<String>,
    pub stripe_customer_id: Option<String>,
    pub default_payment_method_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// `acct_…`, or [`PLATFORM`].
    pub account: String,
}

impl CustomerRow {
    /// The connected account the customer belongs to; `None` for the platform.
    pub fn connected_account(&self) -> Option<&str> {
        Some(self.account.as_str()).filter(|a| *a != PLATFORM)
    }
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
    pub account: &'a str,
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

/// The customers of `stripe_id` and of `customer_ref` in `account`, in one query (one round
/// trip instead of two on PostgreSQL); one customer may be both.
pub fn find_customers_by_stripe_id_and_ref(
    conn: &mut Conn,
    stripe_id: &str,
    account: Option<&str>,
    customer_ref: &str,
) -> StoreResult<(Option<CustomerRow>, Option<CustomerRow>)> {
    let rows: Vec<CustomerRow> = with_conn!(conn, c => dsl::customers
        .filter(
            dsl::stripe_customer_id.eq(stripe_id).or(dsl::account
                .eq(account_key(account))
                .and(dsl::customer_ref.eq(customer_ref))),
        )
        .select(CustomerRow::as_select())
        .load(c))?;
    let by_stripe_id = rows
        .iter()
        .find(|r| r.stripe_customer_id.as_deref() == Some(stripe_id))
        .cloned();
    let by_ref = rows.into_iter().find(|r| {
        r.account == account_key(account) && r.customer_ref.as_deref() == Some(customer_ref)
    });
    Ok((by_stripe_id, by_ref))
}

/// Every customer holding one of `stripe_ids`, or one of `customer_refs` in `account`: what
/// [`resolve`] would read for many names of one account, in one query.
pub fn find_customers_named(
    conn: &mut Conn,
    account: Option<&str>,
    stripe_ids: &[&str],
    customer_refs: &[&str],
) -> StoreResult<Vec<CustomerRow>> {
    Ok(match conn {
        // One unique-index probe per name, whatever the planner believes about the table:
        // `account = $1 AND customer_ref = ANY($2)` was planned, on tables not analysed yet,
        // as a scan of every customer of the account (`customers_account_email` matches
        // `account` alone), 3 ms for 32 names against 0.26 ms this way (BENCHMARKS.md).
        // `LIMIT 1` keeps each probe a subquery of its own, which the planner cannot turn
        // into a join over the whole table.
        Conn::Postgres(c) => NamedCustomers {
            account: account_key(account),
            customer_refs,
            stripe_ids,
        }
        .load(&mut **c)?,
        Conn::Sqlite(c) => dsl::customers
            .filter(
                dsl::stripe_customer_id.eq_any(stripe_ids).or(dsl::account
                    .eq(account_key(account))
                    .and(dsl::customer_ref.eq_any(customer_refs))),
            )
            .select(CustomerRow::as_select())
            .load(&mut **c)?,
    })
}

/// [`find_customers_named`]'s query on PostgreSQL, prepared once per connection: diesel
/// prepares raw SQL (`sql_query`) again on every call, and parsing and planning it cost
/// more than its probes (statement profile of a drain, BENCHMARKS.md). The plan cannot go
/// wrong with the table's statistics: each probe is an equality on a unique index.
struct NamedCustomers<'a> {
    account: &'a str,
    customer_refs: &'a [&'a str],
    stripe_ids: &'a [&'a str],
}

impl diesel::query_builder::QueryId for NamedCustomers<'_> {
    type QueryId = NamedCustomers<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl diesel::query_builder::Query for NamedCustomers<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for NamedCustomers<'_> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> QueryResult<()> {
        use diesel::sql_types::{Array, Text};
        out.push_sql("SELECT x.* FROM unnest(");
        out.push_bind_param::<Array<Text>, _>(&self.customer_refs)?;
        out.push_sql(
            ") AS r(ref) CROSS JOIN LATERAL \
             (SELECT * FROM customers WHERE account = ",
        );
        out.push_bind_param::<Text, _>(&self.account)?;
        out.push_sql(
            " AND customer_ref = r.ref LIMIT 1) AS x \
             UNION ALL SELECT x.* FROM unnest(",
        );
        out.push_bind_param::<Array<Text>, _>(&self.stripe_ids)?;
        out.push_sql(
            ") AS s(id) CROSS JOIN LATERAL \
             (SELECT * FROM customers WHERE stripe_customer_id = s.id LIMIT 1) AS x",
        );
        Ok(())
    }
}

impl<C> RunQueryDsl<C> for NamedCustomers<'_> {}

/// The customer of `customer_ref` in `account` (`None`: the platform).
pub fn find_customer_by_ref(
    conn: &mut Conn,
    account: Option<&str>,
    customer_ref: &str,
) -> StoreResult<Option<CustomerRow>> {
    Ok(with_conn!(conn, c => dsl::customers
        .filter(dsl::account.eq(account_key(account)))
        .filter(dsl::customer_ref.eq(customer_ref))
        .select(CustomerRow::as_select())
        .get_result(c)
        .optional())?)
}

pub fn find_customer_by_email(
    conn: &mut Conn,
    account: Option<&str>,
    email: &str,
) -> StoreResult<Option<CustomerRow>> {
    Ok(with_conn!(conn, c => dsl::customers
        .filter(dsl::account.eq(account_key(account)))
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

fn known(row: &CustomerRow) -> Known {
    Known {
        id: row.id,
        customer_ref: row.customer_ref.clone(),
        stripe_customer_id: row.stripe_customer_id.clone(),
    }
}

/// The local customer `names` refer to, linked or created as [`identity::identify`] decides;
/// `None` when nothing usable names one.
pub fn resolve(
    conn: &mut Conn,
    names: Names<'_>,
    rule: ByEmail,
    now: i64,
) -> StoreResult<Option<CustomerRow>> {
    let (by_stripe_id, by_ref) = match (names.stripe_customer_id, names.customer_ref) {
        (Some(id), Some(r)) => find_customers_by_stripe_id_and_ref(conn, id, names.account, r)?,
        (Some(id), None) => (find_customer_by_stripe_id(conn, id)?, None),
        (None, Some(r)) => (None, find_customer_by_ref(conn, names.account, r)?),
        (None, None) => (None, None),
    };
    resolve_among(conn, names, rule, now, by_stripe_id, by_ref)
}

/// [`resolve`], given what holds the names' Stripe id and ref (read ahead for many names at
/// once: [`find_customers_named`]).
pub fn resolve_among(
    conn: &mut Conn,
    names: Names<'_>,
    rule: ByEmail,
    now: i64,
    by_stripe_id: Option<CustomerRow>,
    by_ref: Option<CustomerRow>,
) -> StoreResult<Option<CustomerRow>> {
    // The ref's holder matters only when the ref may be linked or looked up by itself.
    let ref_matters = by_stripe_id
        .as_ref()
        .is_none_or(|c| c.customer_ref.is_none());
    let by_ref = by_ref.filter(|_| ref_matters);
    let by_email = match names {
        Names {
            email: Some(email),
            stripe_customer_id: None,
            customer_ref: None,
            ..
        } => find_customer_by_email(conn, names.account, email)?,
        _ => None,
    };
    let found = Found {
        by_stripe_id: by_stripe_id.as_ref().map(known),
        by_ref: by_ref.as_ref().map(known),
        by_email: by_email.as_ref().map(known),
    };
    match identity::identify(&names, &found, rule) {
        Identity::Existing {
            id,
            link_ref,
            link_stripe_id,
        } => {
            let mut linked = false;
            if let Some(r) = link_ref {
                linked |= link_customer_ref(conn, id, &r, now)?;
            }
            if let Some(s) = link_stripe_id {
                linked |= link_stripe_customer(conn, id, &s, now)?;
            }
            let unchanged = [by_stripe_id, by_ref, by_email]
                .into_iter()
                .flatten()
                .find(|c| c.id == id && !linked);
            match unchanged {
                Some(row) => Ok(Some(row)),
                None => find_customer(conn, id),
            }
        }
        Identity::New {
            customer_ref,
            stripe_customer_id,
            email,
            ref_taken_by,
        } => {
            if let Some(holder) = ref_taken_by {
                warn!(
                    "customer_ref {:?} belongs to customer {holder}, linked to another Stripe customer; \
                     recording {stripe_customer_id:?} apart",
                    names.customer_ref
                );
            }
            create(
                conn,
                names.account,
                customer_ref.as_deref(),
                stripe_customer_id.as_deref(),
                email.as_deref(),
                now,
            )
            .map(Some)
        }
        Identity::Unknown => Ok(None),
    }
}

/// Inserts a customer and reads it back by its most specific key. A concurrent creator of
/// the same ref or Stripe id wins the insert, and then its row is the one returned.
fn create(
    conn: &mut Conn,
    account: Option<&str>,
    customer_ref: Option<&str>,
    stripe_id: Option<&str>,
    email: Option<&str>,
    now: i64,
) -> StoreResult<CustomerRow> {
    let new = NewCustomer {
        customer_ref,
        email,
        stripe_customer_id: stripe_id,
        created_at: now,
        updated_at: now,
        account: account_key(account),
    };
    match conn {
        // On PostgreSQL the row a winning insert made comes back with it: one round trip
        // instead of two for every new customer.
        Conn::Postgres(c) => {
            let inserted = diesel::insert_into(customers::table)
                .values(&new)
                .on_conflict_do_nothing()
                .returning(CustomerRow::as_returning())
                .get_result(&mut **c)
                .optional()?;
            if let Some(row) = inserted {
                return Ok(row);
            }
        }
        Conn::Sqlite(_) => {
            insert_customer(conn, &new)?;
        }
    }
    let found = match (stripe_id, customer_ref, email) {
        (Some(s), _, _) => find_customer_by_stripe_id(conn, s)?,
        (None, Some(r), _) => find_customer_by_ref(conn, account, r)?,
        (None, None, Some(e)) => find_customer_by_email(conn, account, e)?,
        (None, None, None) => None,
    };
    found.ok_or_else(|| StoreError::Corrupt("customer vanished right after insert".into()))
}
