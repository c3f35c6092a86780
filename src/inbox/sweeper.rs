//! Expires checkouts whose intent never completes.
//!
//! Stripe sends nothing when a customer abandons a checkout, so payhook decides by time: a
//! checkout in a state that can expire and unchanged for `checkout_expiry` becomes `expired`,
//! with a transition recorded like any other. A later `succeeded` still wins (money moved).

use std::sync::Arc;

use crate::app::notifications::Notifications;

use log::{info, warn};
use tokio_util::sync::CancellationToken;

use crate::config::ProcessorConfig;
use crate::domain::checkout::{self, CheckoutState, TransitionOutcome};
use crate::metrics::Metrics;
use crate::store::checkouts::{self as store, NewTransition};
use crate::store::{now_secs, Pool, StoreResult};

const SWEEP_LIMIT: i64 = 1000;

/// Expires due checkouts; returns how many.
pub fn sweep(
    pool: &Pool,
    expiry_secs: i64,
    notifications: Notifications,
    now: i64,
) -> StoreResult<usize> {
    let expirable: Vec<CheckoutState> = CheckoutState::ALL
        .iter()
        .copied()
        .filter(|s| s.can_expire())
        .collect();
    pool.write(|conn| {
        let due = store::find_quiet_checkouts(conn, &expirable, now - expiry_secs, SWEEP_LIMIT)?;
        let mut expired = 0;
        for mut row in due {
            let state = row.state;
            if !checkout::should_expire(state, row.updated_at, now, expiry_secs) {
                continue;
            }
            row.state = CheckoutState::Expired;
            row.updated_at = now;
            store::update_checkout(conn, &row)?;
            store::insert_transition(
                conn,
                &NewTransition {
                    checkout_id: &row.id,
                    event_id: None,
                    from_state: Some(state),
                    to_state: CheckoutState::Expired,
                    outcome: TransitionOutcome::Applied,
                    reason: Some("expired"),
                    error_code: None,
                    decline_code: None,
                    event_created: None,
                    at: now,
                },
            )?;
            if notifications == Notifications::Queue {
                crate::app::notifications::checkout_moved(
                    conn,
                    &row.id,
                    CheckoutState::Expired,
                    now,
                )?;
            }
            info!(
                "checkout {} ({}) expired from {state}",
                row.id, row.intent_id
            );
            expired += 1;
        }
        Ok(expired)
    })
}

/// Sweeps every `sweep_interval` until `shutdown`.
pub async fn run(
    pool: Pool,
    config: ProcessorConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let expiry = config.checkout_expiry.as_secs() as i64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(config.sweep_interval) => {}
        }
        match pool
            .run_pool(move |pool| sweep(pool, expiry, config.notifications, now_secs()))
            .await
        {
            Ok(expired) => record_expired(&metrics, expired),
            Err(e) => warn!("expiry sweep failed: {e}"),
        }
    }
}

/// Counts `expired` committed expiries as transitions.
pub fn record_expired(metrics: &Metrics, expired: usize) {
    metrics.transitions(
        CheckoutState::Expired,
        TransitionOutcome::Applied,
        expired as u64,
    );
}
