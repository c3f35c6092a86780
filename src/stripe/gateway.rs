//! Every Stripe call of the process goes through one [`StripeGateway`]: the API client behind
//! the process's token bucket.
//!
//! Stripe's rate limits are per account and shared with everything else that uses the key,
//! so a backlog must drain at a chosen pace, not in a burst of 429s: each call takes a token
//! first, and a 429 empties the bucket so the whole process slows down, not only the caller
//! that got it. Every call is counted in `payhook_stripe_requests_total` by operation (a
//! fixed name given by the caller) and outcome.

use std::future::Future;
use std::sync::Arc;

use log::debug;

use super::client::{ApiError, StripeApi};
use super::rate_limit::RateLimiter;
use super::rest::{RestClient, RestError, RestResponse};
use crate::config::StripeAccess;
use crate::metrics::{Metrics, StripeOutcome};

/// What the gateway needs to know of a failed call: Stripe's HTTP status (a 429 slows the
/// whole process down) and whether trying again may help (for the metrics).
pub trait CallError: std::fmt::Display {
    fn http_status(&self) -> Option<u16>;
    fn retryable(&self) -> bool;
}

impl CallError for ApiError {
    fn http_status(&self) -> Option<u16> {
        self.status()
    }

    fn retryable(&self) -> bool {
        matches!(self, ApiError::Retryable { .. })
    }
}

impl CallError for super::intents::IntentCallError {
    fn http_status(&self) -> Option<u16> {
        match self {
            Self::Declined { .. } => Some(402),
            Self::Api { error, .. } => error.status(),
        }
    }

    fn retryable(&self) -> bool {
        match self {
            Self::Declined { .. } => false,
            Self::Api { error, .. } => error.retryable(),
        }
    }
}

pub struct StripeGateway {
    api: StripeApi,
    limiter: Arc<RateLimiter>,
    /// GETs that need headers or raw JSON (Events API, resync); see [`super::rest`].
    rest: Option<RestClient>,
    metrics: Option<Arc<Metrics>>,
}

impl StripeGateway {
    pub fn new(api: StripeApi, limiter: Arc<RateLimiter>) -> Self {
        Self {
            api,
            limiter,
            rest: None,
            metrics: None,
        }
    }

    /// The gateway of a process with `access`: the API client, the REST client, a token
    /// bucket of its own, counted in `metrics`. One per process: its bucket is the budget.
    pub fn connect(access: &StripeAccess, metrics: Arc<Metrics>) -> Result<Self, ApiError> {
        let timeout = access.actions.request_timeout;
        let api = StripeApi::new(access.key.expose(), &access.api_base, timeout)?;
        let rest = RestClient::new(&access.key, &access.api_base, timeout)?;
        let limiter = Arc::new(RateLimiter::new(
            access.actions.max_rps,
            access.actions.burst,
        ));
        Ok(Self::new(api, limiter)
            .with_rest(rest)
            .with_metrics(metrics))
    }

    /// Enables [`StripeGateway::get_json`].
    pub fn with_rest(mut self, rest: RestClient) -> Self {
        self.rest = Some(rest);
        self
    }

    /// Counts every call in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Takes a token, then makes the call `f` builds; `what` names the operation in logs and
    /// metrics (a fixed word: it is a label value).
    pub async fn call<'a, T, E, F>(
        &'a self,
        what: &'static str,
        f: impl FnOnce(&'a StripeApi) -> F,
    ) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>> + 'a,
        E: CallError,
    {
        self.limiter.acquire().await;
        let result = f(&self.api).await;
        self.record(what, result.as_ref().err());
        result
    }

    /// Takes a token, then GETs `path` (`/v1/…`) with `query`; `operation` as in
    /// [`StripeGateway::call`]. The error keeps Stripe's `Retry-After`.
    pub async fn get_json(
        &self,
        operation: &'static str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<RestResponse, RestError> {
        self.get_json_in(operation, path, query, None).await
    }

    /// As [`StripeGateway::get_json`], in a connected account: `scope` is the header that
    /// names it (`Stripe-Account`, or `Stripe-Context` for v2 calls) and its id.
    pub async fn get_json_in(
        &self,
        operation: &'static str,
        path: &str,
        query: &[(&str, String)],
        scope: Option<(&'static str, &str)>,
    ) -> Result<RestResponse, RestError> {
        let Some(rest) = &self.rest else {
            return Err(ApiError::local("the Stripe REST client is not configured").into());
        };
        self.limiter.acquire().await;
        let result = rest.get_in(path, query, scope).await;
        self.record(operation, result.as_ref().err().map(|e| &e.error));
        result
    }

    fn record(&self, what: &'static str, error: Option<&impl CallError>) {
        let outcome = match error {
            None => StripeOutcome::Ok,
            Some(e) => {
                if e.http_status() == Some(429) {
                    self.limiter.back_off();
                }
                debug!("stripe {what}: {e}");
                if e.retryable() {
                    StripeOutcome::Retryable
                } else {
                    StripeOutcome::Permanent
                }
            }
        };
        if let Some(metrics) = &self.metrics {
            metrics.stripe_request(what, outcome);
        }
    }
}
