//! `hoard_request_duration_seconds`, a histogram of atomics: prometheus-client's own takes a
//! mutex per observation, which every request would share.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// A cheap handle: the registry holds one clone, `Metrics` another.
#[derive(Debug, Clone, Default)]
pub(super) struct DurationHistogram {
    inner: Arc<DurationBuckets>,
}

#[derive(Debug)]
struct DurationBuckets {
    /// Upper bounds in seconds (100 µs, then ×2.5); the last count is the +Inf bucket.
    bounds: [f64; 14],
    counts: [AtomicU64; 15],
    sum_nanos: AtomicU64,
}

impl Default for DurationBuckets {
    fn default() -> Self {
        let mut bounds = [0.0; 14];
        let mut bound = 0.0001;
        for slot in &mut bounds {
            *slot = bound;
            bound *= 2.5;
        }
        DurationBuckets {
            bounds,
            counts: Default::default(),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl DurationHistogram {
    pub(super) fn observe(&self, elapsed: Duration) {
        let inner = &*self.inner;
        let seconds = elapsed.as_secs_f64();
        let bucket = inner
            .bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(inner.bounds.len());
        inner.counts[bucket].fetch_add(1, Ordering::Relaxed);
        inner.sum_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

impl prometheus_client::metrics::TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let inner = &*self.inner;
        // Per-bucket counts: the encoder accumulates them itself.
        let buckets: Vec<(f64, u64)> = inner
            .bounds
            .iter()
            .chain(std::iter::once(&f64::INFINITY))
            .zip(&inner.counts)
            .map(|(bound, count)| (*bound, count.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}
