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
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    // Files come and go while hoard runs: one that vanished occupies nothing.
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        total += if meta.is_dir() {
            occupied(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

/// An origin whose `/small/N` is 100 bytes and `/large/N` 40 000, each naming its path.
async fn small_object_origin() -> Origin {
    Origin::start(|request: Request<Incoming>| async move {
        let path = request.uri().path().to_owned();
        let len = if path.starts_with("/large/") {
            40_000
        } else {
            100
        };
        Response::builder()
            .header("cache-control", "max-age=600")
            .header("content-type", "text/plain")
            .body(body::full(format!("{path:<len$}")))
            .unwrap()
    })
    .await
}

/// Fetches `urls` through `client`, 16 at a time, checking each body names its path; returns
/// the most `dir` occupied meanwhile, sampled every 100 ms.
async fn fill_sampling_peak(client: &reqwest::Client, urls: &[String], dir: &Path) -> u64 {
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = {
        let (peak, dir) = (Arc::clone(&peak), dir.to_owned());
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
    for (url, body) in urls.iter().zip(&fetched) {
        assert!(url.ends_with(body.trim_end()), "{url}: {body:.40}");
    }
    peak.fetch_max(occupied(dir), Ordering::Relaxed);
    peak.load(Ordering::Relaxed)
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
    let peak = fill_sampling_peak(&client, &urls, dir.path()).await;
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
    assert!(
        used > BOUND / 4,
        "the bound is used, not left mostly empty: {used} bytes, {kept} objects kept"
    );
    // Sampled every 100 ms while 16 clients fill it: the database never grows past the bound
    // (it used to run ahead of the evictions, to 1.4-1.6 times the bound).
    assert!(
        peak <= BOUND,
        "{peak} bytes at the peak under a {BOUND}-byte bound"
    );
    let (ok, report) = cache_tool(dir.path(), &["verify"]);
    assert!(
        ok && report.contains(&format!("checked {kept}, bad 0")),
        "{report}"
    );
}

#[tokio::test]
async fn the_disk_bound_holds_with_small_and_large_objects_mixed() {
    const BOUND: u64 = 8 << 20;
    let origin = small_object_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let process = Process::start_at(
        dir.path(),
        &["--cache-disk", "8MiB", "--max-object-size", "64KiB"],
    );
    let client = process.client();
    // One in ten a body file of its own, the rest packed: 24 MB of files and 5 400 packed.
    let urls: Vec<String> = (0..6_000)
        .map(|n| match n % 10 {
            0 => origin.url(&format!("/large/{n}")),
            _ => origin.url(&format!("/small/{n}")),
        })
        .collect();
    let peak = fill_sampling_peak(&client, &urls, dir.path()).await;
    let evictions = process.metric("hoard_cache_evictions_total").await;
    process.stop();
    let used = occupied(dir.path());
    let files = stored_bodies(dir.path()).len();
    eprintln!(
        "6000 objects (1 in 10 of 40 000 bytes) under --cache-disk 8MiB: {files} body files, \
         {evictions} evicted, {used} bytes on disk after shutdown, at most {peak} while filling"
    );
    assert!(evictions > 0 && files > 0);
    assert!(used > BOUND / 4, "the bound is used: {used} bytes");
    assert!(
        peak <= BOUND,
        "{peak} bytes at the peak under a {BOUND}-byte bound"
    );
    let (ok, report) = cache_tool(dir.path(), &["verify"]);
    assert!(ok && report.contains("bad 0"), "{report}");
}
