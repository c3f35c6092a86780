//! The growth of every retry delay in payhook (events in the inbox, items in the outbox,
//! pauses of a worker whose database is away): exponential, capped, with jitter so that
//! retries of many things scheduled together do not land together again.

use std::time::Duration;

use rand::Rng;

/// `base * 2^(tries-1)`, capped at `cap` (`tries` counts from 1).
pub fn backoff(base: Duration, cap: Duration, tries: i32) -> Duration {
    let exp = tries.saturating_sub(1).clamp(0, 20) as u32;
    base.saturating_mul(1u32 << exp).min(cap)
}

/// `delay` times a random factor in `[1 - spread, 1 + spread)`.
pub fn jitter(delay: Duration, spread: f64) -> Duration {
    delay.mul_f64(rand::rng().random_range(1.0 - spread..1.0 + spread))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_the_base_up_to_the_cap() {
        let (base, cap) = (Duration::from_secs(2), Duration::from_secs(10));
        assert_eq!(backoff(base, cap, 0), base);
        assert_eq!(backoff(base, cap, 1), base);
        assert_eq!(backoff(base, cap, 3), Duration::from_secs(8));
        assert_eq!(backoff(base, cap, 4), cap);
        assert_eq!(backoff(base, cap, i32::MAX), cap);
    }

    #[test]
    fn jitter_stays_within_its_spread() {
        for _ in 0..1000 {
            let d = jitter(Duration::from_secs(10), 0.5).as_secs_f64();
            assert!((5.0..15.0).contains(&d), "{d}");
        }
    }
}
