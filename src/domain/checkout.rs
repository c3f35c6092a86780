//! The checkout state machine (pure: no I/O, no clock).
//!
//! A checkout follows one PaymentIntent or SetupIntent. Stripe delivers events at least once
//! and in no guaranteed order, so the machine is built to be order-independent: every target
//! state carries a key `(class, created, progress)` and an event is applied exactly when its
//! key is greater than the key of the event that set the current state. The final state is
//! therefore the maximum over all events received, whatever order they came in.
//!
//! - `class` makes finality a property of the order itself: nothing leaves `succeeded` (money
//!   moved) or `canceled`; `expired` (set by the sweeper, not by Stripe) yields only to those
//!   two. `succeeded` outranks `canceled`: if Stripe ever reports both, money has moved.
//! - `created` has one-second resolution and Stripe often emits several events for one intent
//!   in the same second, so a tie is broken by `progress`, never by arrival.
//! - `failed` is not final: the customer may retry with another card.

use crate::text_enum::text_enum;

text_enum! {
    /// What kind of intent a checkout follows.
    pub enum CheckoutKind {
        Payment = "payment",
        Setup = "setup",
    }
}

text_enum! {
    /// The states of a checkout.
    #[derive(PartialOrd, Ord)]
    pub enum CheckoutState {
        Pending = "pending",
        RequiresAction = "requires_action",
        Processing = "processing",
        Failed = "failed",
        Expired = "expired",
        Canceled = "canceled",
        Succeeded = "succeeded",
    }
}

text_enum! {
    /// What became of the card a checkout saves (the outbox's `save_card` work); a checkout
    /// that saves no card has none.
    pub enum CardStatus {
        /// Saving is queued or being retried.
        Pending = "pending",
        /// Attached to the customer at Stripe, made the default, details stored.
        Saved = "saved",
        /// A permanent error or too many tries; the checkout carries the error.
        Failed = "failed",
    }
}

text_enum! {
    /// Whether an event moved a checkout (`applied`) or was recorded without moving it.
    pub enum TransitionOutcome {
        Applied = "applied",
        Refused = "refused",
    }
}

impl CheckoutState {
    /// No event moves a checkout out of a final state.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Canceled)
    }

    /// States the sweeper may expire. `processing` is left alone: money is in flight and
    /// Stripe will report the outcome.
    pub fn can_expire(self) -> bool {
        matches!(self, Self::Pending | Self::RequiresAction | Self::Failed)
    }

    /// Finality class: the first component of the ordering key.
    fn class(self) -> u8 {
        match self {
            Self::Pending | Self::RequiresAction | Self::Processing | Self::Failed => 0,
            Self::Expired => 1,
            Self::Canceled => 2,
            Self::Succeeded => 3,
        }
    }

    /// Progress within a second, for ties on `created`.
    fn progress(self) -> u8 {
        match self {
            Self::Pending => 0,
            Self::RequiresAction => 1,
            Self::Processing => 2,
            Self::Failed => 3,
            Self::Expired | Self::Canceled | Self::Succeeded => 4,
        }
    }
}

/// What an intent event asks for, before the machine decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Created,
    RequiresAction,
    Processing,
    Succeeded,
    /// `payment_failed` / `setup_failed`, with whether the decline asks for authentication.
    Failed {
        authentication_required: bool,
    },
    Canceled,
}

impl Trigger {
    /// The state this trigger targets. A decline that needs authentication is not a failure of
    /// the card: the customer must come back on-session, so it is `requires_action`.
    pub fn target(self) -> CheckoutState {
        match self {
            Self::Created => CheckoutState::Pending,
            Self::RequiresAction => CheckoutState::RequiresAction,
            Self::Processing => CheckoutState::Processing,
            Self::Succeeded => CheckoutState::Succeeded,
            Self::Failed {
                authentication_required: true,
            } => CheckoutState::RequiresAction,
            Self::Failed {
                authentication_required: false,
            } => CheckoutState::Failed,
            Self::Canceled => CheckoutState::Canceled,
        }
    }
}

/// Whether an error code means "authenticate on-session", whichever field Stripe put it in.
pub fn is_authentication_required(code: Option<&str>, decline_code: Option<&str>) -> bool {
    code == Some("authentication_required") || decline_code == Some("authentication_required")
}

/// The state a checkout is in, and the `created` time of the event that set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current {
    pub state: CheckoutState,
    pub since: i64,
}

impl Current {
    fn key(self) -> (u8, i64, u8) {
        (self.state.class(), self.since, self.state.progress())
    }
}

/// Why an event did not move the state. Every refusal is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Older than (or tied with, at lower progress) the event that set the current state.
    Stale,
    /// Would leave a final state (or an expired one for something other than an outcome).
    Final,
    /// Same state, same time: a re-delivery or a twin event.
    Duplicate,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stale => "stale",
            Self::Final => "final",
            Self::Duplicate => "duplicate",
        }
    }
}

/// The machine's verdict on one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Apply {
        from: Option<CheckoutState>,
        to: CheckoutState,
        /// Something an operator should look at, though the move is right.
        warning: Option<&'static str>,
    },
    Refuse {
        state: CheckoutState,
        reason: Refusal,
    },
}

/// Decides what an event with `target` state and `created` time does to a checkout.
pub fn decide(current: Option<Current>, target: CheckoutState, created: i64) -> Decision {
    let Some(current) = current else {
        return Decision::Apply {
            from: None,
            to: target,
            warning: None,
        };
    };
    let incoming = Current {
        state: target,
        since: created,
    };
    let (cur_class, new_class) = (current.state.class(), target.class());
    if new_class < cur_class {
        return Decision::Refuse {
            state: current.state,
            reason: Refusal::Final,
        };
    }
    if new_class == cur_class
        && (current.state.is_final() || current.state == CheckoutState::Expired)
    {
        return Decision::Refuse {
            state: current.state,
            reason: Refusal::Duplicate,
        };
    }
    match incoming.key().cmp(&current.key()) {
        std::cmp::Ordering::Greater => {
            let warning = match (current.state, target) {
                (CheckoutState::Expired, CheckoutState::Succeeded) => {
                    Some("an expired checkout succeeded: money moved after the expiry")
                }
                (CheckoutState::Canceled, CheckoutState::Succeeded) => {
                    Some("a canceled checkout succeeded: money moved, success wins")
                }
                _ => None,
            };
            Decision::Apply {
                from: Some(current.state),
                to: target,
                warning,
            }
        }
        std::cmp::Ordering::Equal => Decision::Refuse {
            state: current.state,
            reason: Refusal::Duplicate,
        },
        std::cmp::Ordering::Less => Decision::Refuse {
            state: current.state,
            reason: Refusal::Stale,
        },
    }
}

/// Decides whether the sweeper may expire a checkout last moved at `since` (local seconds).
pub fn should_expire(state: CheckoutState, last_activity: i64, now: i64, after_secs: i64) -> bool {
    state.can_expire() && now.saturating_sub(last_activity) >= after_secs
}

/// The sweeper's watch a write of a checkout in `state` at `updated_at` asks for: from then,
/// if the state can expire. A checkout already watched keeps its earlier watch (the store
/// writes `COALESCE(watch, this)`), and one that leaves such a state keeps it too, until the
/// sweeper looks: so an ordinary event never changes the indexed column (see the migration
/// `expiry_watch`), and a checkout quiet since T is always watched from T or earlier.
pub fn expiry_watch(state: CheckoutState, updated_at: i64) -> Option<i64> {
    state.can_expire().then_some(updated_at)
}

/// What the sweeper does with a watched checkout it has read (locked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    Expire,
    /// It moved since it was watched and can still expire: look again once it has been
    /// quiet since its last change.
    WatchFrom(i64),
    /// It is in a state that cannot expire: nothing to watch.
    Unwatch,
}

/// Decides a watched checkout's fate; see [`Sweep`].
pub fn sweep(state: CheckoutState, last_activity: i64, now: i64, after_secs: i64) -> Sweep {
    if should_expire(state, last_activity, now, after_secs) {
        Sweep::Expire
    } else if state.can_expire() {
        Sweep::WatchFrom(last_activity)
    } else {
        Sweep::Unwatch
    }
}

/// Folds a sequence of `(target, created)` through the machine, as the processor does.
pub fn fold<I: IntoIterator<Item = (CheckoutState, i64)>>(events: I) -> Option<Current> {
    events.into_iter().fold(None, |current, (target, created)| {
        match decide(current, target, created) {
            Decision::Apply { to, .. } => Some(Current {
                state: to,
                since: created,
            }),
            Decision::Refuse { .. } => current,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use CheckoutState::*;

    const EVENT_STATES: [CheckoutState; 6] = [
        Pending,
        RequiresAction,
        Processing,
        Failed,
        Canceled,
        Succeeded,
    ];

    fn apply(current: CheckoutState, since: i64, target: CheckoutState, created: i64) -> Decision {
        decide(
            Some(Current {
                state: current,
                since,
            }),
            target,
            created,
        )
    }

    #[test]
    fn the_first_event_creates_the_checkout_in_its_state() {
        for target in EVENT_STATES {
            assert_eq!(
                decide(None, target, 5),
                Decision::Apply {
                    from: None,
                    to: target,
                    warning: None
                }
            );
        }
    }

    #[test]
    fn newer_events_move_non_final_states_anywhere() {
        for from in [Pending, RequiresAction, Processing, Failed] {
            for to in EVENT_STATES {
                assert!(
                    matches!(apply(from, 10, to, 11), Decision::Apply { .. }),
                    "{from} -> {to} at a later second must apply"
                );
            }
        }
    }

    #[test]
    fn final_states_refuse_everything_except_success_over_cancel() {
        for to in EVENT_STATES {
            for created in [5, 10, 15] {
                let d = apply(Succeeded, 10, to, created);
                assert!(
                    matches!(
                        d,
                        Decision::Refuse {
                            state: Succeeded,
                            ..
                        }
                    ),
                    "succeeded -> {to} at {created}"
                );
            }
        }
        for to in [Pending, RequiresAction, Processing, Failed] {
            assert_eq!(
                apply(Canceled, 10, to, 20),
                Decision::Refuse {
                    state: Canceled,
                    reason: Refusal::Final
                }
            );
        }
        assert!(matches!(
            apply(Canceled, 10, Succeeded, 5),
            Decision::Apply {
                warning: Some(_),
                ..
            }
        ));
        assert_eq!(
            apply(Canceled, 10, Canceled, 12),
            Decision::Refuse {
                state: Canceled,
                reason: Refusal::Duplicate
            }
        );
    }

    #[test]
    fn expired_yields_only_to_outcomes() {
        for to in [Pending, RequiresAction, Processing, Failed] {
            assert_eq!(
                apply(Expired, 10, to, 99),
                Decision::Refuse {
                    state: Expired,
                    reason: Refusal::Final
                }
            );
        }
        assert!(matches!(
            apply(Expired, 10, Succeeded, 1),
            Decision::Apply {
                warning: Some(_),
                ..
            }
        ));
        assert!(matches!(
            apply(Expired, 10, Canceled, 1),
            Decision::Apply { warning: None, .. }
        ));
    }

    #[test]
    fn stale_events_never_move_the_state() {
        for from in [Pending, RequiresAction, Processing, Failed] {
            for to in [Pending, RequiresAction, Processing, Failed] {
                assert_eq!(
                    apply(from, 10, to, 9),
                    Decision::Refuse {
                        state: from,
                        reason: Refusal::Stale
                    }
                );
            }
        }
    }

    #[test]
    fn ties_within_one_second_are_broken_by_progress_not_arrival() {
        assert!(matches!(
            apply(Pending, 10, Processing, 10),
            Decision::Apply { .. }
        ));
        assert_eq!(
            apply(Processing, 10, Pending, 10),
            Decision::Refuse {
                state: Processing,
                reason: Refusal::Stale
            }
        );
        assert_eq!(
            apply(Failed, 10, Failed, 10),
            Decision::Refuse {
                state: Failed,
                reason: Refusal::Duplicate
            }
        );
    }

    #[test]
    fn authentication_required_declines_need_the_customer_not_a_new_card() {
        assert_eq!(
            Trigger::Failed {
                authentication_required: true
            }
            .target(),
            RequiresAction
        );
        assert_eq!(
            Trigger::Failed {
                authentication_required: false
            }
            .target(),
            Failed
        );
        assert!(is_authentication_required(
            Some("authentication_required"),
            None
        ));
        assert!(is_authentication_required(
            Some("card_declined"),
            Some("authentication_required")
        ));
        assert!(!is_authentication_required(
            Some("card_declined"),
            Some("insufficient_funds")
        ));
    }

    /// The whole table, both orders of every pair, with the same and with different seconds.
    #[test]
    fn every_pair_ends_in_the_same_state_in_both_orders() {
        for a in EVENT_STATES {
            for b in EVENT_STATES {
                for (ta, tb) in [(10, 10), (10, 11), (11, 10)] {
                    let forward = fold([(a, ta), (b, tb)]).map(|c| c.state);
                    let backward = fold([(b, tb), (a, ta)]).map(|c| c.state);
                    assert_eq!(forward, backward, "{a}@{ta} and {b}@{tb}");
                }
            }
        }
    }

    #[test]
    fn states_round_trip_through_text_and_unknown_text_fails() {
        for &state in CheckoutState::ALL {
            assert_eq!(state.as_str().parse::<CheckoutState>(), Ok(state));
        }
        assert!("paid".parse::<CheckoutState>().is_err());
        assert!("card".parse::<CheckoutKind>().is_err());
    }

    #[test]
    fn only_unfinished_quiet_checkouts_expire() {
        assert!(should_expire(Pending, 0, 3600, 3600));
        assert!(!should_expire(Pending, 1, 3600, 3600));
        assert!(!should_expire(Processing, 0, 99_999, 3600));
        assert!(!should_expire(Succeeded, 0, 99_999, 3600));
    }

    #[test]
    fn only_states_that_can_expire_are_watched() {
        for state in CheckoutState::ALL {
            assert_eq!(
                expiry_watch(*state, 7).is_some(),
                state.can_expire(),
                "{state}"
            );
        }
        assert_eq!(expiry_watch(Pending, 7), Some(7));
    }

    #[test]
    fn the_sweeper_expires_watches_again_or_forgets() {
        assert_eq!(sweep(Pending, 0, 3600, 3600), Sweep::Expire);
        assert_eq!(sweep(Failed, 100, 3600, 3600), Sweep::WatchFrom(100));
        assert_eq!(sweep(RequiresAction, 100, 3700, 3600), Sweep::Expire);
        assert_eq!(sweep(Processing, 0, 99_999, 3600), Sweep::Unwatch);
        assert_eq!(sweep(Succeeded, 0, 99_999, 3600), Sweep::Unwatch);
        assert_eq!(sweep(Expired, 0, 99_999, 3600), Sweep::Unwatch);
    }

    fn event_strategy() -> impl Strategy<Value = (CheckoutState, i64)> {
        (prop::sample::select(EVENT_STATES.to_vec()), 0i64..4)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Any permutation and duplication of one checkout's events ends where in-order
        /// delivery ends.
        #[test]
        fn any_permutation_with_duplicates_ends_in_the_same_state(
            events in prop::collection::vec(event_strategy(), 1..8),
            dup_mask in prop::collection::vec(any::<bool>(), 8),
            seed in any::<u64>(),
        ) {
            let mut in_order = events.clone();
            in_order.sort_by_key(|(state, created)| (*created, state.progress()));
            let expected = fold(in_order.iter().copied()).map(|c| c.state);

            let mut delivered = events.clone();
            for (event, dup) in events.iter().zip(&dup_mask) {
                if *dup { delivered.push(*event); }
            }
            // Deterministic shuffle from the seed (Fisher-Yates with an LCG).
            let mut s = seed;
            for i in (1..delivered.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                delivered.swap(i, (s >> 33) as usize % (i + 1));
            }
            prop_assert_eq!(fold(delivered).map(|c| c.state), expected);
        }
    }
}
