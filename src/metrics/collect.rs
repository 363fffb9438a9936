//! Numbers read at each scrape rather than counted as they happen: what the cache holds and
//! has dropped (`CacheCollector`, from a snapshot `Metrics::render` takes) and the process's
//! own resources (`ProcessCollector`, the standard `process_*` families every Prometheus
//! client library exports, read from `/proc/self`).
//!
//! Collectors only read; nothing here runs on the request path.

use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::cache::Cache;
use crate::cache::storage::Usage;

/// The cache's numbers at one scrape.
#[derive(Debug, Default)]
pub(super) struct CacheSnapshot {
    memory: Usage,
    disk: Usage,
    urls: u64,
    evictions: u64,
    corrupt_bodies: u64,
    store_failures: u64,
    not_stored: Vec<(&'static str, u64)>,
}

impl CacheSnapshot {
    pub(super) fn of(cache: &Cache) -> CacheSnapshot {
        CacheSnapshot {
            memory: cache.memory_usage(),
            disk: cache.disk_usage(),
            urls: cache.urls() as u64,
            evictions: cache.evictions(),
            corrupt_bodies: cache.corrupt_bodies(),
            store_failures: cache.store_failures(),
            not_stored: cache
                .not_stored()
                .map(|(reason, count)| (reason.as_str(), count))
                .collect(),
        }
    }
}

/// Encodes the snapshot last given to it: what happened since start as counters, what is
/// stored now as gauges.
#[derive(Debug, Default)]
pub(super) struct CacheCollector {
    snapshot: Mutex<CacheSnapshot>,
}

impl CacheCollector {
    pub(super) fn set(&self, snapshot: CacheSnapshot) {
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = snapshot;
    }
}

/// One metric without labels.
fn single<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric: M,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// A family of one label, `label` taking each of `values`' names.
fn labelled<M: EncodeMetric + prometheus_client::metrics::TypedMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    (name, help, label): (&str, &str, &'static str),
    values: impl IntoIterator<Item = (&'static str, M)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, M::TYPE)?;
    for (value, metric) in values {
        metric.encode(family.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        let tiers = [("memory", s.memory), ("disk", s.disk)];
        labelled(
            &mut encoder,
            ("cache_tier_bytes", "Bytes stored per tier.", "tier"),
            tiers.map(|(tier, usage)| (tier, ConstGauge::new(usage.bytes as i64))),
        )?;
        labelled(
            &mut encoder,
            ("cache_tier_objects", "Bodies stored per tier.", "tier"),
            tiers.map(|(tier, usage)| (tier, ConstGauge::new(usage.objects as i64))),
        )?;
        single(
            &mut encoder,
            "cache_urls",
            "URLs in the cache index.",
            ConstGauge::new(s.urls as i64),
        )?;
        single(
            &mut encoder,
            "cache_evictions",
            "Entries evicted from the disk tier.",
            ConstCounter::new(s.evictions),
        )?;
        single(
            &mut encoder,
            "cache_corrupt_bodies",
            "Stored bodies dropped for failing their checksum.",
            ConstCounter::new(s.corrupt_bodies),
        )?;
        single(
            &mut encoder,
            "cache_store_failures",
            "Responses that could not be stored because the cache directory failed (full, gone, read-only).",
            ConstCounter::new(s.store_failures),
        )?;
        labelled(
            &mut encoder,
            (
                "cache_not_stored",
                "Responses not stored, by reason (the detail of their Cache-Status).",
                "reason",
            ),
            s.not_stored
                .iter()
                .map(|(reason, count)| (*reason, ConstCounter::new(*count))),
        )
    }
}

/// `process_*`: CPU time, memory, file descriptors and start time, as the Go and Python
/// clients name them, so existing dashboards and alerts work unchanged.
#[derive(Debug, Default)]
pub(super) struct ProcessCollector;

/// What `/proc/self/stat` and `/proc/self/fd` say about this process.
#[derive(Debug, PartialEq)]
struct ProcessNumbers {
    cpu_seconds: f64,
    virtual_bytes: u64,
    resident_bytes: u64,
    start_time_seconds: f64,
    open_fds: u64,
    max_fds: u64,
}

/// Reads `/proc/self`; `None` where there is none (not Linux) or it cannot be read.
fn process_numbers() -> Option<ProcessNumbers> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot_time = std::fs::read_to_string("/proc/stat").ok()?;
    let boot_time: u64 = boot_time
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let max_fds = rlimit::getrlimit(rlimit::Resource::NOFILE).ok()?.0;
    parse_stat(
        &stat,
        rustix::param::clock_ticks_per_second(),
        rustix::param::page_size() as u64,
        boot_time,
    )
    .map(|numbers| ProcessNumbers {
        open_fds,
        max_fds,
        ..numbers
    })
}

/// The fields of `/proc/self/stat` (proc(5)) that `process_*` reports. The command name
/// (field 2) is in parentheses and may hold spaces, so fields are counted after its `)`.
fn parse_stat(stat: &str, ticks: u64, page: u64, boot_time: u64) -> Option<ProcessNumbers> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name: field N is at index N - 3.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let ticks = ticks.max(1) as f64;
    Some(ProcessNumbers {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        start_time_seconds: boot_time as f64 + field(22)? as f64 / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page,
        open_fds: 0,
        max_fds: 0,
    })
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(p) = process_numbers() else {
            return Ok(());
        };
        single(
            &mut encoder,
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            ConstCounter::new(p.cpu_seconds),
        )?;
        single(
            &mut encoder,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            ConstGauge::new(p.start_time_seconds),
        )?;
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                p.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                p.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                p.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                p.max_fds,
            ),
        ] {
            let value = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            single(&mut encoder, name, help, value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a parenthesis, as proc(5) allows.
        let stat = "4242 (ho ard) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 5 0 \
                    12000 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1";
        let numbers = parse_stat(stat, 100, 4096, 1_700_000_000).unwrap();
        assert_eq!(numbers.cpu_seconds, 3.0);
        assert_eq!(numbers.start_time_seconds, 1_700_000_120.0);
        assert_eq!(numbers.virtual_bytes, 104_857_600);
        assert_eq!(numbers.resident_bytes, 2560 * 4096);
        assert_eq!(parse_stat("garbage", 100, 4096, 0), None);
    }

    #[test]
    fn this_process_has_numbers() {
        let numbers = process_numbers().expect("/proc/self is readable on Linux");
        assert!(numbers.resident_bytes > 0 && numbers.open_fds > 0);
        assert!(numbers.max_fds >= numbers.open_fds);
    }
}
