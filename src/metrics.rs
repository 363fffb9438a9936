//! Counters and histograms for `/_hoard/metrics` (Prometheus text format, via
//! prometheus-client) and `/_hoard/stats`. Recorded in one place per event: the access-log
//! record for requests, the accept loop for connections, the error path for upstream errors.
//!
//! Metrics observe; they must not change what a request does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::cache::{Cache, CacheOutcome};

/// How a request reached hoard.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum RequestMode {
    Forward,
    Reverse,
    Gateway,
    Connect,
    Admin,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    mode: RequestMode,
    method: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TierLabels {
    tier: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    outcomes: Family<OutcomeLabels, Counter>,
    bytes: Family<SourceLabels, Counter>,
    upstream_errors: Family<KindLabels, Counter>,
    denied: Counter,
    duration: Histogram,
    open_connections: Gauge,
    tier_bytes: Family<TierLabels, Gauge>,
    tier_objects: Family<TierLabels, Gauge>,
    cached_urls: Gauge,
    evictions: Gauge,
    corrupt_bodies: Gauge,
    /// Plain totals for `/_hoard/stats`, kept beside the labelled families.
    totals: Totals,
}

#[derive(Default)]
struct Totals {
    requests: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    bytes_from_cache: AtomicU64,
    bytes_from_origin: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hoard");
        let requests = Family::default();
        registry.register(
            "requests",
            "Requests by mode, method and status",
            requests.clone(),
        );
        let outcomes = Family::default();
        registry.register(
            "cache_outcomes",
            "Requests by cache outcome",
            outcomes.clone(),
        );
        let bytes = Family::default();
        registry.register(
            "response_bytes",
            "Response body bytes sent, by where they came from",
            bytes.clone(),
        );
        let upstream_errors = Family::default();
        registry.register(
            "upstream_errors",
            "Failures talking to origins, by kind",
            upstream_errors.clone(),
        );
        let denied = Counter::default();
        registry.register(
            "denied",
            "Connections refused by access control",
            denied.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.0001, 2.5, 14));
        registry.register(
            "request_duration_seconds",
            "Time from request to the last body byte",
            duration.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections open now",
            open_connections.clone(),
        );
        let tier_bytes = Family::default();
        registry.register(
            "cache_tier_bytes",
            "Bytes stored per tier",
            tier_bytes.clone(),
        );
        let tier_objects = Family::default();
        registry.register(
            "cache_tier_objects",
            "Bodies stored per tier",
            tier_objects.clone(),
        );
        let cached_urls = Gauge::default();
        registry.register("cache_urls", "URLs in the cache index", cached_urls.clone());
        let evictions = Gauge::default();
        registry.register(
            "cache_evictions",
            "Entries evicted from the disk tier since start",
            evictions.clone(),
        );
        let corrupt_bodies = Gauge::default();
        registry.register(
            "cache_corrupt_bodies",
            "Stored bodies dropped for failing their checksum since start",
            corrupt_bodies.clone(),
        );
        Metrics {
            registry,
            requests,
            outcomes,
            bytes,
            upstream_errors,
            denied,
            duration,
            open_connections,
            tier_bytes,
            tier_objects,
            cached_urls,
            evictions,
            corrupt_bodies,
            totals: Totals::default(),
        }
    }
}

/// Keeps the `method` label's values few: unknown methods count as `OTHER`.
fn method_label(method: &http::Method) -> String {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "PURGE",
    ];
    let method = method.as_str();
    if KNOWN.contains(&method) {
        method
    } else {
        "OTHER"
    }
    .to_owned()
}

impl Metrics {
    /// One finished request, from the access-log record.
    pub fn record_request(
        &self,
        mode: RequestMode,
        method: &http::Method,
        status: u16,
        outcome: Option<CacheOutcome>,
        bytes: u64,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                mode,
                method: method_label(method),
                status,
            })
            .inc();
        self.duration.observe(elapsed.as_secs_f64());
        self.totals.requests.fetch_add(1, Ordering::Relaxed);
        let from_cache = matches!(
            outcome,
            Some(CacheOutcome::Hit | CacheOutcome::Stale | CacheOutcome::Revalidated)
        );
        if let Some(outcome) = outcome {
            self.outcomes
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.as_str(),
                })
                .inc();
            let counter = if from_cache {
                &self.totals.hits
            } else {
                &self.totals.misses
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let source = match outcome {
            _ if from_cache => "cache",
            Some(_) => "origin",
            None => "hoard",
        };
        self.bytes
            .get_or_create(&SourceLabels { source })
            .inc_by(bytes);
        let total = if from_cache {
            &self.totals.bytes_from_cache
        } else {
            &self.totals.bytes_from_origin
        };
        total.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    pub fn denied(&self) {
        self.denied.inc();
    }

    pub fn connection_opened(&self) {
        self.open_connections.inc();
    }

    pub fn connection_closed(&self) {
        self.open_connections.dec();
    }

    /// Reads the cache's sizes into gauges, then renders everything in the Prometheus text
    /// format.
    pub fn render(&self, cache: &Cache) -> String {
        for (tier, usage) in [
            ("memory", cache.memory_usage()),
            ("disk", cache.disk_usage()),
        ] {
            self.tier_bytes
                .get_or_create(&TierLabels { tier })
                .set(usage.bytes as i64);
            self.tier_objects
                .get_or_create(&TierLabels { tier })
                .set(usage.objects as i64);
        }
        self.cached_urls.set(cache.urls() as i64);
        self.evictions.set(cache.evictions() as i64);
        self.corrupt_bodies.set(cache.corrupt_bodies() as i64);
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// The main numbers as JSON for `/_hoard/stats` and the status page.
    pub fn stats(&self, cache: &Cache) -> serde_json::Value {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (memory, disk) = (cache.memory_usage(), cache.disk_usage());
        serde_json::json!({
            "requests": load(&self.totals.requests),
            "cache": {
                "hits": load(&self.totals.hits),
                "misses": load(&self.totals.misses),
                "bytes_from_cache": load(&self.totals.bytes_from_cache),
                "bytes_from_origin": load(&self.totals.bytes_from_origin),
                "urls": cache.urls(),
                "evictions": cache.evictions(),
                "corrupt_bodies": cache.corrupt_bodies(),
                "memory": { "bytes": memory.bytes, "objects": memory.objects },
                "disk": { "bytes": disk.bytes, "objects": disk.objects },
            },
            "open_connections": self.open_connections.get(),
        })
    }
}
