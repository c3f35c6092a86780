//! Where applying an event writes: to the database at once, or gathered for its batch and
//! written set-wise.
//!
//! On PostgreSQL every statement is a round trip, and applying one intent event one
//! statement at a time took about seven (BENCHMARKS.md). In the processor's optimistic
//! batches (no savepoints: any failure reruns the batch event by event) a [`Staging::batch`]
//! instead
//! - reads and locks the batch's checkouts in one query, in intent order
//!   ([`Staging::lock_checkouts`]), and keeps each in memory as the batch's events move it;
//! - reads each chunk of events ahead ([`Staging::read_ahead`]): parses each intent event
//!   once, and reads every customer they name in one query per account;
//! - remembers each customer it resolved, for the next event naming the same one;
//! - gathers what nothing later in the batch reads back (new and changed checkouts, cards
//!   recorded if absent, transitions, outbox items) and writes it when the batch ends
//!   ([`Staging::flush`]), one multi-row statement per table, tables in the order their
//!   foreign keys need.
//!
//! A read that could see gathered rows (the app's checkout named in metadata, a card's
//! billing email, a notification's view of the checkout) writes what is gathered first
//! ([`Staging::flush`]); a card about to be read and rewritten (its own
//! `payment_method.*` event, an intent's error naming it) is written first with the other
//! gathered cards ([`Staging::write_card_first`]). Customers are resolved through the
//! staging by every kind of event, so what it remembers of them stays true.
//!
//! Every guarantee stays where it was: the writes commit with the events' statuses, in the
//! batch's one transaction; the checkouts are locked before any is changed. A gathered write
//! that cannot be made as assumed (another instance created the same intent's checkout
//! meanwhile) fails the flush, so the batch's try fails and the batch runs again event by
//! event, where [`Staging::immediate`] writes each statement at once as before.

use std::collections::{BTreeMap, HashMap, HashSet};

use log::debug;

use super::intents::customer_names;
use super::read_intent;
use crate::domain::customer::{ByEmail, Names};
use crate::outbox::save_card;
use crate::store::checkouts::{self as checkout_store, CheckoutRow, NewTransition};
use crate::store::customers::account_key;
use crate::store::customers::{self as customer_store, CustomerRow};
use crate::store::events::WebhookEvent;
use crate::store::outbox::{self as outbox_store, QueuedItem};
use crate::store::payment_methods::{self, PaymentMethodRow};
use crate::store::{Conn, StoreError, StoreResult};
use crate::stripe::payload::IntentView;

/// How an apply writes; see the module docs.
#[derive(Debug, Default)]
pub struct Staging {
    batch: Option<Batch>,
}

#[derive(Debug, Default)]
struct Batch {
    /// By intent id: each checkout read or created in this batch, as the batch left it.
    /// Ordered, so new checkouts are inserted in intent order as well.
    checkouts: BTreeMap<String, Cached>,
    /// Intents looked up that have no checkout (yet): no second look needed.
    absent: HashSet<String>,
    customers: HashMap<CustomerKey, Option<CustomerRow>>,
    /// Who holds each Stripe customer id read ahead (`None`: nobody).
    by_stripe_id: HashMap<String, Option<CustomerRow>>,
    /// Who holds each (account, customer_ref) read ahead (`None`: nobody).
    by_ref: HashMap<(String, String), Option<CustomerRow>>,
    /// Intent events read ahead, by event id, until applied.
    intents: HashMap<String, IntentView>,
    cards: Vec<PaymentMethodRow>,
    card_ids: HashSet<String>,
    transitions: Vec<Transition>,
    outbox: Vec<QueuedItem>,
}

#[derive(Debug)]
struct Cached {
    row: CheckoutRow,
    /// In the database already (else inserted by the flush).
    stored: bool,
    /// Changed since it was read or last written.
    changed: bool,
}

/// What resolving a customer depends on: the names and the rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CustomerKey {
    account: Option<String>,
    stripe_customer_id: Option<String>,
    customer_ref: Option<String>,
    email: Option<String>,
    create_by_email: bool,
}

impl CustomerKey {
    fn new(names: &Names<'_>, rule: ByEmail) -> Self {
        Self {
            account: names.account.map(str::to_owned),
            stripe_customer_id: names.stripe_customer_id.map(str::to_owned),
            customer_ref: names.customer_ref.map(str::to_owned),
            email: names.email.map(str::to_owned),
            create_by_email: rule != ByEmail::FindOnly,
        }
    }
}

/// A transition owning its values, until the flush writes it.
#[derive(Debug)]
struct Transition {
    checkout_id: String,
    event_id: Option<String>,
    from_state: Option<crate::domain::checkout::CheckoutState>,
    to_state: crate::domain::checkout::CheckoutState,
    outcome: crate::domain::checkout::TransitionOutcome,
    reason: Option<String>,
    error_code: Option<String>,
    decline_code: Option<String>,
    event_created: Option<i64>,
    at: i64,
}

impl Transition {
    fn of(t: &NewTransition<'_>) -> Self {
        Self {
            checkout_id: t.checkout_id.to_owned(),
            event_id: t.event_id.map(str::to_owned),
            from_state: t.from_state,
            to_state: t.to_state,
            outcome: t.outcome,
            reason: t.reason.map(str::to_owned),
            error_code: t.error_code.map(str::to_owned),
            decline_code: t.decline_code.map(str::to_owned),
            event_created: t.event_created,
            at: t.at,
        }
    }

    fn as_new(&self) -> NewTransition<'_> {
        NewTransition {
            checkout_id: &self.checkout_id,
            event_id: self.event_id.as_deref(),
            from_state: self.from_state,
            to_state: self.to_state,
            outcome: self.outcome,
            reason: self.reason.as_deref(),
            error_code: self.error_code.as_deref(),
            decline_code: self.decline_code.as_deref(),
            event_created: self.event_created,
            at: self.at,
        }
    }
}

impl Staging {
    /// Every write at once: one event applied by itself, or in a savepoint of its own.
    pub fn immediate() -> Self {
        Self::default()
    }

    /// Writes gathered for the batch; the caller must [`Staging::flush`] before committing.
    pub fn batch() -> Self {
        Self {
            batch: Some(Batch::default()),
        }
    }

    /// Reads and locks the checkouts of `intent_ids` (ids that name no intent just find
    /// nothing) in one query. Immediate staging reads nothing ahead.
    pub fn lock_checkouts(&mut self, conn: &mut Conn, intent_ids: &[&str]) -> StoreResult<()> {
        let Some(batch) = &mut self.batch else {
            return Ok(());
        };
        for row in checkout_store::lock_checkouts_by_intents(conn, intent_ids)? {
            batch.checkouts.insert(
                row.intent_id.clone(),
                Cached {
                    row,
                    stored: true,
                    changed: false,
                },
            );
        }
        batch.absent.extend(
            intent_ids
                .iter()
                .filter(|id| !batch.checkouts.contains_key(**id))
                .map(|id| (*id).to_owned()),
        );
        Ok(())
    }

    /// The checkout following `intent_id`, locked (see
    /// [`checkout_store::find_checkout_by_intent`]).
    pub fn find_checkout_by_intent(
        &mut self,
        conn: &mut Conn,
        intent_id: &str,
    ) -> StoreResult<Option<CheckoutRow>> {
        let Some(batch) = &mut self.batch else {
            return checkout_store::find_checkout_by_intent(conn, intent_id);
        };
        if let Some(cached) = batch.checkouts.get(intent_id) {
            return Ok(Some(cached.row.clone()));
        }
        if batch.absent.contains(intent_id) {
            return Ok(None);
        }
        let found = checkout_store::find_checkout_by_intent(conn, intent_id)?;
        match &found {
            Some(row) => {
                batch.checkouts.insert(
                    intent_id.to_owned(),
                    Cached {
                        row: row.clone(),
                        stored: true,
                        changed: false,
                    },
                );
            }
            None => {
                batch.absent.insert(intent_id.to_owned());
            }
        }
        Ok(found)
    }

    /// Inserts a checkout unless its intent has one; returns whether it did. Gathered, the
    /// insert is assumed to succeed, and the flush fails if it does not.
    pub fn insert_checkout(&mut self, conn: &mut Conn, row: &CheckoutRow) -> StoreResult<bool> {
        let Some(batch) = &mut self.batch else {
            return checkout_store::insert_checkout(conn, row);
        };
        batch.absent.remove(&row.intent_id);
        batch.checkouts.insert(
            row.intent_id.clone(),
            Cached {
                row: row.clone(),
                stored: false,
                changed: true,
            },
        );
        Ok(true)
    }

    pub fn update_checkout(&mut self, conn: &mut Conn, row: &CheckoutRow) -> StoreResult<()> {
        let Some(batch) = &mut self.batch else {
            return checkout_store::update_checkout(conn, row);
        };
        match batch.checkouts.get_mut(&row.intent_id) {
            Some(cached) => {
                cached.row = row.clone();
                cached.changed = true;
            }
            // Not read through this staging: written at once, like the caller asked.
            None => checkout_store::update_checkout(conn, row)?,
        }
        Ok(())
    }

    pub fn insert_transition(
        &mut self,
        conn: &mut Conn,
        transition: &NewTransition<'_>,
    ) -> StoreResult<()> {
        match &mut self.batch {
            Some(batch) => {
                batch.transitions.push(Transition::of(transition));
                Ok(())
            }
            None => checkout_store::insert_transition(conn, transition),
        }
    }

    /// Records the card unless it is known already (its details then stay as they are).
    pub fn insert_payment_method_if_absent(
        &mut self,
        conn: &mut Conn,
        row: &PaymentMethodRow,
    ) -> StoreResult<()> {
        let Some(batch) = &mut self.batch else {
            return payment_methods::insert_payment_method_if_absent(conn, row).map(drop);
        };
        // The first record of a card in the batch is the one an insert would have kept.
        if batch.card_ids.insert(row.id.clone()) {
            batch.cards.push(row.clone());
        }
        Ok(())
    }

    /// Queues the card's save (once per intent; see [`save_card::item`]).
    pub fn queue_save_card(
        &mut self,
        conn: &mut Conn,
        work: &save_card::SaveCard<'_>,
        now: i64,
    ) -> StoreResult<()> {
        match &mut self.batch {
            Some(batch) => {
                batch.outbox.push(save_card::item(work, now));
                Ok(())
            }
            None => save_card::enqueue(conn, work, now).map(drop),
        }
    }

    /// Reads `events` ahead of applying them: parses each intent event once (applying it
    /// takes the result, [`Staging::take_intent`]) and reads every customer they name that
    /// the batch has not read yet, one query per account. Immediate staging reads nothing.
    pub fn read_ahead(&mut self, conn: &mut Conn, events: &[WebhookEvent]) -> StoreResult<()> {
        let Some(batch) = &mut self.batch else {
            return Ok(());
        };
        for event in events {
            if let Some(view) = read_intent(event) {
                batch.intents.insert(event.id.clone(), view);
            }
        }
        // Per account: the Stripe ids and refs not read yet.
        let mut wanted: BTreeMap<Option<&str>, (Vec<&str>, Vec<&str>)> = BTreeMap::new();
        for event in events {
            let Some(view) = batch.intents.get(&event.id) else {
                continue;
            };
            let names = customer_names(event.account.as_deref(), view);
            let (ids, refs) = wanted.entry(names.account).or_default();
            if let Some(id) = names
                .stripe_customer_id
                .filter(|id| !batch.by_stripe_id.contains_key(*id))
            {
                ids.push(id);
            }
            if let Some(r) = names.customer_ref.filter(|r| {
                !batch
                    .by_ref
                    .contains_key(&(account_key(names.account).to_owned(), (*r).to_owned()))
            }) {
                refs.push(r);
            }
        }
        for (account, (ids, refs)) in wanted {
            if ids.is_empty() && refs.is_empty() {
                continue;
            }
            let rows = customer_store::find_customers_named(conn, account, &ids, &refs)?;
            let account = account_key(account);
            for id in ids {
                let holder = rows
                    .iter()
                    .find(|r| r.stripe_customer_id.as_deref() == Some(id));
                batch.by_stripe_id.insert(id.to_owned(), holder.cloned());
            }
            for r in refs {
                let holder = rows
                    .iter()
                    .find(|c| c.account == account && c.customer_ref.as_deref() == Some(r));
                batch
                    .by_ref
                    .insert((account.to_owned(), r.to_owned()), holder.cloned());
            }
        }
        Ok(())
    }

    /// The intent `event_id` was read as ahead of applying it, if it was.
    pub fn take_intent(&mut self, event_id: &str) -> Option<IntentView> {
        self.batch.as_mut()?.intents.remove(event_id)
    }

    /// The customer `names` refer to ([`customer_store::resolve`]). A batch resolves each
    /// set of names once, since resolving again would find what the first time found or
    /// made, and weighs the holders it read ahead instead of reading them again.
    pub fn resolve_customer(
        &mut self,
        conn: &mut Conn,
        names: Names<'_>,
        rule: ByEmail,
        now: i64,
    ) -> StoreResult<Option<CustomerRow>> {
        let Some(batch) = &mut self.batch else {
            return customer_store::resolve(conn, names, rule, now);
        };
        let key = CustomerKey::new(&names, rule);
        if let Some(found) = batch.customers.get(&key) {
            return Ok(found.clone());
        }
        let account = account_key(names.account).to_owned();
        let by_stripe_id = names
            .stripe_customer_id
            .map(|id| batch.by_stripe_id.get(id));
        let by_ref = names
            .customer_ref
            .map(|r| batch.by_ref.get(&(account.clone(), r.to_owned())));
        let read_ahead = names.email.is_none()
            && !matches!(by_stripe_id, Some(None))
            && !matches!(by_ref, Some(None));
        let (found, held) = if read_ahead {
            let by_stripe_id = by_stripe_id.flatten().cloned().flatten();
            let by_ref = by_ref.flatten().cloned().flatten();
            let held = [by_stripe_id.clone(), by_ref.clone()];
            let found =
                customer_store::resolve_among(conn, names, rule, now, by_stripe_id, by_ref)?;
            (found, held)
        } else {
            (
                customer_store::resolve(conn, names, rule, now)?,
                [None, None],
            )
        };
        // A holder read ahead and returned as it was: the maps know it already.
        let as_read = found.is_some() && held.contains(&found);
        if let Some(row) = found.as_ref().filter(|_| !as_read) {
            // A customer created or linked now holds its id and ref from here on.
            for holder in batch
                .by_stripe_id
                .values_mut()
                .chain(batch.by_ref.values_mut())
                .flatten()
                .filter(|h| h.id == row.id)
            {
                *holder = row.clone();
            }
            if let Some(id) = &row.stripe_customer_id {
                batch.by_stripe_id.insert(id.clone(), Some(row.clone()));
            }
            if let Some(r) = &row.customer_ref {
                batch
                    .by_ref
                    .insert((row.account.clone(), r.clone()), Some(row.clone()));
            }
        }
        batch.customers.insert(key, found.clone());
        Ok(found)
    }

    /// Writes everything gathered, tables in foreign-key order: cards, checkouts (new, then
    /// changed), transitions, outbox items. Fails with [`StoreError::Conflict`] when a
    /// checkout assumed new was created meanwhile by another transaction.
    pub fn flush(&mut self, conn: &mut Conn) -> StoreResult<()> {
        let Some(batch) = &mut self.batch else {
            return Ok(());
        };
        if !batch.cards.is_empty() {
            payment_methods::insert_payment_methods_if_absent(conn, &batch.cards)?;
            batch.cards.clear();
        }
        let new: Vec<CheckoutRow> = batch
            .checkouts
            .values()
            .filter(|c| !c.stored)
            .map(|c| c.row.clone())
            .collect();
        if !new.is_empty() {
            let inserted = checkout_store::insert_checkouts(conn, &new)?;
            if inserted != new.len() {
                return Err(StoreError::Conflict(format!(
                    "{} of {} new checkouts were created concurrently",
                    new.len() - inserted,
                    new.len()
                )));
            }
        }
        let changed: Vec<&CheckoutRow> = batch
            .checkouts
            .values()
            .filter(|c| c.stored && c.changed)
            .map(|c| &c.row)
            .collect();
        if !changed.is_empty() {
            let updated = checkout_store::update_checkouts(conn, &changed)?;
            if updated != changed.len() {
                return Err(StoreError::Corrupt(format!(
                    "{} of {} locked checkouts vanished",
                    changed.len() - updated,
                    changed.len()
                )));
            }
        }
        for cached in batch.checkouts.values_mut() {
            cached.stored = true;
            cached.changed = false;
        }
        if !batch.transitions.is_empty() {
            let rows: Vec<NewTransition<'_>> =
                batch.transitions.iter().map(Transition::as_new).collect();
            checkout_store::insert_transitions(conn, &rows)?;
            batch.transitions.clear();
        }
        if !batch.outbox.is_empty() {
            let inserted = outbox_store::insert_queued_items(conn, &batch.outbox)?;
            save_card::log_queued(&batch.outbox, &inserted);
            debug!(
                "{} of {} outbox items queued ({} asked for already)",
                inserted.len(),
                batch.outbox.len(),
                batch.outbox.len() - inserted.len()
            );
            batch.outbox.clear();
        }
        Ok(())
    }

    /// Writes the gathered cards now if `payment_method_id` is among them: for a caller
    /// about to read and rewrite that card (the card's own events, an intent's error
    /// naming it). Nothing else gathered depends on cards, so the rest waits.
    pub fn write_card_first(
        &mut self,
        conn: &mut Conn,
        payment_method_id: &str,
    ) -> StoreResult<()> {
        let Some(batch) = &mut self.batch else {
            return Ok(());
        };
        if batch.cards.iter().any(|c| c.id == payment_method_id) {
            payment_methods::insert_payment_methods_if_absent(conn, &batch.cards)?;
            batch.cards.clear();
        }
        Ok(())
    }
}
