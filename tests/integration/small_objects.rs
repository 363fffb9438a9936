//! Many small objects under a small `--cache-disk`: packed instead of one file each, and the
//! whole cache directory (database, files, everything) kept within the bound by eviction.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use hoard::body;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::support::process::{Process, cache_tool};
use crate::support::{Origin, stored_bodies};

/// Blocks the directory occupies, as `du` counts them.
fn occupied(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            occupied(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

async fn small_object_origin() -> Origin {
    Origin::start(|request: Request<Incoming>| async move {
        let path = request.uri().path().to_owned();
        Response::builder()
            .header("cache-control", "max-age=600")
            .header("content-type", "text/plain")
            .body(body::full(format!("{path:<100}")))
            .unwrap()
    })
    .await
}

/// Asks for `url` until it is served from the cache: a fill is published just after its
/// response has reached the client.
async fn served_from_cache(client: &reqwest::Client, url: &str) -> bool {
    for _ in 0..50 {
        let response = client.get(url).send().await.unwrap();
        if response.headers()["cache-status"]
            .to_str()
            .unwrap()
            .contains("hit")
        {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn small_objects_are_packed_and_the_disk_bound_holds_with_them() {
    const BOUND: u64 = 4 << 20;
    const OBJECTS: usize = 30_000;
    let origin = small_object_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let process = Process::start_at(
        dir.path(),
        &["--cache-disk", "4MiB", "--max-object-size", "64KiB"],
    );
    let client = process.client();
    let urls: Vec<String> = (0..OBJECTS)
        .map(|n| origin.url(&format!("/small/{n}")))
        .collect();
    // What the directory occupies while it fills, sampled.
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = {
        let (peak, dir) = (Arc::clone(&peak), dir.path().to_owned());
        tokio::spawn(async move {
            loop {
                peak.fetch_max(occupied(&dir), Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        })
    };
    let fetched: Vec<String> = futures_util::stream::iter(urls.iter().cloned())
        .map(|url| {
            let client = client.clone();
            async move { client.get(url).send().await.unwrap().text().await.unwrap() }
        })
        .buffered(16)
        .collect()
        .await;
    sampling.abort();
    let peak = peak.load(Ordering::Relaxed);
    for (n, body) in fetched.iter().enumerate() {
        assert_eq!(body.trim_end(), format!("/small/{n}"));
    }
    let evictions = process.metric("hoard_cache_evictions_total").await;
    assert!(
        served_from_cache(&client, &urls[OBJECTS - 1]).await,
        "the latest object is kept"
    );
    process.stop();
    let used = occupied(dir.path());
    let (ok, stats) = cache_tool(dir.path(), &["stats"]);
    assert!(ok, "{stats}");
    let kept: u64 = stats
        .lines()
        .find_map(|line| line.strip_prefix("urls")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{stats}"));
    eprintln!(
        "{OBJECTS} objects of 100 bytes under --cache-disk 4MiB: {kept} kept, {evictions} \
         evicted, {used} bytes on disk after shutdown, at most {peak} while filling"
    );
    assert!(
        stored_bodies(dir.path()).is_empty(),
        "no body file for small bodies"
    );
    assert!(evictions > 0, "objects were evicted to stay in the bound");
    assert!(
        used <= BOUND,
        "the cache directory takes {used} bytes under a {BOUND}-byte bound"
    );
    // Under a storm of small fills the database file runs ahead of the evictions that answer
    // it (redb doubles the file when an allocation does not fit, and then spreads its pages
    // over the new part), and the disk bound's correction then holds the index at about half
    // the bound. Measured 1.4-1.6 times the bound at the peak, under it at rest (compacted at
    // shutdown); this guards against losing the bound, not the overshoot (see docs/cache.md).
    assert!(
        used > BOUND / 4,
        "the bound is used, not left mostly empty: {used} bytes, {kept} objects kept"
    );
    assert!(
        peak <= 2 * BOUND,
        "{peak} bytes at the peak under a {BOUND}-byte bound"
    );
    let (ok, report) = cache_tool(dir.path(), &["verify"]);
    assert!(
        ok && report.contains(&format!("checked {kept}, bad 0")),
        "{report}"
    );
}
