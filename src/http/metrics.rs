//! `GET /metrics`: the Prometheus exposition (no auth: it holds no secret and no id).
//!
//! The database-mirroring gauges are read first (a few indexed counts, bounded in time); if
//! the database does not answer, they are left out of this scrape rather than shown stale,
//! and every in-process family is still served.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use log::warn;

use super::AppState;
use crate::metrics::CONTENT_TYPE;

/// Longest a scrape waits for the database counts.
const GAUGE_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let gauges =
        tokio::time::timeout(GAUGE_TIMEOUT, state.pool.run(crate::ops::database_gauges)).await;
    match gauges {
        Ok(Ok(gauges)) => state.metrics.set_database_gauges(&gauges),
        Ok(Err(e)) => {
            warn!("/metrics: database gauges left out: {e}");
            state.metrics.clear_database_gauges();
        }
        Err(_) => {
            warn!("/metrics: database gauges left out: no answer within {GAUGE_TIMEOUT:?}");
            state.metrics.clear_database_gauges();
        }
    }
    match state.metrics.encode() {
        Ok(text) => HttpResponse::Ok().content_type(CONTENT_TYPE).body(text),
        Err(e) => {
            warn!("/metrics: encoding failed: {e}");
            HttpResponse::InternalServerError().finish()
        }
    }
}
