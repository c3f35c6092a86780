//! An object fetched from Stripe, applied as observed state: what resync does, and what a
//! thin event (which carries no snapshot) does once its object is fetched. (The state of a
//! Stripe answer the app API gets, a charge or a cancel, is [`super::observed`].)
//!
//! An observation is dated by Stripe's clock at the time it was made, and goes through the
//! same state machine as an event created at that time: its state (see
//! [`crate::domain::observed`]) applies over anything older and yields to anything newer, so
//! it never regresses a checkout an event has moved since, and it creates a checkout payhook
//! never heard of. Its transition is recorded without an event, with the reason `observed`.
//! A payment method is observed attached (to the customer it names) or, when it names none
//! but was known attached, detached, at the observation time, by the same attach-against-
//! detach rule as `payment_method.*` events.

use serde_json::Value;

use super::intents::{apply_intent, Cause};
use super::payment_methods::record_payment_method;
use super::staging::Staging;
use super::Outputs;
use super::{Applied, Effects};
use crate::app::notifications::Notifications;
use crate::domain::customer::{ByEmail, Names};
use crate::domain::observed::{observed_state, IntentStatus, LastError};
use crate::store::checkouts::{self as checkout_store, CheckoutRow};
use crate::store::customers as customer_store;
use crate::store::payment_methods::{self, PaymentMethodRow};
use crate::store::{Conn, StoreError, StoreResult};
use crate::stripe::payload::{IntentView, PaymentMethodView};

fn str_field<'v>(object: &'v Value, key: &str) -> Option<&'v str> {
    object.get(key).and_then(Value::as_str)
}

/// What an observation came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The intent's checkout, as it is now (moved or not).
    Checkout(CheckoutRow),
    /// The payment method's record, as it is now.
    Card(PaymentMethodRow),
    /// Not an object payhook can apply, and why.
    Invalid(String),
}

/// Applies `object` (a PaymentIntent, SetupIntent or PaymentMethod as Stripe returns it)
/// as observed at `observed_at` (Stripe time, unix seconds), in the connected account
/// `account` it was fetched from (`None`: the platform). `now` is local seconds.
pub fn apply_fetched(
    conn: &mut Conn,
    object: &Value,
    observed_at: i64,
    account: Option<&str>,
    now: i64,
    effects: &mut Effects,
) -> StoreResult<Fetched> {
    match str_field(object, "object") {
        Some("payment_intent" | "setup_intent") => {
            observe_intent(conn, object, observed_at, account, now, effects)
        }
        Some("payment_method" | "card") => {
            observe_payment_method(conn, object, observed_at, account, now)
        }
        Some(other) => Ok(Fetched::Invalid(format!(
            "payhook does not apply {other} objects"
        ))),
        None => Ok(Fetched::Invalid("the object has no `object` field".into())),
    }
}

fn observe_intent(
    conn: &mut Conn,
    object: &Value,
    observed_at: i64,
    account: Option<&str>,
    now: i64,
    effects: &mut Effects,
) -> StoreResult<Fetched> {
    let view = match IntentView::from_object(object) {
        Ok(view) => view,
        Err(e) => return Ok(Fetched::Invalid(e.to_string())),
    };
    let status: IntentStatus = match str_field(object, "status").map(str::parse) {
        Some(Ok(status)) => status,
        Some(Err(e)) => return Ok(Fetched::Invalid(e.to_string())),
        None => return Ok(Fetched::Invalid("the intent has no `status`".into())),
    };
    let error = &view.error;
    let last_error =
        (error.code.is_some() || error.decline_code.is_some() || error.message.is_some())
            .then_some(LastError {
                code: error.code.as_deref(),
                decline_code: error.decline_code.as_deref(),
            });
    let target = observed_state(status, last_error);
    let cause = Cause {
        event_id: None,
        created: observed_at,
        what: "observed",
        reason: Some("observed"),
        account,
    };
    match apply_intent(
        conn,
        &cause,
        target,
        &view,
        now,
        &mut Outputs {
            notifications: Notifications::Queue,
            effects,
            staging: &mut Staging::immediate(),
        },
    )? {
        Applied::Invalid(reason) => return Ok(Fetched::Invalid(reason)),
        Applied::Processed | Applied::Ignored => {}
    }
    let row =
        checkout_store::find_checkout_by_intent(conn, view.id.as_str())?.ok_or_else(|| {
            StoreError::Corrupt(format!("checkout of {} vanished after resync", view.id))
        })?;
    Ok(Fetched::Checkout(row))
}

fn observe_payment_method(
    conn: &mut Conn,
    object: &Value,
    observed_at: i64,
    account: Option<&str>,
    now: i64,
) -> StoreResult<Fetched> {
    let view = match PaymentMethodView::from_object(object) {
        Ok(view) => view,
        Err(e) => return Ok(Fetched::Invalid(e.to_string())),
    };
    // Locked before it is read: what it was decides the attach below (see
    // `payment_methods::lock_payment_method`).
    let known = Some(payment_methods::lock_payment_method(
        conn,
        view.id.as_str(),
        now,
    )?);
    let customer = match &view.customer {
        Some(stripe_id) => {
            let names = Names {
                account,
                stripe_customer_id: Some(stripe_id.as_str()),
                ..Names::default()
            };
            customer_store::resolve(conn, names, ByEmail::FindOnly, now)?
        }
        None => None,
    };
    // Attached to the customer it names; naming none, it was detached since it was known
    // attached (a card never known attached is only seen).
    let attach = match (&view.customer, &known) {
        (Some(_), _) => Some((true, observed_at)),
        (None, Some(row)) if row.attached_at.is_some() => Some((false, observed_at)),
        (None, _) => None,
    };
    let row = record_payment_method(conn, &view, customer.as_ref(), attach, now)?;
    if row.is_detached() {
        if let Some(customer_id) = row.customer_id {
            customer_store::clear_default_payment_method(conn, customer_id, &row.id, now)?;
        }
    }
    Ok(Fetched::Card(row))
}
