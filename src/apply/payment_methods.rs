//! `payment_method.attached` / `payment_method.detached`: keep the local card records in step
//! with changes made elsewhere (dashboard, other services), ordered by Stripe time.

use log::info;

use super::staging::Staging;
use super::Applied;
use crate::domain::cards;
use crate::domain::customer::{ByEmail, Names};
use crate::store::customers::{self as customer_store, CustomerRow};
use crate::store::events::WebhookEvent;
use crate::store::payment_methods::{self, PaymentMethodRow};
use crate::store::{Conn, StoreResult};
use crate::stripe::payload::PaymentMethodView;

pub(super) fn apply_payment_method_event(
    conn: &mut Conn,
    event: &WebhookEvent,
    attached: bool,
    view: &PaymentMethodView,
    now: i64,
    staging: &mut Staging,
) -> StoreResult<Applied> {
    let customer = if attached {
        let names = Names {
            account: event.account.as_deref(),
            stripe_customer_id: view.customer.as_ref().map(|c| c.as_str()),
            ..Names::default()
        };
        staging.resolve_customer(conn, names, ByEmail::FindOnly, now)?
    } else {
        None
    };
    staging.write_card_first(conn, view.id.as_str())?;
    let row = record_payment_method(
        conn,
        view,
        customer.as_ref(),
        Some((attached, event.created)),
        now,
    )?;
    // A card detached elsewhere (dashboard, another service) is no longer anyone's default.
    if row.is_detached() {
        if let Some(customer_id) = row.customer_id {
            customer_store::clear_default_payment_method(conn, customer_id, &row.id, now)?;
        }
    }
    info!(
        "payment method {} is {} after {} ({})",
        row.id, row.status, event.id, event.event_type
    );
    Ok(Applied::Processed)
}

/// Stores what a payload says about a payment method, keeping details already known.
/// `attach`: whether the event reports an attach (`true`) or a detach, at which Stripe time.
pub(super) fn record_payment_method(
    conn: &mut Conn,
    view: &PaymentMethodView,
    customer: Option<&CustomerRow>,
    attach: Option<(bool, i64)>,
    now: i64,
) -> StoreResult<PaymentMethodRow> {
    let mut row = payment_methods::lock_payment_method(conn, view.id.as_str(), now)?;
    let card = &view.card;
    replace_if_given(&mut row.method_type, view.method_type.clone());
    replace_if_given(&mut row.brand, card.brand.clone());
    replace_if_given(&mut row.last4, card.last4.clone());
    replace_if_given(&mut row.exp_month, card.exp_month);
    replace_if_given(&mut row.exp_year, card.exp_year);
    replace_if_given(&mut row.fingerprint, card.fingerprint.clone());
    replace_if_given(&mut row.billing_email, view.billing_email.clone());
    match attach {
        Some((true, at)) => row.attached_at = row.attached_at.max(Some(at)),
        Some((false, at)) => row.detached_at = row.detached_at.max(Some(at)),
        None => {}
    }
    // The customer is taken from the latest attach: a detach reports `customer: null`.
    if !row.is_detached() {
        if let Some(c) = customer {
            row.customer_id = Some(c.id);
        }
        if let Some(s) = &view.customer {
            row.stripe_customer_id = Some(s.to_string());
        }
    }
    row.status = cards::observed_status(row.status, row.attached_at, row.detached_at);
    row.updated_at = now;
    payment_methods::save_payment_method(conn, &row)?;
    Ok(row)
}

fn replace_if_given<T>(slot: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *slot = value;
    }
}
