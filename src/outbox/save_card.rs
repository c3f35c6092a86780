//! The action worker: performs outbox actions ([`crate::store::outbox`]) against the Stripe
//! API, exactly once in effect.
//!
//! One `save_card` action walks these steps, recording after each one the step it reached,
//! so a crash or a lost lease resumes where it stopped:
//!
//! 1. `resolve`  — find the local customer when the event named none (billing email of the
//!    payment method at Stripe; a local customer with that email is created if needed);
//! 2. `customer` — create the Stripe customer if the local one has none, and record its id
//!    on the customer row at once;
//! 3. `attach`   — attach the payment method (skipped if Stripe has it on that customer
//!    already; attached to another customer is a permanent error);
//! 4. `default`  — make it the customer's `invoice_settings.default_payment_method`;
//! 5. `details`  — retrieve it and store brand, last4, expiry and fingerprint; the
//!    customer's previous card records become `superseded`;
//! 6. `dedupe`   — detach older cards of the customer with the same fingerprint.
//!
//! Rules that make it safe:
//! - No database transaction is held across a Stripe call: claim (short transaction) →
//!   call Stripe → record (short transaction).
//! - Every mutating call carries an Idempotency-Key derived from the action and the step,
//!   stable across retries and crashes. The customer-creation key is derived from the LOCAL
//!   customer (`payhook:customer:{id}`), so two actions of one user converge on one Stripe
//!   customer; the claim also never runs two actions of one customer at once.
//! - Retryable errors (network, timeouts, 5xx, 429, lock timeouts) back off exponentially
//!   with jitter, up to `max_attempts`; permanent ones fail the action at once. Either way
//!   a failed action keeps Stripe's code and message, the checkout shows them, and
//!   `payhook retry` requeues it.
//! - Every call first takes a token from one [`RateLimiter`] per process.

use std::sync::Arc;
use std::time::Duration;

use log::{debug, error, info, warn};
use rand::Rng;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::ActionConfig;
use crate::store::checkouts::{self as checkout_store, CardStatus};
use crate::store::customers::{self, CustomerRow, NewCustomer};
use crate::store::outbox::{self as actions, ActionRow, ActionStatus};
use crate::store::payment_methods::{self, PaymentMethodRow, PaymentMethodStatus};
use crate::store::{now_ms, now_secs, Conn, Pool, StoreError, StoreResult};
use crate::stripe::client::{ApiError, CardDetails, StripeApi};
use crate::stripe::rate_limit::RateLimiter;

/// Where a `save_card` action is; stored as text in `stripe_actions.step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Resolve,
    Customer,
    Attach,
    Default,
    Details,
    Dedupe,
    Done,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resolve => "resolve",
            Self::Customer => "customer",
            Self::Attach => "attach",
            Self::Default => "default",
            Self::Details => "details",
            Self::Dedupe => "dedupe",
            Self::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Resolve,
            Self::Customer,
            Self::Attach,
            Self::Default,
            Self::Details,
            Self::Dedupe,
            Self::Done,
        ]
        .into_iter()
        .find(|step| step.as_str() == s)
    }

    fn next(self) -> Self {
        match self {
            Self::Resolve => Self::Customer,
            Self::Customer => Self::Attach,
            Self::Attach => Self::Default,
            Self::Default => Self::Details,
            Self::Details => Self::Dedupe,
            Self::Dedupe | Self::Done => Self::Done,
        }
    }
}

/// Why a step did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(transparent)]
    Stripe(#[from] ApiError),
    /// The database failed: the lease runs out and the action is resumed later.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Cannot succeed as things stand (e.g. no customer can be found): like a permanent
    /// Stripe error, with our own code.
    #[error("{code}: {message}")]
    Unresolvable { code: &'static str, message: String },
}

impl ActionError {
    /// The code and message recorded on the action and shown on the checkout.
    fn code_and_message(&self) -> (String, String) {
        match self {
            Self::Stripe(ApiError::Permanent {
                status,
                code,
                message,
            })
            | Self::Stripe(ApiError::Retryable {
                status,
                code,
                message,
                ..
            }) => (
                code.clone().unwrap_or_else(|| match status {
                    Some(s) => format!("http_{s}"),
                    None => "stripe_unreachable".to_owned(),
                }),
                message.clone(),
            ),
            Self::Store(e) => ("database".to_owned(), e.to_string()),
            Self::Unresolvable { code, message } => ((*code).to_owned(), message.clone()),
        }
    }
}

/// Everything the worker needs, shared by its tasks.
pub struct ActionContext {
    pub pool: Pool,
    pub api: StripeApi,
    pub limiter: Arc<RateLimiter>,
    pub config: ActionConfig,
    /// Written into `locked_by`: which process holds a lease.
    pub worker_id: String,
}

impl ActionContext {
    pub fn new(pool: Pool, api: StripeApi, config: ActionConfig) -> Self {
        Self {
            pool,
            api,
            limiter: Arc::new(RateLimiter::new(config.max_rps, config.burst)),
            config,
            worker_id: format!("{}-{:08x}", std::process::id(), rand::random::<u32>()),
        }
    }

    fn lease_until(&self) -> i64 {
        now_ms().saturating_add(self.config.lease.as_millis() as i64)
    }

    /// Runs `f` on a pooled connection off the async runtime. A busy or briefly unreachable
    /// database is tried again a few times: most calls here record what Stripe already did,
    /// and giving up would leave the action idle until its lease runs out. A lost lease
    /// ([`StoreError::Conflict`]) is final.
    async fn db<T: Send + 'static>(
        &self,
        f: impl Fn(&mut Conn) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut tries = 0;
            loop {
                tries += 1;
                let result = pool.get().and_then(|mut conn| f(&mut conn));
                match result {
                    Err(StoreError::Pool(_) | StoreError::Query(_)) if tries < 5 => {
                        std::thread::sleep(Duration::from_millis(25 << tries));
                    }
                    other => return other,
                }
            }
        })
        .await
        .map_err(|e| StoreError::Conflict(format!("database task failed: {e}")))?
    }

    /// Takes a token, then makes the call; a 429 drains the bucket so the whole process
    /// slows down, not only this action.
    async fn call<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        self.limiter.acquire().await;
        let result = f.await;
        if let Err(e) = &result {
            if let ApiError::Retryable {
                status: Some(429), ..
            } = e
            {
                self.limiter.back_off();
            }
            debug!("stripe {what}: {e}");
        }
        result
    }
}

/// Delay before try number `attempts + 1`: `base * 2^(attempts-1)`, capped, times a random
/// factor in [0.5, 1.5) so retries of many actions do not land together.
pub fn backoff(config: &ActionConfig, attempts: i32) -> Duration {
    let exp = attempts.saturating_sub(1).clamp(0, 20) as u32;
    let raw = config
        .retry_base
        .saturating_mul(1u32 << exp)
        .min(config.retry_cap);
    raw.mul_f64(rand::rng().random_range(0.5..1.5))
}

/// Claims due actions and performs them concurrently; returns how many were claimed.
pub async fn execute_batch(ctx: &Arc<ActionContext>) -> StoreResult<usize> {
    let (worker, limit, lease_until) = (
        ctx.worker_id.clone(),
        ctx.config.concurrency.max(1) as i64,
        ctx.lease_until(),
    );
    let claimed = ctx
        .db(move |conn| {
            conn.transaction(|conn| {
                actions::claim_due_actions(conn, &worker, now_ms(), lease_until, limit)
            })
        })
        .await?;
    let n = claimed.len();
    let runs = claimed.into_iter().map(|action| {
        let ctx = ctx.clone();
        async move { execute_action(&ctx, action).await }
    });
    futures_util::future::join_all(runs).await;
    Ok(n)
}

/// Runs one claimed action from its recorded step until it is done, fails, or has to wait.
pub async fn execute_action(ctx: &ActionContext, mut action: ActionRow) {
    loop {
        let Some(step) = Step::parse(&action.step) else {
            let error = ActionError::Unresolvable {
                code: "unknown_step",
                message: format!("stored step {:?} is not known", action.step),
            };
            return fail(ctx, &action, &error).await;
        };
        if step == Step::Done {
            return finish(ctx, &action).await;
        }
        match run_step(ctx, &action, step).await {
            Ok(StepOutcome::Next { customer_id }) => {
                let next = step.next();
                let (a, lease) = (action.clone(), ctx.lease_until());
                let recorded = ctx
                    .db(move |conn| {
                        actions::record_progress(
                            conn,
                            &a,
                            next.as_str(),
                            customer_id,
                            lease,
                            now_secs(),
                        )
                    })
                    .await;
                if let Err(e) = recorded {
                    // The lease runs out and whoever takes over resumes at `step`, whose
                    // calls carry the same idempotency keys.
                    warn!("action {} ({}): {e}", action.id, action.idempotency_key);
                    return;
                }
                action.step = next.as_str().to_owned();
                if action.customer_id.is_none() && customer_id.is_some() {
                    // Just resolved: give the action back so the claim can serialize it
                    // with the customer's other actions.
                    action.customer_id = customer_id;
                    return requeue_now(ctx, &action).await;
                }
            }
            Err(e @ ActionError::Store(StoreError::Corrupt(_))) => {
                return fail(ctx, &action, &e).await
            }
            Err(ActionError::Store(e)) => {
                warn!(
                    "action {} ({}) step {}: database error, resuming after the lease: {e}",
                    action.id,
                    action.idempotency_key,
                    step.as_str()
                );
                return;
            }
            Err(e @ ActionError::Stripe(ApiError::Retryable { .. })) => {
                return retry_later(ctx, &action, step, &e).await;
            }
            Err(e) => return fail(ctx, &action, &e).await,
        }
    }
}

enum StepOutcome {
    /// Go on with the next step; `customer_id` when this step resolved the customer.
    Next { customer_id: Option<i64> },
}

const NEXT: Result<StepOutcome, ActionError> = Ok(StepOutcome::Next { customer_id: None });

async fn run_step(
    ctx: &ActionContext,
    action: &ActionRow,
    step: Step,
) -> Result<StepOutcome, ActionError> {
    let pm_id = action.payment_method_id.clone();
    if step == Step::Resolve {
        if action.customer_id.is_some() {
            return NEXT;
        }
        return resolve_customer(ctx, action).await;
    }
    let customer = load_customer(ctx, action).await?;
    match step {
        Step::Resolve | Step::Done => NEXT,
        Step::Customer => {
            if customer.stripe_customer_id.is_some() {
                return NEXT;
            }
            let key = format!("payhook:customer:{}", customer.id);
            let stripe_id = ctx
                .call(
                    "create customer",
                    ctx.api.create_customer(
                        &key,
                        customer.email.as_deref(),
                        customer.customer_ref.as_deref(),
                    ),
                )
                .await?;
            info!(
                "action {}: created Stripe customer {stripe_id} for customer {}",
                action.id, customer.id
            );
            let checkout_id = action.checkout_id.clone();
            ctx.db(move |conn| {
                conn.transaction(|conn| {
                    record_stripe_customer(conn, &customer, &stripe_id, checkout_id.as_deref())
                })
            })
            .await?;
            NEXT
        }
        Step::Attach => {
            let cus = stripe_customer(&customer)?;
            let pm = ctx
                .call("retrieve", ctx.api.retrieve_payment_method(&pm_id))
                .await?;
            match pm.customer.as_deref() {
                Some(c) if c == cus => {
                    debug!("action {}: {pm_id} is already attached to {cus}", action.id);
                    NEXT
                }
                // Real Stripe refuses this attach; some fakes silently move the card. Either
                // way it is not ours to take.
                Some(other) => Err(ApiError::Permanent {
                    status: Some(400),
                    code: Some("payment_method_attached_to_other_customer".to_owned()),
                    message: format!("{pm_id} is attached to another customer ({other})"),
                }
                .into()),
                None => {
                    let key = format!("{}:attach:{cus}", action.idempotency_key);
                    ctx.call("attach", ctx.api.attach_payment_method(&key, &pm_id, cus))
                        .await?;
                    info!("action {}: attached {pm_id} to {cus}", action.id);
                    NEXT
                }
            }
        }
        Step::Default => {
            let cus = stripe_customer(&customer)?.to_owned();
            if !record_saved_at(ctx, action, customer.id).await? {
                info!(
                    "action {}: {pm_id} is not made the default: {cus} has a card saved later",
                    action.id
                );
                return NEXT;
            }
            let key = format!("{}:default:{cus}", action.idempotency_key);
            ctx.call(
                "set default",
                ctx.api.set_default_payment_method(&key, &cus, &pm_id),
            )
            .await?;
            let customer_id = customer.id;
            ctx.db(move |conn| {
                conn.transaction(|conn| {
                    // Re-read: the processor may have linked a customer_ref meanwhile.
                    let Some(mut current) = customers::find_customer(conn, customer_id)? else {
                        return Ok(());
                    };
                    current.default_payment_method_id = Some(pm_id.clone());
                    current.updated_at = now_secs();
                    customers::update_customer(conn, &current)
                })
            })
            .await?;
            NEXT
        }
        Step::Details => {
            let details = ctx
                .call("retrieve", ctx.api.retrieve_payment_method(&pm_id))
                .await?;
            ctx.db(move |conn| conn.transaction(|conn| store_details(conn, &customer, &details)))
                .await?;
            NEXT
        }
        Step::Dedupe => dedupe(ctx, action, &customer).await,
    }
}

/// Records when the card was saved, in Stripe time (the `created` of the succeeded event that
/// moved the checkout), and tells whether it is the customer's newest saved card. Saves may
/// run in any order (webhooks arrive out of order), so "newest" is decided by Stripe time,
/// never by which action ran last.
async fn record_saved_at(
    ctx: &ActionContext,
    action: &ActionRow,
    customer_id: i64,
) -> Result<bool, ActionError> {
    let (pm, checkout_id, fallback) = (
        action.payment_method_id.clone(),
        action.checkout_id.clone(),
        action.created_at,
    );
    Ok(ctx
        .db(move |conn| {
            conn.transaction(|conn| {
                let saved_at = match &checkout_id {
                    Some(id) => {
                        checkout_store::find_checkout(conn, id)?.map(|c| c.state_event_created)
                    }
                    None => None,
                }
                .unwrap_or(fallback);
                let now = now_secs();
                let mut row = payment_methods::find_payment_method(conn, &pm)?
                    .unwrap_or_else(|| PaymentMethodRow::new(&pm, now));
                row.saved_at = Some(saved_at);
                row.updated_at = now;
                payment_methods::save_payment_method(conn, &row)?;
                let others: Vec<PaymentMethodRow> =
                    payment_methods::list_customer_payment_methods(conn, customer_id)?
                        .into_iter()
                        .filter(|o| o.id != pm)
                        .collect();
                Ok(payment_methods::is_newest_saved(&row, &others))
            })
        })
        .await?)
}

async fn load_customer(
    ctx: &ActionContext,
    action: &ActionRow,
) -> Result<CustomerRow, ActionError> {
    let id = action
        .customer_id
        .ok_or_else(|| ActionError::Unresolvable {
            code: "customer_unresolved",
            message: "the action has no customer".to_owned(),
        })?;
    ctx.db(move |conn| customers::find_customer(conn, id))
        .await?
        .ok_or_else(|| ActionError::Unresolvable {
            code: "customer_missing",
            message: format!("local customer {id} does not exist"),
        })
}

fn stripe_customer(customer: &CustomerRow) -> Result<&str, ActionError> {
    customer
        .stripe_customer_id
        .as_deref()
        .ok_or_else(|| ActionError::Unresolvable {
            code: "customer_unresolved",
            message: format!("customer {} has no Stripe customer", customer.id),
        })
}

/// Step 1 for an event that named no customer: the payment method's billing email.
async fn resolve_customer(
    ctx: &ActionContext,
    action: &ActionRow,
) -> Result<StepOutcome, ActionError> {
    let pm = ctx
        .call(
            "retrieve",
            ctx.api.retrieve_payment_method(&action.payment_method_id),
        )
        .await?;
    let Some(email) = pm.email.clone() else {
        return Err(ActionError::Unresolvable {
            code: "customer_unresolved",
            message: format!(
                "the intent names no customer, customer_ref or checkout_id, and {} has no billing email",
                pm.id
            ),
        });
    };
    let checkout_id = action.checkout_id.clone();
    let customer_id = ctx
        .db(move |conn| {
            conn.transaction(|conn| {
                let now = now_secs();
                let found = match customers::find_customer_by_email(conn, &email)? {
                    Some(c) => c,
                    None => {
                        customers::insert_customer(
                            conn,
                            &NewCustomer {
                                customer_ref: None,
                                email: Some(&email),
                                stripe_customer_id: None,
                                created_at: now,
                                updated_at: now,
                            },
                        )?;
                        customers::find_customer_by_email(conn, &email)?.ok_or_else(|| {
                            StoreError::Corrupt("customer vanished right after insert".into())
                        })?
                    }
                };
                if let Some(checkout) = &checkout_id {
                    if let Some(mut row) = checkout_store::find_checkout(conn, checkout)? {
                        if row.customer_id.is_none() {
                            row.customer_id = Some(found.id);
                            checkout_store::update_checkout(conn, &row)?;
                        }
                    }
                }
                Ok(found.id)
            })
        })
        .await?;
    info!(
        "action {}: customer resolved by billing email to {customer_id}",
        action.id
    );
    Ok(StepOutcome::Next {
        customer_id: Some(customer_id),
    })
}

/// Records a new Stripe customer on the local customer (and the checkout) as soon as it is
/// known, so no later action creates another.
fn record_stripe_customer(
    conn: &mut Conn,
    customer: &CustomerRow,
    stripe_id: &str,
    checkout_id: Option<&str>,
) -> StoreResult<()> {
    let mut current =
        customers::find_customer(conn, customer.id)?.unwrap_or_else(|| customer.clone());
    match current.stripe_customer_id.as_deref() {
        None => {
            if let Some(other) = customers::find_customer_by_stripe_id(conn, stripe_id)? {
                // Retrying cannot help: two local customers would share one Stripe customer.
                return Err(StoreError::Corrupt(format!(
                    "Stripe customer {stripe_id} created for customer {} is already linked to customer {}",
                    current.id, other.id
                )));
            }
            current.stripe_customer_id = Some(stripe_id.to_owned());
            current.updated_at = now_secs();
            customers::update_customer(conn, &current)?;
        }
        Some(existing) if existing != stripe_id => warn!(
            "customer {} already links {existing}; Stripe customer {stripe_id} is unused",
            current.id
        ),
        Some(_) => {}
    }
    if let Some(checkout) = checkout_id {
        checkout_store::set_checkout_stripe_customer(conn, checkout, stripe_id, current.id)?;
    }
    Ok(())
}

/// Step 5: the card's details on its local record, now the customer's default; the
/// customer's other live card records are superseded.
fn store_details(
    conn: &mut Conn,
    customer: &CustomerRow,
    details: &CardDetails,
) -> StoreResult<()> {
    let now = now_secs();
    let mut row = payment_methods::find_payment_method(conn, &details.id)?
        .unwrap_or_else(|| PaymentMethodRow::new(&details.id, now));
    let others: Vec<PaymentMethodRow> =
        payment_methods::list_customer_payment_methods(conn, customer.id)?
            .into_iter()
            .filter(|o| o.id != details.id)
            .collect();
    // Only the newest saved card supersedes the others; an older one, saved late because its
    // webhook came late, is superseded itself.
    let newest = payment_methods::is_newest_saved(&row, &others);
    if newest {
        for mut other in others {
            let live = [
                PaymentMethodStatus::Default.as_str(),
                PaymentMethodStatus::Attached.as_str(),
            ];
            if live.contains(&other.status.as_str()) {
                other.status = PaymentMethodStatus::Superseded.as_str().to_owned();
                other.updated_at = now;
                payment_methods::save_payment_method(conn, &other)?;
            }
        }
    }
    row.customer_id = Some(customer.id);
    row.stripe_customer_id = details
        .customer
        .clone()
        .or_else(|| customer.stripe_customer_id.clone());
    row.method_type = Some(details.kind.clone());
    // Only what identifies the card to a person: never a number or CVC.
    row.brand = details.brand.as_ref().map(|b| b.to_lowercase());
    row.last4 = details.last4.clone();
    row.exp_month = details.exp_month;
    row.exp_year = details.exp_year;
    row.fingerprint = details.fingerprint.clone();
    if details.email.is_some() {
        row.billing_email = details.email.clone();
    }
    // Attached now (local clock): a stale `payment_method.detached` event cannot undo it,
    // a later one can.
    row.attached_at = row.attached_at.max(Some(now));
    if !row.is_detached() {
        row.status = if newest {
            PaymentMethodStatus::Default
        } else {
            PaymentMethodStatus::Superseded
        }
        .as_str()
        .to_owned();
    }
    row.updated_at = now;
    payment_methods::save_payment_method(conn, &row)
}

/// Step 6: older cards of this customer with the same fingerprint are detached at Stripe
/// and marked detached here.
async fn dedupe(
    ctx: &ActionContext,
    action: &ActionRow,
    customer: &CustomerRow,
) -> Result<StepOutcome, ActionError> {
    let cus = stripe_customer(customer)?.to_owned();
    let pm_id = action.payment_method_id.clone();
    let this = ctx
        .db(move |conn| payment_methods::find_payment_method(conn, &pm_id))
        .await?;
    let Some(this) = this.filter(|row| row.fingerprint.is_some()) else {
        return NEXT;
    };
    let fingerprint = this.fingerprint.clone().unwrap_or_default();
    let customer_id = customer.id;
    let local = ctx
        .db(move |conn| payment_methods::list_customer_payment_methods(conn, customer_id))
        .await?;
    let same_card: Vec<&PaymentMethodRow> = local
        .iter()
        .filter(|row| row.id != this.id)
        .filter(|row| row.fingerprint.as_deref() == Some(fingerprint.as_str()))
        .collect();
    // The newest saved copy of the card stays, every other copy goes: this one too, when a
    // copy saved later (by Stripe time) was processed first. Every worker picks the same one.
    let keep = same_card
        .iter()
        .copied()
        .chain([&this])
        .max_by(|a, b| a.saved_key().cmp(&b.saved_key()))
        .map_or(this.id.clone(), |row| row.id.clone());
    let at_stripe = ctx
        .call("list", ctx.api.list_card_payment_methods(&cus))
        .await?;
    let mut duplicates: Vec<(String, bool)> = at_stripe
        .iter()
        .filter(|pm| pm.id != keep)
        .filter(|pm| pm.fingerprint.as_deref() == Some(fingerprint.as_str()))
        .map(|pm| (pm.id.clone(), true))
        .collect();
    // Local records Stripe no longer lists are detached already: only the record is stale.
    for row in same_card
        .iter()
        .map(|r| &r.id)
        .chain([&action.payment_method_id])
    {
        if *row != keep && !duplicates.iter().any(|(id, _)| id == row) {
            duplicates.push((row.clone(), false));
        }
    }
    for (dup, attached_at_stripe) in duplicates {
        if attached_at_stripe {
            let key = format!("{}:detach:{dup}", action.idempotency_key);
            match ctx
                .call("detach", ctx.api.detach_payment_method(&key, &dup))
                .await
            {
                Ok(()) => {}
                // Detached meanwhile (dashboard, another service): the goal is reached.
                Err(ApiError::Permanent { code, .. })
                    if code.as_deref() == Some("resource_missing") => {}
                Err(e) => return Err(e.into()),
            }
            info!(
                "action {}: detached duplicate {dup} (same card as {keep}) from {cus}",
                action.id
            );
        }
        ctx.db(move |conn| {
            let now = now_secs();
            let mut row = payment_methods::find_payment_method(conn, &dup)?
                .unwrap_or_else(|| PaymentMethodRow::new(&dup, now));
            row.detached_at = row.detached_at.max(Some(now));
            row.status = PaymentMethodStatus::Detached.as_str().to_owned();
            row.updated_at = now;
            payment_methods::save_payment_method(conn, &row)
        })
        .await?;
    }
    NEXT
}

async fn finish(ctx: &ActionContext, action: &ActionRow) {
    let a = action.clone();
    let recorded = ctx
        .db(move |conn| {
            conn.transaction(|conn| {
                let customer = match a.customer_id {
                    Some(id) => customers::find_customer(conn, id)?,
                    None => None,
                };
                let result = json!({
                    "customer_id": a.customer_id,
                    "stripe_customer_id": customer.and_then(|c| c.stripe_customer_id),
                    "payment_method_id": a.payment_method_id,
                })
                .to_string();
                actions::finish_action(
                    conn,
                    &a,
                    ActionStatus::Done,
                    a.attempts,
                    None,
                    Some(&result),
                    now_secs(),
                )?;
                if let Some(checkout) = &a.checkout_id {
                    checkout_store::set_card_status(conn, checkout, CardStatus::Saved, None)?;
                }
                Ok(())
            })
        })
        .await;
    match recorded {
        Ok(()) => info!(
            "action {} ({}) done: {} saved",
            action.id, action.idempotency_key, action.payment_method_id
        ),
        Err(e) => warn!("action {}: recording done failed: {e}", action.id),
    }
}

async fn fail(ctx: &ActionContext, action: &ActionRow, error: &ActionError) {
    let (code, message) = error.code_and_message();
    error!(
        "action {} ({}) failed at step {}: {code}: {message}",
        action.id, action.idempotency_key, action.step
    );
    let a = action.clone();
    let attempts = action.attempts + 1;
    let recorded = ctx
        .db(move |conn| {
            conn.transaction(|conn| {
                let error = Some((code.as_str(), message.as_str()));
                actions::finish_action(
                    conn,
                    &a,
                    ActionStatus::Failed,
                    attempts,
                    error,
                    None,
                    now_secs(),
                )?;
                if let Some(checkout) = &a.checkout_id {
                    checkout_store::set_card_status(conn, checkout, CardStatus::Failed, error)?;
                }
                Ok(())
            })
        })
        .await;
    if let Err(e) = recorded {
        warn!("action {}: recording the failure failed: {e}", action.id);
    }
}

async fn retry_later(ctx: &ActionContext, action: &ActionRow, step: Step, error: &ActionError) {
    let attempts = action.attempts + 1;
    if attempts >= ctx.config.max_attempts {
        let (code, message) = error.code_and_message();
        let exhausted = ActionError::Unresolvable {
            code: "retries_exhausted",
            message: format!("{attempts} tries; last: {code}: {message}"),
        };
        return fail(ctx, action, &exhausted).await;
    }
    let delay = backoff(&ctx.config, attempts);
    let (code, message) = error.code_and_message();
    warn!(
        "action {} ({}) step {} try {attempts} failed, retrying in {delay:?}: {code}: {message}",
        action.id,
        action.idempotency_key,
        step.as_str()
    );
    let a = action.clone();
    let next = now_ms().saturating_add(delay.as_millis() as i64);
    let recorded = ctx
        .db(move |conn| {
            actions::schedule_action_retry(
                conn,
                &a,
                attempts,
                next,
                Some((&code, &message)),
                now_secs(),
            )
        })
        .await;
    if let Err(e) = recorded {
        warn!("action {}: recording the retry failed: {e}", action.id);
    }
}

async fn requeue_now(ctx: &ActionContext, action: &ActionRow) {
    let a = action.clone();
    let recorded = ctx
        .db(move |conn| actions::schedule_action_retry(conn, &a, a.attempts, 0, None, now_secs()))
        .await;
    if let Err(e) = recorded {
        warn!("action {}: giving the lease back failed: {e}", action.id);
    }
}

/// `payhook retry`: failed actions go back to pending (resuming at the step they stopped
/// at, with the same idempotency keys) and their checkouts show the card as pending again.
/// Returns how many were requeued.
pub fn requeue_failed_actions(conn: &mut Conn) -> StoreResult<usize> {
    conn.transaction(|conn| {
        let failed = actions::requeue_failed_actions(conn)?;
        for action in &failed {
            if let Some(checkout) = &action.checkout_id {
                checkout_store::set_card_status(conn, checkout, CardStatus::Pending, None)?;
            }
        }
        Ok(failed.len())
    })
}

/// Runs batches until `shutdown`: at once while there is a backlog, every `poll_interval`
/// otherwise. On shutdown in-flight actions get `shutdown_grace` to finish; abandoning them
/// after that is safe (their lease runs out, the next run resumes with the same keys).
pub async fn run(ctx: Arc<ActionContext>, shutdown: CancellationToken) {
    info!(
        "action worker {} started ({} Stripe requests/s, {} at once)",
        ctx.worker_id, ctx.config.max_rps, ctx.config.concurrency
    );
    let mut failures = 0;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let grace = ctx.config.shutdown_grace;
        let batch = tokio::select! {
            r = execute_batch(&ctx) => r,
            _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                warn!("action worker stopped with actions in flight; they resume after their lease");
                break;
            }
        };
        let pause = match batch {
            Ok(n) => {
                failures = 0;
                if n > 0 {
                    continue;
                }
                ctx.config.poll_interval
            }
            Err(e) => {
                failures += 1;
                let pause = backoff(&ctx.config, failures).min(Duration::from_secs(30));
                warn!("claiming actions failed (database unavailable?), pausing {pause:?}: {e}");
                pause
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
    debug!("action worker stopped");
}
