//! Maps each way a delivery can fail to a status and a JSON body naming the kind.
//!
//! Policy: the caller's fault (signature, malformed event, size) is 4xx, so Stripe shows the
//! problem and does not hammer us; our fault (database) is 5xx, so Stripe retries. Bodies
//! name the kind and never echo a secret or an expected signature.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::config::WrongEndpointKind;
use crate::stripe::envelope::EnvelopeError;
use crate::stripe::signature::SignatureError;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("the body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("reading the body failed")]
    BodyRead,
    #[error("the body did not arrive in time")]
    BodyTimeout,
    #[error("the event could not be stored; retry later")]
    Unavailable,
    #[error("no webhook endpoint is configured with this name")]
    UnknownEndpoint,
    #[error(transparent)]
    WrongEndpointKind(#[from] WrongEndpointKind),
}

impl WebhookError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Signature(e) => e.kind(),
            Self::Envelope(e) => e.kind(),
            Self::TooLarge { .. } => "payload_too_large",
            Self::BodyRead => "body_read_failed",
            Self::BodyTimeout => "request_timeout",
            Self::Unavailable => "storage_unavailable",
            Self::UnknownEndpoint => "not_found",
            Self::WrongEndpointKind(_) => "wrong_endpoint_kind",
        }
    }
}

impl ResponseError for WebhookError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Signature(_)
            | Self::Envelope(_)
            | Self::BodyRead
            | Self::WrongEndpointKind(_) => StatusCode::BAD_REQUEST,
            Self::UnknownEndpoint => StatusCode::NOT_FOUND,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, Self::Unavailable) {
            response.insert_header(("Retry-After", "5"));
        }
        response.json(json!({ "error": self.kind(), "message": self.to_string() }))
    }
}
