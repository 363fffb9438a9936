//! Eviction quality, not a test: hoard's index map (quick_cache's S3-FIFO-like policy, built
//! with the options hoard uses) against a plain LRU and Belady's farthest-next-use, on a
//! Zipf workload. Compiled into hoard's unit tests (from `src/cache/index.rs`) and run by
//! name with `--ignored`, as `bench/eviction.sh` does; prints a Markdown table.
//!
//! Objects have sizes from 1 to 100 KB (fixed per object, independent of popularity); the
//! cache holds 10% of all their bytes. Belady evicts the object asked for again farthest in
//! the future and does not admit one never asked for again: optimal for the object hit ratio
//! with equal sizes, the usual reference (not the optimum) with mixed sizes.

use std::collections::{BTreeSet, HashMap};

use crate::cache::storage::bounded_options;

const OBJECTS: usize = 1_000_000;
const WARM_UP: usize = 1_000_000;
const MEASURED: usize = 10_000_000;

/// xorshift64*: deterministic, so every policy sees the same requests.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn size_of(object: u32) -> u64 {
    let mut r = Random(u64::from(object).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    1000 * (1 + r.next() % 100)
}

/// `WARM_UP + MEASURED` requests for objects whose popularity ranks follow Zipf(`alpha`),
/// ranks shuffled onto object ids.
fn requests(alpha: f64) -> Vec<u32> {
    let mut cdf = Vec::with_capacity(OBJECTS);
    let mut total = 0.0;
    for rank in 1..=OBJECTS {
        total += 1.0 / (rank as f64).powf(alpha);
        cdf.push(total);
    }
    let mut random = Random(0x5EED);
    let mut ids: Vec<u32> = (0..OBJECTS as u32).collect();
    for i in (1..ids.len()).rev() {
        ids.swap(i, (random.next() % (i as u64 + 1)) as usize);
    }
    (0..WARM_UP + MEASURED)
        .map(|_| {
            let target = random.unit() * total;
            ids[cdf.partition_point(|&c| c < target).min(OBJECTS - 1)]
        })
        .collect()
}

/// Hits counted after the warm-up: objects and bytes.
#[derive(Default)]
struct Score {
    hits: u64,
    hit_bytes: u64,
    bytes: u64,
}

impl Score {
    fn count(&mut self, i: usize, size: u64, hit: bool) {
        if i < WARM_UP {
            return;
        }
        self.bytes += size;
        if hit {
            self.hits += 1;
            self.hit_bytes += size;
        }
    }

    fn row(&self, name: &str) -> String {
        format!(
            "| {name} | {:.1}% | {:.1}% |",
            self.hits as f64 * 100.0 / MEASURED as f64,
            self.hit_bytes as f64 * 100.0 / self.bytes as f64
        )
    }
}

fn hoard_policy(requests: &[u32], capacity: u64) -> Score {
    #[derive(Clone)]
    struct Size;
    impl quick_cache::Weighter<u32, u64> for Size {
        fn weight(&self, _: &u32, size: &u64) -> u64 {
            *size
        }
    }
    let map: quick_cache::sync::Cache<u32, u64, Size> = quick_cache::sync::Cache::with_options(
        bounded_options(capacity, 100_000),
        Size,
        Default::default(),
        Default::default(),
    );
    let mut score = Score::default();
    for (i, &object) in requests.iter().enumerate() {
        let size = size_of(object);
        let hit = map.get(&object).is_some();
        if !hit {
            map.insert(object, size);
        }
        score.count(i, size, hit);
    }
    score
}

/// A plain LRU by bytes: a doubly linked list over slots, most recent at the head.
fn lru(requests: &[u32], capacity: u64) -> Score {
    const NONE: u32 = u32::MAX;
    let (mut prev, mut next) = (vec![NONE; OBJECTS], vec![NONE; OBJECTS]);
    let mut cached = vec![false; OBJECTS];
    let (mut head, mut tail, mut used) = (NONE, NONE, 0u64);
    let mut score = Score::default();
    for (i, &object) in requests.iter().enumerate() {
        let size = size_of(object);
        let o = object as usize;
        let hit = cached[o];
        if hit {
            // Unlink.
            let (p, n) = (prev[o], next[o]);
            if p != NONE {
                next[p as usize] = n
            } else {
                head = n
            }
            if n != NONE {
                prev[n as usize] = p
            } else {
                tail = p
            }
        } else {
            used += size;
            cached[o] = true;
        }
        // Link at the head.
        prev[o] = NONE;
        next[o] = head;
        if head != NONE {
            prev[head as usize] = object;
        }
        head = object;
        if tail == NONE {
            tail = object;
        }
        while used > capacity && tail != object {
            let victim = tail as usize;
            tail = prev[victim];
            next[tail as usize] = NONE;
            cached[victim] = false;
            used -= size_of(victim as u32);
        }
        score.count(i, size, hit);
    }
    score
}

fn belady(requests: &[u32], capacity: u64) -> Score {
    let mut next_use = vec![usize::MAX; requests.len()];
    let mut seen: HashMap<u32, usize> = HashMap::with_capacity(OBJECTS);
    for (i, &object) in requests.iter().enumerate().rev() {
        if let Some(&later) = seen.get(&object) {
            next_use[i] = later;
        }
        seen.insert(object, i);
    }
    // (next use, object) of everything cached; the last is evicted first.
    let mut by_next_use: BTreeSet<(usize, u32)> = BTreeSet::new();
    let mut cached_until: HashMap<u32, usize> = HashMap::new();
    let mut used = 0u64;
    let mut score = Score::default();
    for (i, &object) in requests.iter().enumerate() {
        let size = size_of(object);
        let hit = match cached_until.remove(&object) {
            Some(until) => {
                by_next_use.remove(&(until, object));
                used -= size;
                true
            }
            None => false,
        };
        score.count(i, size, hit);
        if next_use[i] == usize::MAX {
            continue;
        }
        used += size;
        by_next_use.insert((next_use[i], object));
        cached_until.insert(object, next_use[i]);
        while used > capacity {
            let (until, victim) = by_next_use.pop_last().unwrap_or_else(|| unreachable!());
            cached_until.remove(&victim);
            used -= size_of(victim);
            let _ = until;
        }
    }
    score
}

#[test]
#[ignore = "tool for bench/eviction.sh"]
fn eviction_quality_on_a_zipf_workload() {
    let total: u64 = (0..OBJECTS as u32).map(size_of).sum();
    let capacity = total / 10;
    println!(
        "{OBJECTS} objects ({} GB), cache {} MB (10%), {WARM_UP} requests of warm-up, \
         {MEASURED} measured\n",
        total / 1_000_000_000,
        capacity / 1_000_000
    );
    for alpha in [0.8, 1.0] {
        let requests = requests(alpha);
        println!(
            "Zipf α = {alpha}\n\n| policy | object hit ratio | byte hit ratio |\n|---|---|---|"
        );
        println!(
            "{}",
            hoard_policy(&requests, capacity).row("hoard (quick_cache S3-FIFO)")
        );
        println!("{}", lru(&requests, capacity).row("LRU"));
        println!(
            "{}",
            belady(&requests, capacity).row("Belady (farthest next use)")
        );
        println!();
    }
}
