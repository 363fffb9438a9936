//! The fleet's and the shared tier's metrics: requests sent to each member (how many, how
//! long their heads took, how many failed and why), each member's health, and what the
//! shared tier was asked and answered. Recorded by `fleet` and `shared_tier` as it happens;
//! the health gauges are read from the fleet when the metrics are rendered.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::DurationHistogram;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerFailureLabels {
    peer: String,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SharedLabels {
    operation: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SideLabels {
    side: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Per-member and shared-tier metrics. A forwarded request counts through its member's
/// own handles (`PeerMetrics`), made once per member: no label lookup, no lock.
pub struct FleetMetrics {
    forwarded: Family<PeerLabels, Counter>,
    failures: Family<PeerFailureLabels, Counter>,
    latency: Family<PeerLabels, DurationHistogram>,
    up: Family<PeerLabels, Gauge>,
    shared: Family<SharedLabels, Counter>,
    shared_latency: Family<OperationLabels, Histogram, fn() -> Histogram>,
    shared_circuit_open: Family<SideLabels, Gauge>,
}

/// One member's counters, held by the member.
#[derive(Clone)]
pub struct PeerMetrics {
    forwarded: Counter,
    latency: DurationHistogram,
}

impl PeerMetrics {
    /// A request it answered, the head after `elapsed`.
    pub fn forwarded(&self, elapsed: Duration) {
        self.forwarded.inc();
        self.latency.observe(elapsed);
    }
}

impl FleetMetrics {
    pub(super) fn register(registry: &mut Registry) -> FleetMetrics {
        let metrics = FleetMetrics {
            forwarded: Family::default(),
            failures: Family::default(),
            latency: Family::default(),
            up: Family::default(),
            shared: Family::default(),
            shared_latency: Family::new_with_constructor(latency_histogram),
            shared_circuit_open: Family::default(),
        };
        registry.register(
            "peer_requests",
            "Requests sent to the fleet member that owns them, by member",
            metrics.forwarded.clone(),
        );
        registry.register(
            "peer_failures",
            "Requests a fleet member did not answer (then the next candidate or this node served them), by member and reason",
            metrics.failures.clone(),
        );
        registry.register(
            "peer_response_seconds",
            "Time until a fleet member's response head arrived, by member",
            metrics.latency.clone(),
        );
        registry.register(
            "peer_up",
            "Whether a fleet member is taking requests (1) or marked down (0)",
            metrics.up.clone(),
        );
        registry.register(
            "shared_tier_operations",
            "Shared-tier reads and writes, by operation and result",
            metrics.shared.clone(),
        );
        registry.register(
            "shared_tier_seconds",
            "Time shared-tier operations took, by operation",
            metrics.shared_latency.clone(),
        );
        registry.register(
            "shared_tier_circuit_open",
            "Whether shared-tier reads or writes are being skipped after repeated failures (1), by side",
            metrics.shared_circuit_open.clone(),
        );
        metrics
    }

    /// The handles a member's forwarded requests are counted with.
    pub fn peer(&self, peer: &str) -> PeerMetrics {
        let labels = PeerLabels {
            peer: peer.to_owned(),
        };
        PeerMetrics {
            forwarded: self.forwarded.get_or_create(&labels).clone(),
            latency: self.latency.get_or_create(&labels).clone(),
        }
    }

    /// Drops every series of a member that left the fleet.
    pub fn forget_peer(&self, peer: &str) {
        let labels = PeerLabels {
            peer: peer.to_owned(),
        };
        self.forwarded.remove(&labels);
        self.latency.remove(&labels);
        self.up.remove(&labels);
        for reason in crate::fleet::PeerError::KINDS {
            self.failures.remove(&PeerFailureLabels {
                peer: peer.to_owned(),
                reason,
            });
        }
    }

    pub fn failed(&self, peer: &str, reason: &'static str) {
        self.failures
            .get_or_create(&PeerFailureLabels {
                peer: peer.to_owned(),
                reason,
            })
            .inc();
    }

    pub fn set_up(&self, peer: &str, up: bool) {
        self.up
            .get_or_create(&PeerLabels {
                peer: peer.to_owned(),
            })
            .set(i64::from(up));
    }

    /// A shared-tier `operation` (`get`, `put`) ended with `result` after `elapsed`.
    pub fn shared_tier(&self, operation: &'static str, result: &'static str, elapsed: Duration) {
        self.shared
            .get_or_create(&SharedLabels { operation, result })
            .inc();
        self.shared_latency
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts an operation that was not even tried (`result`: why).
    pub fn shared_tier_skipped(&self, operation: &'static str, result: &'static str) {
        self.shared
            .get_or_create(&SharedLabels { operation, result })
            .inc();
    }

    pub fn set_shared_circuit_open(&self, side: &'static str, open: bool) {
        self.shared_circuit_open
            .get_or_create(&SideLabels { side })
            .set(i64::from(open));
    }
}
