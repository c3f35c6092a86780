//! The admin API, `/admin/v1/…`, behind `ADMIN_TOKEN` (404 when unset): thin handlers over
//! the operator's verbs in [`crate::ops`] and [`crate::inbox::reconcile`], which the CLI
//! calls too. Every route checks the token first, so nothing answers without one.

mod auth;
mod error;

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

pub use auth::AdminTokens;
pub use error::AdminError;

use super::AppState;
use crate::inbox::reconcile::{PassOptions, Reconciler};
use crate::ops::outbox::{Group, ItemQuery};
use crate::ops::{self, events::EventQuery, InvalidRequest, OpsError};
use crate::stripe::gateway::StripeGateway;

/// What the admin routes need beyond the shared state.
#[derive(Clone, Default)]
pub struct AdminState {
    pub tokens: AdminTokens,
    /// `None` without `STRIPE_SECRET_KEY`: reconcile and resync answer 409.
    pub stripe: Option<Arc<StripeGateway>>,
    pub reconciler: Option<Reconciler>,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/admin/v1")
            .route("/events", web::get().to(list_events))
            .route("/events/{id}", web::get().to(show_event))
            .route("/events/{id}/retry", web::post().to(retry_event))
            .route("/actions", web::get().to(list_actions))
            .route("/actions/{id}/retry", web::post().to(retry_action))
            .route("/notifications", web::get().to(list_notifications))
            .route(
                "/notifications/{id}/retry",
                web::post().to(retry_notification),
            )
            .route("/reconcile", web::post().to(reconcile))
            .route("/resync/{stripe_id}", web::post().to(resync))
            .default_service(web::to(no_route)),
    );
}

/// 404 while the admin API is off; 401 without a configured token.
fn authorize(req: &HttpRequest, state: &AppState) -> Result<(), AdminError> {
    let tokens = &state.admin.tokens;
    if !tokens.enabled() {
        return Err(AdminError::Disabled);
    }
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if tokens.accepts(header) {
        Ok(())
    } else {
        Err(AdminError::Unauthorized)
    }
}

async fn no_route(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    Err(AdminError::NoRoute)
}

/// Query parameters, each allowed once and only those named (as Stripe refuses unknown ones).
fn query_params(
    req: &HttpRequest,
    allowed: &[&'static str],
) -> Result<HashMap<&'static str, String>, InvalidRequest> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|e| InvalidRequest::new("query", format!("does not parse: {e}")))?
        .into_inner();
    let mut params = HashMap::new();
    for (key, value) in pairs {
        let Some(&name) = allowed.iter().find(|a| **a == key) else {
            return Err(InvalidRequest::new(
                "query",
                format!(
                    "unknown parameter `{key}` (allowed: {})",
                    allowed.join(", ")
                ),
            ));
        };
        if params.insert(name, value).is_some() {
            return Err(InvalidRequest::new(name, "given more than once"));
        }
    }
    Ok(params)
}

fn limit_param(params: &mut HashMap<&'static str, String>) -> Result<Option<i64>, InvalidRequest> {
    params
        .remove("limit")
        .map(|l| {
            l.parse::<i64>()
                .map_err(|_| InvalidRequest::new("limit", format!("`{l}` is not a whole number")))
        })
        .transpose()
}

/// Runs a verb on a pooled connection.
async fn read<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&mut crate::store::Conn) -> Result<T, OpsError> + Send + 'static,
) -> Result<T, AdminError> {
    Ok(state.pool.run(move |conn| Ok(f(conn))).await??)
}

/// Runs a verb in a write transaction (behind SQLite's write gate).
async fn write<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&mut crate::store::Conn) -> Result<T, OpsError> + Send + 'static,
) -> Result<T, AdminError> {
    Ok(state.pool.run_pool(move |pool| Ok(pool.write(f))).await??)
}

async fn list_events(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    let mut params = query_params(
        &req,
        &[
            "status",
            "type",
            "object_id",
            "endpoint",
            "limit",
            "starting_after",
        ],
    )?;
    let query = EventQuery {
        limit: limit_param(&mut params)?,
        status: params.remove("status"),
        event_type: params.remove("type"),
        object_id: params.remove("object_id"),
        endpoint: params.remove("endpoint"),
        starting_after: params.remove("starting_after"),
    };
    let page = read(&state, move |conn| ops::events::list(conn, &query)).await?;
    Ok(HttpResponse::Ok().json(page))
}

async fn show_event(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    let id = id.into_inner();
    let event = read(&state, move |conn| ops::events::show(conn, &id)).await?;
    Ok(HttpResponse::Ok().json(event))
}

async fn retry_event(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    let id = id.into_inner();
    let event = write(&state, move |conn| ops::events::retry(conn, &id)).await?;
    Ok(HttpResponse::Ok().json(event))
}

async fn list_items(
    req: &HttpRequest,
    state: &AppState,
    group: Group,
) -> Result<HttpResponse, AdminError> {
    authorize(req, state)?;
    let mut params = query_params(req, &["status", "limit", "starting_after"])?;
    let query = ItemQuery {
        limit: limit_param(&mut params)?,
        status: params.remove("status"),
        starting_after: params.remove("starting_after"),
    };
    let page = read(state, move |conn| ops::outbox::list(conn, group, &query)).await?;
    Ok(HttpResponse::Ok().json(page))
}

async fn retry_item(
    req: &HttpRequest,
    state: &AppState,
    group: Group,
    id: String,
) -> Result<HttpResponse, AdminError> {
    authorize(req, state)?;
    let item = write(state, move |conn| ops::outbox::retry(conn, group, &id)).await?;
    Ok(HttpResponse::Ok().json(item))
}

async fn list_actions(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    list_items(&req, &state, Group::Actions).await
}

async fn list_notifications(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    list_items(&req, &state, Group::Notifications).await
}

async fn retry_action(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    retry_item(&req, &state, Group::Actions, id.into_inner()).await
}

async fn retry_notification(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    retry_item(&req, &state, Group::Notifications, id.into_inner()).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconcileBody {
    /// Also list the events created in the last `since` seconds.
    since: Option<u64>,
    #[serde(default)]
    dry_run: bool,
}

async fn reconcile(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    let body: ReconcileBody = if body.iter().all(u8::is_ascii_whitespace) {
        ReconcileBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            InvalidRequest::new(
                "since",
                format!("the body must be {{\"since\"?: seconds}}: {e}"),
            )
        })?
    };
    // As resync: a `Stripe-Account` header limits the pass to that connected account.
    let account = super::stripe_account::stripe_account(&req)?;
    let reconciler = state
        .admin
        .reconciler
        .as_ref()
        .ok_or(OpsError::NoStripeKey)?;
    let report = reconciler
        .run_pass(&PassOptions {
            since: body.since.map(std::time::Duration::from_secs),
            dry_run: body.dry_run,
            account,
        })
        .await
        .map_err(OpsError::from)?;
    Ok(HttpResponse::Ok().json(report))
}

async fn resync(
    req: HttpRequest,
    state: web::Data<AppState>,
    stripe_id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    let account = super::stripe_account::stripe_account(&req)?;
    let resynced = ops::resync::resync(
        &state.pool,
        state.admin.stripe.as_deref(),
        &state.metrics,
        &stripe_id,
        account.as_ref(),
    )
    .await?;
    Ok(HttpResponse::Ok().json(resynced))
}
