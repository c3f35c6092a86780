//! Card rules (pure): a card's lifecycle, which saved card is a customer's default, which
//! copy of a card (same fingerprint) stays.
//!
//! Webhooks arrive in any order and saves run in any order, so every rule here decides by
//! Stripe time, never by which event or save came last: attach against detach by the later
//! Stripe time; among saved cards the newest by the Stripe time of the intent that saved it
//! (ties broken by id), so every worker, whatever it saw first, picks the same card.

use crate::text_enum::text_enum;

text_enum! {
    /// Lifecycle of a local card record.
    pub enum PaymentMethodStatus {
        /// Named by an event; not (yet) known to be attached to a customer.
        Seen = "seen",
        Attached = "attached",
        /// Attached and the customer's default.
        Default = "default",
        /// Replaced as the customer's card by a newer one (still attached at Stripe).
        Superseded = "superseded",
        Detached = "detached",
    }
}

impl PaymentMethodStatus {
    /// Attached at Stripe and counted among the customer's cards.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Attached | Self::Default)
    }
}

/// Whether Stripe's latest word on a card is that it is detached: attach and detach may be
/// learnt in either order, so the later Stripe time wins (a tie counts as detached).
pub fn is_detached(attached_at: Option<i64>, detached_at: Option<i64>) -> bool {
    match (attached_at, detached_at) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(a), Some(d)) => d >= a,
    }
}

/// A card's status once Stripe's attach and detach times (merged already) are known.
pub fn observed_status(
    current: PaymentMethodStatus,
    attached_at: Option<i64>,
    detached_at: Option<i64>,
) -> PaymentMethodStatus {
    if is_detached(attached_at, detached_at) {
        PaymentMethodStatus::Detached
    } else if attached_at.is_some()
        && matches!(
            current,
            PaymentMethodStatus::Seen | PaymentMethodStatus::Detached
        )
    {
        PaymentMethodStatus::Attached
    } else {
        current
    }
}

/// A saved card as the ordering sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saved<'a> {
    pub id: &'a str,
    /// Stripe time of the succeeded intent that saved it; `None`: not saved by payhook.
    pub saved_at: Option<i64>,
}

impl Saved<'_> {
    fn key(&self) -> (Option<i64>, &str) {
        (self.saved_at, self.id)
    }
}

/// Whether `card` is the newest saved card among itself and `others`.
pub fn is_newest<'a>(card: Saved<'a>, others: impl IntoIterator<Item = Saved<'a>>) -> bool {
    others.into_iter().all(|o| o.key() <= card.key())
}

/// The statuses after `card` was saved to a customer whose other live cards are `others`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterSave<'a> {
    /// `card`'s new status: `Default` if it is the newest, else `Superseded`.
    pub card: PaymentMethodStatus,
    /// The other cards that become `Superseded` (only when `card` is the newest).
    pub superseded: Vec<&'a str>,
}

pub fn after_save<'a>(
    card: Saved<'a>,
    others: &[(Saved<'a>, PaymentMethodStatus)],
) -> AfterSave<'a> {
    if is_newest(card, others.iter().map(|(s, _)| *s)) {
        AfterSave {
            card: PaymentMethodStatus::Default,
            superseded: others
                .iter()
                .filter(|(_, status)| status.is_live())
                .map(|(s, _)| s.id)
                .collect(),
        }
    } else {
        AfterSave {
            card: PaymentMethodStatus::Superseded,
            superseded: Vec::new(),
        }
    }
}

/// Of several copies of one card (same fingerprint), the one that stays: the newest saved.
pub fn copy_to_keep<'a>(copies: impl IntoIterator<Item = Saved<'a>>) -> Option<&'a str> {
    copies
        .into_iter()
        .max_by(|a, b| a.key().cmp(&b.key()))
        .map(|s| s.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use PaymentMethodStatus::*;

    fn saved(id: &str, at: Option<i64>) -> Saved<'_> {
        Saved { id, saved_at: at }
    }

    #[test]
    fn the_later_of_attach_and_detach_wins() {
        assert!(!is_detached(Some(5), None));
        assert!(is_detached(None, Some(5)));
        assert!(is_detached(Some(5), Some(6)));
        assert!(!is_detached(Some(7), Some(6)));
        assert!(is_detached(Some(6), Some(6)));
        assert_eq!(observed_status(Seen, Some(1), None), Attached);
        assert_eq!(observed_status(Detached, Some(9), Some(8)), Attached);
        assert_eq!(observed_status(Default, Some(9), None), Default);
        assert_eq!(observed_status(Default, Some(1), Some(2)), Detached);
        assert_eq!(observed_status(Seen, None, None), Seen);
    }

    #[test]
    fn the_newest_saved_card_is_the_default_and_supersedes_the_live_others() {
        let others = [
            (saved("pm_a", Some(10)), Default),
            (saved("pm_b", None), Attached),
            (saved("pm_c", Some(5)), Superseded),
        ];
        let after = after_save(saved("pm_new", Some(20)), &others);
        assert_eq!(after.card, Default);
        assert_eq!(after.superseded, vec!["pm_a", "pm_b"]);
        // Saved late (its webhook came late) but older by Stripe time: superseded itself.
        let late = after_save(saved("pm_old", Some(7)), &others);
        assert_eq!(late.card, Superseded);
        assert!(late.superseded.is_empty());
    }

    #[test]
    fn ties_on_stripe_time_go_to_the_higher_id_whatever_the_order() {
        let (a, b) = (saved("pm_a", Some(10)), saved("pm_b", Some(10)));
        assert!(is_newest(b, [a]));
        assert!(!is_newest(a, [b]));
        assert_eq!(copy_to_keep([a, b]), Some("pm_b"));
        assert_eq!(copy_to_keep([b, a]), Some("pm_b"));
        assert_eq!(copy_to_keep([saved("pm_z", None), a]), Some("pm_a"));
        assert_eq!(copy_to_keep(std::iter::empty()), None);
    }
}
