//! The process's Prometheus metrics: every family registered once, here, with its labels.
//!
//! One [`Metrics`] per [`crate::Application`] (tests run several apps in one process, each
//! counting only its own work). Label values are bounded by construction: each is a fixed
//! word (`&'static str` from a stored-state enum, an error kind or an operation name) or a
//! secret's position, never an event, customer or intent id.
//!
//! Where the counting happens:
//! - the webhook handler: [`WebhookMetrics`], whose handles are created at start-up, so a
//!   delivery costs a few relaxed atomic adds (no lock, no label lookup);
//! - the processor and the sweeper: event outcomes, lag and checkout transitions, counted
//!   after the transaction that made them has committed (a rolled-back try counts nothing);
//! - [`crate::stripe::gateway`]: every Stripe call by operation and outcome;
//! - reconciliation: events found new or known.
//!
//! Gauges that mirror the database (`payhook_events_pending`, `payhook_actions`,
//! `payhook_notifications`) are read from the database when `/metrics` is scraped
//! ([`Metrics::set_database_gauges`]): the rows are changed by every instance and by CLI
//! commands (`payhook retry`), so a count kept by one process's workers would drift, and the
//! indexed counts cost a few milliseconds per scrape.
//!
//! The webhook, event and secret families carry an `endpoint` label (API.md section 4): the
//! endpoint's configured name (`default` for `/webhooks/stripe`), so its values are bounded
//! by the configuration. `payhook_events_by_api_version_total` is labelled by Stripe's
//! `api_version`, a date-shaped string of which an account sees a handful in its life.

mod histogram;

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use histogram::AtomicHistogram;

use crate::domain::checkout::{CheckoutState, TransitionOutcome};
use crate::store::events::EventStatus;
use crate::store::outbox::OutboxStatus;

/// The content type of [`Metrics::encode`]'s output (OpenMetrics text, which Prometheus
/// scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Acknowledgement latency buckets, in seconds. Measured: p50 0.4–2 ms, p99 2–10 ms on two
/// cores (BENCHMARKS.md), so the buckets are dense from 0.25 to 25 ms; the tail reaches the
/// 5 s a delivery may wait for a database connection (`DATABASE_WAIT_MS`).
pub const ACK_BUCKETS: [f64; 14] = [
    0.000_25, 0.000_5, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
];

/// Event lag buckets (applied time − Stripe's `created`), in seconds. `created` has
/// one-second resolution, so nothing finer than a second means anything; a live event is
/// applied within a second or two, Stripe's own retries arrive minutes to hours late, and a
/// reconciled outage days late.
pub const LAG_BUCKETS: [f64; 13] = [
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    14_400.0,
    86_400.0,
    259_200.0,
    2_592_000.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub endpoint: Arc<str>,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SecretLabels {
    pub endpoint: Arc<str>,
    pub index: u32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub endpoint: Arc<str>,
    pub status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiVersionLabels {
    pub api_version: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub to: &'static str,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StripeLabels {
    pub operation: &'static str,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub result: &'static str,
}

/// How a Stripe call ended, as `payhook_stripe_requests_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeOutcome {
    Ok,
    Retryable,
    Permanent,
}

impl StripeOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Retryable => "retryable",
            Self::Permanent => "permanent",
        }
    }
}

/// The Stripe operations payhook performs, created at start like the rejection kinds so the
/// family is there (at 0) before the first call. An operation not listed is still counted.
const STRIPE_OPERATIONS: &[&str] = &[
    "create_customer",
    "attach",
    "set_default",
    "retrieve",
    "detach",
    "list",
    "create_intent",
    "cancel_intent",
    "list_events",
    "retrieve_payment_intent",
    "retrieve_setup_intent",
    "retrieve_payment_method",
];

/// The rejection kinds of the webhook contract (README, "The webhook contract"), created at
/// start so each series exists from the first scrape (at 0) and `rate()` sees its first
/// rejection. A kind not listed here is still counted: its series appears when it happens.
const REJECTION_KINDS: &[&str] = &[
    "missing_signature_header",
    "malformed_signature_header",
    "no_v1_signature",
    "signature_mismatch",
    "stale_timestamp",
    "malformed_json",
    "invalid_event_id",
    "missing_event_id",
    "missing_event_type",
    "invalid_envelope_field",
    "invalid_created",
    "object_type_mismatch",
    "payload_too_large",
    "storage_unavailable",
    "wrong_endpoint_kind",
];

/// The final statuses of an event, each counted in `payhook_events_total`.
const FINAL_STATUSES: [EventStatus; 4] = [
    EventStatus::Processed,
    EventStatus::Ignored,
    EventStatus::Failed,
    EventStatus::Dead,
];

/// The handles of one endpoint's webhook path, created once. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WebhookMetrics {
    endpoint: Arc<str>,
    accepted: Counter,
    duplicate: Counter,
    requests: Family<WebhookLabels, Counter>,
    /// One per configured signing secret, by position.
    secrets: Arc<[Counter]>,
    ack: AtomicHistogram,
}

impl WebhookMetrics {
    /// A new event was stored and acknowledged after `elapsed`.
    pub fn accepted(&self, elapsed: std::time::Duration) {
        self.accepted.inc();
        self.ack.observe(elapsed);
    }

    /// A stored event id was delivered again and acknowledged after `elapsed`.
    pub fn duplicate(&self, elapsed: std::time::Duration) {
        self.duplicate.inc();
        self.ack.observe(elapsed);
    }

    /// A delivery refused with the contract's error `kind`.
    pub fn rejected(&self, kind: &'static str) {
        self.requests
            .get_or_create(&WebhookLabels {
                endpoint: self.endpoint.clone(),
                outcome: kind,
            })
            .inc();
    }

    /// A delivery's signature matched the secret at `index`.
    pub fn secret_matched(&self, index: usize) {
        match self.secrets.get(index) {
            Some(counter) => {
                counter.inc();
            }
            None => {
                let index = u32::try_from(index).unwrap_or(u32::MAX);
                log::warn!(
                    "signing secret #{index} of endpoint {} matched but is not configured",
                    self.endpoint
                );
            }
        }
    }
}

/// Database counts for the gauges, read at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseGauges {
    pub events_pending: i64,
    pub actions: Vec<(OutboxStatus, i64)>,
    pub notifications: Vec<(OutboxStatus, i64)>,
}

/// Every family of the process. Build once per application and share through an `Arc`.
pub struct Metrics {
    registry: Registry,
    /// The handles of each configured endpoint's webhook path, by name.
    webhooks: std::collections::HashMap<String, WebhookMetrics>,
    events: Family<EventLabels, Counter>,
    api_versions: Family<ApiVersionLabels, Counter>,
    event_lag: AtomicHistogram,
    transitions: Family<TransitionLabels, Counter>,
    stripe_requests: Family<StripeLabels, Counter>,
    reconcile_new: Counter,
    reconcile_known: Counter,
    events_pending: Gauge,
    actions: Family<StatusLabels, Gauge>,
    notifications: Family<StatusLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every family. `endpoints`: each webhook endpoint's name and how many
    /// signing secrets it has (its series exist from the first scrape, at 0).
    pub fn new(endpoints: &[(&str, usize)]) -> Self {
        let mut registry = Registry::default();

        let requests = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "payhook_webhook_requests",
            "Webhook deliveries by outcome: accepted (a new event stored), duplicate (an id already stored, acknowledged), or the rejection kind",
            requests.clone(),
        );
        let secret_family = Family::<SecretLabels, Counter>::default();
        registry.register(
            "payhook_signing_secret_matched",
            "Verified deliveries (duplicates included) by endpoint and the 0-based position of the secret that matched in that endpoint's secrets (STRIPE_WEBHOOK_SECRET for default)",
            secret_family.clone(),
        );
        let ack = AtomicHistogram::new(&ACK_BUCKETS);
        registry.register(
            "payhook_webhook_ack_seconds",
            "Time from receiving a delivery to acknowledging it (accepted and duplicate deliveries)",
            ack.clone(),
        );

        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "payhook_events",
            "Events that reached a final status, by endpoint: processed, ignored (not handled, or a livemode the endpoint does not take), failed (cannot be applied) or dead (every try failed)",
            events.clone(),
        );
        let mut webhooks = std::collections::HashMap::new();
        for &(name, secrets) in endpoints {
            let endpoint: Arc<str> = Arc::from(name);
            for status in FINAL_STATUSES {
                events.get_or_create_owned(&EventLabels {
                    endpoint: endpoint.clone(),
                    status: status.as_str(),
                });
            }
            let handle = |outcome| {
                requests.get_or_create_owned(&WebhookLabels {
                    endpoint: endpoint.clone(),
                    outcome,
                })
            };
            let (accepted, duplicate) = (handle("accepted"), handle("duplicate"));
            for kind in REJECTION_KINDS {
                drop(handle(kind));
            }
            let secrets: Arc<[Counter]> = (0..secrets)
                .map(|i| {
                    secret_family.get_or_create_owned(&SecretLabels {
                        endpoint: endpoint.clone(),
                        index: u32::try_from(i).unwrap_or(u32::MAX),
                    })
                })
                .collect();
            webhooks.insert(
                name.to_owned(),
                WebhookMetrics {
                    endpoint,
                    accepted,
                    duplicate,
                    requests: requests.clone(),
                    secrets,
                    ack: ack.clone(),
                },
            );
        }
        let api_versions = Family::<ApiVersionLabels, Counter>::default();
        registry.register(
            "payhook_events_by_api_version",
            "Snapshot events stored, by the api_version Stripe rendered them in (thin events have none)",
            api_versions.clone(),
        );
        let event_lag = AtomicHistogram::new(&LAG_BUCKETS);
        registry.register(
            "payhook_event_lag_seconds",
            "Time from Stripe's created to the event being applied (processed or ignored)",
            event_lag.clone(),
        );
        let transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "payhook_checkout_transitions",
            "Checkout transitions by target state and outcome (applied, or refused by the state machine)",
            transitions.clone(),
        );
        for to in CheckoutState::ALL {
            for outcome in TransitionOutcome::ALL {
                transitions.get_or_create_owned(&TransitionLabels {
                    to: to.as_str(),
                    outcome: outcome.as_str(),
                });
            }
        }
        let stripe_requests = Family::<StripeLabels, Counter>::default();
        registry.register(
            "payhook_stripe_requests",
            "Stripe API calls by operation and outcome (ok, retryable, permanent)",
            stripe_requests.clone(),
        );
        for operation in STRIPE_OPERATIONS {
            for outcome in [
                StripeOutcome::Ok,
                StripeOutcome::Retryable,
                StripeOutcome::Permanent,
            ] {
                stripe_requests.get_or_create_owned(&StripeLabels {
                    operation,
                    outcome: outcome.as_str(),
                });
            }
        }
        let reconcile = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "payhook_reconcile_events",
            "Events listed by reconciliation passes: new (stored by the pass) or known (stored already)",
            reconcile.clone(),
        );
        let reconcile_new = reconcile.get_or_create_owned(&ReconcileLabels { result: "new" });
        let reconcile_known = reconcile.get_or_create_owned(&ReconcileLabels { result: "known" });

        let events_pending = Gauge::default();
        registry.register(
            "payhook_events_pending",
            "Events waiting to be applied (read from the database at scrape time)",
            events_pending.clone(),
        );
        let actions = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "payhook_actions",
            "Stripe side effects in the outbox by status (read from the database at scrape time)",
            actions.clone(),
        );
        let notifications = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "payhook_notifications",
            "Notifications to the app in the outbox by status (read from the database at scrape time)",
            notifications.clone(),
        );

        Self {
            registry,
            webhooks,
            events,
            api_versions,
            event_lag,
            transitions,
            stripe_requests,
            reconcile_new,
            reconcile_known,
            events_pending,
            actions,
            notifications,
        }
    }

    /// The handles of the webhook path of the endpoint `name`, if it was given to
    /// [`Metrics::new`].
    pub fn webhook(&self, name: &str) -> Option<WebhookMetrics> {
        self.webhooks.get(name).cloned()
    }

    /// An event that came through `endpoint` reached `status` (processed, ignored, failed
    /// or dead) `lag_secs` after Stripe created it; the lag is recorded for applied events
    /// (processed or ignored).
    pub fn event_finished(&self, endpoint: &str, status: EventStatus, lag_secs: f64) {
        self.events
            .get_or_create(&EventLabels {
                endpoint: Arc::from(endpoint),
                status: status.as_str(),
            })
            .inc();
        if matches!(status, EventStatus::Processed | EventStatus::Ignored) {
            self.event_lag.observe_secs(lag_secs);
        }
    }

    /// A snapshot event rendered in `api_version` was stored.
    pub fn event_stored_with_api_version(&self, api_version: &str) {
        self.api_versions
            .get_or_create(&ApiVersionLabels {
                api_version: api_version.to_owned(),
            })
            .inc();
    }

    /// An event was stored already `ignored` (its endpoint does not take its livemode):
    /// it never reaches the processor, so it is counted here, with no lag (never applied).
    pub fn event_ignored_on_arrival(&self, endpoint: &str) {
        self.events
            .get_or_create(&EventLabels {
                endpoint: Arc::from(endpoint),
                status: EventStatus::Ignored.as_str(),
            })
            .inc();
    }

    /// `n` committed transitions to `to` with `outcome`.
    pub fn transitions(&self, to: CheckoutState, outcome: TransitionOutcome, n: u64) {
        self.transitions
            .get_or_create(&TransitionLabels {
                to: to.as_str(),
                outcome: outcome.as_str(),
            })
            .inc_by(n);
    }

    pub fn stripe_request(&self, operation: &'static str, outcome: StripeOutcome) {
        self.stripe_requests
            .get_or_create(&StripeLabels {
                operation,
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Events a reconciliation pass listed: `new` stored by it, `known` stored before.
    pub fn reconciled(&self, new: u64, known: u64) {
        self.reconcile_new.inc_by(new);
        self.reconcile_known.inc_by(known);
    }

    /// Sets the database-mirroring gauges (every status of the outbox, 0 when absent).
    pub fn set_database_gauges(&self, gauges: &DatabaseGauges) {
        self.events_pending.set(gauges.events_pending);
        for (family, counts) in [
            (&self.actions, &gauges.actions),
            (&self.notifications, &gauges.notifications),
        ] {
            for status in OutboxStatus::ALL {
                let n = counts
                    .iter()
                    .filter(|(s, _)| s == status)
                    .map(|(_, n)| n)
                    .sum();
                family
                    .get_or_create(&StatusLabels {
                        status: status.as_str(),
                    })
                    .set(n);
            }
        }
    }

    /// The database could not be read: its gauges are dropped from the exposition rather
    /// than left showing stale counts.
    pub fn clear_database_gauges(&self) {
        self.actions.clear();
        self.notifications.clear();
        self.events_pending.set(0);
    }

    /// The OpenMetrics text exposition of every family ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::with_capacity(8192);
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_family_of_the_contract() {
        let metrics = Metrics::new(&[("default", 2), ("connect", 1)]);
        let webhook = metrics.webhook("default").unwrap();
        webhook.accepted(std::time::Duration::from_micros(700));
        webhook.secret_matched(1);
        webhook.rejected("signature_mismatch");
        metrics
            .webhook("connect")
            .unwrap()
            .rejected("wrong_endpoint_kind");
        metrics.event_finished("default", EventStatus::Processed, 3.0);
        metrics.event_ignored_on_arrival("connect");
        metrics.event_stored_with_api_version("2024-06-20");
        metrics.transitions(CheckoutState::Succeeded, TransitionOutcome::Applied, 2);
        metrics.stripe_request("attach", StripeOutcome::Ok);
        metrics.reconciled(3, 4);
        metrics.set_database_gauges(&DatabaseGauges {
            events_pending: 5,
            actions: vec![(OutboxStatus::Failed, 1)],
            notifications: vec![],
        });
        let text = metrics.encode().unwrap();
        for line in [
            "payhook_webhook_requests_total{endpoint=\"default\",outcome=\"accepted\"} 1",
            "payhook_webhook_requests_total{endpoint=\"default\",outcome=\"signature_mismatch\"} 1",
            "payhook_webhook_requests_total{endpoint=\"default\",outcome=\"stale_timestamp\"} 0",
            "payhook_webhook_requests_total{endpoint=\"connect\",outcome=\"wrong_endpoint_kind\"} 1",
            "payhook_signing_secret_matched_total{endpoint=\"default\",index=\"1\"} 1",
            "payhook_signing_secret_matched_total{endpoint=\"default\",index=\"0\"} 0",
            "payhook_signing_secret_matched_total{endpoint=\"connect\",index=\"0\"} 0",
            "payhook_events_total{endpoint=\"connect\",status=\"ignored\"} 1",
            "payhook_events_by_api_version_total{api_version=\"2024-06-20\"} 1",
            "payhook_webhook_ack_seconds_bucket{le=\"0.001\"} 1",
            "payhook_webhook_ack_seconds_count 1",
            "payhook_events_total{endpoint=\"default\",status=\"processed\"} 1",
            "payhook_event_lag_seconds_bucket{le=\"5.0\"} 1",
            "payhook_checkout_transitions_total{to=\"succeeded\",outcome=\"applied\"} 2",
            "payhook_stripe_requests_total{operation=\"attach\",outcome=\"ok\"} 1",
            "payhook_reconcile_events_total{result=\"known\"} 4",
            "payhook_events_pending 5",
            "payhook_actions{status=\"failed\"} 1",
            "payhook_notifications{status=\"pending\"} 0",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
