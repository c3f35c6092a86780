//! The `save_card` kind: attach a saved payment method to its customer at Stripe, make it
//! the default, keep its details, drop duplicate copies.
//!
//! Queued by [`enqueue`] when a SetupIntent (or a PaymentIntent with `setup_future_usage`)
//! succeeds; one item per intent (key `save_card:{intent_id}`). Its steps, each recorded when
//! done so a crash or a lost lease resumes where it stopped:
//!
//! 1. `resolve`  — find the local customer when the event named none (billing email of the
//!    payment method at Stripe; a local customer with that email is created if needed);
//! 2. `customer` — create the Stripe customer if the local one has none, and record its id
//!    on the customer row at once;
//! 3. `attach`   — attach the payment method (skipped if Stripe has it on that customer
//!    already; attached to another customer is a permanent error);
//! 4. `default`  — make it the customer's `invoice_settings.default_payment_method`, unless
//!    the customer has a card saved later (by Stripe time);
//! 5. `details`  — retrieve it and store brand, last4, expiry and fingerprint; the
//!    customer's other live cards become `superseded`;
//! 6. `dedupe`   — detach the other copies of the card (same fingerprint) but the newest.
//!
//! Every mutating call carries an Idempotency-Key derived from the item's key and the step,
//! stable across retries and crashes; the customer-creation key is derived from the LOCAL
//! customer (`payhook:customer:{id}`), so two saves of one user converge on one Stripe
//! customer. The item's lane is its customer, so one customer's saves run one at a time.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use log::{debug, info};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::runner::{Failure, Kind, Progress, RetryPolicy, StepContext, Update};
use super::stripe_failure;
use crate::domain::cards::{self, PaymentMethodStatus};
use crate::domain::customer::{self, ByEmail, Known, Names, NewStripeCustomer};
use crate::store::checkouts as checkout_store;
use crate::store::customers::{self as customer_store, CustomerRow};
use crate::store::outbox::{self as store, QueuedItem};
use crate::store::payment_methods::{self, PaymentMethodRow};
use crate::store::{now_secs, Conn, StoreError, StoreResult};
use crate::stripe::client::{ApiError, PaymentMethodSummary};
use crate::stripe::gateway::StripeGateway;
use crate::text_enum::text_enum;

/// `outbox.kind` of this work.
pub const KIND: &str = "save_card";

text_enum! {
    /// Where a `save_card` item is; stored in `outbox.step`.
    pub enum Step {
        Resolve = "resolve",
        Customer = "customer",
        Attach = "attach",
        Default = "default",
        Details = "details",
        Dedupe = "dedupe",
        Done = "done",
    }
}

impl Step {
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

/// The item's data (`outbox.data`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Data {
    payment_method_id: String,
    /// The local customer; `None` until the `resolve` step finds it.
    customer_id: Option<i64>,
    /// The connected account the card is saved in (`Stripe-Account` on every call); absent
    /// for the platform (and in items queued before Connect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    account: Option<String>,
}

fn lane(customer_id: i64) -> String {
    format!("customer:{customer_id}")
}

/// A card to save, as the processor asks for it.
#[derive(Debug, Clone)]
pub struct SaveCard<'a> {
    pub intent_id: &'a str,
    pub checkout_id: &'a str,
    pub payment_method_id: &'a str,
    /// The local customer, when the event (or local data) says who it is.
    pub customer_id: Option<i64>,
    /// The connected account of the event (`None`: the platform).
    pub account: Option<&'a str>,
}

/// The outbox item that saves the card, keyed once per intent: a redelivered or replayed
/// event asks for the same item, which is then not inserted again.
pub fn item(work: &SaveCard<'_>, now: i64) -> QueuedItem {
    let data = json!(Data {
        payment_method_id: work.payment_method_id.to_owned(),
        customer_id: work.customer_id,
        account: work.account.map(str::to_owned),
    })
    .to_string();
    QueuedItem {
        kind: KIND.to_owned(),
        idempotency_key: format!("{KIND}:{}", work.intent_id),
        lane: work.customer_id.map(lane),
        checkout_id: Some(work.checkout_id.to_owned()),
        data,
        step: Step::Resolve.as_str().to_owned(),
        created_at: now,
        updated_at: now,
    }
}

/// Queues the save, once per intent; returns whether this call queued it.
pub fn enqueue(conn: &mut Conn, work: &SaveCard<'_>, now: i64) -> StoreResult<bool> {
    let item = item(work, now);
    let inserted = store::insert_queued_items(conn, std::slice::from_ref(&item))?;
    log_queued(std::slice::from_ref(&item), &inserted);
    Ok(!inserted.is_empty())
}

/// Logs each of `items` whose key is among those `inserted`.
pub fn log_queued(items: &[QueuedItem], inserted: &[String]) {
    for item in items
        .iter()
        .filter(|i| inserted.contains(&i.idempotency_key))
    {
        info!(
            "checkout {}: queued {} ({})",
            item.checkout_id.as_deref().unwrap_or("-"),
            item.idempotency_key,
            item.data
        );
    }
}

/// The kind, with what its steps need.
pub struct SaveCardKind {
    stripe: Arc<StripeGateway>,
    policy: RetryPolicy,
}

impl SaveCardKind {
    pub fn new(stripe: Arc<StripeGateway>, policy: RetryPolicy) -> Self {
        Self { stripe, policy }
    }
}

impl Kind for SaveCardKind {
    fn name(&self) -> &'static str {
        KIND
    }

    fn run_step<'a>(
        &'a self,
        ctx: &'a StepContext<'a>,
    ) -> BoxFuture<'a, Result<Progress, Failure>> {
        Box::pin(self.step(ctx))
    }

    fn retry_policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The app hears of the card's outcome (`card.saved` / `card.save_failed`).
    fn on_end(
        &self,
        conn: &mut Conn,
        item: &store::OutboxRow,
        end: &super::runner::End,
    ) -> StoreResult<()> {
        match &item.checkout_id {
            Some(checkout) => crate::app::notifications::card_ended(
                conn,
                checkout,
                *end == super::runner::End::Done,
                now_secs(),
            ),
            None => Ok(()),
        }
    }
}

fn next(step: Step) -> Result<Progress, Failure> {
    Ok(Progress::Next(Update::step(step.next().as_str())))
}

impl SaveCardKind {
    async fn call<'a, T, F>(
        &'a self,
        ctx: &StepContext<'_>,
        what: &'static str,
        f: impl FnOnce(&'a crate::stripe::client::StripeApi) -> F,
    ) -> Result<T, Failure>
    where
        F: std::future::Future<Output = Result<T, ApiError>> + 'a,
    {
        self.stripe
            .call(what, f)
            .await
            .map_err(|e| stripe_failure(ctx, e))
    }

    async fn step(&self, ctx: &StepContext<'_>) -> Result<Progress, Failure> {
        let item = ctx.item;
        let step: Step = item
            .step
            .parse()
            .map_err(|e: crate::text_enum::UnknownValue| {
                Failure::permanent("unknown_step", e.to_string())
            })?;
        let data: Data = ctx.data()?;
        let pm_id = data.payment_method_id.as_str();
        let account = data.account.as_deref();
        let customer_id = match (step, data.customer_id) {
            (Step::Resolve, Some(_)) => return next(step),
            (Step::Resolve, None) => return self.resolve(ctx, &data).await,
            (_, Some(id)) => id,
            (_, None) => {
                return Err(Failure::permanent(
                    "customer_unresolved",
                    "the item has no customer",
                ))
            }
        };
        let customer = ctx
            .pool
            .run(move |conn| customer_store::find_customer(conn, customer_id))
            .await?
            .ok_or_else(|| {
                Failure::permanent(
                    "customer_missing",
                    format!("local customer {customer_id} does not exist"),
                )
            })?;
        match step {
            Step::Resolve => next(step),
            Step::Done => Ok(Progress::Done {
                result: json!({
                    "customer_id": customer.id,
                    "stripe_customer_id": customer.stripe_customer_id,
                    "payment_method_id": pm_id,
                }),
            }),
            Step::Customer => {
                if customer.stripe_customer_id.is_some() {
                    return next(step);
                }
                let key = format!("payhook:customer:{}", customer.id);
                let stripe_id = self
                    .call(ctx, "create_customer", |api| {
                        api.create_customer(
                            account,
                            &key,
                            customer.email.as_deref(),
                            customer.customer_ref.as_deref(),
                        )
                    })
                    .await?;
                info!(
                    "outbox item {}: created Stripe customer {stripe_id} for customer {}",
                    item.id, customer.id
                );
                let checkout_id = item.checkout_id.clone();
                ctx.pool
                    .run(move |conn| {
                        conn.transaction(|conn| {
                            record_stripe_customer(
                                conn,
                                &customer,
                                &stripe_id,
                                checkout_id.as_deref(),
                            )
                        })
                    })
                    .await?;
                next(step)
            }
            Step::Attach => {
                let cus = stripe_customer(&customer)?;
                let pm = self
                    .call(ctx, "retrieve", |api| {
                        api.retrieve_payment_method(account, pm_id)
                    })
                    .await?;
                match pm.customer.as_deref() {
                    Some(c) if c == cus => {
                        debug!(
                            "outbox item {}: {pm_id} is already attached to {cus}",
                            item.id
                        );
                    }
                    // Real Stripe refuses this attach; some fakes silently move the card.
                    // Either way it is not ours to take.
                    Some(other) => {
                        return Err(Failure::permanent(
                            "payment_method_attached_to_other_customer",
                            format!("{pm_id} is attached to another customer ({other})"),
                        ))
                    }
                    None => {
                        let key = format!("{}:attach:{cus}", item.idempotency_key);
                        self.call(ctx, "attach", |api| {
                            api.attach_payment_method(account, &key, pm_id, cus)
                        })
                        .await?;
                        info!("outbox item {}: attached {pm_id} to {cus}", item.id);
                    }
                }
                next(step)
            }
            Step::Default => {
                let cus = stripe_customer(&customer)?.to_owned();
                if !self.record_saved_at(ctx, pm_id, customer.id).await? {
                    info!(
                        "outbox item {}: {pm_id} is not made the default: {cus} has a card saved later",
                        item.id
                    );
                    return next(step);
                }
                let key = format!("{}:default:{cus}", item.idempotency_key);
                self.call(ctx, "set_default", |api| {
                    api.set_default_payment_method(account, &key, &cus, pm_id)
                })
                .await?;
                let pm = pm_id.to_owned();
                ctx.pool
                    .run(move |conn| {
                        customer_store::set_default_payment_method(
                            conn,
                            customer_id,
                            &pm,
                            now_secs(),
                        )
                    })
                    .await?;
                next(step)
            }
            Step::Details => {
                let details = self
                    .call(ctx, "retrieve", |api| {
                        api.retrieve_payment_method(account, pm_id)
                    })
                    .await?;
                ctx.pool
                    .run(move |conn| {
                        conn.transaction(|conn| store_details(conn, &customer, &details))
                    })
                    .await?;
                next(step)
            }
            Step::Dedupe => {
                self.dedupe(ctx, pm_id, &customer).await?;
                next(step)
            }
        }
    }

    /// Step 1 for an event that named no customer: the payment method's billing email.
    async fn resolve(&self, ctx: &StepContext<'_>, data: &Data) -> Result<Progress, Failure> {
        let pm = self
            .call(ctx, "retrieve", |api| {
                api.retrieve_payment_method(data.account.as_deref(), &data.payment_method_id)
            })
            .await?;
        let Some(email) = pm.email.clone() else {
            return Err(Failure::permanent(
                "customer_unresolved",
                format!(
                    "the intent names no customer, customer_ref or checkout_id, and {} has no billing email",
                    pm.id
                ),
            ));
        };
        let checkout_id = ctx.item.checkout_id.clone();
        let account = data.account.clone();
        let customer_id = ctx
            .pool
            .run(move |conn| {
                conn.transaction(|conn| {
                    let now = now_secs();
                    let names = Names {
                        account: account.as_deref(),
                        email: Some(&email),
                        ..Names::default()
                    };
                    let found = customer_store::resolve(conn, names, ByEmail::FindOrCreate, now)?
                        .ok_or_else(|| {
                        StoreError::Corrupt("no customer for an email".into())
                    })?;
                    if let Some(checkout) = &checkout_id {
                        checkout_store::set_checkout_customer(conn, checkout, found.id)?;
                    }
                    Ok(found.id)
                })
            })
            .await?;
        info!(
            "outbox item {}: customer resolved by billing email to {customer_id}",
            ctx.item.id
        );
        // Give the item back: the claim serializes it with its customer's other work now.
        Ok(Progress::Requeue(Update {
            step: Step::Resolve.next().as_str(),
            data: Some(json!(Data {
                payment_method_id: data.payment_method_id.clone(),
                customer_id: Some(customer_id),
                account: data.account.clone(),
            })),
            lane: Some(lane(customer_id)),
        }))
    }

    /// Records when the card was saved, in Stripe time (the `created` of the succeeded event
    /// that moved the checkout), and tells whether it is the customer's newest saved card.
    async fn record_saved_at(
        &self,
        ctx: &StepContext<'_>,
        pm_id: &str,
        customer_id: i64,
    ) -> Result<bool, Failure> {
        let (pm, checkout_id, fallback) = (
            pm_id.to_owned(),
            ctx.item.checkout_id.clone(),
            ctx.item.created_at,
        );
        Ok(ctx
            .pool
            .run(move |conn| {
                conn.transaction(|conn| {
                    let saved_at = match &checkout_id {
                        Some(id) => {
                            checkout_store::find_checkout(conn, id)?.map(|c| c.state_event_created)
                        }
                        None => None,
                    }
                    .unwrap_or(fallback);
                    let now = now_secs();
                    let mut row = payment_methods::lock_payment_method(conn, &pm, now)?;
                    row.saved_at = Some(saved_at);
                    row.updated_at = now;
                    payment_methods::save_payment_method(conn, &row)?;
                    let others = payment_methods::list_customer_payment_methods(conn, customer_id)?;
                    Ok(cards::is_newest(
                        row.saved(),
                        others
                            .iter()
                            .filter(|o| o.id != pm)
                            .map(PaymentMethodRow::saved),
                    ))
                })
            })
            .await?)
    }

    /// Step 6: the other copies of this card (same fingerprint) are detached at Stripe and
    /// marked detached here; the newest saved copy stays, which may not be this one.
    async fn dedupe(
        &self,
        ctx: &StepContext<'_>,
        pm_id: &str,
        customer: &CustomerRow,
    ) -> Result<(), Failure> {
        let cus = stripe_customer(customer)?.to_owned();
        let customer_id = customer.id;
        let account = customer.connected_account();
        let local = ctx
            .pool
            .run(move |conn| payment_methods::list_customer_payment_methods(conn, customer_id))
            .await?;
        let this = match local.iter().find(|row| row.id == pm_id) {
            Some(row) => row.clone(),
            None => {
                let id = pm_id.to_owned();
                ctx.pool
                    .run(move |conn| payment_methods::find_payment_method(conn, &id))
                    .await?
                    .unwrap_or_else(|| PaymentMethodRow::new(pm_id, 0))
            }
        };
        let Some(fingerprint) = this.fingerprint.clone() else {
            return Ok(());
        };
        let same_card: Vec<&PaymentMethodRow> = local
            .iter()
            .filter(|row| row.id != this.id && row.fingerprint.as_deref() == Some(&fingerprint))
            .collect();
        let keep = cards::copy_to_keep(same_card.iter().map(|r| r.saved()).chain([this.saved()]))
            .unwrap_or(pm_id)
            .to_owned();
        let at_stripe = self
            .call(ctx, "list", |api| {
                api.list_card_payment_methods(account, &cus)
            })
            .await?;
        let mut duplicates: Vec<(String, bool)> = at_stripe
            .iter()
            .filter(|pm| pm.id != keep && pm.fingerprint.as_deref() == Some(&fingerprint))
            .map(|pm| (pm.id.clone(), true))
            .collect();
        // Local records Stripe no longer lists are detached already: only the record is stale.
        for id in same_card.iter().map(|r| r.id.as_str()).chain([pm_id]) {
            if id != keep && !duplicates.iter().any(|(d, _)| d == id) {
                duplicates.push((id.to_owned(), false));
            }
        }
        for (dup, attached_at_stripe) in duplicates {
            if attached_at_stripe {
                let key = format!("{}:detach:{dup}", ctx.item.idempotency_key);
                match self
                    .stripe
                    .call("detach", |api| {
                        api.detach_payment_method(account, &key, &dup)
                    })
                    .await
                {
                    Ok(()) => {}
                    // Detached meanwhile (dashboard, another service): the goal is reached.
                    Err(e) if e.code() == Some("resource_missing") => {}
                    Err(e) => return Err(stripe_failure(ctx, e)),
                }
                info!(
                    "outbox item {}: detached duplicate {dup} (same card as {keep}) from {cus}",
                    ctx.item.id
                );
            }
            ctx.pool
                .run(move |conn| conn.transaction(|conn| mark_detached(conn, &dup)))
                .await?;
        }
        Ok(())
    }
}

fn stripe_customer(customer: &CustomerRow) -> Result<&str, Failure> {
    customer.stripe_customer_id.as_deref().ok_or_else(|| {
        Failure::permanent(
            "customer_unresolved",
            format!("customer {} has no Stripe customer", customer.id),
        )
    })
}

/// Records a new Stripe customer on the local customer (and the checkout) as soon as it is
/// known, so no later work creates another.
pub(crate) fn record_stripe_customer(
    conn: &mut Conn,
    customer: &CustomerRow,
    stripe_id: &str,
    checkout_id: Option<&str>,
) -> StoreResult<()> {
    let current =
        customer_store::find_customer(conn, customer.id)?.unwrap_or_else(|| customer.clone());
    let holder = customer_store::find_customer_by_stripe_id(conn, stripe_id)?;
    let known = |c: &CustomerRow| Known {
        id: c.id,
        customer_ref: c.customer_ref.clone(),
        stripe_customer_id: c.stripe_customer_id.clone(),
    };
    match customer::link_new_stripe_customer(&known(&current), stripe_id, holder.as_ref().map(known).as_ref()) {
        NewStripeCustomer::Link => {
            customer_store::link_stripe_customer(conn, current.id, stripe_id, now_secs())?;
        }
        NewStripeCustomer::AlreadyLinked => {}
        NewStripeCustomer::KeepExisting(existing) => log::warn!(
            "customer {} already links {existing}; Stripe customer {stripe_id} is unused",
            current.id
        ),
        // Retrying cannot help: two local customers would share one Stripe customer.
        NewStripeCustomer::HeldBy(other) => {
            return Err(StoreError::Corrupt(format!(
                "Stripe customer {stripe_id} created for customer {} is already linked to customer {other}",
                current.id
            )))
        }
    }
    if let Some(checkout) = checkout_id {
        checkout_store::set_checkout_stripe_customer(conn, checkout, stripe_id, current.id)?;
    }
    Ok(())
}

/// Step 5: the card's details on its local record, now the customer's default (if it is the
/// newest saved card); the customer's other live cards are superseded.
fn store_details(
    conn: &mut Conn,
    customer: &CustomerRow,
    details: &PaymentMethodSummary,
) -> StoreResult<()> {
    let now = now_secs();
    let mut row = payment_methods::lock_payment_method(conn, &details.id, now)?;
    let others: Vec<PaymentMethodRow> =
        payment_methods::list_customer_payment_methods(conn, customer.id)?
            .into_iter()
            .filter(|o| o.id != details.id)
            .collect();
    let ranked: Vec<_> = others.iter().map(|o| (o.saved(), o.status)).collect();
    let after = cards::after_save(row.saved(), &ranked);
    let (card_status, superseded): (PaymentMethodStatus, Vec<String>) = (
        after.card,
        after.superseded.iter().map(|s| (*s).to_owned()).collect(),
    );
    for other in &others {
        if superseded.contains(&other.id) {
            payment_methods::set_payment_method_status(
                conn,
                &other.id,
                PaymentMethodStatus::Superseded,
                now,
            )?;
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
        row.status = card_status;
    }
    row.updated_at = now;
    payment_methods::save_payment_method(conn, &row)
}

fn mark_detached(conn: &mut Conn, id: &str) -> StoreResult<()> {
    let now = now_secs();
    let mut row = payment_methods::lock_payment_method(conn, id, now)?;
    row.detached_at = row.detached_at.max(Some(now));
    row.status = PaymentMethodStatus::Detached;
    row.updated_at = now;
    payment_methods::save_payment_method(conn, &row)
}

/// What became of a checkout's card: the state of its save_card item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardOutcome {
    pub status: crate::domain::checkout::CardStatus,
    pub payment_method_id: Option<String>,
    /// Why saving failed (Stripe's code or ours), when it did.
    pub error_code: Option<String>,
    pub error: Option<String>,
}

/// The card outcome of `checkout_id`; `None` when the checkout saves no card.
pub fn card_outcome(conn: &mut Conn, checkout_id: &str) -> StoreResult<Option<CardOutcome>> {
    use crate::domain::checkout::CardStatus;
    use crate::store::outbox::OutboxStatus;
    let Some(item) = store::find_item_of_checkout(conn, KIND, checkout_id)? else {
        return Ok(None);
    };
    let failed = item.status == OutboxStatus::Failed;
    Ok(Some(CardOutcome {
        status: match item.status {
            OutboxStatus::Pending => CardStatus::Pending,
            OutboxStatus::Done => CardStatus::Saved,
            OutboxStatus::Failed => CardStatus::Failed,
        },
        payment_method_id: serde_json::from_str::<Data>(&item.data)
            .ok()
            .map(|d| d.payment_method_id),
        error_code: item.last_error_code.filter(|_| failed),
        error: item.last_error.filter(|_| failed),
    }))
}
