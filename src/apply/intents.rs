//! `payment_intent.*` and `setup_intent.*`: move the intent's checkout through the state
//! machine, record the transition or the refusal, queue the card to save and the app's
//! notification.

use log::{info, warn};

use super::payment_methods::record_payment_method;
use super::staging::Staging;
use super::{Applied, Outputs};
use crate::app::notifications::Notifications;
use crate::domain::checkout::{self, CheckoutState, Decision, TransitionOutcome, Trigger};
use crate::domain::customer::{ByEmail, Names};
use crate::outbox::save_card;
use crate::store::checkouts::{self as checkout_store, CheckoutRow, NewTransition};
use crate::store::customers::resolve as resolve_customer;
use crate::store::customers::CustomerRow;
use crate::store::events::WebhookEvent;
use crate::store::payment_methods::{self, PaymentMethodRow};
use crate::store::{Conn, StoreError, StoreResult};
use crate::stripe::ids::IntentId;
use crate::stripe::payload::{IntentEvent, IntentView};

fn trigger_for(kind: IntentEvent, view: &IntentView) -> Trigger {
    kind.trigger(checkout::is_authentication_required(
        view.error.code.as_deref(),
        view.error.decline_code.as_deref(),
    ))
}

fn new_checkout_id() -> String {
    format!("chk_{:032x}", rand::random::<u128>())
}

/// Who an intent names as its customer: its Stripe `customer` and `customer_ref`, in the
/// account of the event or observation.
pub(super) fn customer_names<'a>(account: Option<&'a str>, view: &'a IntentView) -> Names<'a> {
    Names {
        account,
        stripe_customer_id: view.customer.as_ref().map(|c| c.as_str()),
        customer_ref: view.customer_ref.as_deref(),
        email: None,
    }
}

/// Intents only find customers by email, never create them (see [`ByEmail`]).
pub(super) const INTENT_RULE: ByEmail = ByEmail::FindOnly;

/// What moves a checkout: an event, or an observation of the intent (resync).
#[derive(Debug, Clone, Copy)]
pub(super) struct Cause<'a> {
    /// The event; `None` for an observation.
    pub event_id: Option<&'a str>,
    /// Stripe time of the event (`created`) or of the observation.
    pub created: i64,
    /// What the logs call it: the event type, or `observed`.
    pub what: &'a str,
    /// Recorded as the transition's reason when it is applied without a warning.
    pub reason: Option<&'static str>,
    /// The connected account of the event or observation (`None`: the platform): its
    /// customers are looked up there, a new checkout belongs to it, and a card saved for it
    /// is saved there.
    pub account: Option<&'a str>,
}

pub(super) fn apply_intent_event(
    conn: &mut Conn,
    event: &WebhookEvent,
    kind: IntentEvent,
    view: &IntentView,
    now: i64,
    out: &mut Outputs<'_>,
) -> StoreResult<Applied> {
    let cause = Cause {
        event_id: Some(&event.id),
        created: event.created,
        what: &event.event_type,
        reason: None,
        account: event.account.as_deref(),
    };
    apply_intent(
        conn,
        &cause,
        trigger_for(kind, view).target(),
        view,
        now,
        out,
    )
}

/// Moves the intent's checkout towards `target` as `cause` asks, through the state machine;
/// records the transition or the refusal (in `effects` too) and queues the card to save.
pub(super) fn apply_intent(
    conn: &mut Conn,
    cause: &Cause<'_>,
    target: CheckoutState,
    view: &IntentView,
    now: i64,
    out: &mut Outputs<'_>,
) -> StoreResult<Applied> {
    let Outputs {
        notifications,
        effects,
        staging,
    } = out;
    let notifications = *notifications;
    let customer =
        staging.resolve_customer(conn, customer_names(cause.account, view), INTENT_RULE, now)?;
    if let Some(pm) = &view.error_payment_method {
        staging.write_card_first(conn, pm.id.as_str())?;
        record_payment_method(conn, pm, customer.as_ref(), None, now)?;
    } else if let Some(pm_id) = &view.payment_method {
        let mut row = PaymentMethodRow::new(pm_id.as_str(), now);
        row.customer_id = customer.as_ref().map(|c| c.id);
        row.stripe_customer_id = view.customer.as_ref().map(|c| c.to_string());
        // If-absent, in one statement (no look first: a round trip per event on
        // PostgreSQL): a stored card, or one a concurrent payment_method.* event is
        // recording right now, keeps its details.
        staging.insert_payment_method_if_absent(conn, &row)?;
    }

    let created = cause.created;
    // Twice at most: a second look only follows a checkout created concurrently, and then
    // finds it.
    let mut attempt = 0;
    let (row, current, decision, save_card) = loop {
        attempt += 1;
        let existing = staging.find_checkout_by_intent(conn, view.id.as_str())?;
        let current = existing.as_ref().map(CheckoutRow::current);
        let mut row = match existing {
            Some(row) => row,
            None => {
                let mut row = blank_checkout(view, target, cause.account, now);
                // The app API made this intent: its checkout keeps the id the app knows.
                if let Some(id) = app_checkout_of(conn, view, cause.account, staging)? {
                    row.id = id;
                }
                row
            }
        };
        let decision = checkout::decide(current, target, created);
        fill_details(&mut row, view, customer.as_ref());
        if let Decision::Apply { to, warning, .. } = decision {
            if let Some(w) = warning {
                warn!(
                    "checkout {} ({}): {w}; {} {}",
                    row.id,
                    row.intent_id,
                    cause.what,
                    cause.event_id.unwrap_or("-")
                );
            }
            move_to(&mut row, to, cause, view, now);
        }
        let save_card = match decision {
            Decision::Apply { to, .. } => wants_saved_card(to, view, &row),
            Decision::Refuse { .. } => None,
        };
        if current.is_none() {
            // Another instance may have created the checkout since we looked (on PostgreSQL the
            // insert waited for its transaction to commit): decide again on top of that row,
            // which the next look sees and locks.
            if !staging.insert_checkout(conn, &row)? {
                if attempt < 2 {
                    continue;
                }
                return Err(StoreError::Conflict(format!(
                    "checkout for {} created concurrently",
                    row.intent_id
                )));
            }
        } else {
            staging.update_checkout(conn, &row)?;
        }
        break (row, current, decision, save_card);
    };
    let (outcome, reason) = match decision {
        Decision::Apply { warning, .. } => (TransitionOutcome::Applied, warning.or(cause.reason)),
        Decision::Refuse { reason, .. } => (TransitionOutcome::Refused, Some(reason.as_str())),
    };
    staging.insert_transition(
        conn,
        &NewTransition {
            checkout_id: &row.id,
            event_id: cause.event_id,
            from_state: current.map(|c| c.state),
            to_state: target,
            outcome,
            reason,
            error_code: view.error.code.as_deref(),
            decline_code: view.error.decline_code.as_deref(),
            event_created: Some(created),
            at: now,
        },
    )?;
    effects.transitions.push((target, outcome));
    if let Some(pm_id) = save_card {
        let customer_id = match customer.as_ref().map(|c| c.id).or(row.customer_id) {
            Some(id) => Some(id),
            None => {
                // The look further reads checkouts and cards the batch may have gathered.
                staging.flush(conn)?;
                card_owner(conn, view, &row, &pm_id, cause.account, now)?
            }
        };
        staging.queue_save_card(
            conn,
            &save_card::SaveCard {
                intent_id: &row.intent_id,
                checkout_id: &row.id,
                payment_method_id: &pm_id,
                customer_id,
                account: cause.account,
            },
            now,
        )?;
    }
    if let Decision::Apply { from, to, .. } = decision {
        if from != Some(to) {
            let hints = crate::app::object::Hints {
                maybe_app: view.checkout_ref.as_deref() == Some(row.id.as_str()),
                customer_ref: view.customer_ref.as_deref(),
            };
            if notifications == Notifications::Queue {
                // The notification's view reads the checkout and what it links to.
                staging.flush(conn)?;
            }
            crate::app::notifications::checkout_row_moved(conn, &row, hints, notifications, now)?;
        }
    }
    match decision {
        Decision::Apply { from, to, .. } => info!(
            "checkout {} ({}) {} -> {to} by {} ({})",
            row.id,
            row.intent_id,
            from.map_or("new", CheckoutState::as_str),
            cause.event_id.unwrap_or("-"),
            cause.what
        ),
        Decision::Refuse { state, reason } => info!(
            "checkout {} ({}) stays {state}: {} {} refused as {}",
            row.id,
            row.intent_id,
            cause.what,
            cause.event_id.unwrap_or("-"),
            reason.as_str()
        ),
    }
    Ok(Applied::Processed)
}

/// Details the payload names are kept whatever the decision: a stale event may still be the
/// only one that says which customer or card the intent belongs to.
fn fill_details(row: &mut CheckoutRow, view: &IntentView, customer: Option<&CustomerRow>) {
    fill_if_missing(&mut row.customer_id, customer.map(|c| c.id));
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
}

/// The checkout takes the event's state, and the event's details become current.
fn move_to(
    row: &mut CheckoutRow,
    to: CheckoutState,
    cause: &Cause<'_>,
    view: &IntentView,
    now: i64,
) {
    row.state = to;
    row.state_event_id = cause.event_id.map(str::to_owned);
    row.state_event_created = cause.created;
    // The error fields describe the event that set the current state, so they end the same
    // whatever order events came in; every event's error stays in the trail.
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

/// Who the saved card belongs to when the intent names no customer (not by its Stripe
/// `customer`, nor by `customer_ref`), as far as the local data says: the customer of the
/// checkout its metadata `checkout_id` names, else the customer with the card's billing
/// email. `None` leaves the save_card work to resolve it from the billing email Stripe
/// reports.
fn card_owner(
    conn: &mut Conn,
    view: &IntentView,
    row: &CheckoutRow,
    payment_method_id: &str,
    account: Option<&str>,
    now: i64,
) -> StoreResult<Option<i64>> {
    if let Some(other) = view.checkout_ref.as_deref().filter(|r| *r != row.id) {
        if let Some(id) = checkout_store::find_checkout(conn, other)?.and_then(|c| c.customer_id) {
            return Ok(Some(id));
        }
    }
    let email = payment_methods::find_payment_method(conn, payment_method_id)?
        .and_then(|pm| pm.billing_email);
    let Some(email) = email else {
        return Ok(None);
    };
    let names = Names {
        account,
        email: Some(&email),
        ..Names::default()
    };
    Ok(resolve_customer(conn, names, ByEmail::FindOnly, now)?.map(|c| c.id))
}

/// The id of the app API's checkout this intent was made for (metadata `checkout_id`), when
/// the API has not recorded the intent yet (a webhook can come first) and no checkout has the
/// id already. The checkout must have been asked for in the event's `account`: metadata is
/// whatever the intent's creator wrote, and another account's intent naming this checkout
/// must not take it over.
fn app_checkout_of(
    conn: &mut Conn,
    view: &IntentView,
    account: Option<&str>,
    staging: &mut Staging,
) -> StoreResult<Option<String>> {
    let Some(id) = view.checkout_ref.as_deref() else {
        return Ok(None);
    };
    // Looks for a checkout with the app's id, which the batch may have gathered.
    staging.flush(conn)?;
    let Some(app) = crate::store::app_checkouts::find_app_checkout(conn, id)? else {
        return Ok(None);
    };
    if app.connected_account() != account
        || app
            .intent_id
            .as_deref()
            .is_some_and(|i| i != view.id.as_str())
        || checkout_store::find_checkout(conn, id)?.is_some()
    {
        return Ok(None);
    }
    Ok(Some(app.id))
}

fn blank_checkout(
    view: &IntentView,
    state: CheckoutState,
    account: Option<&str>,
    now: i64,
) -> CheckoutRow {
    CheckoutRow {
        id: new_checkout_id(),
        kind: view.id.kind(),
        intent_id: view.id.to_string(),
        customer_id: None,
        stripe_customer_id: None,
        payment_method_id: None,
        amount: None,
        currency: None,
        setup_future_usage: None,
        state,
        state_event_id: None,
        state_event_created: i64::MIN,
        last_error_code: None,
        decline_code: None,
        last_error_message: None,
        created_at: now,
        updated_at: now,
        account: crate::store::customers::account_key(account).to_owned(),
    }
}

fn fill_if_missing<T>(slot: &mut Option<T>, value: Option<T>) {
    if slot.is_none() {
        *slot = value;
    }
}
