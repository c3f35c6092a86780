//! Thin wrapper over async-stripe 1.0 for the handful of Stripe calls payhook makes.
//!
//! Retries are deliberately NOT done here: every call goes out exactly once
//! (`RequestStrategy::Once` / `RequestStrategy::Idempotent(key)`), and the caller
//! retries `ApiError::Retryable` with its own backoff, reusing the same key so
//! Stripe deduplicates the mutation.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_core::customer::{CreateCustomer, UpdateCustomer, UpdateCustomerInvoiceSettings};
use stripe_payment::payment_method::{
    AttachPaymentMethod, DetachPaymentMethod, ListPaymentMethod, ListPaymentMethodType,
    RetrievePaymentMethod,
};
use stripe_shared::{ApiErrorsCode, PaymentMethod};

pub struct StripeApi {
    pub(super) client: Client,
    base_url: String,
}

// Hand-written so the secret can never leak through `{:?}`, whatever async-stripe's
// own Debug does in a future release.
impl fmt::Debug for StripeApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeApi")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// A payment method as payhook reads it back from Stripe.
pub struct PaymentMethodSummary {
    pub id: String,
    pub customer: Option<String>,
    pub kind: String,
    pub brand: Option<String>,
    pub last4: Option<String>,
    pub exp_month: Option<i32>,
    pub exp_year: Option<i32>,
    pub fingerprint: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Worth retrying with backoff: network errors, timeouts, HTTP 5xx, 429, Stripe
    /// `lock_timeout`, 409 idempotency conflicts in flight.
    #[error("retryable Stripe error (status {status:?}, code {code:?}): {message}")]
    Retryable {
        status: Option<u16>,
        code: Option<String>,
        message: String,
    },
    /// Will fail the same way again: 4xx other than above.
    #[error("permanent Stripe error (status {status:?}, code {code:?}): {message}")]
    Permanent {
        status: Option<u16>,
        code: Option<String>,
        message: String,
    },
}

impl ApiError {
    /// The HTTP status Stripe answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Retryable { status, .. } | Self::Permanent { status, .. } => *status,
        }
    }

    /// Stripe's error code (`card_declined`, `resource_missing`, …), if it gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Retryable { code, .. } | Self::Permanent { code, .. } => code.as_deref(),
        }
    }

    pub(super) fn local(message: impl Into<String>) -> Self {
        ApiError::make(false, None, None, message.into())
    }

    /// An error Stripe answered with, classified by the same rules as async-stripe's
    /// (for calls made without it, see [`super::rest`]).
    pub(super) fn answered(status: u16, code: Option<String>, message: String) -> Self {
        let retry = matches!(
            code.as_deref(),
            Some("lock_timeout" | "rate_limit" | "idempotency_key_in_use")
        ) || matches!(status, 409 | 424 | 429 | 500..=599);
        ApiError::make(retry, Some(status), code, message)
    }

    /// No answer (network, timeout): worth retrying.
    pub(super) fn unanswered(message: String) -> Self {
        ApiError::make(true, None, None, message)
    }

    fn make(retry: bool, status: Option<u16>, code: Option<String>, message: String) -> Self {
        let message = redact(&message);
        if retry {
            ApiError::Retryable {
                status,
                code,
                message,
            }
        } else {
            ApiError::Permanent {
                status,
                code,
                message,
            }
        }
    }
}

impl From<StripeError> for ApiError {
    fn from(err: StripeError) -> Self {
        let (retry, status, code, message) = match err {
            // A parsed Stripe error body; async-stripe keeps the HTTP status alongside.
            StripeError::Stripe(e, status) => {
                let mut message = format!(
                    "{}: {}",
                    e.type_.as_str(),
                    e.message.as_deref().unwrap_or("-")
                );
                if let Some(param) = &e.param {
                    message.push_str(&format!(" (param: {param})"));
                }
                // Stripe's documented transient set (also async-stripe's own retry rule):
                // 409 = idempotency key still in flight, 424 = failed upstream, 429 = rate
                // limited. The codes are matched too, in case they come under another status.
                // Everything else repeats: 400 invalid_request_error (resource_missing, PM
                // attached to another customer), 400 idempotency_error (key reused with other
                // params), 401/403 auth, 402 card_error.
                use ApiErrorsCode::{IdempotencyKeyInUse, LockTimeout, RateLimit};
                let retry = matches!(e.code, Some(LockTimeout | RateLimit | IdempotencyKeyInUse))
                    || matches!(status, 409 | 424 | 429 | 500..=599);
                (
                    retry,
                    Some(status),
                    e.code.map(|c| c.as_str().to_owned()),
                    message,
                )
            }
            // Connect refused/reset, DNS, TLS, body read failures. Request-building errors
            // also land here, but check_id/strategy() rule those out before sending.
            StripeError::ClientError(m) => (true, None, None, format!("transport: {m}")),
            // Our per-attempt REQUEST_TIMEOUT fired; with an idempotency key a resend is safe.
            StripeError::Timeout => (true, None, None, "timed out".to_owned()),
            // "error deserializing request data" is a 2xx body we cannot parse: a retry
            // replays the same idempotently-cached body, so permanent. Any other text is a
            // non-2xx body that was not Stripe JSON (status discarded by async-stripe);
            // Stripe always answers JSON, so that is a proxy/LB page, i.e. transient.
            StripeError::JSONDeserialize(m) => {
                let retry = !m.contains("deserializing request data");
                (retry, None, None, format!("unparseable response: {m}"))
            }
            // Only raised for bad client/override configuration, which never self-heals.
            StripeError::ConfigError(m) => (false, None, None, format!("config: {m}")),
        };
        ApiError::make(retry, status, code, message)
    }
}

/// Stripe masks keys in its own messages, but an intermediary or misbehaving fake might
/// echo one back; scrub anything key-shaped before it reaches logs.
pub(super) fn redact(message: &str) -> String {
    let keyish = |w: &str| {
        ["sk_live_", "sk_test_", "rk_live_", "rk_test_"]
            .iter()
            .any(|p| w.contains(p))
    };
    let words: Vec<&str> = message
        .split(' ')
        .map(|w| if keyish(w) { "[redacted]" } else { w })
        .collect();
    words.join(" ")
}

/// IDs are spliced into URL paths unescaped by async-stripe, so anything but
/// `[A-Za-z0-9_]` could rewrite the path or yield an http::Error that would look
/// like a (retryable) transport error.
pub(super) fn check_id(what: &str, id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty() && id.len() <= 255;
    if ok && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Ok(());
    }
    Err(ApiError::local(format!(
        "invalid {what}: expected a Stripe object id"
    )))
}

/// A key that is not a valid header value would fail inside hyper as a ClientError,
/// which we would otherwise retry forever.
pub(super) fn strategy(idempotency_key: &str) -> Result<RequestStrategy, ApiError> {
    if !idempotency_key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ApiError::local(
            "invalid idempotency key: must be printable ASCII",
        ));
    }
    let key = IdempotencyKey::new(idempotency_key)
        .map_err(|e| ApiError::local(format!("invalid idempotency key: {e}")))?;
    Ok(RequestStrategy::Idempotent(key))
}

/// Makes a request in the connected account `account` (`Stripe-Account`), when given; the
/// platform's otherwise. Its idempotency key is unchanged: Stripe scopes keys per account.
/// (A macro: async-stripe does not export the customizable request's type.)
macro_rules! in_account {
    ($request:expr, $account:expr) => {
        match $account {
            Some(account) => $request.account_id(stripe::AccountId::from(account)),
            None => $request,
        }
    };
}
pub(super) use in_account;

fn card_details(pm: PaymentMethod) -> PaymentMethodSummary {
    let card = pm.card.as_ref();
    PaymentMethodSummary {
        id: pm.id.as_str().to_owned(),
        customer: pm.customer.as_ref().map(|c| c.id().as_str().to_owned()),
        kind: pm.type_.as_str().to_owned(),
        brand: card.map(|c| c.brand.clone()),
        last4: card.map(|c| c.last4.clone()),
        exp_month: card.and_then(|c| i32::try_from(c.exp_month).ok()),
        exp_year: card.and_then(|c| i32::try_from(c.exp_year).ok()),
        fingerprint: card.and_then(|c| c.fingerprint.clone()),
        email: pm.billing_details.email,
    }
}

impl StripeApi {
    /// base_url e.g. "https://api.stripe.com" or "http://127.0.0.1:12111"; secret key sk_...;
    /// `timeout` bounds each request (tests use a short one).
    pub fn new(secret_key: &str, base_url: &str, timeout: Duration) -> Result<Self, ApiError> {
        if secret_key.trim().is_empty() || secret_key.trim() != secret_key {
            return Err(ApiError::local(
                "Stripe secret key is empty or has surrounding whitespace",
            ));
        }
        // async-stripe appends "v1/..." straight onto the base's Display form, so the
        // trailing slash is load-bearing ("http://host:1" would become "http://host:1v1/").
        let base_url = format!("{}/", base_url.trim_end_matches('/'));
        let client = ClientBuilder::new(secret_key)
            .url(base_url.clone())
            .request_strategy(RequestStrategy::Once)
            .timeout(timeout)
            .app_info("payhook", Some(env!("CARGO_PKG_VERSION").to_owned()), None)
            .build()
            // Builder errors name the offending setting, never the secret's value.
            .map_err(|e| ApiError::local(redact(&format!("invalid Stripe client config: {e}"))))?;
        Ok(StripeApi { client, base_url })
    }

    pub async fn create_customer(
        &self,
        account: Option<&str>,
        idempotency_key: &str,
        email: Option<&str>,
        customer_ref: Option<&str>,
    ) -> Result<String, ApiError> {
        let mut req = CreateCustomer::new();
        if let Some(email) = email {
            req = req.email(email);
        }
        if let Some(r) = customer_ref {
            req = req.metadata(HashMap::from([("customer_ref".to_owned(), r.to_owned())]));
        }
        let request = req.customize().request_strategy(strategy(idempotency_key)?);
        let customer = in_account!(request, account).send(&self.client).await?;
        log::debug!("stripe: created customer {}", customer.id);
        Ok(customer.id.as_str().to_owned())
    }

    pub async fn attach_payment_method(
        &self,
        account: Option<&str>,
        idempotency_key: &str,
        payment_method_id: &str,
        customer_id: &str,
    ) -> Result<PaymentMethodSummary, ApiError> {
        check_id("payment_method_id", payment_method_id)?;
        check_id("customer_id", customer_id)?;
        let request = AttachPaymentMethod::new(payment_method_id)
            .customer(customer_id)
            .customize()
            .request_strategy(strategy(idempotency_key)?);
        let pm = in_account!(request, account).send(&self.client).await?;
        log::debug!("stripe: attached {payment_method_id} to {customer_id}");
        Ok(card_details(pm))
    }

    pub async fn set_default_payment_method(
        &self,
        account: Option<&str>,
        idempotency_key: &str,
        customer_id: &str,
        payment_method_id: &str,
    ) -> Result<(), ApiError> {
        check_id("customer_id", customer_id)?;
        check_id("payment_method_id", payment_method_id)?;
        let mut settings = UpdateCustomerInvoiceSettings::new();
        settings.default_payment_method = Some(payment_method_id.to_owned());
        let request = UpdateCustomer::new(customer_id)
            .invoice_settings(settings)
            .customize()
            .request_strategy(strategy(idempotency_key)?);
        in_account!(request, account).send(&self.client).await?;
        log::debug!("stripe: default payment method of {customer_id} set to {payment_method_id}");
        Ok(())
    }

    pub async fn retrieve_payment_method(
        &self,
        account: Option<&str>,
        payment_method_id: &str,
    ) -> Result<PaymentMethodSummary, ApiError> {
        check_id("payment_method_id", payment_method_id)?;
        let request = RetrievePaymentMethod::new(payment_method_id)
            .customize()
            .request_strategy(RequestStrategy::Once);
        let pm = in_account!(request, account).send(&self.client).await?;
        Ok(card_details(pm))
    }

    pub async fn detach_payment_method(
        &self,
        account: Option<&str>,
        idempotency_key: &str,
        payment_method_id: &str,
    ) -> Result<(), ApiError> {
        check_id("payment_method_id", payment_method_id)?;
        let request = DetachPaymentMethod::new(payment_method_id)
            .customize()
            .request_strategy(strategy(idempotency_key)?);
        in_account!(request, account).send(&self.client).await?;
        log::debug!("stripe: detached {payment_method_id}");
        Ok(())
    }

    /// First page only (up to 100): customers with more saved cards than that are not a
    /// case payhook needs to reconcile.
    pub async fn list_card_payment_methods(
        &self,
        account: Option<&str>,
        customer_id: &str,
    ) -> Result<Vec<PaymentMethodSummary>, ApiError> {
        check_id("customer_id", customer_id)?;
        let request = ListPaymentMethod::new()
            .customer(customer_id)
            .type_(ListPaymentMethodType::Card)
            .limit(100)
            .customize()
            .request_strategy(RequestStrategy::Once);
        let list = in_account!(request, account).send(&self.client).await?;
        Ok(list.data.into_iter().map(card_details).collect())
    }
}
