//! A histogram whose `observe` is a few relaxed atomic adds, for the acknowledgement path.
//!
//! prometheus-client's own `Histogram` takes a write lock per observation; on the path that
//! answers Stripe, every HTTP worker would meet on that lock. Here each bucket is its own
//! counter and the sum is kept in whole microseconds, so an observation is a short scan of
//! the bounds and two atomic adds. The count is the sum of the buckets at encoding time, so
//! `_count` always equals the `+Inf` bucket, as the exposition format requires.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

#[derive(Debug)]
struct Inner {
    /// Upper bounds in microseconds, ascending; the last bucket (`+Inf`) has none.
    bounds_us: Vec<u64>,
    /// Observations per bucket (not cumulative); one more than `bounds_us`.
    buckets: Vec<AtomicU64>,
    sum_us: AtomicU64,
}

/// Cheap to clone: clones share the same counts.
#[derive(Debug, Clone)]
pub struct AtomicHistogram {
    inner: Arc<Inner>,
}

impl AtomicHistogram {
    /// Buckets with these upper bounds, in seconds (ascending), plus `+Inf`.
    pub fn new(bounds_secs: &[f64]) -> Self {
        let bounds_us: Vec<u64> = bounds_secs.iter().map(|s| secs_to_us(*s)).collect();
        debug_assert!(
            bounds_us.windows(2).all(|w| w[0] < w[1]),
            "ascending bounds"
        );
        let buckets = (0..=bounds_us.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            inner: Arc::new(Inner {
                bounds_us,
                buckets,
                sum_us: AtomicU64::new(0),
            }),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        self.observe_us(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    /// A value in seconds; negative values count as zero.
    pub fn observe_secs(&self, secs: f64) {
        self.observe_us(secs_to_us(secs));
    }

    fn observe_us(&self, us: u64) {
        let inner = &*self.inner;
        let bucket = inner
            .bounds_us
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(inner.bounds_us.len());
        inner.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        inner.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Observations so far (the `+Inf` bucket).
    pub fn count(&self) -> u64 {
        self.inner
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum()
    }
}

fn secs_to_us(secs: f64) -> u64 {
    // `as` saturates: NaN and negatives become 0, huge values u64::MAX.
    (secs * 1e6).round() as u64
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let inner = &*self.inner;
        let buckets: Vec<(f64, u64)> = inner
            .bounds_us
            .iter()
            .map(|&us| us as f64 / 1e6)
            // prometheus-client writes the f64::MAX bound as `+Inf`.
            .chain(std::iter::once(f64::MAX))
            .zip(inner.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = inner.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = AtomicHistogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(1000)); // on the bound: that bucket
        h.observe(Duration::from_micros(1001));
        h.observe(Duration::from_secs(3));
        h.observe_secs(-5.0);
        let counts: Vec<u64> = h
            .inner
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts, vec![2, 1, 1]);
        assert_eq!(h.count(), 4);
        assert_eq!(h.inner.sum_us.load(Ordering::Relaxed), 3_002_001);
    }
}
