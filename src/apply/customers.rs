//! Finds, links or creates the local customer that an event, a save or a request names, by
//! the rule in [`crate::domain::customer`]: this module only looks the names up and carries
//! out the decision.

use log::warn;

use crate::domain::customer::{self, ByEmail, Found, Identity, Known, Names};
use crate::store::customers::{self, CustomerRow, NewCustomer};
use crate::store::{Conn, StoreError, StoreResult};

fn known(row: &CustomerRow) -> Known {
    Known {
        id: row.id,
        customer_ref: row.customer_ref.clone(),
        stripe_customer_id: row.stripe_customer_id.clone(),
    }
}

/// The local customer `names` refer to, linked or created as [`customer::identify`] decides;
/// `None` when nothing usable names one.
pub fn resolve(
    conn: &mut Conn,
    names: Names<'_>,
    rule: ByEmail,
    now: i64,
) -> StoreResult<Option<CustomerRow>> {
    let by_stripe_id = match names.stripe_customer_id {
        Some(id) => customers::find_customer_by_stripe_id(conn, id)?,
        None => None,
    };
    // The ref's holder matters only when the ref may be linked or looked up by itself.
    let ref_matters = by_stripe_id
        .as_ref()
        .is_none_or(|c| c.customer_ref.is_none());
    let by_ref = match names.customer_ref {
        Some(r) if ref_matters => customers::find_customer_by_ref(conn, r)?,
        _ => None,
    };
    let by_email = match names {
        Names {
            email: Some(email),
            stripe_customer_id: None,
            customer_ref: None,
        } => customers::find_customer_by_email(conn, email)?,
        _ => None,
    };
    let found = Found {
        by_stripe_id: by_stripe_id.as_ref().map(known),
        by_ref: by_ref.as_ref().map(known),
        by_email: by_email.as_ref().map(known),
    };
    match customer::identify(&names, &found, rule) {
        Identity::Existing {
            id,
            link_ref,
            link_stripe_id,
        } => {
            let mut linked = false;
            if let Some(r) = link_ref {
                linked |= customers::link_customer_ref(conn, id, &r, now)?;
            }
            if let Some(s) = link_stripe_id {
                linked |= customers::link_stripe_customer(conn, id, &s, now)?;
            }
            let unchanged = [by_stripe_id, by_ref, by_email]
                .into_iter()
                .flatten()
                .find(|c| c.id == id && !linked);
            match unchanged {
                Some(row) => Ok(Some(row)),
                None => customers::find_customer(conn, id),
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
    customer_ref: Option<&str>,
    stripe_id: Option<&str>,
    email: Option<&str>,
    now: i64,
) -> StoreResult<CustomerRow> {
    customers::insert_customer(
        conn,
        &NewCustomer {
            customer_ref,
            email,
            stripe_customer_id: stripe_id,
            created_at: now,
            updated_at: now,
        },
    )?;
    let found = match (stripe_id, customer_ref, email) {
        (Some(s), _, _) => customers::find_customer_by_stripe_id(conn, s)?,
        (None, Some(r), _) => customers::find_customer_by_ref(conn, r)?,
        (None, None, Some(e)) => customers::find_customer_by_email(conn, e)?,
        (None, None, None) => None,
    };
    found.ok_or_else(|| StoreError::Corrupt("customer vanished right after insert".into()))
}
