//! Checkouts through the app API: create (setup or payment), resume, read, list, cancel; and
//! the customer view. See the module docs of [`super`] for the order of writes and calls.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::charges;
use super::object::{self, CheckoutView};
use super::{stripe_error, AppApi, AppError};
use crate::apply::observed::{apply_observed, Observed};
use crate::domain::app_request::{self, parse_checkout, request_fingerprint};
use crate::domain::checkout::{CheckoutKind, CheckoutState, TransitionOutcome};
use crate::domain::customer::{ByEmail, Names};
use crate::outbox::save_card;
use crate::store::app_checkouts::{self as store, AppCheckoutRow, ListFilter};
use crate::store::checkouts::{self as checkout_store, CheckoutRow, NewTransition, TransitionRow};
use crate::store::customers::{self as customer_store, CustomerRow};
use crate::store::payment_methods;
use crate::store::{now_secs, Conn, StoreError};
use crate::stripe::gateway::StripeGateway;
use crate::stripe::ids::AccountId;
use crate::stripe::intents::{IntentCallError, IntentSnapshot, NewIntent, StripeFault};

/// The route whose requests [`AppApi::create_checkout`] serves (part of the fingerprint).
const CHECKOUTS_ROUTE: &str = "POST /api/v1/checkouts";

/// A created (or replayed) checkout.
#[derive(Debug, Clone)]
pub struct Created {
    pub view: CheckoutView,
    /// The request repeated one already answered (same key, same body): `200`, not `201`.
    pub replayed: bool,
}

/// A new checkout id: `chk_` and 128 random bits.
pub fn new_checkout_id() -> String {
    format!("chk_{:032x}", rand::random::<u128>())
}

/// The `account` column of rows made in `account` (`None`: the platform).
pub(super) fn account_column(account: Option<&AccountId>) -> String {
    customer_store::account_key(account.map(AccountId::as_str)).to_owned()
}

/// What to look for in a list, as the HTTP layer parsed it.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// The connected account whose checkouts are listed (`None`: the platform's).
    pub account: Option<AccountId>,
    pub customer_ref: Option<String>,
    pub state: Option<CheckoutState>,
    pub intent_id: Option<String>,
    pub limit: i64,
    pub starting_after: Option<String>,
}

impl From<diesel::result::Error> for AppError {
    fn from(e: diesel::result::Error) -> Self {
        AppError::Storage(StoreError::Query(e))
    }
}

impl AppApi {
    /// `POST /api/v1/checkouts`, in `account` (`None`: the platform): the checkout, its
    /// customer and its intent belong to that account, and `idempotency_key` is looked up
    /// among that account's requests only.
    pub async fn create_checkout(
        &self,
        body: &[u8],
        idempotency_key: Option<String>,
        account: Option<&AccountId>,
    ) -> Result<Created, AppError> {
        let request = parse_checkout(body)?;
        let now = now_secs();
        let row = AppCheckoutRow {
            id: new_checkout_id(),
            kind: request.mode,
            customer_id: None,
            customer_ref: request.customer_ref.clone(),
            email: request.email.clone(),
            amount: request.amount,
            currency: request.currency.clone(),
            save_card: request.save_card,
            off_session: false,
            description: request.description.clone(),
            metadata: (!request.metadata.is_empty()).then(|| json!(request.metadata).to_string()),
            payment_method_id: None,
            idempotency_key,
            request_hash: request_fingerprint(CHECKOUTS_ROUTE, &request),
            intent_id: None,
            client_secret: None,
            created_at: now,
            updated_at: now,
            account: account_column(account),
        };
        let (row, existed) = self.begin(row).await?;
        self.complete(row, existed, account).await
    }

    /// Writes the checkout's row before anything else, or finds the one an earlier request
    /// with the same `Idempotency-Key` in the same account wrote (then the bodies must match).
    /// The customer of `customer_ref` in the row's account is found or created here, so one
    /// `customer_ref` is one customer per account.
    pub(super) async fn begin(
        &self,
        new: AppCheckoutRow,
    ) -> Result<(AppCheckoutRow, bool), AppError> {
        self.pool
            .run(move |conn| {
                conn.transaction(|conn| -> Result<_, StoreError> {
                    if let Some(existing) = existing_for_key(conn, &new)? {
                        return Ok(same_request(existing, &new).map(|row| (row, true)));
                    }
                    let mut new = new;
                    if let Some(customer_ref) = new.customer_ref.clone() {
                        let names = Names {
                            account: new.connected_account(),
                            customer_ref: Some(&customer_ref),
                            email: new.email.as_deref(),
                            stripe_customer_id: None,
                        };
                        new.customer_id = customer_store::resolve(
                            conn,
                            names,
                            ByEmail::FindOnly,
                            new.created_at,
                        )?
                        .map(|c| c.id);
                    }
                    if store::insert_app_checkout(conn, &new)? {
                        return Ok(Ok((new, false)));
                    }
                    // A concurrent request with the same key won: its row is the checkout.
                    match existing_for_key(conn, &new)? {
                        Some(existing) => Ok(same_request(existing, &new).map(|row| (row, true))),
                        None => Err(StoreError::Conflict("checkout created concurrently".into())),
                    }
                })
            })
            .await?
    }

    /// Makes the intent of a checkout whose row is written, unless it has one, and records it.
    /// `account` is the row's (the request's, whose key found the row): every Stripe call
    /// made for it carries `Stripe-Account`.
    pub(super) async fn complete(
        &self,
        row: AppCheckoutRow,
        existed: bool,
        account: Option<&AccountId>,
    ) -> Result<Created, AppError> {
        debug_assert_eq!(row.account, account_column(account));
        if row.intent_id.is_some() {
            let view = self.view(&row.id).await?;
            return Ok(Created {
                view,
                replayed: existed,
            });
        }
        let stripe = self.stripe()?;
        let customer = self
            .stripe_customer(stripe, row.customer_id, account)
            .await?;
        let stripe_customer = customer.as_ref().and_then(|c| c.stripe_customer_id.clone());
        let mut metadata: BTreeMap<String, String> = row
            .metadata
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok())
            .unwrap_or_default();
        metadata.insert("checkout_id".into(), row.id.clone());
        if let Some(r) = &row.customer_ref {
            metadata.insert("customer_ref".into(), r.clone());
        }
        let new = NewIntent {
            kind: row.kind,
            customer: stripe_customer.as_deref(),
            amount: row.amount,
            currency: row.currency.as_deref(),
            save_card: row.save_card && row.kind == CheckoutKind::Payment,
            description: row.description.as_deref(),
            metadata,
            charge_off_session: row.payment_method_id.as_deref().filter(|_| row.off_session),
        };
        let key = format!("checkout:{}:intent", row.id);
        let (snapshot, fault) = match create_intent(stripe, account, &key, &new).await {
            Ok(snapshot) => (snapshot, None),
            Err(IntentCallError::Declined { intent, fault }) => (*intent, Some(fault)),
            Err(IntentCallError::Api {
                error,
                decline_code,
                ..
            }) => {
                log::warn!("checkout {}: creating its intent failed: {error}", row.id);
                return Err(stripe_error(error, decline_code));
            }
        };
        let id = row.id.clone();
        self.pool
            .run(move |conn| {
                conn.transaction(|conn| {
                    record_intent(
                        conn,
                        &row,
                        stripe_customer.as_deref(),
                        &snapshot,
                        fault.as_ref(),
                        now_secs(),
                    )
                })
            })
            .await?;
        log::info!("checkout {id}: intent created");
        Ok(Created {
            view: self.view(&id).await?,
            replayed: false,
        })
    }

    /// The local customer's Stripe customer, created in `account` (key
    /// `payhook:customer:{id}`, as the save_card work does) if it has none yet.
    async fn stripe_customer(
        &self,
        stripe: &StripeGateway,
        customer_id: Option<i64>,
        account: Option<&AccountId>,
    ) -> Result<Option<CustomerRow>, AppError> {
        let Some(id) = customer_id else {
            return Ok(None);
        };
        let customer = self
            .pool
            .run(move |conn| customer_store::find_customer(conn, id))
            .await?
            .ok_or(AppError::NotFound("customer"))?;
        if customer.stripe_customer_id.is_some() {
            return Ok(Some(customer));
        }
        let key = format!("payhook:customer:{}", customer.id);
        let stripe_id = stripe
            .call("create_customer", |api| {
                api.create_customer(
                    account.map(AccountId::as_str),
                    &key,
                    customer.email.as_deref(),
                    customer.customer_ref.as_deref(),
                )
            })
            .await?;
        log::info!(
            "created Stripe customer {stripe_id} for customer {}",
            customer.id
        );
        let found = self
            .pool
            .run(move |conn| {
                conn.transaction(|conn| {
                    save_card::record_stripe_customer(conn, &customer, &stripe_id, None)?;
                    customer_store::find_customer(conn, customer.id)
                })
            })
            .await?;
        Ok(found)
    }

    async fn view(&self, id: &str) -> Result<CheckoutView, AppError> {
        let id = id.to_owned();
        self.pool
            .run(move |conn| object::load(conn, &id))
            .await?
            .ok_or(AppError::NotFound("checkout"))
    }

    /// `GET /api/v1/checkouts/{id}`: the checkout and its transitions, oldest first; not
    /// found when it belongs to another account than `account` (`None`: the platform).
    pub async fn checkout(
        &self,
        id: &str,
        account: Option<&AccountId>,
    ) -> Result<(CheckoutView, Vec<TransitionRow>), AppError> {
        let id = id.to_owned();
        let account = account_column(account);
        self.pool
            .run(move |conn| {
                let Some(view) = object::load(conn, &id)? else {
                    return Ok(None);
                };
                if view.checkout.account != account {
                    return Ok(None);
                }
                let transitions = checkout_store::list_transitions(conn, &id)?;
                Ok(Some((view, transitions)))
            })
            .await?
            .ok_or(AppError::NotFound("checkout"))
    }

    /// `GET /api/v1/checkouts`: newest first, and whether there are more.
    pub async fn list_checkouts(
        &self,
        query: ListQuery,
    ) -> Result<(Vec<CheckoutView>, bool), AppError> {
        self.pool
            .run(move |conn| {
                let customer_id = match &query.customer_ref {
                    Some(r) => match customer_store::find_customer_by_ref(
                        conn,
                        query.account.as_ref().map(AccountId::as_str),
                        r,
                    )? {
                        Some(c) => Some(c.id),
                        None => return Ok(Ok((Vec::new(), false))),
                    },
                    None => None,
                };
                let after = match &query.starting_after {
                    Some(id) => match checkout_store::find_checkout(conn, id)? {
                        Some(c) => Some((c.created_at, c.id)),
                        None => {
                            return Ok(Err(AppError::Invalid(app_request::InvalidRequest {
                                field: "starting_after".into(),
                                message: format!("no such checkout: {id}"),
                            })))
                        }
                    },
                    None => None,
                };
                let filter = ListFilter {
                    account: account_column(query.account.as_ref()),
                    customer_id,
                    state: query.state,
                    intent_id: query.intent_id.clone(),
                    after,
                    limit: query.limit + 1,
                };
                let mut ids = store::list_checkout_ids(conn, &filter)?;
                let has_more = ids.len() as i64 > query.limit;
                ids.truncate(query.limit.max(0) as usize);
                let mut views = Vec::with_capacity(ids.len());
                for id in ids {
                    if let Some(view) = object::load(conn, &id)? {
                        views.push(view);
                    }
                }
                Ok(Ok((views, has_more)))
            })
            .await?
    }

    /// `POST /api/v1/checkouts/{id}/cancel`: cancels the intent at Stripe, in `account`
    /// (`None`: the platform; a checkout of another account is not found); the checkout is
    /// `canceled` in the answer when Stripe says so, else once `*.canceled` arrives.
    pub async fn cancel_checkout(
        &self,
        id: &str,
        account: Option<&AccountId>,
    ) -> Result<CheckoutView, AppError> {
        let view = self.view(id).await?;
        if view.checkout.account != account_column(account) {
            return Err(AppError::NotFound("checkout"));
        }
        match view.checkout.state {
            CheckoutState::Succeeded => {
                return Err(AppError::Conflict {
                    code: "checkout_final",
                    message: "the checkout succeeded: money moved, it cannot be canceled".into(),
                })
            }
            CheckoutState::Canceled => return Ok(view),
            _ => {}
        }
        let stripe = self.stripe()?;
        let key = format!("checkout:{}:cancel", view.checkout.id);
        let intent = view.checkout.intent_id.clone();
        let snapshot = match stripe
            .call("cancel_intent", |api| {
                api.cancel_intent(account, &key, &intent)
            })
            .await
        {
            Ok(snapshot) => snapshot,
            // Stripe has the intent in a state that cannot be canceled: it tells which.
            Err(IntentCallError::Api {
                intent: Some(snapshot),
                ..
            }) if matches!(snapshot.status.as_str(), "succeeded" | "canceled") => *snapshot,
            Err(IntentCallError::Api {
                error,
                decline_code,
                ..
            }) => return Err(stripe_error(error, decline_code)),
            Err(IntentCallError::Declined { fault, .. }) => {
                return Err(AppError::Stripe {
                    code: fault.code,
                    decline_code: fault.decline_code,
                    message: fault.message.unwrap_or_default(),
                })
            }
        };
        if snapshot.status == "succeeded" {
            return Err(AppError::Conflict {
                code: "checkout_final",
                message: "the checkout succeeded: money moved, it cannot be canceled".into(),
            });
        }
        if snapshot.status == "canceled" {
            let at = snapshot.canceled_at.unwrap_or_else(now_secs);
            let id = view.checkout.id.clone();
            self.pool
                .run(move |conn| {
                    conn.transaction(|conn| {
                        let Some(row) =
                            checkout_store::find_checkout_by_intent(conn, &snapshot.id)?
                        else {
                            return Ok(());
                        };
                        let observed = Observed {
                            target: CheckoutState::Canceled,
                            at,
                            source: "cancel",
                            error_code: None,
                            decline_code: None,
                            error_message: None,
                            payment_method: None,
                        };
                        apply_observed(conn, row, &observed, now_secs()).map(|_| ())
                    })
                })
                .await?;
            return self.view(&id).await;
        }
        self.view(id).await
    }

    /// `GET /api/v1/customers/{customer_ref}`: the customer of `customer_ref` in `account`
    /// (`None`: the platform).
    pub async fn customer(
        &self,
        customer_ref: &str,
        account: Option<&AccountId>,
    ) -> Result<Value, AppError> {
        let customer_ref = customer_ref.to_owned();
        let account = account.map(|a| a.as_str().to_owned());
        self.pool
            .run(move |conn| {
                let Some(customer) =
                    customer_store::find_customer_by_ref(conn, account.as_deref(), &customer_ref)?
                else {
                    return Ok(None);
                };
                let cards: Vec<Value> =
                    payment_methods::list_all_customer_payment_methods(conn, customer.id)?
                        .into_iter()
                        .filter_map(|pm| {
                            use crate::domain::cards::PaymentMethodStatus as S;
                            let status = match pm.status {
                                S::Default => "default",
                                S::Attached => "attached",
                                S::Superseded => "superseded",
                                S::Detached => "detached",
                                // Named by an event, never known to be attached: not a card
                                // of this customer's.
                                S::Seen => return None,
                            };
                            Some(json!({
                                "id": pm.id,
                                "brand": pm.brand,
                                "last4": pm.last4,
                                "exp_month": pm.exp_month,
                                "exp_year": pm.exp_year,
                                "fingerprint": pm.fingerprint,
                                "status": status,
                            }))
                        })
                        .collect();
                Ok(Some(json!({
                    "object": "customer",
                    "customer_ref": customer.customer_ref,
                    "email": customer.email,
                    "stripe_customer_id": customer.stripe_customer_id,
                    "default_payment_method": customer.default_payment_method_id,
                    "cards": cards,
                })))
            })
            .await?
            .ok_or(AppError::NotFound("customer"))
    }
}

/// The row an earlier request with the same `Idempotency-Key` in the same account wrote, if
/// any.
fn existing_for_key(
    conn: &mut Conn,
    new: &AppCheckoutRow,
) -> Result<Option<AppCheckoutRow>, StoreError> {
    match &new.idempotency_key {
        Some(key) => store::find_app_checkout_by_key(conn, new.connected_account(), key),
        None => Ok(None),
    }
}

/// The same key with the same request is a retry; with another, a mistake the app must see.
fn same_request(
    existing: AppCheckoutRow,
    new: &AppCheckoutRow,
) -> Result<AppCheckoutRow, AppError> {
    if existing.request_hash == new.request_hash {
        Ok(existing)
    } else {
        Err(AppError::Conflict {
            code: "idempotency_key_reused",
            message: "this Idempotency-Key was used for another request".into(),
        })
    }
}

/// Creates the intent with `key` in `account`. A concurrent duplicate request (same key)
/// finds Stripe still busy with the first (`409 idempotency_key_in_use`): it waits for the
/// first to finish (bounded: about 10 s), then gets the same intent.
async fn create_intent(
    stripe: &StripeGateway,
    account: Option<&AccountId>,
    key: &str,
    new: &NewIntent<'_>,
) -> Result<IntentSnapshot, IntentCallError> {
    const TRIES: u64 = 20;
    let mut tries = 0;
    loop {
        tries += 1;
        match stripe
            .call("create_intent", |api| api.create_intent(account, key, new))
            .await
        {
            Err(IntentCallError::Api { error, .. })
                if error.code() == Some("idempotency_key_in_use") && tries < TRIES =>
            {
                tokio::time::sleep(Duration::from_millis((100 * tries).min(1000))).await;
            }
            other => return other,
        }
    }
}

/// Records the intent Stripe made: on the app's row, and as the state machine's row (unless
/// a webhook of the intent wrote it first). A charge's outcome is then applied as observed.
fn record_intent(
    conn: &mut Conn,
    app: &AppCheckoutRow,
    stripe_customer: Option<&str>,
    snapshot: &IntentSnapshot,
    fault: Option<&StripeFault>,
    now: i64,
) -> Result<(), StoreError> {
    store::record_intent(
        conn,
        &app.id,
        &snapshot.id,
        snapshot.client_secret.as_deref(),
        now,
    )?;
    let existing = match checkout_store::find_checkout_by_intent(conn, &snapshot.id)? {
        Some(row) => Some(row),
        None => checkout_store::find_checkout(conn, &app.id)?,
    };
    let row = match existing {
        Some(row) => row,
        None => {
            let row = CheckoutRow {
                id: app.id.clone(),
                kind: app.kind,
                intent_id: snapshot.id.clone(),
                customer_id: app.customer_id,
                stripe_customer_id: stripe_customer.map(str::to_owned),
                payment_method_id: app
                    .payment_method_id
                    .clone()
                    .or_else(|| snapshot.payment_method.clone()),
                amount: app.amount,
                currency: app.currency.clone(),
                setup_future_usage: app.save_card.then(|| "off_session".to_owned()),
                state: CheckoutState::Pending,
                state_event_id: None,
                state_event_created: snapshot.created,
                last_error_code: None,
                decline_code: None,
                last_error_message: None,
                created_at: app.created_at,
                updated_at: now,
                // The account the app's request named.
                account: app.account.clone(),
            };
            if checkout_store::insert_checkout(conn, &row)? {
                checkout_store::insert_transition(
                    conn,
                    &NewTransition {
                        checkout_id: &row.id,
                        event_id: None,
                        from_state: None,
                        to_state: CheckoutState::Pending,
                        outcome: TransitionOutcome::Applied,
                        reason: Some("created"),
                        error_code: None,
                        decline_code: None,
                        event_created: Some(snapshot.created),
                        at: now,
                    },
                )?;
                row
            } else {
                // A webhook of the intent created it meanwhile (PostgreSQL: it waited for
                // that transaction): go on from its row.
                checkout_store::find_checkout_by_intent(conn, &snapshot.id)?.ok_or_else(|| {
                    StoreError::Conflict(format!(
                        "checkout of {} created concurrently",
                        snapshot.id
                    ))
                })?
            }
        }
    };
    if app.off_session {
        let (target, error) = charges::outcome(snapshot, fault);
        let observed = Observed {
            target,
            at: snapshot.created,
            source: "charge",
            error_code: error.as_ref().and_then(|e| e.code.as_deref()),
            decline_code: error.as_ref().and_then(|e| e.decline_code.as_deref()),
            error_message: error.as_ref().and_then(|e| e.message.as_deref()),
            payment_method: app.payment_method_id.as_deref(),
        };
        apply_observed(conn, row, &observed, now)?;
    }
    Ok(())
}
