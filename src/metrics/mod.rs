//! Counters and histograms for `/_hoard/metrics` (Prometheus text format, via
//! prometheus-client), `/_hoard/stats`, and the status page's last-30-minutes timeline.
//! Recorded in one place per event: a request's `Exchange` when it has finished, the accept
//! loop for connections, the error path for upstream errors.
//!
//! Metrics observe; they must not change what a request does. The fleet's and the shared
//! tier's are in `fleet.rs`.

mod collect;
mod fleet;
mod histogram;
mod hosts;

pub use fleet::{FleetMetrics, PeerMetrics};
pub use hosts::HostNumbers;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use collect::{CacheCollector, CacheSnapshot, ProcessCollector};
use histogram::DurationHistogram;

use crate::cache::{Cache, CacheOutcome};
use crate::exchange::{Exchange, RequestMode};
use crate::fleet::Fleet;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    mode: RequestMode,
    method: &'static str,
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
struct BuildLabels {
    version: &'static str,
}

/// Everything a finished request touches is lock-free: the labelled counters it increments
/// are looked up once (at start, or the first time a label combination is seen) and kept as
/// handles, and the duration histogram is a set of atomics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    /// Handles into `requests` for the common statuses, by `request_slot`.
    request_counters: Box<[OnceLock<Counter>]>,
    /// Handles into the `cache_outcomes` family, by `CacheOutcome as usize`.
    outcomes: [Counter; CacheOutcome::ALL.len()],
    /// Handles into the `response_bytes` family: from the cache, the origin, hoard itself.
    bytes: [Counter; 3],
    upstream_errors: Family<KindLabels, Counter>,
    denied: Counter,
    duration: DurationHistogram,
    open_connections: Gauge,
    /// The cache's sizes and drop counts, snapshotted at each scrape.
    cache: Arc<CacheCollector>,
    /// The fleet's members and the shared tier.
    pub fleet: FleetMetrics,
    /// Plain totals for `/_hoard/stats`, kept beside the labelled families.
    totals: Totals,
    timeline: Timeline,
    /// Per site, for the status page.
    hosts: hosts::Hosts,
    started: std::time::Instant,
}

/// Requests and cache hits per 10-second slot over the last 30 minutes, for the status page's
/// chart. Slots are reused round-robin; each remembers which 10 seconds it counts.
struct Timeline {
    slots: Vec<Slot>,
}

#[derive(Default)]
struct Slot {
    period: AtomicU64,
    requests: AtomicU64,
    hits: AtomicU64,
}

const SLOT_SECONDS: u64 = 10;
const SLOTS: usize = 180;

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
        }
    }
}

impl Timeline {
    fn record(&self, now: u64, hit: bool) {
        let period = now / SLOT_SECONDS;
        let slot = &self.slots[(period % SLOTS as u64) as usize];
        let seen = slot.period.load(Ordering::Relaxed);
        // The first request of a new period claims the slot and clears it; a request racing
        // with the claim may be lost, which a chart can afford.
        if seen != period
            && slot
                .period
                .compare_exchange(seen, period, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            slot.requests.store(0, Ordering::Relaxed);
            slot.hits.store(0, Ordering::Relaxed);
        }
        slot.requests.fetch_add(1, Ordering::Relaxed);
        if hit {
            slot.hits.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (requests, hits) per slot, oldest first, ending with the current slot.
    fn series(&self, now: u64) -> Vec<(u64, u64)> {
        let current = now / SLOT_SECONDS;
        (0..SLOTS as u64)
            .rev()
            .map(|back| {
                let period = current.saturating_sub(back);
                let slot = &self.slots[(period % SLOTS as u64) as usize];
                if slot.period.load(Ordering::Relaxed) == period {
                    (
                        slot.requests.load(Ordering::Relaxed),
                        slot.hits.load(Ordering::Relaxed),
                    )
                } else {
                    (0, 0)
                }
            })
            .collect()
    }
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
        // `process_*` is unprefixed, as every client library names it; the rest is hoard's.
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix("hoard");
        registry.register(
            "build",
            "hoard's version",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        let requests = Family::default();
        registry.register(
            "requests",
            "Requests by mode, method and status",
            requests.clone(),
        );
        let outcome_family = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "cache_outcomes",
            "Requests by cache outcome",
            outcome_family.clone(),
        );
        let outcomes = CacheOutcome::ALL.map(|outcome| {
            outcome_family
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.as_str(),
                })
                .clone()
        });
        let byte_family = Family::<SourceLabels, Counter>::default();
        registry.register(
            "response_bytes",
            "Response body bytes sent, by where they came from",
            byte_family.clone(),
        );
        let bytes =
            BYTE_SOURCES.map(|source| byte_family.get_or_create(&SourceLabels { source }).clone());
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
        let duration = DurationHistogram::default();
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
        let cache = Arc::new(CacheCollector::default());
        registry.register_collector(Box::new(cache.clone()));
        let fleet = FleetMetrics::register(registry);
        Metrics {
            fleet,
            registry: root,
            requests,
            request_counters: (0..RequestMode::ALL.len() * METHODS.len() * COMMON_STATUSES.len())
                .map(|_| OnceLock::new())
                .collect(),
            outcomes,
            bytes,
            upstream_errors,
            denied,
            duration,
            open_connections,
            cache,
            totals: Totals::default(),
            timeline: Timeline::default(),
            hosts: hosts::Hosts::default(),
            started: std::time::Instant::now(),
        }
    }
}

/// The `method` label's values: few (unknown methods count as `OTHER`) and static, so
/// counting a request allocates nothing.
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "PURGE", "OTHER",
];

fn method_index(method: &http::Method) -> usize {
    METHODS[..METHODS.len() - 1]
        .iter()
        .position(|known| *known == method.as_str())
        .unwrap_or(METHODS.len() - 1)
}

/// Statuses whose request counters are kept as handles; others go through the family's map.
const COMMON_STATUSES: [u16; 13] = [
    200, 204, 206, 301, 302, 304, 400, 403, 404, 500, 502, 503, 504,
];

/// Where `request_counters` keeps the handle for these labels, if the status is common.
fn request_slot(mode: RequestMode, method: usize, status: u16) -> Option<usize> {
    let status = COMMON_STATUSES.iter().position(|s| *s == status)?;
    Some(((mode as usize) * METHODS.len() + method) * COMMON_STATUSES.len() + status)
}

/// The `source` label of `response_bytes`.
const BYTE_SOURCES: [&str; 3] = ["cache", "origin", "hoard"];

/// The text format a scrape is answered in, chosen by its `Accept`: OpenMetrics when the
/// scraper prefers it (Prometheus asks for it first), else the Prometheus text format, which
/// every tool reads (curl, `promtool check metrics`, older scrapers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    Prometheus,
    OpenMetrics,
}

impl Exposition {
    pub fn from_accept(headers: &http::HeaderMap) -> Exposition {
        let (mut openmetrics, mut plain) = (0.0_f32, 0.0_f32);
        for value in headers.get_all(http::header::ACCEPT) {
            for range in value.to_str().unwrap_or("").split(',') {
                let mut params = range.split(';').map(str::trim);
                let media = params.next().unwrap_or("").to_ascii_lowercase();
                let quality = params
                    .find_map(|p| p.strip_prefix("q=")?.parse::<f32>().ok())
                    .unwrap_or(1.0);
                match media.as_str() {
                    "application/openmetrics-text" => openmetrics = openmetrics.max(quality),
                    "text/plain" | "text/*" | "*/*" => plain = plain.max(quality),
                    _ => {}
                }
            }
        }
        if openmetrics > 0.0 && openmetrics >= plain {
            Exposition::OpenMetrics
        } else {
            Exposition::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

impl Metrics {
    /// One finished request: its record, the bytes sent and how long it took.
    pub fn record_request(&self, exchange: &Exchange, bytes: u64, elapsed: Duration) {
        let (mode, status, outcome) = (exchange.mode, exchange.status.as_u16(), exchange.cache);
        let method = method_index(&exchange.method);
        let labels = || RequestLabels {
            mode,
            method: METHODS[method],
            status,
        };
        match request_slot(mode, method, status) {
            Some(slot) => self.request_counters[slot]
                .get_or_init(|| self.requests.get_or_create(&labels()).clone())
                .inc(),
            None => self.requests.get_or_create(&labels()).inc(),
        };
        self.duration.observe(elapsed);
        self.totals.requests.fetch_add(1, Ordering::Relaxed);
        let from_cache = matches!(
            outcome,
            Some(CacheOutcome::Hit | CacheOutcome::Stale | CacheOutcome::Revalidated)
        );
        self.timeline
            .record(crate::cache::policy::now_secs(), from_cache);
        if let Some(outcome) = outcome {
            self.outcomes[outcome as usize].inc();
            let counter = if from_cache {
                &self.totals.hits
            } else {
                &self.totals.misses
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        // The origin's bytes are those of a response it sent (or a fleet member did) and a
        // tunnel's; hoard's own pages and error answers count as hoard's.
        let from_origin = exchange.upstream_status.is_some() || exchange.tunnel.is_some();
        let (source, total) = match () {
            _ if from_cache => (0, Some(&self.totals.bytes_from_cache)),
            _ if from_origin => (1, Some(&self.totals.bytes_from_origin)),
            _ => (2, None),
        };
        self.bytes[source].inc_by(bytes);
        if let Some(total) = total {
            total.fetch_add(bytes, Ordering::Relaxed);
        }
        // Sites are the ones proxied to: hoard's own pages and tunnels are not a site's.
        if let (Some(outcome), Some(site)) = (outcome, exchange.uri.authority()) {
            self.hosts.record(
                site.as_str(),
                hosts::HostSample {
                    hit: Some(from_cache).filter(|_| outcome != CacheOutcome::Peer),
                    bytes,
                    from_cache,
                    from_origin,
                },
            );
        }
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

    /// Snapshots the cache's numbers, then renders everything in `format`.
    pub fn render(&self, cache: &Cache, fleet: Option<&Fleet>, format: Exposition) -> String {
        for member in fleet.map(Fleet::status).unwrap_or_default() {
            self.fleet.set_up(&member.name, member.up);
        }
        self.cache.set(CacheSnapshot::of(cache));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = match format {
            Exposition::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            }
            Exposition::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut text, &self.registry)
            }
        };
        text
    }

    /// Each site's requests, hit ratio and bytes, most requested first.
    pub fn hosts(&self) -> Vec<HostNumbers> {
        self.hosts.all()
    }

    /// How long this process has been counting.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Requests and hits per 10-second slot over the last 30 minutes, oldest first.
    pub fn timeline(&self) -> Vec<(u64, u64)> {
        self.timeline.series(crate::cache::policy::now_secs())
    }

    /// The main numbers as JSON for `/_hoard/stats` and the status page.
    pub fn stats(&self, cache: &Cache, fleet: Option<&Fleet>) -> serde_json::Value {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (memory, disk) = (cache.memory_usage(), cache.disk_usage());
        let members: Vec<serde_json::Value> = fleet
            .map(Fleet::status)
            .unwrap_or_default()
            .into_iter()
            .map(|member| {
                serde_json::json!({
                    "name": member.name,
                    "this_node": member.is_self,
                    "up": member.up,
                    "share": member.share,
                })
            })
            .collect();
        serde_json::json!({
            "fleet": members,
            "requests": load(&self.totals.requests),
            "cache": {
                "hits": load(&self.totals.hits),
                "misses": load(&self.totals.misses),
                "bytes_from_cache": load(&self.totals.bytes_from_cache),
                "bytes_from_origin": load(&self.totals.bytes_from_origin),
                "urls": cache.urls(),
                "index_loading": cache.index_loading(),
                "evictions": cache.evictions(),
                "corrupt_bodies": cache.corrupt_bodies(),
                "store_failures": cache.store_failures(),
                "not_stored": cache
                    .not_stored()
                    .map(|(reason, count)| (reason.as_str(), count))
                    .collect::<std::collections::BTreeMap<_, _>>(),
                "memory": { "bytes": memory.bytes, "objects": memory.objects },
                "disk": { "bytes": disk.bytes, "objects": disk.objects },
            },
            "open_connections": self.open_connections.get(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_labels_and_durations_by_bucket() {
        let metrics = Metrics::default();
        for (status, millis) in [(200, 0), (200, 3), (299, 50), (200, 1_000_000)] {
            let mut exchange = Exchange::begin(
                &http::Request::new(()),
                "127.0.0.1:1".parse().unwrap(),
                RequestMode::Forward,
                crate::exchange::RequestId::next(),
            );
            exchange.status = http::StatusCode::from_u16(status).unwrap();
            exchange.cache = Some(CacheOutcome::Hit);
            metrics.record_request(&exchange, 10, Duration::from_millis(millis));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry).unwrap();
        for line in [
            r#"hoard_requests_total{mode="Forward",method="GET",status="200"} 3"#,
            r#"hoard_requests_total{mode="Forward",method="GET",status="299"} 1"#,
            r#"hoard_cache_outcomes_total{outcome="HIT"} 4"#,
            r#"hoard_response_bytes_total{source="cache"} 40"#,
            r#"hoard_request_duration_seconds_bucket{le="0.0001"} 1"#,
            r#"hoard_request_duration_seconds_bucket{le="0.00390625"} 2"#,
            r#"hoard_request_duration_seconds_bucket{le="0.06103515625"} 3"#,
            r#"hoard_request_duration_seconds_bucket{le="+Inf"} 4"#,
            "hoard_request_duration_seconds_count 4",
            "hoard_request_duration_seconds_sum 1000.053",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[test]
    fn timeline_counts_per_slot_and_forgets_old_periods() {
        let timeline = Timeline::default();
        let t = 1_000_000;
        timeline.record(t, true);
        timeline.record(t + 1, false);
        timeline.record(t + 10, true);
        let series = timeline.series(t + 10);
        assert_eq!(series.len(), SLOTS);
        assert_eq!(series[SLOTS - 1], (1, 1));
        assert_eq!(series[SLOTS - 2], (2, 1));
        // 30 minutes later the same slots count new periods only.
        let later = t + SLOT_SECONDS * SLOTS as u64;
        timeline.record(later, false);
        let series = timeline.series(later);
        assert_eq!(series[SLOTS - 1], (1, 0));
        assert_eq!(series[SLOTS - 2], (0, 0));
    }
}
