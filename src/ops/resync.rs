//! Resync: fetch one object from Stripe and apply it as observed state
//! ([`crate::apply::fetched`]): what the reference integrations' "fulfilment" commands do by
//! hand, through payhook's own state machine.

use serde::Serialize;

use super::{InvalidRequest, OpsError};
use crate::apply::fetched::{apply_fetched, Fetched};
use crate::apply::Effects;
use crate::domain::cards::PaymentMethodStatus;
use crate::domain::checkout::{CheckoutKind, CheckoutState};
use crate::metrics::Metrics;
use crate::store::checkouts::CheckoutRow;
use crate::store::customers;
use crate::store::payment_methods::PaymentMethodRow;
use crate::store::{now_secs, Pool, StoreError};
use crate::stripe::client::ApiError;
use crate::stripe::gateway::StripeGateway;
use crate::stripe::ids::AccountId;
use crate::stripe::objects::object_path;

/// The objects resync fetches, by id prefix.
fn endpoint(stripe_id: &str) -> Result<(String, &'static str), InvalidRequest> {
    object_path(stripe_id).ok_or_else(|| {
        InvalidRequest::new(
            "stripe_id",
            format!("`{stripe_id}` is not a pi_…, seti_… or pm_… id"),
        )
    })
}

/// A checkout as resync answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckoutView {
    pub object: &'static str,
    pub id: String,
    pub mode: CheckoutKind,
    pub state: CheckoutState,
    pub intent_id: String,
    pub customer_ref: Option<String>,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub payment_method: Option<String>,
    pub last_error: Option<LastErrorView>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastErrorView {
    pub code: Option<String>,
    pub decline_code: Option<String>,
    pub message: Option<String>,
}

/// A card (payment method) as resync answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CardView {
    pub object: &'static str,
    pub id: String,
    pub customer: Option<String>,
    pub brand: Option<String>,
    pub last4: Option<String>,
    pub exp_month: Option<i32>,
    pub exp_year: Option<i32>,
    pub fingerprint: Option<String>,
    pub status: PaymentMethodStatus,
}

/// What resync answers: the object's local state after the observation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Resynced {
    Checkout(CheckoutView),
    Card(CardView),
}

fn checkout_view(row: CheckoutRow, customer_ref: Option<String>) -> CheckoutView {
    let has_error = row.last_error_code.is_some() || row.last_error_message.is_some();
    CheckoutView {
        object: "checkout",
        last_error: has_error.then(|| LastErrorView {
            code: row.last_error_code.clone(),
            decline_code: row.decline_code.clone(),
            message: row.last_error_message.clone(),
        }),
        id: row.id,
        mode: row.kind,
        state: row.state,
        intent_id: row.intent_id,
        customer_ref,
        amount: row.amount,
        currency: row.currency,
        payment_method: row.payment_method_id,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

fn card_view(row: PaymentMethodRow) -> CardView {
    CardView {
        object: "card",
        id: row.id,
        customer: row.stripe_customer_id,
        brand: row.brand,
        last4: row.last4,
        exp_month: row.exp_month,
        exp_year: row.exp_year,
        fingerprint: row.fingerprint,
        status: row.status,
    }
}

/// Fetches `stripe_id` and applies it as observed at Stripe's time of answering; in the
/// connected account `account` (`Stripe-Account`) when given, else the platform's.
pub async fn resync(
    pool: &Pool,
    stripe: Option<&StripeGateway>,
    metrics: &Metrics,
    stripe_id: &str,
    account: Option<&AccountId>,
) -> Result<Resynced, OpsError> {
    let (path, operation) = endpoint(stripe_id)?;
    let stripe = stripe.ok_or(OpsError::NoStripeKey)?;
    let scope = account.map(|a| ("Stripe-Account", a.as_str()));
    let response = stripe
        .get_json_in(operation, &path, &[], scope)
        .await
        .map_err(|e| match e.error {
            ApiError::Permanent {
                status: Some(404), ..
            } => OpsError::NotFound(format!("Stripe has no object {stripe_id}")),
            error => OpsError::Stripe(error),
        })?;
    let object: serde_json::Value = serde_json::from_str(&response.body).map_err(|e| {
        OpsError::Stripe(ApiError::Permanent {
            status: None,
            code: None,
            message: format!("Stripe's answer is not JSON: {e}"),
        })
    })?;
    // Stripe's clock, so the observation is ordered against events by Stripe time.
    let observed_at = response.date.unwrap_or_else(now_secs);
    let in_account = account.map(|a| a.as_str().to_owned());
    let (observed, effects) = pool
        .run_pool(move |pool| {
            pool.write(|conn| -> Result<_, StoreError> {
                let mut effects = Effects::default();
                let observed = apply_fetched(
                    conn,
                    &object,
                    observed_at,
                    in_account.as_deref(),
                    now_secs(),
                    &mut effects,
                )?;
                let customer_ref = match &observed {
                    Fetched::Checkout(row) => match row.customer_id {
                        Some(id) => {
                            customers::find_customer(conn, id)?.and_then(|c| c.customer_ref)
                        }
                        None => None,
                    },
                    _ => None,
                };
                Ok(((observed, customer_ref), effects))
            })
        })
        .await?;
    for (to, outcome) in effects.transitions {
        metrics.transitions(to, outcome, 1);
    }
    match observed {
        (Fetched::Checkout(row), customer_ref) => {
            Ok(Resynced::Checkout(checkout_view(row, customer_ref)))
        }
        (Fetched::Card(row), _) => Ok(Resynced::Card(card_view(row))),
        (Fetched::Invalid(reason), _) => Err(OpsError::Stripe(ApiError::Permanent {
            status: None,
            code: None,
            message: format!("{stripe_id} cannot be applied: {reason}"),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_intents_and_payment_methods_with_plain_ids_are_fetched() {
        assert_eq!(endpoint("pi_123").unwrap().0, "/v1/payment_intents/pi_123");
        assert_eq!(endpoint("seti_1").unwrap().0, "/v1/setup_intents/seti_1");
        assert_eq!(endpoint("pm_1").unwrap().0, "/v1/payment_methods/pm_1");
        for bad in ["cus_1", "pi_1/../../v1/customers", "pi_1?x=1", ""] {
            assert_eq!(endpoint(bad).unwrap_err().field, "stripe_id", "{bad}");
        }
    }
}
