//! One handler per route: authorize, read the request, call [`crate::app`], answer.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::{ApiFailure, ApiState};
use crate::app::checkouts::{Created, ListQuery};
use crate::app::object::{render_transitions, Secret};
use crate::app::AppError;
use crate::domain::checkout::CheckoutState;
use crate::stripe::ids::AccountId;

type Answer = Result<HttpResponse, ApiFailure>;

/// Logs what the app cannot see of a failure (the database's or Stripe's side), then maps it.
fn failed(what: &str, e: AppError) -> ApiFailure {
    match &e {
        AppError::Storage(inner) => log::warn!("app API {what}: {inner}"),
        AppError::StripeUnavailable { .. } | AppError::Stripe { .. } => {
            log::warn!("app API {what}: {e}")
        }
        _ => log::debug!("app API {what}: {e}"),
    }
    e.into()
}

/// The `Idempotency-Key` header: printable ASCII, at most 255 characters (as Stripe's).
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiFailure> {
    let Some(value) = req.headers().get("Idempotency-Key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key)
            if !key.is_empty()
                && key.len() <= 255
                && key.bytes().all(|b| b.is_ascii_graphic() || b == b' ') =>
        {
            Ok(Some(key.to_owned()))
        }
        _ => Err(ApiFailure::invalid(
            "Idempotency-Key",
            "must be 1 to 255 printable ASCII characters",
        )),
    }
}

/// The connected account the request acts in (`Stripe-Account`); `None`: the platform.
fn account(req: &HttpRequest) -> Result<Option<AccountId>, ApiFailure> {
    crate::http::stripe_account::stripe_account(req)
        .map_err(|e| ApiFailure::invalid(e.field, &e.message))
}

fn created(c: Created) -> HttpResponse {
    let body = c.view.render(Secret::Include);
    if c.replayed {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::Created().json(body)
    }
}

pub async fn create_checkout(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<ApiState>,
) -> Answer {
    state.authorize(&req)?;
    let account = account(&req)?;
    let key = idempotency_key(&req)?;
    let c = state
        .app
        .create_checkout(&body, key, account.as_ref())
        .await
        .map_err(|e| failed("create checkout", e))?;
    Ok(created(c))
}

pub async fn get_checkout(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<ApiState>,
) -> Answer {
    state.authorize(&req)?;
    let account = account(&req)?;
    let (view, transitions) = state
        .app
        .checkout(&path, account.as_ref())
        .await
        .map_err(|e| failed("get checkout", e))?;
    let mut body = view.render(Secret::Include);
    body["transitions"] = render_transitions(&transitions);
    Ok(HttpResponse::Ok().json(body))
}

pub async fn list_checkouts(req: HttpRequest, state: web::Data<ApiState>) -> Answer {
    state.authorize(&req)?;
    let mut query = ListQuery {
        account: account(&req)?,
        limit: 20,
        ..ListQuery::default()
    };
    for (name, value) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
        let value = value.into_owned();
        match name.as_ref() {
            "customer_ref" => query.customer_ref = Some(value),
            "intent_id" => query.intent_id = Some(value),
            "starting_after" => query.starting_after = Some(value),
            "state" => {
                query.state = Some(value.parse::<CheckoutState>().map_err(|_| {
                    ApiFailure::invalid("state", "must be a checkout state (pending, succeeded, …)")
                })?)
            }
            "limit" => {
                query.limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| ApiFailure::invalid("limit", "must be from 1 to 100"))?
            }
            other => return Err(ApiFailure::invalid(other, "is not a known parameter")),
        }
    }
    let (views, has_more) = state
        .app
        .list_checkouts(query)
        .await
        .map_err(|e| failed("list checkouts", e))?;
    let data: Vec<Value> = views.iter().map(|v| v.render(Secret::Include)).collect();
    Ok(HttpResponse::Ok().json(json!({
        "object": "list",
        "url": "/api/v1/checkouts",
        "data": data,
        "has_more": has_more,
    })))
}

pub async fn cancel_checkout(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<ApiState>,
) -> Answer {
    state.authorize(&req)?;
    let account = account(&req)?;
    let view = state
        .app
        .cancel_checkout(&path, account.as_ref())
        .await
        .map_err(|e| failed("cancel checkout", e))?;
    Ok(HttpResponse::Ok().json(view.render(Secret::Include)))
}

pub async fn get_customer(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<ApiState>,
) -> Answer {
    state.authorize(&req)?;
    let account = account(&req)?;
    let customer = state
        .app
        .customer(&path, account.as_ref())
        .await
        .map_err(|e| failed("get customer", e))?;
    Ok(HttpResponse::Ok().json(customer))
}

pub async fn charge(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<ApiState>,
) -> Answer {
    state.authorize(&req)?;
    let account = account(&req)?;
    let key = idempotency_key(&req)?;
    let c = state
        .app
        .charge(&path, &body, key, account.as_ref())
        .await
        .map_err(|e| failed("charge", e))?;
    Ok(created(c))
}

pub async fn not_found(req: HttpRequest, state: web::Data<ApiState>) -> Answer {
    state.authorize(&req)?;
    Err(ApiFailure::not_found())
}
