//! Applies one stored event to the local state: checkouts, customers, payment methods.
//!
//! Runs inside the processor's transaction; the domain rules ([`crate::domain`]) decide,
//! these modules read the payload, look up what the rules need and write the rows. A payload
//! that cannot be applied is a permanent outcome ([`Applied::Invalid`]), never an error:
//! errors are reserved for the database, where retrying can help.
//!
//! Side effects are never performed here: an applied `succeeded` that saves a card writes
//! one `save_card` item to the outbox ([`crate::outbox`]) in the same transaction, and the
//! outbox runner performs it later.
//!
//! - [`intents`]: `payment_intent.*`, `setup_intent.*`.
//! - [`payment_methods`]: `payment_method.attached` / `.detached`.
//! - [`observed`]: a state read from a Stripe answer (a charge, a cancel), applied like an event.
//! - [`fetched`]: an object fetched from Stripe (resync) applied as observed state, through
//!   the same state machine as events.
//! - [`thin`]: thin (v2) events: the fetch of their object is queued, or they are ignored.

pub mod fetched;
mod intents;
pub mod observed;
mod payment_methods;
pub mod staging;
mod thin;

use serde_json::Value;

use crate::app::notifications::Notifications;
use crate::domain::checkout::{CheckoutState, TransitionOutcome};
use crate::store::events::WebhookEvent;
use crate::store::{Conn, StoreResult};
use crate::stripe::payload::{self, EventKind, IntentView, PaymentMethodView};
use staging::Staging;

/// What applying an event came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Processed,
    /// Not a type payhook handles.
    Ignored,
    /// A handled type whose payload cannot be applied, and why.
    Invalid(String),
}

/// What applying changed that is counted elsewhere (metrics): the caller counts it once the
/// transaction holding the changes has committed, so a rolled-back try counts nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// Each checkout transition recorded: the state asked for, and whether it was applied.
    pub transitions: Vec<(CheckoutState, TransitionOutcome)>,
}

/// What an apply writes through and notes down besides the connection, bundled because
/// every intent path passes all three along.
pub(crate) struct Outputs<'a> {
    pub notifications: Notifications,
    pub effects: &'a mut Effects,
    pub staging: &'a mut Staging,
}

/// The intent an intent event's payload describes; `None` for another kind of event or a
/// payload that does not read as one (applying it says why).
pub fn read_intent(event: &WebhookEvent) -> Option<IntentView> {
    let Some(EventKind::Intent(_)) = EventKind::from_type(&event.event_type) else {
        return None;
    };
    let json: Value = serde_json::from_str(&event.payload).ok()?;
    IntentView::from_object(payload::data_object(&json).ok()?).ok()
}

/// Applies `event`. `now` is local seconds.
pub fn apply_event(conn: &mut Conn, event: &WebhookEvent, now: i64) -> StoreResult<Applied> {
    apply_event_with(conn, event, now, &mut Effects::default())
}

/// As [`apply_event`], noting what it changed in `effects`.
pub fn apply_event_with(
    conn: &mut Conn,
    event: &WebhookEvent,
    now: i64,
    effects: &mut Effects,
) -> StoreResult<Applied> {
    apply_event_notifying(
        conn,
        event,
        now,
        Notifications::Queue,
        effects,
        &mut Staging::immediate(),
    )
}

/// As [`apply_event_with`], queuing notifications to the app only as `notifications` says
/// and writing through `staging` (see [`staging`]).
pub fn apply_event_notifying(
    conn: &mut Conn,
    event: &WebhookEvent,
    now: i64,
    notifications: Notifications,
    effects: &mut Effects,
    staging: &mut Staging,
) -> StoreResult<Applied> {
    let Some(kind) = EventKind::from_type(&event.event_type) else {
        // No snapshot type: a thin event (whose types are its own), or one not handled.
        return Ok(thin::apply_thin_event(conn, event, now)?.unwrap_or(Applied::Ignored));
    };
    if let EventKind::Intent(kind) = kind {
        // Read already by the batch (see `Staging::read_ahead`): not parsed twice.
        if let Some(view) = staging.take_intent(&event.id) {
            let mut out = Outputs {
                notifications,
                effects,
                staging,
            };
            return intents::apply_intent_event(conn, event, kind, &view, now, &mut out);
        }
    }
    let json: Value = match serde_json::from_str(&event.payload) {
        Ok(v) => v,
        Err(e) => return Ok(Applied::Invalid(format!("payload is not JSON: {e}"))),
    };
    let object = match payload::data_object(&json) {
        Ok(o) => o,
        Err(e) => return Ok(Applied::Invalid(e.to_string())),
    };
    match kind {
        EventKind::Intent(kind) => match IntentView::from_object(object) {
            Ok(view) => {
                let mut out = Outputs {
                    notifications,
                    effects,
                    staging,
                };
                intents::apply_intent_event(conn, event, kind, &view, now, &mut out)
            }
            Err(e) => Ok(Applied::Invalid(e.to_string())),
        },
        EventKind::PaymentMethod { attached } => match PaymentMethodView::from_object(object) {
            Ok(view) => payment_methods::apply_payment_method_event(
                conn, event, attached, &view, now, staging,
            ),
            Err(e) => Ok(Applied::Invalid(e.to_string())),
        },
    }
}
