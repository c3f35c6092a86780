//! The app API's errors as HTTP: `{"error": "<code>", "message": "<human text>"}`, plus
//! Stripe's `code`/`decline_code` for `stripe_error`, `Retry-After` on `503`.
//!
//! Policy: the app's fault is 4xx with the field or the conflict named; Stripe's refusal is
//! 502 with what Stripe said; an outage (Stripe's or the database's) is 503 with
//! `Retry-After`, and retrying the same request resumes it. No message ever carries a secret:
//! [`AppError`] messages are built from codes and ids, and Stripe's own messages are scrubbed
//! of key-shaped words where they are read.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::app::AppError;

/// An error answer.
#[derive(Debug)]
pub struct ApiFailure {
    status: StatusCode,
    code: &'static str,
    message: String,
    stripe: Option<(Option<String>, Option<String>)>,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ApiFailure {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            stripe: None,
        }
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <API_TOKEN>",
        )
    }

    /// `422 invalid_request` naming `field`.
    pub fn invalid(field: &str, message: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            format!("{field}: {message}"),
        )
    }
}

impl From<AppError> for ApiFailure {
    fn from(e: AppError) -> Self {
        let message = e.to_string();
        match e {
            AppError::Invalid(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
            }
            AppError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            AppError::Conflict { code, .. } => Self::new(StatusCode::CONFLICT, code, message),
            AppError::IdempotencyKeyRequired => {
                Self::new(StatusCode::BAD_REQUEST, "idempotency_key_required", message)
            }
            AppError::Stripe {
                code, decline_code, ..
            } => Self {
                stripe: Some((code, decline_code)),
                ..Self::new(StatusCode::BAD_GATEWAY, "stripe_error", message)
            },
            AppError::StripeUnavailable { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "stripe_unavailable",
                message,
            ),
            AppError::Storage(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "the database is unavailable; retry later",
            ),
        }
    }
}

impl ResponseError for ApiFailure {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header(("Retry-After", "5"));
        }
        let mut body = json!({ "error": self.code, "message": self.message });
        if let Some((code, decline_code)) = &self.stripe {
            body["code"] = json!(code);
            body["decline_code"] = json!(decline_code);
        }
        response.json(body)
    }
}
