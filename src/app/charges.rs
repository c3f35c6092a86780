//! Off-session charges of a customer's default card (`POST /api/v1/customers/{ref}/charges`).
//!
//! Made synchronously in the request, with the same crash-safety as any checkout (the row
//! first, then Stripe with `checkout:{id}:intent`, then the record): the app gets the outcome
//! in the answer, which is what it needs to decide at once (mail the customer, retry later),
//! and a queued charge would only move the same wait into a notification. A lost answer or a
//! crash is resumed by the app's retry with the same `Idempotency-Key` (required here), and
//! Stripe replays the first result, decline included: never a second charge.
//!
//! The outcome is applied as an observed state (see [`crate::apply::observed`]): Stripe's
//! status, or for a 402 the decline, with the intent's `created` as its time.

use serde_json::json;

use super::checkouts::{account_column, new_checkout_id, Created};
use super::{AppApi, AppError};
use crate::domain::app_request::{check_customer_ref, parse_charge, request_fingerprint};
use crate::domain::checkout::{is_authentication_required, CheckoutKind, CheckoutState};
use crate::store::app_checkouts::AppCheckoutRow;
use crate::store::customers as customer_store;
use crate::store::now_secs;
use crate::stripe::ids::AccountId;
use crate::stripe::intents::{IntentSnapshot, StripeFault};

impl AppApi {
    /// Charges `customer_ref`'s default card off-session, in `account` (`None`: the
    /// platform; the customer of that `customer_ref` in that account, and the
    /// `Idempotency-Key` among that account's requests); `201` checkout whatever the outcome.
    pub async fn charge(
        &self,
        customer_ref: &str,
        body: &[u8],
        idempotency_key: Option<String>,
        account: Option<&AccountId>,
    ) -> Result<Created, AppError> {
        let key = idempotency_key.ok_or(AppError::IdempotencyKeyRequired)?;
        check_customer_ref("customer_ref", customer_ref)
            .map_err(|_| AppError::NotFound("customer"))?;
        let request = parse_charge(body)?;
        let route = format!("POST /api/v1/customers/{customer_ref}/charges");
        let hash = request_fingerprint(&route, &request);
        let customer_ref = customer_ref.to_owned();
        let in_account = account.map(|a| a.as_str().to_owned());
        let customer = {
            let (r, in_account) = (customer_ref.clone(), in_account.clone());
            self.pool
                .run(move |conn| {
                    customer_store::find_customer_by_ref(conn, in_account.as_deref(), &r)
                })
                .await?
        };
        let now = now_secs();
        let new = AppCheckoutRow {
            id: new_checkout_id(),
            kind: CheckoutKind::Payment,
            customer_id: customer.as_ref().map(|c| c.id),
            customer_ref: Some(customer_ref),
            email: None,
            amount: Some(request.amount),
            currency: Some(request.currency.clone()),
            save_card: false,
            off_session: true,
            description: request.description.clone(),
            metadata: (!request.metadata.is_empty()).then(|| json!(request.metadata).to_string()),
            payment_method_id: customer
                .as_ref()
                .and_then(|c| c.default_payment_method_id.clone()),
            idempotency_key: Some(key),
            request_hash: hash,
            intent_id: None,
            client_secret: None,
            created_at: now,
            updated_at: now,
            account: account_column(account),
        };
        // A retry of an earlier charge goes on with it, whatever the customer looks like now.
        let earlier = {
            let k = new.idempotency_key.clone().unwrap_or_default();
            self.pool
                .run(move |conn| {
                    crate::store::app_checkouts::find_app_checkout_by_key(
                        conn,
                        in_account.as_deref(),
                        &k,
                    )
                })
                .await?
        };
        if earlier.is_none() {
            let customer = customer.ok_or(AppError::NotFound("customer"))?;
            if customer.default_payment_method_id.is_none() || customer.stripe_customer_id.is_none()
            {
                return Err(AppError::Conflict {
                    code: "no_default_payment_method",
                    message: "the customer has no saved default card".into(),
                });
            }
        }
        let (row, existed) = self.begin(new).await?;
        self.complete(row, existed, account).await
    }
}

/// The checkout state an off-session charge's answer stands for (API.md's table), and the
/// error it keeps: a 402 decline (`fault`) is `requires_action` when it asks for
/// authentication, else `failed`.
pub fn outcome(
    snapshot: &IntentSnapshot,
    fault: Option<&StripeFault>,
) -> (CheckoutState, Option<StripeFault>) {
    let error = fault.cloned().or_else(|| snapshot.last_error.clone());
    let declined = |e: &StripeFault| {
        if is_authentication_required(e.code.as_deref(), e.decline_code.as_deref()) {
            CheckoutState::RequiresAction
        } else {
            CheckoutState::Failed
        }
    };
    let state = match (snapshot.status.as_str(), &error) {
        ("succeeded", _) => CheckoutState::Succeeded,
        ("processing", _) => CheckoutState::Processing,
        ("requires_action", _) => CheckoutState::RequiresAction,
        ("canceled", _) => CheckoutState::Canceled,
        (_, Some(e)) => declined(e),
        _ => CheckoutState::Pending,
    };
    let keep_error = matches!(state, CheckoutState::Failed | CheckoutState::RequiresAction);
    (state, error.filter(|_| keep_error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(status: &str) -> IntentSnapshot {
        IntentSnapshot {
            id: "pi_1".into(),
            created: 1,
            status: status.into(),
            client_secret: None,
            payment_method: None,
            canceled_at: None,
            last_error: None,
        }
    }

    fn fault(code: &str, decline: &str) -> StripeFault {
        StripeFault {
            code: Some(code.into()),
            decline_code: Some(decline.into()),
            message: Some("declined".into()),
        }
    }

    #[test]
    fn the_contracts_outcome_table() {
        assert_eq!(
            outcome(&snapshot("succeeded"), None).0,
            CheckoutState::Succeeded
        );
        assert_eq!(
            outcome(&snapshot("processing"), None).0,
            CheckoutState::Processing
        );
        let (state, error) = outcome(
            &snapshot("requires_payment_method"),
            Some(&fault("authentication_required", "authentication_required")),
        );
        assert_eq!(state, CheckoutState::RequiresAction);
        assert_eq!(
            error.unwrap().code.as_deref(),
            Some("authentication_required")
        );
        let (state, error) = outcome(
            &snapshot("requires_payment_method"),
            Some(&fault("card_declined", "insufficient_funds")),
        );
        assert_eq!(state, CheckoutState::Failed);
        assert_eq!(
            error.unwrap().decline_code.as_deref(),
            Some("insufficient_funds")
        );
        assert_eq!(outcome(&snapshot("succeeded"), None).1, None);
    }
}
