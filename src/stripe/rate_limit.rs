//! A token bucket shared by every Stripe API call of the process.
//!
//! Stripe allows about 100 read and 100 write requests per second in live mode (25 in test
//! mode) per account, across every process using the key. A backlog of thousands of actions
//! must not turn into a burst of 429s, so the worker takes a token before each call and
//! waits when the bucket is empty. The bucket itself ([`TokenBucket`]) is pure: time is
//! passed in, so its behaviour is unit-tested without sleeping.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `capacity` tokens at most, refilled at `rate` tokens per second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. `rate` is clamped to at least 0.01/s and `capacity` to at least 1.
    pub fn new(rate_per_sec: f64, capacity: f64, now: Instant) -> Self {
        let capacity = capacity.max(1.0);
        Self {
            capacity,
            rate: rate_per_sec.max(0.01),
            tokens: capacity,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.last = self.last.max(now);
    }

    /// Takes a token if one is there; otherwise says how long until one will be.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }

    /// Empties the bucket, e.g. after Stripe answered 429: whoever is next waits a full
    /// token's time instead of adding to the pile-up.
    pub fn drain(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = self.tokens.min(0.0);
    }
}

/// The async face of a [`TokenBucket`]: [`RateLimiter::acquire`] waits for a token.
#[derive(Debug)]
pub struct RateLimiter {
    bucket: Mutex<TokenBucket>,
}

impl RateLimiter {
    /// `rate_per_sec` requests per second on average, bursts of up to `burst`.
    pub fn new(rate_per_sec: f64, burst: f64) -> Self {
        Self {
            bucket: Mutex::new(TokenBucket::new(rate_per_sec, burst, Instant::now())),
        }
    }

    fn with_bucket<T>(&self, f: impl FnOnce(&mut TokenBucket) -> T) -> T {
        // A panic while holding this lock cannot leave the bucket inconsistent.
        let mut guard = self
            .bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// Waits until a request may be sent.
    pub async fn acquire(&self) {
        loop {
            match self.with_bucket(|b| b.try_take(Instant::now())) {
                Ok(()) => return,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// See [`TokenBucket::drain`].
    pub fn back_off(&self) {
        self.with_bucket(|b| b.drain(Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 3.0, t0);
        for _ in 0..3 {
            assert_eq!(bucket.try_take(t0), Ok(()));
        }
        let wait = bucket.try_take(t0).expect_err("empty");
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        // 100 ms later exactly one more token has arrived.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(bucket.try_take(t1), Ok(()));
        assert!(bucket.try_take(t1).is_err());
    }

    #[test]
    fn the_long_run_rate_never_exceeds_the_budget() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(20.0, 20.0, t0);
        // Ask every millisecond for 10 s: burst (20) + 10 s × 20/s = 220 granted.
        let granted = (0..10_000)
            .filter(|ms| bucket.try_take(t0 + Duration::from_millis(*ms)).is_ok())
            .count();
        assert!((219..=221).contains(&granted), "{granted}");
    }

    #[test]
    fn idle_time_refills_only_up_to_capacity() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(5.0, 2.0, t0);
        assert!(bucket.try_take(t0).is_ok() && bucket.try_take(t0).is_ok());
        let later = t0 + Duration::from_secs(3600);
        assert!(bucket.try_take(later).is_ok() && bucket.try_take(later).is_ok());
        assert!(bucket.try_take(later).is_err());
    }

    #[test]
    fn draining_after_a_429_makes_the_next_caller_wait() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(4.0, 4.0, t0);
        bucket.drain(t0);
        let wait = bucket.try_take(t0).expect_err("drained");
        assert_eq!(wait, Duration::from_millis(250));
    }

    #[test]
    fn a_clock_going_backwards_is_harmless() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut bucket = TokenBucket::new(1.0, 1.0, t0);
        assert!(bucket.try_take(t0).is_ok());
        assert!(bucket.try_take(t0 - Duration::from_secs(5)).is_err());
        assert!(bucket.try_take(t0 + Duration::from_secs(1)).is_ok());
    }
}
