//! The app's side: what the app API (`/api/v1`, [`crate::http`]) does, below HTTP.
//!
//! - [`object`]: the checkout object as the app sees it (API answers and notifications).
//! - [`checkouts`]: create (setup or payment), resume, cancel, read, list; customers.
//! - [`charges`]: off-session charges of a customer's default card.
//! - [`notifications`]: which changes are notified, queued in the change's transaction.
//!
//! # Nothing half-made
//! Every create first writes the checkout's row ([`crate::store::app_checkouts`]) with its
//! id, then calls Stripe with the key `checkout:{id}:intent`, then records the intent. A Stripe
//! outage (503 to the app), a lost answer or a crash between the call and its record leaves a
//! row without an intent; the app's retry with the same `Idempotency-Key` finds the row and
//! sends the same key, and Stripe answers with the intent it made the first time. A webhook of
//! that intent, meanwhile, finds the checkout through its metadata `checkout_id`.

pub mod charges;
pub mod checkouts;
pub mod notifications;
pub mod object;

use std::sync::Arc;

use crate::domain::app_request::InvalidRequest;
use crate::store::{Pool, StoreError};
use crate::stripe::client::ApiError;
use crate::stripe::gateway::StripeGateway;

/// What the app API works with.
pub struct AppApi {
    pool: Pool,
    /// `None` without `STRIPE_SECRET_KEY`: reads work, creates answer 503.
    stripe: Option<Arc<StripeGateway>>,
}

impl AppApi {
    pub fn new(pool: Pool, stripe: Option<Arc<StripeGateway>>) -> Self {
        Self { pool, stripe }
    }

    fn stripe(&self) -> Result<&StripeGateway, AppError> {
        self.stripe
            .as_deref()
            .ok_or_else(|| AppError::StripeUnavailable {
                message: "payhook has no Stripe API key (STRIPE_SECRET_KEY)".into(),
            })
    }
}

/// Why a request did not succeed; [`crate::http`] maps each to its status and code.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Invalid(#[from] InvalidRequest),
    #[error("no such {0}")]
    NotFound(&'static str),
    /// A conflict with the checkout's or the customer's state (`409`).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("this request needs an Idempotency-Key header")]
    IdempotencyKeyRequired,
    /// Stripe refused (`502`), with its code and decline code.
    #[error("Stripe refused: {message}")]
    Stripe {
        code: Option<String>,
        decline_code: Option<String>,
        message: String,
    },
    /// Stripe could not be reached or asked us to wait (`503`); retrying the same request
    /// (same `Idempotency-Key`) resumes it.
    #[error("Stripe is unavailable: {message}")]
    StripeUnavailable { message: String },
    #[error("storage unavailable: {0}")]
    Storage(#[from] StoreError),
}

impl From<ApiError> for AppError {
    fn from(error: ApiError) -> Self {
        stripe_error(error, None)
    }
}

/// A Stripe error as the app sees it: retryable → 503, permanent → 502.
pub(crate) fn stripe_error(error: ApiError, decline_code: Option<String>) -> AppError {
    match error {
        ApiError::Retryable { message, .. } => AppError::StripeUnavailable { message },
        ApiError::Permanent { code, message, .. } => AppError::Stripe {
            code,
            decline_code,
            message,
        },
    }
}
