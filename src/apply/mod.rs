//! Applies one stored event to the local state: checkouts, customers, payment methods.
//!
//! Runs inside the processor's transaction; the state machine ([`crate::domain::checkout`]) decides,
//! this module reads the payload and writes the rows. A payload that cannot be applied is a
//! permanent outcome ([`Applied::Invalid`]), never an error: errors are reserved for the
//! database, where retrying can help.
//!
//! Stripe side effects are never performed here: an applied `succeeded` that saves a card
//! writes one `save_card` row to the outbox ([`crate::store::outbox`]) in the same
//! transaction, and the action worker ([`crate::outbox::save_card`]) performs it later.

use log::{info, warn};
use serde_json::Value;

use crate::domain::checkout::{self, CheckoutState, Decision, Trigger};
use crate::store::checkouts::{self as checkout_store, CardStatus, CheckoutRow, NewTransition};
use crate::store::customers::{self, CustomerRow, NewCustomer};
use crate::store::events::WebhookEvent;
use crate::store::outbox::{self as actions, NewAction};
use crate::store::payment_methods::{self, PaymentMethodRow, PaymentMethodStatus};
use crate::store::{Conn, StoreError, StoreResult};
use crate::stripe::ids::{CustomerId, IntentId};
use crate::stripe::payload::{self as event, EventKind, IntentView, PaymentMethodView};

/// What applying an event came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Processed,
    /// Not a type payhook handles.
    Ignored,
    /// A handled type whose payload cannot be applied, and why.
    Invalid(String),
}

/// Applies `event`. `now` is local seconds.
pub fn apply_event(conn: &mut Conn, event: &WebhookEvent, now: i64) -> StoreResult<Applied> {
    let Some(kind) = EventKind::from_type(&event.event_type) else {
        return Ok(Applied::Ignored);
    };
    let payload: Value = match serde_json::from_str(&event.payload) {
        Ok(v) => v,
        Err(e) => return Ok(Applied::Invalid(format!("payload is not JSON: {e}"))),
    };
    let object = match event::data_object(&payload) {
        Ok(o) => o,
        Err(e) => return Ok(Applied::Invalid(e.to_string())),
    };
    if kind.is_intent() {
        match IntentView::from_object(object) {
            Ok(view) => apply_intent_event(conn, event, kind, &view, now),
            Err(e) => Ok(Applied::Invalid(e.to_string())),
        }
    } else {
        match PaymentMethodView::from_object(object) {
            Ok(view) => apply_payment_method_event(conn, event, kind, &view, now),
            Err(e) => Ok(Applied::Invalid(e.to_string())),
        }
    }
}

fn trigger_for(kind: EventKind, view: &IntentView) -> Option<Trigger> {
    kind.trigger(checkout::is_authentication_required(
        view.error.code.as_deref(),
        view.error.decline_code.as_deref(),
    ))
}

fn new_checkout_id() -> String {
    format!("chk_{:032x}", rand::random::<u128>())
}

fn apply_intent_event(
    conn: &mut Conn,
    event: &WebhookEvent,
    kind: EventKind,
    view: &IntentView,
    now: i64,
) -> StoreResult<Applied> {
    let customer = resolve_customer(
        conn,
        view.customer.as_ref(),
        view.customer_ref.as_deref(),
        None,
        now,
    )?;
    if let Some(pm) = &view.error_payment_method {
        record_payment_method(conn, pm, customer.as_ref(), None, now)?;
    } else if let Some(pm_id) = &view.payment_method {
        if payment_methods::find_payment_method(conn, pm_id.as_str())?.is_none() {
            let mut row = PaymentMethodRow::new(pm_id.as_str(), now);
            link_customer(&mut row, customer.as_ref(), view.customer.as_ref());
            // If-absent: a concurrent payment_method.* event may be recording the details
            // right now, and this bare row must not overwrite them.
            payment_methods::insert_payment_method_if_absent(conn, &row)?;
        }
    }

    let Some(trigger) = trigger_for(kind, view) else {
        return Ok(Applied::Invalid(format!(
            "{} is not an intent event",
            event.event_type
        )));
    };
    let target = trigger.target();
    let created = event.created;
    // Twice at most: a second look only follows a checkout created concurrently, and then
    // finds it.
    let mut attempt = 0;
    let (row, current, decision, outcome, reason, save_card) = loop {
        attempt += 1;
        let existing = checkout_store::find_checkout_by_intent(conn, view.id.as_str())?;
        let (mut row, current) = match existing {
            Some(row) => {
                let current = row.current()?;
                (row, Some(current))
            }
            None => (blank_checkout(view, target, now), None),
        };
        let decision = checkout::decide(current, target, created);

        // Details the payload names are kept whatever the decision: a stale event may still be
        // the only one that says which customer or card the intent belongs to.
        fill_if_missing(&mut row.customer_id, customer.as_ref().map(|c| c.id));
        fill_if_missing(
            &mut row.stripe_customer_id,
            view.customer.as_ref().map(|c| c.to_string()),
        );
        fill_if_missing(
            &mut row.payment_method_id,
            view.payment_method.as_ref().map(|p| p.to_string()),
        );
        fill_if_missing(&mut row.amount, view.amount);
        fill_if_missing(&mut row.currency, view.currency.clone());
        fill_if_missing(&mut row.setup_future_usage, view.setup_future_usage.clone());

        let (outcome, reason) = match decision {
            Decision::Apply { to, warning, .. } => {
                if let Some(w) = warning {
                    warn!(
                        "checkout {} ({}): {w}; event {}",
                        row.id, row.intent_id, event.id
                    );
                }
                row.state = to.as_str().to_owned();
                row.state_event_id = Some(event.id.clone());
                row.state_event_created = created;
                // The error fields describe the event that set the current state, so they end the
                // same whatever order events came in; every event's error stays in the trail.
                row.last_error_code = view.error.code.clone();
                row.decline_code = view.error.decline_code.clone();
                row.last_error_message = view.error.message.clone();
                if let Some(pm) = &view.payment_method {
                    row.payment_method_id = Some(pm.to_string());
                }
                if view.amount.is_some() {
                    row.amount = view.amount;
                }
                row.updated_at = now;
                ("applied", warning)
            }
            Decision::Refuse { reason, .. } => ("refused", Some(reason.as_str())),
        };
        let save_card = match decision {
            Decision::Apply { to, .. } => wants_saved_card(to, view, &row),
            Decision::Refuse { .. } => None,
        };
        if save_card.is_some() && row.card_status.is_none() {
            row.card_status = Some(CardStatus::Pending.as_str().to_owned());
        }
        if current.is_none() {
            // Another instance may have created the checkout since we looked (on PostgreSQL the
            // insert waited for its transaction to commit): decide again on top of that row,
            // which the next look sees and locks.
            if !checkout_store::insert_checkout(conn, &row)? {
                if attempt < 2 {
                    continue;
                }
                return Err(StoreError::Conflict(format!(
                    "checkout for {} created concurrently",
                    row.intent_id
                )));
            }
        } else {
            checkout_store::update_checkout(conn, &row)?;
        }
        break (row, current, decision, outcome, reason, save_card);
    };
    checkout_store::insert_transition(
        conn,
        &NewTransition {
            checkout_id: &row.id,
            event_id: Some(&event.id),
            from_state: current.map(|c| c.state.as_str()),
            to_state: target.as_str(),
            outcome,
            reason,
            error_code: view.error.code.as_deref(),
            decline_code: view.error.decline_code.as_deref(),
            event_created: Some(created),
            at: now,
        },
    )?;
    if let Some(pm_id) = save_card {
        enqueue_save_card(conn, view, &row, customer.as_ref(), &pm_id, now)?;
    }
    match decision {
        Decision::Apply { from, to, .. } => info!(
            "checkout {} ({}) {} -> {to} by {} ({})",
            row.id,
            row.intent_id,
            from.map_or("new", CheckoutState::as_str),
            event.id,
            event.event_type
        ),
        Decision::Refuse { state, reason } => info!(
            "checkout {} ({}) stays {state}: {} {} refused as {}",
            row.id,
            row.intent_id,
            event.event_type,
            event.id,
            reason.as_str()
        ),
    }
    Ok(Applied::Processed)
}

/// The payment method to save when an applied transition asks for it: a succeeded
/// SetupIntent, or a succeeded PaymentIntent with `setup_future_usage`, whose payment method
/// is known. Refused transitions (a redelivered or stale `succeeded`) never get here.
fn wants_saved_card(to: CheckoutState, view: &IntentView, row: &CheckoutRow) -> Option<String> {
    if to != CheckoutState::Succeeded {
        return None;
    }
    let saves = match view.id {
        IntentId::Setup(_) => true,
        IntentId::Payment(_) => row.setup_future_usage.is_some(),
    };
    if !saves {
        return None;
    }
    view.payment_method
        .as_ref()
        .map(|p| p.to_string())
        .or_else(|| row.payment_method_id.clone())
}

/// Writes the `save_card` action for this checkout, once: its idempotency key is derived
/// from the intent, so a redelivered or replayed event finds it already there.
///
/// The local customer is the intent's Stripe `customer`, else the app user its metadata
/// names (`customer_ref`, or `checkout_id` for a checkout payhook already knows), else the
/// customer whose email is the payment method's billing email. When none of these is known
/// yet the action is written without a customer and the worker resolves it from the billing
/// email Stripe reports for the payment method.
fn enqueue_save_card(
    conn: &mut Conn,
    view: &IntentView,
    row: &CheckoutRow,
    customer: Option<&CustomerRow>,
    payment_method_id: &str,
    now: i64,
) -> StoreResult<()> {
    let mut customer_id = customer.map(|c| c.id).or(row.customer_id);
    if customer_id.is_none() {
        if let Some(other) = view.checkout_ref.as_deref().filter(|r| *r != row.id) {
            customer_id = checkout_store::find_checkout(conn, other)?.and_then(|c| c.customer_id);
        }
    }
    if customer_id.is_none() {
        let email = payment_methods::find_payment_method(conn, payment_method_id)?
            .and_then(|pm| pm.billing_email);
        if let Some(email) = email {
            customer_id = customers::find_customer_by_email(conn, &email)?.map(|c| c.id);
        }
    }
    let key = format!("{}:{}", actions::SAVE_CARD, row.intent_id);
    let inserted = actions::insert_action(
        conn,
        &NewAction {
            kind: actions::SAVE_CARD,
            idempotency_key: &key,
            checkout_id: Some(&row.id),
            customer_id,
            payment_method_id,
            step: actions::FIRST_STEP,
            created_at: now,
            updated_at: now,
        },
    )?;
    if inserted {
        info!(
            "checkout {} ({}): queued {key} for {payment_method_id} (customer {customer_id:?})",
            row.id, row.intent_id
        );
    }
    Ok(())
}

fn blank_checkout(view: &IntentView, state: CheckoutState, now: i64) -> CheckoutRow {
    CheckoutRow {
        id: new_checkout_id(),
        kind: view.id.kind().as_str().to_owned(),
        intent_id: view.id.to_string(),
        customer_id: None,
        stripe_customer_id: None,
        payment_method_id: None,
        amount: None,
        currency: None,
        setup_future_usage: None,
        state: state.as_str().to_owned(),
        state_event_id: None,
        state_event_created: i64::MIN,
        last_error_code: None,
        decline_code: None,
        last_error_message: None,
        created_at: now,
        updated_at: now,
        card_status: None,
        card_error_code: None,
        card_error: None,
    }
}

fn fill_if_missing<T>(slot: &mut Option<T>, value: Option<T>) {
    if slot.is_none() {
        *slot = value;
    }
}

fn link_customer(
    row: &mut PaymentMethodRow,
    customer: Option<&CustomerRow>,
    stripe_id: Option<&CustomerId>,
) {
    if let Some(c) = customer {
        row.customer_id = Some(c.id);
    }
    if let Some(s) = stripe_id {
        row.stripe_customer_id = Some(s.to_string());
    }
}

/// Finds (or records) the local customer an event names: by Stripe customer id, else by the
/// app's `customer_ref`, else by email. Links the two ids when an event names both.
pub fn resolve_customer(
    conn: &mut Conn,
    stripe_id: Option<&CustomerId>,
    customer_ref: Option<&str>,
    email: Option<&str>,
    now: i64,
) -> StoreResult<Option<CustomerRow>> {
    if let Some(stripe_id) = stripe_id {
        if let Some(mut found) = customers::find_customer_by_stripe_id(conn, stripe_id.as_str())? {
            if found.customer_ref.is_none() {
                if let Some(r) = customer_ref {
                    if customers::find_customer_by_ref(conn, r)?.is_none() {
                        found.customer_ref = Some(r.to_owned());
                        found.updated_at = now;
                        customers::update_customer(conn, &found)?;
                    }
                }
            }
            return Ok(Some(found));
        }
        if let Some(r) = customer_ref {
            if let Some(mut by_ref) = customers::find_customer_by_ref(conn, r)? {
                if by_ref.stripe_customer_id.is_none() {
                    by_ref.stripe_customer_id = Some(stripe_id.to_string());
                    by_ref.updated_at = now;
                    customers::update_customer(conn, &by_ref)?;
                    return Ok(Some(by_ref));
                }
                // The app's user already has another Stripe customer: keep both, linked to
                // the ref only through the first.
                warn!(
                    "customer_ref {r} already has {:?}; recording {stripe_id} apart",
                    by_ref.stripe_customer_id
                );
                return insert_and_fetch(conn, None, Some(stripe_id.as_str()), email, now);
            }
        }
        return insert_and_fetch(conn, customer_ref, Some(stripe_id.as_str()), email, now);
    }
    if let Some(r) = customer_ref {
        if let Some(found) = customers::find_customer_by_ref(conn, r)? {
            return Ok(Some(found));
        }
        return insert_and_fetch(conn, Some(r), None, email, now);
    }
    if let Some(e) = email {
        return customers::find_customer_by_email(conn, e);
    }
    Ok(None)
}

fn insert_and_fetch(
    conn: &mut Conn,
    customer_ref: Option<&str>,
    stripe_id: Option<&str>,
    email: Option<&str>,
    now: i64,
) -> StoreResult<Option<CustomerRow>> {
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
    let found = match (stripe_id, customer_ref) {
        (Some(s), _) => customers::find_customer_by_stripe_id(conn, s)?,
        (None, Some(r)) => customers::find_customer_by_ref(conn, r)?,
        (None, None) => None,
    };
    found
        .ok_or_else(|| StoreError::Corrupt("customer vanished right after insert".into()))
        .map(Some)
}

/// Stores what a payload says about a payment method, keeping details already known.
fn record_payment_method(
    conn: &mut Conn,
    view: &PaymentMethodView,
    customer: Option<&CustomerRow>,
    attach: Option<(bool, i64)>,
    now: i64,
) -> StoreResult<PaymentMethodRow> {
    let mut row = payment_methods::find_payment_method(conn, view.id.as_str())?
        .unwrap_or_else(|| PaymentMethodRow::new(view.id.as_str(), now));
    let card = &view.card;
    fill_or_update(&mut row.method_type, view.method_type.clone());
    fill_or_update(&mut row.brand, card.brand.clone());
    fill_or_update(&mut row.last4, card.last4.clone());
    fill_or_update(&mut row.exp_month, card.exp_month);
    fill_or_update(&mut row.exp_year, card.exp_year);
    fill_or_update(&mut row.fingerprint, card.fingerprint.clone());
    fill_or_update(&mut row.billing_email, view.billing_email.clone());
    if let Some((attached, at)) = attach {
        if attached {
            row.attached_at = row.attached_at.max(Some(at));
        } else {
            row.detached_at = row.detached_at.max(Some(at));
        }
    }
    // The customer is taken from the latest attach: a detach reports `customer: null`.
    if !row.is_detached() {
        link_customer(&mut row, customer, view.customer.as_ref());
    }
    if row.is_detached() {
        row.status = PaymentMethodStatus::Detached.as_str().to_owned();
    } else if row.attached_at.is_some()
        && [
            PaymentMethodStatus::Seen.as_str(),
            PaymentMethodStatus::Detached.as_str(),
        ]
        .contains(&row.status.as_str())
    {
        row.status = PaymentMethodStatus::Attached.as_str().to_owned();
    }
    save(conn, row, now)
}

fn save(conn: &mut Conn, mut row: PaymentMethodRow, now: i64) -> StoreResult<PaymentMethodRow> {
    row.updated_at = now;
    payment_methods::save_payment_method(conn, &row)?;
    Ok(row)
}

fn fill_or_update<T>(slot: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *slot = value;
    }
}

fn apply_payment_method_event(
    conn: &mut Conn,
    event: &WebhookEvent,
    kind: EventKind,
    view: &PaymentMethodView,
    now: i64,
) -> StoreResult<Applied> {
    let attached = kind == EventKind::PaymentMethodAttached;
    let customer = if attached {
        resolve_customer(conn, view.customer.as_ref(), None, None, now)?
    } else {
        None
    };
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
            if let Some(mut owner) = customers::find_customer(conn, customer_id)? {
                if owner.default_payment_method_id.as_deref() == Some(row.id.as_str()) {
                    owner.default_payment_method_id = None;
                    owner.updated_at = now;
                    customers::update_customer(conn, &owner)?;
                }
            }
        }
    }
    info!(
        "payment method {} is {} after {} ({})",
        row.id, row.status, event.id, event.event_type
    );
    Ok(Applied::Processed)
}
