//! Requests, cache hits and bytes per site, for the status page's "Sites" table. Counted
//! from each finished request like the rest of the metrics, in 16 shards keyed by the
//! host's hash so that concurrent requests rarely share a lock, and bounded: past
//! `MAX_HOSTS` sites, new ones are counted under `(other sites)` so a client cannot grow
//! the map without limit.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Sites counted by name; the rest share one row.
const MAX_HOSTS: usize = 1000;
const SHARDS: usize = 16;
const OTHER: &str = "(other sites)";

/// One site's numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostNumbers {
    pub host: String,
    pub requests: u64,
    pub hits: u64,
    pub misses: u64,
    pub bytes_from_cache: u64,
    pub bytes_from_origin: u64,
}

/// What one finished request adds to its site.
pub(super) struct HostSample {
    pub(super) hit: Option<bool>,
    pub(super) bytes: u64,
    pub(super) from_cache: bool,
    pub(super) from_origin: bool,
}

#[derive(Default)]
pub(super) struct Hosts {
    shards: [Mutex<HashMap<String, HostNumbers>>; SHARDS],
    hasher: std::collections::hash_map::RandomState,
    named: AtomicUsize,
}

impl Hosts {
    pub(super) fn record(&self, host: &str, sample: HostSample) {
        let shard_of = |host: &str| self.hasher.hash_one(host) as usize % SHARDS;
        let mut shard = self.shards[shard_of(host)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let numbers = match shard.get_mut(host) {
            Some(numbers) => numbers,
            None if self.named.load(Ordering::Relaxed) < MAX_HOSTS => {
                self.named.fetch_add(1, Ordering::Relaxed);
                shard.entry(host.to_owned()).or_insert_with(|| HostNumbers {
                    host: host.to_owned(),
                    ..HostNumbers::default()
                })
            }
            None => {
                drop(shard);
                shard = self.shards[shard_of(OTHER)]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                shard
                    .entry(OTHER.to_owned())
                    .or_insert_with(|| HostNumbers {
                        host: OTHER.to_owned(),
                        ..HostNumbers::default()
                    })
            }
        };
        numbers.requests += 1;
        match sample.hit {
            Some(true) => numbers.hits += 1,
            Some(false) => numbers.misses += 1,
            None => {}
        }
        if sample.from_cache {
            numbers.bytes_from_cache += sample.bytes;
        } else if sample.from_origin {
            numbers.bytes_from_origin += sample.bytes;
        }
    }

    /// Every site's numbers, most requested first.
    pub(super) fn all(&self) -> Vec<HostNumbers> {
        let mut all: Vec<HostNumbers> = self
            .shards
            .iter()
            .flat_map(|shard| {
                shard
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.host.cmp(&b.host)));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_are_counted_apart_and_bounded() {
        let hosts = Hosts::default();
        let sample = |hit| HostSample {
            hit: Some(hit),
            bytes: 10,
            from_cache: hit,
            from_origin: !hit,
        };
        hosts.record("a.example", sample(false));
        hosts.record("a.example", sample(true));
        hosts.record("b.example", sample(true));
        let all = hosts.all();
        assert_eq!(all[0].host, "a.example");
        assert_eq!((all[0].requests, all[0].hits, all[0].misses), (2, 1, 1));
        assert_eq!(
            (all[0].bytes_from_cache, all[0].bytes_from_origin),
            (10, 10)
        );
        for n in 0..MAX_HOSTS + 50 {
            hosts.record(&format!("h{n}.example"), sample(true));
        }
        let all = hosts.all();
        assert_eq!(all.len(), MAX_HOSTS + 1);
        assert!(all.iter().any(|h| h.host == OTHER && h.requests >= 50));
    }
}
