//! The way out: work written in the same transaction as the state change that asks for it,
//! performed later by the runner, with idempotency keys derived from payhook's own ids.
//!
//! - [`runner`]: claims, leases, runs steps, records attempts, retries; knows no kind.
//! - [`save_card`]: attach a saved card to its customer at Stripe and make it the default.
//! - [`notify`]: notifications to the app (Standard Webhooks).
//! - [`thin_event`]: fetch a thin event's object and apply it as observed state.

pub mod notify;
pub mod runner;
pub mod save_card;
pub mod thin_event;

use runner::{Failure, StepContext};

use crate::stripe::client::ApiError;

/// A Stripe error as a step failure: Stripe's own class (retryable or permanent), its code,
/// or the HTTP status when it gave none; the status is recorded with the attempt.
pub(crate) fn stripe_failure(ctx: &StepContext<'_>, error: ApiError) -> Failure {
    if let Some(status) = error.status() {
        ctx.observed_status(status);
    }
    let code = error
        .code()
        .map(str::to_owned)
        .unwrap_or_else(|| match error.status() {
            Some(s) => format!("http_{s}"),
            None => "stripe_unreachable".to_owned(),
        });
    match error {
        ApiError::Retryable { message, .. } => Failure::retryable(code, message),
        ApiError::Permanent { message, .. } => Failure::permanent(code, message),
    }
}
