//! An intent's state as observed (fetched from Stripe), rather than announced by an event:
//! which checkout state each Stripe status stands for (pure).
//!
//! Stripe's statuses (PaymentIntent: `requires_payment_method`, `requires_confirmation`,
//! `requires_action`, `processing`, `requires_capture`, `canceled`, `succeeded`; SetupIntent:
//! the same but `requires_capture`). An observation carries a time, and goes through the
//! same machine ([`super::checkout::decide`]) as events: it never moves a checkout past a
//! state set by an event newer than the observation, and needs no event to create one.

use super::checkout::{is_authentication_required, CheckoutState};
use crate::text_enum::text_enum;

text_enum! {
    /// A PaymentIntent's or SetupIntent's `status`.
    pub enum IntentStatus {
        RequiresPaymentMethod = "requires_payment_method",
        RequiresConfirmation = "requires_confirmation",
        RequiresAction = "requires_action",
        Processing = "processing",
        /// PaymentIntents with `capture_method=manual`: authorised, not captured.
        RequiresCapture = "requires_capture",
        Canceled = "canceled",
        Succeeded = "succeeded",
    }
}

/// The intent's last error (`last_payment_error` / `last_setup_error`), when it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastError<'a> {
    pub code: Option<&'a str>,
    pub decline_code: Option<&'a str>,
}

/// The checkout state an observed intent is in.
///
/// - `requires_payment_method` after an error is a failed attempt (`failed`), or a customer to
///   bring back on-session (`requires_action`) when the error asks for authentication, as the
///   `payment_failed` event of that error would say; without an error nothing has been tried
///   yet (`pending`).
/// - `requires_confirmation`: not tried yet (`pending`).
/// - `requires_capture`: money is reserved, not moved; Stripe will report the capture
///   (`processing`, which the sweeper leaves alone).
pub fn observed_state(status: IntentStatus, last_error: Option<LastError<'_>>) -> CheckoutState {
    match status {
        IntentStatus::RequiresPaymentMethod => match last_error {
            Some(e) if is_authentication_required(e.code, e.decline_code) => {
                CheckoutState::RequiresAction
            }
            Some(_) => CheckoutState::Failed,
            None => CheckoutState::Pending,
        },
        IntentStatus::RequiresConfirmation => CheckoutState::Pending,
        IntentStatus::RequiresAction => CheckoutState::RequiresAction,
        IntentStatus::Processing | IntentStatus::RequiresCapture => CheckoutState::Processing,
        IntentStatus::Canceled => CheckoutState::Canceled,
        IntentStatus::Succeeded => CheckoutState::Succeeded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CheckoutState as S;
    use IntentStatus as I;

    const DECLINED: LastError<'static> = LastError {
        code: Some("card_declined"),
        decline_code: Some("insufficient_funds"),
    };
    const AUTH: LastError<'static> = LastError {
        code: Some("card_declined"),
        decline_code: Some("authentication_required"),
    };

    #[test]
    fn every_status_maps_to_the_state_its_event_would_set() {
        let table = [
            (I::RequiresPaymentMethod, None, S::Pending),
            (I::RequiresPaymentMethod, Some(DECLINED), S::Failed),
            (I::RequiresPaymentMethod, Some(AUTH), S::RequiresAction),
            (I::RequiresConfirmation, None, S::Pending),
            (I::RequiresAction, None, S::RequiresAction),
            (I::Processing, None, S::Processing),
            (I::RequiresCapture, None, S::Processing),
            (I::Canceled, Some(DECLINED), S::Canceled),
            (I::Succeeded, Some(DECLINED), S::Succeeded),
        ];
        for (status, error, state) in table {
            assert_eq!(observed_state(status, error), state, "{status} {error:?}");
        }
        assert_eq!(I::ALL.len(), 7, "every Stripe intent status is mapped");
        assert!("requires_source".parse::<IntentStatus>().is_err());
    }

    #[test]
    fn an_authentication_error_in_the_code_field_counts_too() {
        let error = LastError {
            code: Some("authentication_required"),
            decline_code: None,
        };
        assert_eq!(
            observed_state(I::RequiresPaymentMethod, Some(error)),
            S::RequiresAction
        );
    }
}
