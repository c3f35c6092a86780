//! An observed state: what a Stripe answer (not an event) says an intent is in, applied
//! through the same state machine as events.
//!
//! An off-session charge's answer (`succeeded`, `processing`, a decline) and a cancel call's
//! (`canceled`) arrive before, after or between the webhooks of the same intent. Each is
//! applied as a target state with a time, in Stripe time like events: the intent's `created`
//! for a charge's outcome (Stripe emits that charge's events in the same second, so a tie is
//! broken by progress as for events), `canceled_at` for a cancel. So a later webhook still
//! moves the checkout on, and an earlier one (or a redelivery) never moves it back.
//! The change or the refusal is recorded in `checkout_transitions` like an event's (without
//! an event id, with the reason saying where it came from), and an applied change is notified.

use log::info;

use crate::app::notifications;
use crate::domain::checkout::{self, CheckoutState, Decision, TransitionOutcome};
use crate::store::checkouts::{self as checkout_store, CheckoutRow, NewTransition};
use crate::store::{Conn, StoreResult};

/// A state read from a Stripe answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed<'a> {
    pub target: CheckoutState,
    /// Stripe time of the state (see the module docs).
    pub at: i64,
    /// Recorded as the transition's reason: `charge`, `cancel`, …
    pub source: &'static str,
    pub error_code: Option<&'a str>,
    pub decline_code: Option<&'a str>,
    pub error_message: Option<&'a str>,
    pub payment_method: Option<&'a str>,
}

/// Applies `observed` to `row` (read in this transaction; locked on PostgreSQL), records the
/// transition or refusal and queues the notification; returns the row as it is now.
pub fn apply_observed(
    conn: &mut Conn,
    mut row: CheckoutRow,
    observed: &Observed<'_>,
    now: i64,
) -> StoreResult<CheckoutRow> {
    let current = row.current();
    let decision = checkout::decide(Some(current), observed.target, observed.at);
    let (outcome, reason) = match decision {
        Decision::Apply { .. } => (TransitionOutcome::Applied, observed.source.to_owned()),
        Decision::Refuse { reason, .. } => (
            TransitionOutcome::Refused,
            format!("{} ({})", reason.as_str(), observed.source),
        ),
    };
    if let Decision::Apply { to, .. } = decision {
        row.state = to;
        row.state_event_id = None;
        row.state_event_created = observed.at;
        row.last_error_code = observed.error_code.map(str::to_owned);
        row.decline_code = observed.decline_code.map(str::to_owned);
        row.last_error_message = observed.error_message.map(str::to_owned);
        if let Some(pm) = observed.payment_method {
            row.payment_method_id = Some(pm.to_owned());
        }
        row.updated_at = now;
        checkout_store::update_checkout(conn, &row)?;
    }
    checkout_store::insert_transition(
        conn,
        &NewTransition {
            checkout_id: &row.id,
            event_id: None,
            from_state: Some(current.state),
            to_state: observed.target,
            outcome,
            reason: Some(&reason),
            error_code: observed.error_code,
            decline_code: observed.decline_code,
            event_created: Some(observed.at),
            at: now,
        },
    )?;
    match decision {
        Decision::Apply { from, to, .. } => {
            info!(
                "checkout {} ({}) {} -> {to} by {}",
                row.id,
                row.intent_id,
                from.map_or("new", CheckoutState::as_str),
                observed.source
            );
            if from != Some(to) {
                notifications::checkout_moved(conn, &row.id, to, now)?;
            }
        }
        Decision::Refuse { state, reason } => info!(
            "checkout {} ({}) stays {state}: observed {} ({}) refused as {}",
            row.id,
            row.intent_id,
            observed.target,
            observed.source,
            reason.as_str()
        ),
    }
    Ok(row)
}
