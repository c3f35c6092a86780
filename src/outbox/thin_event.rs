//! The `thin_event` kind: fetch a thin event's data and apply its object as observed state.
//!
//! Queued by the processor ([`crate::apply`]) for a thin event about a PaymentIntent,
//! SetupIntent or PaymentMethod; one item per event (key `thin_event:{event_id}`), in the
//! lane of its object so two fetches of one object do not cross. One step:
//! `GET /v2/core/events/{id}` and then the related object Stripe's copy of the event names,
//! both with `Stripe-Context: {context}` for a connected account's event, and the object
//! applied as observed at Stripe's time of answering ([`crate::apply::fetched`]), the same
//! state machine as snapshot events, and its transitions counted in
//! `payhook_checkout_transitions_total` as a snapshot event's are (once committed). Only GETs:
//! no idempotency key is needed.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use log::info;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::runner::{Failure, Kind, Progress, RetryPolicy, StepContext};
use crate::apply::fetched::{apply_fetched, Fetched};
use crate::apply::Effects;
use crate::metrics::Metrics;
use crate::store::outbox::{self as store, NewOutboxItem};
use crate::store::{now_secs, Conn, StoreResult};
use crate::stripe::client::ApiError;
use crate::stripe::gateway::StripeGateway;
use crate::stripe::objects::object_path;
use crate::stripe::rest::RestError;
use crate::stripe::thin::{RelatedObject, ThinEvent};

/// `outbox.kind` of this work.
pub const KIND: &str = "thin_event";

const STEP: &str = "fetch";

/// The item's data (`outbox.data`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Data {
    event_id: String,
    /// The connected account (`Stripe-Context`); `None` for the platform's events.
    context: Option<String>,
}

/// Queues the fetch of `thin`'s data, once per event.
pub fn enqueue(conn: &mut Conn, thin: &ThinEvent, now: i64) -> StoreResult<bool> {
    let key = format!("{KIND}:{}", thin.id);
    let data = json!(Data {
        event_id: thin.id.clone(),
        context: thin.context.clone(),
    })
    .to_string();
    let lane = thin
        .related_object
        .as_ref()
        .map(|r| format!("object:{}", r.id));
    let inserted = store::insert_item(
        conn,
        &NewOutboxItem {
            kind: KIND,
            idempotency_key: &key,
            lane: lane.as_deref(),
            checkout_id: None,
            data: &data,
            step: STEP,
            created_at: now,
            updated_at: now,
        },
    )?;
    if inserted {
        info!(
            "thin event {} ({}): queued its fetch",
            thin.id, thin.event_type
        );
    }
    Ok(inserted)
}

/// The kind, with what its step needs.
pub struct ThinEventKind {
    stripe: Arc<StripeGateway>,
    policy: RetryPolicy,
    /// Where the applied transitions are counted.
    metrics: Arc<Metrics>,
}

impl ThinEventKind {
    pub fn new(stripe: Arc<StripeGateway>, policy: RetryPolicy, metrics: Arc<Metrics>) -> Self {
        Self {
            stripe,
            policy,
            metrics,
        }
    }
}

impl Kind for ThinEventKind {
    fn name(&self) -> &'static str {
        KIND
    }

    fn run_step<'a>(
        &'a self,
        ctx: &'a StepContext<'a>,
    ) -> BoxFuture<'a, Result<Progress, Failure>> {
        Box::pin(self.fetch_and_apply(ctx))
    }

    fn retry_policy(&self) -> &RetryPolicy {
        &self.policy
    }
}

/// A REST failure as a step failure, keeping Stripe's `Retry-After`.
fn rest_failure(ctx: &StepContext<'_>, error: RestError) -> Failure {
    let mut failure = super::stripe_failure(ctx, error.error);
    failure.retry_after = error.retry_after;
    failure
}

fn not_json(what: &str, e: &serde_json::Error) -> Failure {
    Failure::permanent(
        "invalid_response",
        format!("Stripe's {what} is not JSON: {e}"),
    )
}

impl ThinEventKind {
    async fn fetch_and_apply(&self, ctx: &StepContext<'_>) -> Result<Progress, Failure> {
        let data: Data = ctx.data()?;
        let scope = data.context.as_deref().map(|c| ("Stripe-Context", c));
        // Event ids are spliced into the path: the same charset check as object ids.
        if !data
            .event_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(Failure::permanent(
                "invalid_event_id",
                format!("`{}` is not a plain event id", data.event_id),
            ));
        }
        let event = self
            .stripe
            .get_json_in(
                "retrieve_event",
                &format!("/v2/core/events/{}", data.event_id),
                &[],
                scope,
            )
            .await
            .map_err(|e| rest_failure(ctx, e))?;
        let event: Value = serde_json::from_str(&event.body).map_err(|e| not_json("event", &e))?;
        let related: Option<RelatedObject> = event
            .get("related_object")
            .cloned()
            .and_then(|r| serde_json::from_value(r).ok());
        let Some((related, (path, operation))) =
            related.and_then(|r| object_path(&r.id).map(|p| (r, p)))
        else {
            return Ok(Progress::Done {
                result: json!({"applied": false, "reason": "no related object payhook handles"}),
            });
        };
        let response = self
            .stripe
            .get_json_in(operation, &path, &[], scope)
            .await
            .map_err(|e| match e.error {
                ApiError::Permanent {
                    status: Some(404), ..
                } => Failure::permanent(
                    "resource_missing",
                    format!("Stripe has no {} {}", related.object_type, related.id),
                ),
                _ => rest_failure(ctx, e),
            })?;
        let object: Value =
            serde_json::from_str(&response.body).map_err(|e| not_json("object", &e))?;
        // Stripe's clock, so the observation is ordered against snapshot events.
        let observed_at = response.date.unwrap_or_else(now_secs);
        let account = data.context.clone();
        let (fetched, effects) = ctx
            .pool
            .run_pool(move |pool| {
                pool.write(|conn| {
                    let mut effects = Effects::default();
                    let fetched = apply_fetched(
                        conn,
                        &object,
                        observed_at,
                        account.as_deref(),
                        now_secs(),
                        &mut effects,
                    )?;
                    Ok((fetched, effects))
                })
            })
            .await?;
        // Committed: counted as the processor counts a snapshot event's.
        for (to, outcome) in effects.transitions {
            self.metrics.transitions(to, outcome, 1);
        }
        let result = match fetched {
            Fetched::Checkout(row) => {
                json!({"applied": true, "checkout": row.id, "state": row.state.as_str()})
            }
            Fetched::Card(row) => json!({"applied": true, "payment_method": row.id}),
            Fetched::Invalid(reason) => {
                return Err(Failure::permanent("cannot_apply", reason));
            }
        };
        Ok(Progress::Done { result })
    }
}
