//! Stripe GETs made with reqwest rather than async-stripe, for the two things async-stripe
//! does not give back: response headers, and the object as raw JSON.
//!
//! - The Events API (reconciliation): a 429's `Retry-After` says how long to wait, and
//!   async-stripe drops the headers of error responses. Each event is kept as the exact JSON
//!   Stripe sent, to be stored like a delivered one.
//! - Objects fetched for resync: read through the same payload views as events, and dated by
//!   Stripe's own clock (the `Date` header), so an observed state is ordered against events
//!   by Stripe time, not by this host's clock.
//!
//! Calls go out through [`super::gateway::StripeGateway::get_json`], behind the process's
//! token bucket, like every other Stripe call. Errors are classified by the same rules as
//! async-stripe's ([`ApiError::answered`]).

use std::time::Duration;

use serde::Deserialize;

use super::client::ApiError;
use crate::config::ApiKey;

/// A GET client for Stripe's API.
pub struct RestClient {
    http: reqwest::Client,
    /// Without a trailing slash.
    base: String,
    key: ApiKey,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// A 2xx answer.
#[derive(Debug, Clone)]
pub struct RestResponse {
    pub body: String,
    /// Stripe's clock when it answered (the `Date` header), unix seconds.
    pub date: Option<i64>,
}

/// A failed call: the error, and how long Stripe asked us to wait (`Retry-After`).
#[derive(Debug)]
pub struct RestError {
    pub error: ApiError,
    pub retry_after: Option<Duration>,
}

impl From<ApiError> for RestError {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl RestClient {
    pub fn new(key: &ApiKey, base: &str, timeout: Duration) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("payhook/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::local(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key: key.clone(),
        })
    }

    /// `GET {base}{path}?{query}`; `path` starts with `/v1/`.
    pub async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<RestResponse, RestError> {
        self.get_in(path, query, None).await
    }

    /// As [`RestClient::get`], in the connected account `scope` names, if any: its header
    /// (`Stripe-Account` for v1 calls, `Stripe-Context` for v2 ones) and the account id.
    pub async fn get_in(
        &self,
        path: &str,
        query: &[(&str, String)],
        scope: Option<(&'static str, &str)>,
    ) -> Result<RestResponse, RestError> {
        let mut request = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.key.expose())
            .query(query);
        if let Some((header, account)) = scope {
            request = request.header(header, account);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ApiError::unanswered(format!("transport: {}", e.without_url())))?;
        let status = response.status().as_u16();
        let headers = response.headers();
        let date = headers
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64);
        let retry_after = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = response.text().await.map_err(|e| {
            ApiError::unanswered(format!("reading the answer: {}", e.without_url()))
        })?;
        if (200..300).contains(&status) {
            return Ok(RestResponse { body, date });
        }
        let (code, message) = match serde_json::from_str::<ErrorBody>(&body) {
            Ok(ErrorBody { error }) => (
                error.code,
                format!(
                    "{}: {}",
                    error.kind.as_deref().unwrap_or("error"),
                    error.message.as_deref().unwrap_or("-")
                ),
            ),
            Err(_) => (None, format!("HTTP {status} without a Stripe error body")),
        };
        Err(RestError {
            error: ApiError::answered(status, code, message),
            retry_after,
        })
    }
}

/// `Retry-After` as seconds (what Stripe sends) or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
