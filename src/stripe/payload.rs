//! Typed views of the payloads payhook acts on, and the event types it handles.
//!
//! The processor reads the stored payload through [`IntentView`] / [`PaymentMethodView`], which
//! extract what they need from a `serde_json::Value` field by field, so a missing or reshaped
//! field degrades to `None` instead of rejecting a correctly signed event.
//!
//! Every string a view hands on is one both backends can store and index, so a value the
//! database would refuse never turns an event into 8 failed tries and a `dead` one (and a
//! `succeeded` never loses its transition for a field): a value payhook looks up or shows
//! as it is (references, codes, currency, card details) follows the envelope's rule
//! ([`check_storable`]) or is taken as absent; free text (an error message) is kept, cleaned
//! of control characters and cut to [`MAX_MESSAGE_BYTES`].

use serde_json::Value;

use super::envelope::check_storable;
use super::ids::{CustomerId, IntentId, PaymentMethodId};
use super::json::{as_i64, id_or_object, str_field};

/// The longest free text kept from a payload (an error message); the rest is cut.
pub const MAX_MESSAGE_BYTES: usize = 1000;

/// `v[key]` if it is a string both backends store and index as it is (see the module docs).
fn stored(v: &Value, key: &str) -> Option<String> {
    str_field(v, key)
        .filter(|s| check_storable("payload", s).is_ok())
        .map(str::to_owned)
}

/// `v[key]` as free text: control characters (a NUL, which PostgreSQL refuses) become
/// spaces, and the text is cut to [`MAX_MESSAGE_BYTES`] on a character boundary.
fn message(v: &Value, key: &str) -> Option<String> {
    let text = str_field(v, key)?;
    let mut cleaned = String::with_capacity(text.len().min(MAX_MESSAGE_BYTES));
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if cleaned.len() + c.len_utf8() > MAX_MESSAGE_BYTES {
            break;
        }
        cleaned.push(c);
    }
    Some(cleaned)
}

/// The PaymentIntent event types payhook applies, in the order of an intent's life.
pub const PAYMENT_INTENT_EVENT_TYPES: [&str; 6] = [
    "payment_intent.created",
    "payment_intent.requires_action",
    "payment_intent.processing",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
];

/// The SetupIntent event types Stripe sends and payhook applies.
pub const SETUP_INTENT_EVENT_TYPES: [&str; 5] = [
    "setup_intent.created",
    "setup_intent.requires_action",
    "setup_intent.succeeded",
    "setup_intent.setup_failed",
    "setup_intent.canceled",
];

/// The event types payhook applies; everything else is stored and marked `ignored`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `payment_intent.*` or `setup_intent.*`: moves a checkout.
    Intent(IntentEvent),
    /// `payment_method.attached` / `payment_method.detached`.
    PaymentMethod { attached: bool },
}

/// What happened to an intent, whichever kind of intent it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntentEvent {
    Created,
    RequiresAction,
    Processing,
    Succeeded,
    Failed,
    Canceled,
}

impl EventKind {
    pub fn from_type(event_type: &str) -> Option<Self> {
        use IntentEvent::*;
        let intent = |e| Some(Self::Intent(e));
        match event_type {
            "payment_intent.created" | "setup_intent.created" => intent(Created),
            "payment_intent.requires_action" | "setup_intent.requires_action" => {
                intent(RequiresAction)
            }
            // Stripe sends no setup_intent.processing today; accept it should it appear.
            "payment_intent.processing" | "setup_intent.processing" => intent(Processing),
            "payment_intent.succeeded" | "setup_intent.succeeded" => intent(Succeeded),
            "payment_intent.payment_failed" | "setup_intent.setup_failed" => intent(Failed),
            "payment_intent.canceled" | "setup_intent.canceled" => intent(Canceled),
            "payment_method.attached" => Some(Self::PaymentMethod { attached: true }),
            "payment_method.detached" => Some(Self::PaymentMethod { attached: false }),
            _ => None,
        }
    }
}

impl IntentEvent {
    /// What the event asks of the checkout machine. `authentication_required`: whether a
    /// failure's decline asks the customer to come back.
    pub fn trigger(self, authentication_required: bool) -> crate::domain::checkout::Trigger {
        use crate::domain::checkout::Trigger;
        match self {
            Self::Created => Trigger::Created,
            Self::RequiresAction => Trigger::RequiresAction,
            Self::Processing => Trigger::Processing,
            Self::Succeeded => Trigger::Succeeded,
            Self::Canceled => Trigger::Canceled,
            Self::Failed => Trigger::Failed {
                authentication_required,
            },
        }
    }
}

/// The last error Stripe reports on an intent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntentError {
    pub code: Option<String>,
    pub decline_code: Option<String>,
    pub message: Option<String>,
}

/// What payhook reads from a PaymentIntent or SetupIntent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentView {
    pub id: IntentId,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub customer: Option<CustomerId>,
    pub payment_method: Option<PaymentMethodId>,
    /// For PaymentIntents: `setup_future_usage`. For SetupIntents: `usage` (always saved).
    pub setup_future_usage: Option<String>,
    /// `metadata.customer_ref`: the app's own user id.
    pub customer_ref: Option<String>,
    /// `metadata.checkout_id`: a checkout the app created through payhook.
    pub checkout_ref: Option<String>,
    pub error: IntentError,
    /// The expanded payment method inside the last error, when Stripe includes it.
    pub error_payment_method: Option<PaymentMethodView>,
}

/// Why a handled event's payload cannot be applied. Permanent: retrying will not help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload has no data.object")]
    NoObject,
    #[error("data.object has no usable id: {0}")]
    BadObjectId(String),
}

impl IntentView {
    pub fn from_object(object: &Value) -> Result<Self, PayloadError> {
        let raw_id =
            str_field(object, "id").ok_or_else(|| PayloadError::BadObjectId("missing".into()))?;
        let id = IntentId::parse(raw_id).map_err(|e| PayloadError::BadObjectId(e.to_string()))?;
        let error_value = object
            .get("last_payment_error")
            .filter(|v| v.is_object())
            .or_else(|| object.get("last_setup_error").filter(|v| v.is_object()));
        let error = error_value
            .map(|e| IntentError {
                code: stored(e, "code"),
                decline_code: stored(e, "decline_code"),
                message: message(e, "message"),
            })
            .unwrap_or_default();
        let error_payment_method = error_value
            .and_then(|e| e.get("payment_method"))
            .filter(|v| v.is_object())
            .and_then(|pm| PaymentMethodView::from_object(pm).ok());
        let metadata = object.get("metadata");
        let meta = |key: &str| metadata.and_then(|m| stored(m, key));
        let setup_future_usage = match id {
            IntentId::Payment(_) => stored(object, "setup_future_usage"),
            IntentId::Setup(_) => {
                stored(object, "usage").or_else(|| Some("off_session".to_owned()))
            }
        };
        Ok(Self {
            amount: object.get("amount").and_then(as_i64),
            currency: stored(object, "currency"),
            customer: id_or_object(object, "customer").and_then(|c| CustomerId::parse(c).ok()),
            payment_method: id_or_object(object, "payment_method")
                .and_then(|p| PaymentMethodId::parse(p).ok()),
            setup_future_usage,
            customer_ref: meta("customer_ref"),
            checkout_ref: meta("checkout_id"),
            error,
            error_payment_method,
            id,
        })
    }
}

/// Card details payhook keeps. Never a number or CVC: Stripe does not send them and we
/// would not store them if it did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardDetails {
    pub brand: Option<String>,
    pub last4: Option<String>,
    pub exp_month: Option<i32>,
    pub exp_year: Option<i32>,
    pub fingerprint: Option<String>,
}

/// What payhook reads from a PaymentMethod (or a legacy Card object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentMethodView {
    pub id: PaymentMethodId,
    pub customer: Option<CustomerId>,
    pub method_type: Option<String>,
    pub card: CardDetails,
    pub billing_email: Option<String>,
}

impl PaymentMethodView {
    pub fn from_object(object: &Value) -> Result<Self, PayloadError> {
        let raw_id =
            str_field(object, "id").ok_or_else(|| PayloadError::BadObjectId("missing".into()))?;
        let id =
            PaymentMethodId::parse(raw_id).map_err(|e| PayloadError::BadObjectId(e.to_string()))?;
        // A PaymentMethod nests card details under `card`; a legacy Card object is the card.
        let card_value = object
            .get("card")
            .filter(|c| c.is_object())
            .unwrap_or(object);
        let int = |key: &str| {
            card_value
                .get(key)
                .and_then(as_i64)
                .and_then(|n| i32::try_from(n).ok())
        };
        let card = CardDetails {
            brand: stored(card_value, "brand").map(|b| b.to_lowercase()),
            last4: stored(card_value, "last4"),
            exp_month: int("exp_month"),
            exp_year: int("exp_year"),
            fingerprint: stored(card_value, "fingerprint"),
        };
        Ok(Self {
            customer: id_or_object(object, "customer").and_then(|c| CustomerId::parse(c).ok()),
            method_type: stored(object, "type").or_else(|| stored(object, "object")),
            billing_email: object
                .get("billing_details")
                .and_then(|b| stored(b, "email")),
            card,
            id,
        })
    }
}

/// `data.object` of a stored payload.
pub fn data_object(payload: &Value) -> Result<&Value, PayloadError> {
    payload
        .pointer("/data/object")
        .filter(|o| o.is_object())
        .ok_or(PayloadError::NoObject)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn intent_view_reads_errors_customers_and_metadata() {
        let object = json!({
            "id": "pi_1", "object": "payment_intent", "amount": 4200, "currency": "eur",
            "customer": {"id": "cus_9", "object": "customer"},
            "payment_method": "pm_1", "setup_future_usage": "off_session",
            "metadata": {"customer_ref": "user_42"},
            "last_payment_error": {"code": "card_declined", "decline_code": "insufficient_funds",
                "message": "no money", "payment_method": {"id": "pm_1", "type": "card",
                "card": {"brand": "Visa", "last4": "4242", "exp_month": 1, "exp_year": 2030,
                "fingerprint": "fp"}}}
        });
        let view = IntentView::from_object(&object).unwrap();
        assert_eq!(view.customer.unwrap().as_str(), "cus_9");
        assert_eq!(view.customer_ref.as_deref(), Some("user_42"));
        assert_eq!(
            view.error.decline_code.as_deref(),
            Some("insufficient_funds")
        );
        let pm = view.error_payment_method.unwrap();
        assert_eq!(pm.card.brand.as_deref(), Some("visa"));
        assert_eq!(pm.card.exp_year, Some(2030));
    }

    #[test]
    fn values_the_database_cannot_store_are_dropped_or_cleaned() {
        let long = "x".repeat(100_000);
        let object = json!({
            "id": "pi_1", "currency": format!("usd{long}"),
            "metadata": {"customer_ref": "user\u{0}1", "checkout_id": long},
            "last_payment_error": {"code": "card\u{0}declined", "message": format!("no\u{0}money{long}")}
        });
        let view = IntentView::from_object(&object).unwrap();
        assert_eq!(view.currency, None);
        assert_eq!(view.customer_ref, None);
        assert_eq!(view.checkout_ref, None);
        assert_eq!(view.error.code, None);
        let message = view.error.message.unwrap();
        assert!(message.starts_with("no money"), "{message}");
        assert_eq!(message.len(), MAX_MESSAGE_BYTES);
        let pm = json!({"id": "pm_1", "type": "card\u{0}", "card": {"brand": "Vi\u{0}sa",
            "last4": "4242"}, "billing_details": {"email": long}});
        let view = PaymentMethodView::from_object(&pm).unwrap();
        assert_eq!(
            (view.method_type, view.card.brand, view.billing_email),
            (None, None, None)
        );
        assert_eq!(view.card.last4.as_deref(), Some("4242"));
        let accents = json!({"id": "pi_1", "last_payment_error": {"message": "é".repeat(600)}});
        let kept = IntentView::from_object(&accents)
            .unwrap()
            .error
            .message
            .unwrap();
        assert_eq!(kept.len(), MAX_MESSAGE_BYTES, "cut on a character boundary");
    }

    #[test]
    fn setup_intents_are_always_saved_for_future_use() {
        let view = IntentView::from_object(&json!({"id": "seti_1", "customer": null})).unwrap();
        assert_eq!(view.setup_future_usage.as_deref(), Some("off_session"));
        assert_eq!(view.customer, None);
        assert!(IntentView::from_object(&json!({"id": "ch_1"})).is_err());
    }

    #[test]
    fn legacy_card_objects_read_as_payment_methods() {
        let card = json!({"id": "card_1", "object": "card", "brand": "Visa", "last4": "4242",
            "exp_month": 8, "exp_year": 2030, "fingerprint": "abc", "customer": "cus_1"});
        let view = PaymentMethodView::from_object(&card).unwrap();
        assert_eq!(view.card.last4.as_deref(), Some("4242"));
        assert_eq!(view.customer.unwrap().as_str(), "cus_1");
        assert_eq!(view.method_type.as_deref(), Some("card"));
    }
}
