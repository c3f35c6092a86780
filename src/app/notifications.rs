//! Which changes the app is told about, and queuing them: one notification per applied
//! checkout transition to a state the app acts on, and one per card-saving outcome, in the
//! transaction of the change (never for a refused event).
//!
//! Each takes the checkout's next `sequence` (a column of `checkouts` incremented in that
//! transaction; `checkout.*` and `card.*` share it), so the app can drop a notification older
//! than one it already has.

use super::object::{self, CheckoutView, Hints, Secret};
use crate::domain::checkout::CheckoutState;
use crate::outbox::notify;
use crate::store::app_checkouts;
use crate::store::checkouts::CheckoutRow;
use crate::store::{Conn, StoreResult};

/// Whether changes queue notifications to the app. Only when `NOTIFY_URL` is set
/// ([`Notifications::for_config`], the one place this is decided): without it nobody is told,
/// and queuing anyway cost every applied transition a rendered checkout, a sequence update and
/// an outbox row with five indexes (BENCHMARKS.md, issue 13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notifications {
    Queue,
    Skip,
}

impl Notifications {
    pub fn for_config(config: &crate::config::Config) -> Self {
        if config.notify.is_some() {
            Self::Queue
        } else {
            Self::Skip
        }
    }
}

/// The notification type of a move to `state`; `None` for `pending` (a checkout's start,
/// which the app made or learns from the API).
pub fn checkout_type(state: CheckoutState) -> Option<&'static str> {
    match state {
        CheckoutState::Pending => None,
        CheckoutState::RequiresAction => Some("checkout.requires_action"),
        CheckoutState::Processing => Some("checkout.processing"),
        CheckoutState::Succeeded => Some("checkout.succeeded"),
        CheckoutState::Failed => Some("checkout.failed"),
        CheckoutState::Canceled => Some("checkout.canceled"),
        CheckoutState::Expired => Some("checkout.expired"),
    }
}

/// The checkout just moved to `state` (the change is written already).
pub fn checkout_moved(
    conn: &mut Conn,
    checkout_id: &str,
    state: CheckoutState,
    now: i64,
) -> StoreResult<()> {
    match checkout_type(state) {
        Some(event_type) => queue(conn, checkout_id, event_type, now),
        None => Ok(()),
    }
}

/// Saving the checkout's card ended: saved, or failed for good.
pub fn card_ended(conn: &mut Conn, checkout_id: &str, saved: bool, now: i64) -> StoreResult<()> {
    let event_type = if saved {
        "card.saved"
    } else {
        "card.save_failed"
    };
    queue(conn, checkout_id, event_type, now)
}

/// As [`checkout_moved`], for the processor, which has the row (as written) and what the
/// event says in hand: the common case reads nothing more than it must.
pub fn checkout_row_moved(
    conn: &mut Conn,
    row: &CheckoutRow,
    hints: Hints<'_>,
    notifications: Notifications,
    now: i64,
) -> StoreResult<()> {
    let Some(event_type) = checkout_type(row.state) else {
        return Ok(());
    };
    if notifications == Notifications::Skip {
        return Ok(());
    }
    let view = object::view_with(conn, row.clone(), hints)?;
    enqueue(conn, &view, event_type, now)
}

fn queue(conn: &mut Conn, checkout_id: &str, event_type: &str, now: i64) -> StoreResult<()> {
    let Some(view) = object::load(conn, checkout_id)? else {
        return Ok(());
    };
    enqueue(conn, &view, event_type, now)
}

fn enqueue(conn: &mut Conn, view: &CheckoutView, event_type: &str, now: i64) -> StoreResult<()> {
    let checkout_id = view.checkout.id.as_str();
    let sequence = app_checkouts::next_notify_sequence(conn, checkout_id)?;
    notify::enqueue(
        conn,
        checkout_id,
        event_type,
        sequence,
        view.render(Secret::Omit),
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_but_pending_is_notified_under_its_contract_name() {
        let names: Vec<_> = CheckoutState::ALL
            .iter()
            .filter_map(|s| checkout_type(*s))
            .collect();
        assert_eq!(names.len(), 6);
        assert_eq!(checkout_type(CheckoutState::Pending), None);
        for state in CheckoutState::ALL
            .iter()
            .filter(|s| **s != CheckoutState::Pending)
        {
            assert_eq!(
                checkout_type(*state),
                Some(format!("checkout.{state}").as_str())
            );
        }
    }
}
