//! Every Stripe call of the process goes through one [`StripeGateway`]: the API client behind
//! the process's token bucket.
//!
//! Stripe's rate limits are per account and shared with everything else that uses the key,
//! so a backlog must drain at a chosen pace, not in a burst of 429s: each call takes a token
//! first, and a 429 empties the bucket so the whole process slows down, not only the caller
//! that got it.

use std::future::Future;
use std::sync::Arc;

use log::debug;

use super::client::{ApiError, StripeApi};
use super::rate_limit::RateLimiter;

/// What the gateway needs to know of a failed call: Stripe's HTTP status (a 429 slows the
/// whole process down).
pub trait CallError: std::fmt::Display {
    fn http_status(&self) -> Option<u16>;
}

impl CallError for ApiError {
    fn http_status(&self) -> Option<u16> {
        self.status()
    }
}

impl CallError for super::intents::IntentCallError {
    fn http_status(&self) -> Option<u16> {
        match self {
            Self::Declined { .. } => Some(402),
            Self::Api { error, .. } => error.status(),
        }
    }
}

pub struct StripeGateway {
    api: StripeApi,
    limiter: Arc<RateLimiter>,
}

impl StripeGateway {
    pub fn new(api: StripeApi, limiter: Arc<RateLimiter>) -> Self {
        Self { api, limiter }
    }

    /// Takes a token, then makes the call `f` builds; `what` names it in logs.
    pub async fn call<'a, T, E, F>(
        &'a self,
        what: &str,
        f: impl FnOnce(&'a StripeApi) -> F,
    ) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>> + 'a,
        E: CallError,
    {
        self.limiter.acquire().await;
        let result = f(&self.api).await;
        if let Err(e) = &result {
            if e.http_status() == Some(429) {
                self.limiter.back_off();
            }
            debug!("stripe {what}: {e}");
        }
        result
    }
}
