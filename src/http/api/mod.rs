//! The app API, `/api/v1` (API.md section 1): thin handlers over [`crate::app`].
//!
//! Every route needs `Authorization: Bearer <API_TOKEN>` (any of the configured tokens, so
//! they can be rotated), compared in constant time. With no token configured the routes
//! answer `404`, as if they did not exist. Errors are `{"error", "message"}` ([`error`]).

mod error;
mod handlers;

use std::sync::Arc;

use actix_web::{web, HttpRequest};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use error::ApiFailure;

use crate::app::AppApi;
use crate::config::ApiToken;

/// What the app API's handlers share.
pub struct ApiState {
    tokens: Vec<ApiToken>,
    pub app: Arc<AppApi>,
}

impl ApiState {
    pub fn new(tokens: Vec<ApiToken>, app: Arc<AppApi>) -> Self {
        Self { tokens, app }
    }

    /// Lets the request in if it names one of the tokens; `404` when the API is off.
    fn authorize(&self, req: &HttpRequest) -> Result<(), ApiFailure> {
        if self.tokens.is_empty() {
            return Err(ApiFailure::not_found());
        }
        let given = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(ApiFailure::unauthorized)?;
        // Hashes first, so the comparison takes the same time whatever the lengths; every
        // token is compared, so the time does not tell which one matched either.
        let given = Sha256::digest(given.as_bytes());
        let matched = self
            .tokens
            .iter()
            .fold(subtle::Choice::from(0), |acc, token| {
                acc | Sha256::digest(token.expose().as_bytes()).ct_eq(&given)
            });
        if bool::from(matched) {
            Ok(())
        } else {
            Err(ApiFailure::unauthorized())
        }
    }
}

/// The `/api/v1` routes; anything else under it is a `404 not_found`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .route("/checkouts", web::post().to(handlers::create_checkout))
            .route("/checkouts", web::get().to(handlers::list_checkouts))
            .route("/checkouts/{id}", web::get().to(handlers::get_checkout))
            .route(
                "/checkouts/{id}/cancel",
                web::post().to(handlers::cancel_checkout),
            )
            .route(
                "/customers/{customer_ref}",
                web::get().to(handlers::get_customer),
            )
            .route(
                "/customers/{customer_ref}/charges",
                web::post().to(handlers::charge),
            )
            .default_service(web::to(handlers::not_found)),
    );
}
