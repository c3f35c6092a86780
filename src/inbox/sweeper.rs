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
use crate::domain::checkout::{self, CheckoutState, Sweep, TransitionOutcome};
use crate::metrics::Metrics;
use crate::store::checkouts::{self as store, NewTransition};
use crate::store::{now_secs, Pool, StoreResult};

/// Watched checkouts looked at per transaction.
const SWEEP_LIMIT: i64 = 1000;
/// Transactions per sweep at most. Every checkout that passed through a state that can
/// expire leaves a watch the sweeper must end once it is due, so a sweep keeps going while
/// its transactions find full batches: up to 100 000 checkouts per sweep, 3 300 a second at
/// the default interval.
const SWEEP_PASSES: usize = 100;

/// Expires due checkouts and moves on or ends out-of-date watches; returns how many
/// checkouts it expired.
pub fn sweep(
    pool: &Pool,
    expiry_secs: i64,
    notifications: Notifications,
    now: i64,
) -> StoreResult<usize> {
    let mut expired = 0;
    for _ in 0..SWEEP_PASSES {
        match sweep_once(pool, expiry_secs, notifications, now) {
            Ok(pass) => {
                expired += pass.expired;
                if pass.looked_at < SWEEP_LIMIT as usize {
                    break;
                }
            }
            // What earlier passes committed stays counted; the next sweep goes on.
            Err(e) if expired > 0 => {
                warn!("expiry sweep stopped after {expired} expiries: {e}");
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(expired)
}

struct Pass {
    looked_at: usize,
    expired: usize,
}

/// One transaction of a sweep: at most [`SWEEP_LIMIT`] watched checkouts.
fn sweep_once(
    pool: &Pool,
    expiry_secs: i64,
    notifications: Notifications,
    now: i64,
) -> StoreResult<Pass> {
    pool.write(|conn| {
        let due = store::find_watched_checkouts(conn, now - expiry_secs, SWEEP_LIMIT)?;
        let looked_at = due.len();
        let mut expired = 0;
        for mut row in due {
            let state = row.state;
            match checkout::sweep(state, row.updated_at, now, expiry_secs) {
                Sweep::Expire => {}
                Sweep::WatchFrom(since) => {
                    store::set_expiry_watch(conn, &row.id, Some(since))?;
                    continue;
                }
                Sweep::Unwatch => {
                    store::set_expiry_watch(conn, &row.id, None)?;
                    continue;
                }
            }
            row.state = CheckoutState::Expired;
            row.updated_at = now;
            store::update_checkout(conn, &row)?;
            store::set_expiry_watch(conn, &row.id, None)?;
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
        Ok(Pass { looked_at, expired })
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
