//! The intent calls of the app API: create a SetupIntent or a PaymentIntent (an off-session
//! charge confirms it at once), cancel one; in the connected account the app's request names
//! (`Stripe-Account` on the call), or the platform's.
//!
//! As in [`super::client`], each call goes out exactly once with the caller's idempotency key;
//! the caller (the app API) derives the key from its own checkout id and resends it unchanged,
//! so a retry or a resumed request never makes a second intent. A card decline is not an
//! error of the call here: Stripe answers 402 with the intent it made (status
//! `requires_payment_method`, the decline in `last_payment_error`), and that intent is what the
//! checkout records ([`IntentCallError::Declined`]).

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::OnceLock;

use stripe::{StripeError, StripeRequest};
use stripe_core::payment_intent::{
    CancelPaymentIntent, CreatePaymentIntent, CreatePaymentIntentOffSession,
};
use stripe_core::setup_intent::{CancelSetupIntent, CreateSetupIntent, CreateSetupIntentUsage};
use stripe_shared::{
    ApiErrors, ApiErrorsType, PaymentIntent, PaymentIntentSetupFutureUsage, SetupIntent,
};

use super::client::{check_id, in_account, redact, strategy, ApiError, StripeApi};
use super::ids::AccountId;
use crate::domain::checkout::CheckoutKind;

/// What payhook asks Stripe to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIntent<'a> {
    pub kind: CheckoutKind,
    /// The Stripe customer the intent (and a saved card) belongs to.
    pub customer: Option<&'a str>,
    pub amount: Option<i64>,
    pub currency: Option<&'a str>,
    /// `setup_future_usage=off_session` on a payment: the card is saved for later charges.
    pub save_card: bool,
    pub description: Option<&'a str>,
    /// `checkout_id`, `customer_ref` and the app's own keys.
    pub metadata: BTreeMap<String, String>,
    /// An off-session charge of this saved card: confirmed at once, customer absent.
    pub charge_off_session: Option<&'a str>,
}

/// The metadata as async-stripe takes it (a `HashMap`), laid out the same way on every call
/// of the process: a resent request must be the same request, byte for byte, and a `HashMap`
/// with its own random hasher would serialise its keys in another order each time. One
/// hasher for the process, the same capacity and the same (sorted) insertions give the same
/// order.
fn metadata_map(metadata: &BTreeMap<String, String>) -> HashMap<String, String> {
    static HASHER: OnceLock<RandomState> = OnceLock::new();
    let mut map = HashMap::with_capacity_and_hasher(
        metadata.len(),
        HASHER.get_or_init(RandomState::new).clone(),
    );
    for (k, v) in metadata {
        map.insert(k.clone(), v.clone());
    }
    map
}

/// The error Stripe reports on an intent (`last_payment_error` / `last_setup_error`), or a
/// refusal's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StripeFault {
    pub code: Option<String>,
    pub decline_code: Option<String>,
    pub message: Option<String>,
}

/// An intent as Stripe answered it: what the checkout records.
#[derive(Clone, PartialEq, Eq)]
pub struct IntentSnapshot {
    pub id: String,
    /// Stripe time of its creation: the time of the state it reports (see the app module).
    pub created: i64,
    /// Stripe's status (`requires_payment_method`, `succeeded`, …).
    pub status: String,
    /// What the browser needs; never logged (hand-written `Debug`).
    pub client_secret: Option<String>,
    pub payment_method: Option<String>,
    pub canceled_at: Option<i64>,
    pub last_error: Option<StripeFault>,
}

impl std::fmt::Debug for IntentSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntentSnapshot")
            .field("id", &self.id)
            .field("created", &self.created)
            .field("status", &self.status)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("payment_method", &self.payment_method)
            .field("last_error", &self.last_error)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IntentCallError {
    /// The card was declined (402 `card_error`); Stripe made the intent and says why.
    #[error("card declined ({:?}/{:?})", .fault.code, .fault.decline_code)]
    Declined {
        intent: Box<IntentSnapshot>,
        fault: StripeFault,
    },
    /// Any other failure, classified retryable or permanent; `decline_code` when Stripe gave
    /// one, and the intent when the error carries it (an intent in an unexpected state).
    #[error("{error}")]
    Api {
        error: ApiError,
        decline_code: Option<String>,
        intent: Option<Box<IntentSnapshot>>,
    },
}

impl From<ApiError> for IntentCallError {
    fn from(error: ApiError) -> Self {
        Self::Api {
            error,
            decline_code: None,
            intent: None,
        }
    }
}

fn fault(e: &ApiErrors) -> StripeFault {
    StripeFault {
        code: e.code.as_ref().map(|c| c.as_str().to_owned()),
        decline_code: e.decline_code.clone(),
        message: e.message.as_deref().map(redact),
    }
}

fn payment_snapshot(pi: &PaymentIntent) -> IntentSnapshot {
    let error = pi.last_payment_error.as_deref();
    IntentSnapshot {
        id: pi.id.as_str().to_owned(),
        created: pi.created,
        status: pi.status.as_str().to_owned(),
        client_secret: pi.client_secret.clone(),
        payment_method: pi
            .payment_method
            .as_ref()
            .map(|p| p.id().as_str().to_owned())
            .or_else(|| {
                error
                    .and_then(|e| e.payment_method.as_ref())
                    .map(|p| p.id.as_str().to_owned())
            }),
        canceled_at: pi.canceled_at,
        last_error: error.map(fault),
    }
}

fn setup_snapshot(si: &SetupIntent) -> IntentSnapshot {
    let error = si.last_setup_error.as_deref();
    IntentSnapshot {
        id: si.id.as_str().to_owned(),
        created: si.created,
        status: si.status.as_str().to_owned(),
        client_secret: si.client_secret.clone(),
        payment_method: si
            .payment_method
            .as_ref()
            .map(|p| p.id().as_str().to_owned()),
        canceled_at: None,
        last_error: error.map(fault),
    }
}

/// A declined card comes back as an intent; anything else as a classified error.
fn classify(err: StripeError) -> IntentCallError {
    if let StripeError::Stripe(e, _) = &err {
        let intent = e
            .payment_intent
            .as_ref()
            .map(payment_snapshot)
            .or_else(|| e.setup_intent.as_ref().map(setup_snapshot));
        if e.type_ == ApiErrorsType::CardError {
            if let Some(mut intent) = intent {
                if intent.payment_method.is_none() {
                    intent.payment_method =
                        e.payment_method.as_ref().map(|p| p.id.as_str().to_owned());
                }
                return IntentCallError::Declined {
                    intent: Box::new(intent),
                    fault: fault(e),
                };
            }
        }
        let decline_code = e.decline_code.clone();
        return IntentCallError::Api {
            error: ApiError::from(err),
            decline_code,
            intent: intent.map(Box::new),
        };
    }
    ApiError::from(err).into()
}

impl StripeApi {
    /// Creates the intent `new` describes with `idempotency_key`, in `account` (`None`: the
    /// platform).
    pub async fn create_intent(
        &self,
        account: Option<&AccountId>,
        idempotency_key: &str,
        new: &NewIntent<'_>,
    ) -> Result<IntentSnapshot, IntentCallError> {
        if let Some(customer) = new.customer {
            check_id("customer_id", customer)?;
        }
        let strategy = strategy(idempotency_key)?;
        let account = account.map(AccountId::as_str);
        match new.kind {
            CheckoutKind::Setup => {
                let mut req = CreateSetupIntent::new()
                    .usage(CreateSetupIntentUsage::OffSession)
                    .metadata(metadata_map(&new.metadata));
                if let Some(customer) = new.customer {
                    req = req.customer(customer);
                }
                if let Some(d) = new.description {
                    req = req.description(d);
                }
                let request = req.customize().request_strategy(strategy);
                let si = in_account!(request, account)
                    .send(&self.client)
                    .await
                    .map_err(classify)?;
                log::debug!("stripe: created {}", si.id);
                Ok(setup_snapshot(&si))
            }
            CheckoutKind::Payment => {
                let (Some(amount), Some(currency)) = (new.amount, new.currency) else {
                    return Err(ApiError::local("a payment needs an amount and a currency").into());
                };
                let currency = stripe_types::Currency::from_str(currency)
                    .map_err(|_| ApiError::local("unknown currency"))?;
                let mut req = CreatePaymentIntent::new(amount, currency)
                    .metadata(metadata_map(&new.metadata));
                if let Some(customer) = new.customer {
                    req = req.customer(customer);
                }
                if let Some(d) = new.description {
                    req = req.description(d);
                }
                if new.save_card {
                    req = req.setup_future_usage(PaymentIntentSetupFutureUsage::OffSession);
                }
                if let Some(pm) = new.charge_off_session {
                    check_id("payment_method_id", pm)?;
                    req = req
                        .payment_method(pm)
                        .confirm(true)
                        .off_session(CreatePaymentIntentOffSession::Bool(true));
                }
                let request = req.customize().request_strategy(strategy);
                let pi = in_account!(request, account)
                    .send(&self.client)
                    .await
                    .map_err(classify)?;
                log::debug!("stripe: created {} ({})", pi.id, pi.status.as_str());
                Ok(payment_snapshot(&pi))
            }
        }
    }

    /// Cancels an intent of `account` (`None`: the platform); answers it as Stripe has it
    /// afterwards.
    pub async fn cancel_intent(
        &self,
        account: Option<&AccountId>,
        idempotency_key: &str,
        intent_id: &str,
    ) -> Result<IntentSnapshot, IntentCallError> {
        check_id("intent_id", intent_id)?;
        let strategy = strategy(idempotency_key)?;
        let account = account.map(AccountId::as_str);
        if intent_id.starts_with("seti_") {
            let request = CancelSetupIntent::new(intent_id)
                .customize()
                .request_strategy(strategy);
            let si = in_account!(request, account)
                .send(&self.client)
                .await
                .map_err(classify)?;
            Ok(setup_snapshot(&si))
        } else {
            let request = CancelPaymentIntent::new(intent_id)
                .customize()
                .request_strategy(strategy);
            let pi = in_account!(request, account)
                .send(&self.client)
                .await
                .map_err(classify)?;
            Ok(payment_snapshot(&pi))
        }
    }
}
