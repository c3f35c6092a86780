//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: the database does).

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let pool = state.pool.clone();
    match web::block(move || pool.ping()).await {
        Ok(Ok(())) => {
            HttpResponse::Ok().json(json!({ "status": "ready", "database": state.pool.backend() }))
        }
        Ok(Err(e)) => {
            log::warn!("readiness check failed: {e}");
            HttpResponse::ServiceUnavailable()
                .json(json!({ "status": "unavailable", "error": "database_unreachable" }))
        }
        Err(_) => HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "unavailable", "error": "internal" })),
    }
}
