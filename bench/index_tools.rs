//! Index tools for the benchmarks, not tests: compiled into hoard's unit tests (from
//! `src/cache/index.rs`, as they need the crate's internals) and run only by name with
//! `--ignored`, as `bench/scale.sh` does.

use std::path::Path;
use std::sync::Arc;

use super::tests::{entry, insert_now, open};
use crate::cache::CacheKey;

/// Not a test: fills the cache directory `HOARD_FILL_DIR` with `HOARD_FILL_ENTRIES`
/// synthetic entries (bodies never read, so not written) for `bench/scale.sh`, which
/// measures hits with a million entries in the index against a thousand.
#[test]
#[ignore = "tool for bench/scale.sh"]
fn fill_index_for_the_scale_bench() {
    let (Some(dir), Some(entries)) = (
        std::env::var_os("HOARD_FILL_DIR"),
        std::env::var("HOARD_FILL_ENTRIES").ok(),
    ) else {
        eprintln!("nothing to do: set HOARD_FILL_DIR and HOARD_FILL_ENTRIES");
        return;
    };
    let entries: u64 = entries.parse().unwrap();
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir).unwrap();
    let (index, _) = open(dir);
    for i in 0..entries {
        let mut entry = (*entry(i)).clone();
        entry.key = CacheKey::from_url(format!("http://scale.invalid/item/{i}"));
        entry.body = u64::MAX - i;
        insert_now(&index, Arc::new(entry));
        if i % 100_000 == 0 {
            index.flush();
        }
    }
    index.close();
    eprintln!("{entries} entries in {}", dir.display());
}

/// Measures start-up with 100 000 entries: `cargo test --release -- --ignored --nocapture
/// startup_with_100k_entries`.
#[test]
#[ignore = "measurement, run by hand"]
fn startup_with_100k_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (index, _) = open(dir.path());
    for i in 0..100_000 {
        insert_now(&index, entry(i));
    }
    index.close();
    drop(index);
    let started = std::time::Instant::now();
    let (index, report) = open(dir.path());
    let elapsed = started.elapsed();
    eprintln!("loaded {} entries in {elapsed:?}", report.entries);
    assert_eq!(report.entries, 100_000);
    assert!(index.get(&entry(99_999).key).is_some());
}
