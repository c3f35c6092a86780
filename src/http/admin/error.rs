//! The admin API's answers to what went wrong, in the contract's shape:
//! `{"error": "<code>", "message": "<human text>"}`, never a secret, never a stack.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use log::warn;
use serde_json::json;

use crate::ops::OpsError;
use crate::stripe::client::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// `ADMIN_TOKEN` is unset: the admin API does not exist.
    #[error("not found")]
    Disabled,
    #[error("a valid admin bearer token is required (Authorization: Bearer <ADMIN_TOKEN>)")]
    Unauthorized,
    #[error("no such admin endpoint")]
    NoRoute,
    #[error(transparent)]
    Ops(#[from] OpsError),
}

impl From<crate::ops::InvalidRequest> for AdminError {
    fn from(e: crate::ops::InvalidRequest) -> Self {
        Self::Ops(e.into())
    }
}

impl From<crate::store::StoreError> for AdminError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Ops(e.into())
    }
}

impl AdminError {
    fn code(&self) -> &'static str {
        match self {
            Self::Disabled | Self::NoRoute => "not_found",
            Self::Unauthorized => "unauthorized",
            Self::Ops(e) => match e {
                OpsError::Invalid(_) => "invalid_request",
                OpsError::NotFound(_) => "not_found",
                OpsError::Conflict { code, .. } => code,
                OpsError::Store(_) => "storage_unavailable",
                OpsError::Stripe(ApiError::Retryable { .. }) => "stripe_unavailable",
                OpsError::Stripe(ApiError::Permanent { .. }) => "stripe_error",
                OpsError::NoStripeKey => "stripe_not_configured",
            },
        }
    }
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Disabled | Self::NoRoute => StatusCode::NOT_FOUND,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Ops(e) => match e {
                OpsError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                OpsError::NotFound(_) => StatusCode::NOT_FOUND,
                OpsError::Conflict { .. } | OpsError::NoStripeKey => StatusCode::CONFLICT,
                OpsError::Store(_) | OpsError::Stripe(ApiError::Retryable { .. }) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                OpsError::Stripe(ApiError::Permanent { .. }) => StatusCode::BAD_GATEWAY,
            },
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let mut response = HttpResponse::build(status);
        let mut body = json!({ "error": self.code(), "message": self.to_string() });
        match self {
            Self::Ops(OpsError::Store(e)) => {
                warn!("admin API: storage unavailable: {e}");
                // The database's own words may name hosts or users: the log has them.
                body["message"] = json!("the database is unavailable; try again later");
            }
            Self::Ops(OpsError::Stripe(e)) => {
                if let Some(code) = e.code() {
                    body["code"] = json!(code);
                }
                if let Some(status) = e.status() {
                    body["stripe_status"] = json!(status);
                }
            }
            _ => {}
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header(("Retry-After", "5"));
        }
        response.json(body)
    }
}
