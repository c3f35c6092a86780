//! The checkout object as the app sees it (API.md section 1), read from the state machine's
//! row, what the app asked for, the customer and the card-saving work.
//!
//! One renderer for the API's answers and the notifications' `data`, so both always show the
//! same object. The client secret appears only where the app asked for the checkout (an API
//! answer), and never once the checkout is succeeded, canceled or expired: a notification
//! body is stored in the outbox and retried, and has no reason to carry it.

use serde_json::{json, Value};

use crate::domain::checkout::{CheckoutKind, CheckoutState};
use crate::outbox::save_card::{self, CardOutcome};
use crate::store::app_checkouts::{self, AppCheckoutRow};
use crate::store::checkouts::{self as checkout_store, CheckoutRow, TransitionRow};
use crate::store::customers;
use crate::store::{Conn, StoreResult};

/// Everything the object is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutView {
    pub checkout: CheckoutRow,
    /// What the app asked for, when it created the checkout through the API.
    pub app: Option<AppCheckoutRow>,
    /// The customer's `customer_ref`, when the checkout has a customer with one.
    pub customer_ref: Option<String>,
    pub card: Option<CardOutcome>,
}

/// Whether the rendered object may carry the client secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secret {
    /// An answer to the app's own request.
    Include,
    /// A notification.
    Omit,
}

/// The view of checkout `id`; `None` when there is none (or it has no intent yet).
pub fn load(conn: &mut Conn, id: &str) -> StoreResult<Option<CheckoutView>> {
    let Some(checkout) = checkout_store::find_checkout(conn, id)? else {
        return Ok(None);
    };
    view_of(conn, checkout).map(Some)
}

/// The view of a checkout row already read.
pub fn view_of(conn: &mut Conn, checkout: CheckoutRow) -> StoreResult<CheckoutView> {
    view_with(conn, checkout, Hints::default())
}

/// What a caller may already know about a checkout, to spare lookups on the processor's path.
#[derive(Debug, Clone, Copy)]
pub struct Hints<'a> {
    /// `false`: the app API did not make this checkout (its intent's metadata names no
    /// checkout of this id), so there is no request row to read.
    pub maybe_app: bool,
    /// The `customer_ref` the intent's metadata names.
    pub customer_ref: Option<&'a str>,
}

impl Default for Hints<'_> {
    fn default() -> Self {
        Self {
            maybe_app: true,
            customer_ref: None,
        }
    }
}

/// The view of `checkout`, reading only what `hints` leave unknown. A checkout that saves no
/// card has no card-saving work to read either.
pub fn view_with(
    conn: &mut Conn,
    checkout: CheckoutRow,
    hints: Hints<'_>,
) -> StoreResult<CheckoutView> {
    let app = if hints.maybe_app {
        app_checkouts::find_app_checkout(conn, &checkout.id)?
    } else {
        None
    };
    let customer_ref = match app
        .as_ref()
        .and_then(|a| a.customer_ref.clone())
        .or_else(|| hints.customer_ref.map(str::to_owned))
    {
        Some(r) => Some(r),
        None => match checkout.customer_id {
            Some(id) => customers::find_customer(conn, id)?.and_then(|c| c.customer_ref),
            None => None,
        },
    };
    let saves_card = checkout.kind == CheckoutKind::Setup
        || checkout.setup_future_usage.is_some()
        || app.as_ref().is_some_and(|a| a.save_card);
    let card = if saves_card {
        save_card::card_outcome(conn, &checkout.id)?
    } else {
        None
    };
    Ok(CheckoutView {
        checkout,
        app,
        customer_ref,
        card,
    })
}

impl CheckoutView {
    /// The checkout object of API.md.
    pub fn render(&self, secret: Secret) -> Value {
        let c = &self.checkout;
        let app = self.app.as_ref();
        let secret_visible = secret == Secret::Include
            && !matches!(
                c.state,
                CheckoutState::Succeeded | CheckoutState::Canceled | CheckoutState::Expired
            );
        let client_secret = app
            .and_then(|a| a.client_secret.as_deref())
            .filter(|_| secret_visible);
        let save_card = match app {
            Some(a) => a.save_card,
            None => c.kind == CheckoutKind::Setup || c.setup_future_usage.is_some(),
        };
        let last_error = (c.last_error_code.is_some()
            || c.decline_code.is_some()
            || c.last_error_message.is_some())
        .then(|| {
            json!({
                "code": c.last_error_code,
                "decline_code": c.decline_code,
                "message": c.last_error_message,
            })
        });
        let card = self.card.as_ref().map(|card| {
            json!({
                "status": card.status.as_str(),
                "payment_method": card.payment_method_id,
                "error_code": card.error_code,
            })
        });
        json!({
            "id": c.id,
            "object": "checkout",
            "mode": c.kind.as_str(),
            "state": c.state.as_str(),
            "intent_id": c.intent_id,
            "client_secret": client_secret,
            "customer_ref": self.customer_ref,
            "amount": c.amount.or(app.and_then(|a| a.amount)),
            "currency": c.currency.clone().or(app.and_then(|a| a.currency.clone())),
            "save_card": save_card,
            "off_session": app.is_some_and(|a| a.off_session),
            "payment_method": c.payment_method_id,
            "last_error": last_error,
            "card": card,
            "description": app.and_then(|a| a.description.clone()),
            "metadata": app
                .and_then(|a| a.metadata.as_deref())
                .and_then(|m| serde_json::from_str::<Value>(m).ok())
                .unwrap_or_else(|| json!({})),
            "created_at": app.map_or(c.created_at, |a| a.created_at.min(c.created_at)),
            "updated_at": c.updated_at,
        })
    }
}

/// A checkout's transitions and refusals as the API shows them, oldest first.
pub fn render_transitions(rows: &[TransitionRow]) -> Value {
    Value::Array(
        rows.iter()
            .map(|t| {
                json!({
                    "from": t.from_state.map(|s| s.as_str()),
                    "to": t.to_state.as_str(),
                    "outcome": t.outcome.as_str(),
                    "reason": t.reason,
                    "event_id": t.event_id,
                    "error_code": t.error_code,
                    "decline_code": t.decline_code,
                    "at": t.at,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: CheckoutState) -> CheckoutView {
        CheckoutView {
            checkout: CheckoutRow {
                id: "chk_1".into(),
                kind: CheckoutKind::Payment,
                intent_id: "pi_1".into(),
                customer_id: None,
                stripe_customer_id: None,
                payment_method_id: None,
                amount: Some(100),
                currency: Some("usd".into()),
                setup_future_usage: None,
                state,
                state_event_id: None,
                state_event_created: 1,
                last_error_code: None,
                decline_code: None,
                last_error_message: None,
                created_at: 10,
                updated_at: 20,
                account: String::new(),
            },
            app: Some(AppCheckoutRow {
                id: "chk_1".into(),
                kind: CheckoutKind::Payment,
                customer_id: None,
                customer_ref: Some("user_1".into()),
                email: None,
                amount: Some(100),
                currency: Some("usd".into()),
                save_card: false,
                off_session: false,
                description: None,
                metadata: None,
                payment_method_id: None,
                idempotency_key: None,
                request_hash: String::new(),
                intent_id: Some("pi_1".into()),
                client_secret: Some("pi_1_secret_x".into()),
                created_at: 9,
                updated_at: 9,
                account: String::new(),
            }),
            customer_ref: Some("user_1".into()),
            card: None,
        }
    }

    #[test]
    fn the_client_secret_shows_only_to_the_app_and_only_while_it_is_of_use() {
        let pending = view(CheckoutState::Pending);
        assert_eq!(
            pending.render(Secret::Include)["client_secret"],
            "pi_1_secret_x"
        );
        assert!(pending.render(Secret::Omit)["client_secret"].is_null());
        for state in [
            CheckoutState::Succeeded,
            CheckoutState::Canceled,
            CheckoutState::Expired,
        ] {
            assert!(
                view(state).render(Secret::Include)["client_secret"].is_null(),
                "{state}"
            );
        }
        let requires_action = view(CheckoutState::RequiresAction);
        assert_eq!(
            requires_action.render(Secret::Include)["client_secret"],
            "pi_1_secret_x"
        );
    }

    #[test]
    fn the_object_has_every_field_of_the_contract() {
        let object = view(CheckoutState::Pending).render(Secret::Include);
        for field in [
            "id",
            "mode",
            "state",
            "intent_id",
            "client_secret",
            "customer_ref",
            "amount",
            "currency",
            "save_card",
            "off_session",
            "payment_method",
            "last_error",
            "card",
            "created_at",
            "updated_at",
        ] {
            assert!(object.get(field).is_some(), "{field} missing from {object}");
        }
        assert_eq!(object["created_at"], 9);
        assert!(object["last_error"].is_null());
    }
}
