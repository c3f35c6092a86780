//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: it can take
//! deliveries: no background task has died, storage accepts writes, the database answers).

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let problems = state.health.problems();
    if let Some((source, problem)) = problems.first() {
        return HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "unavailable", "error": source, "message": problem }));
    }
    match state.pool.run(|conn| conn.ping()).await {
        Ok(()) => {
            HttpResponse::Ok().json(json!({ "status": "ready", "database": state.pool.backend() }))
        }
        Err(e) => {
            log::warn!("readiness check failed: {e}");
            HttpResponse::ServiceUnavailable()
                .json(json!({ "status": "unavailable", "error": "database_unreachable" }))
        }
    }
}
