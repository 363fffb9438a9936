//! A damaged index file does not keep hoard down (it is moved aside and hoard starts empty),
//! and a second hoard on a directory in use refuses before touching anything (issue 11).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use hoard::body;
use http::{Request, Response};
use hyper::body::{Frame, Incoming};

use crate::support::process::{Process, cache_tool, cache_tool_output, run_to_exit};
use crate::support::{Origin, get, stored_bodies};

/// Bodies too large to be packed into the index database, so the rows name files: `/a #N`
/// (the Nth response served) padded with spaces.
async fn file_body_origin() -> Origin {
    let served = Arc::new(AtomicUsize::new(0));
    Origin::start(move |request: Request<Incoming>| {
        let n = served.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let text = format!("{} #{n}", request.uri().path());
            Response::builder()
                .header("cache-control", "max-age=600")
                .body(body::full(format!("{text:<20000}")))
                .unwrap()
        }
    })
    .await
}

/// A stopped hoard's cache directory holding `/a`, `/b` and `/c` from `origin`.
async fn filled_cache(origin: &Origin) -> tempfile::TempDir {
    let process = Process::start(&[]);
    let client = process.client();
    for path in ["/a", "/b", "/c"] {
        get(&client, &origin.url(path), &[]).await;
        let status = get(&client, &origin.url(path), &[]).await.cache_status;
        assert!(status.contains("hit"), "{path} is stored: {status}");
    }
    let (_, dir) = process.stop_keeping_dir();
    assert_eq!(stored_bodies(dir.path()).len(), 3);
    dir
}

/// The files hoard moved aside in `dir`, with the name the issue asks for:
/// `index.redb.damaged-YYYYMMDDTHHMMSSZ`.
fn moved_aside(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for file in std::fs::read_dir(dir).unwrap() {
        let path = file.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if let Some(stamp) = name.strip_prefix("index.redb.damaged-") {
            let digits = |s: &str| s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit());
            let shape = stamp.len() == 16
                && digits(&stamp[..8])
                && &stamp[8..9] == "T"
                && stamp[9..15].bytes().all(|b| b.is_ascii_digit())
                && stamp.ends_with('Z');
            assert!(shape, "{name}: a UTC time in ISO 8601 basic format");
            found.push(path);
        }
    }
    found
}

/// Damages a filled cache's index with `damage`, starts hoard on it and checks it recovers.
async fn hoard_recovers_from(damage: fn(Vec<u8>) -> Vec<u8>) {
    let origin = file_body_origin().await;
    let dir = filled_cache(&origin).await;
    let before = stored_bodies(dir.path());
    let index = dir.path().join("index.redb");
    let damaged = damage(std::fs::read(&index).unwrap());
    std::fs::write(&index, &damaged).unwrap();

    // It starts (the helper waits for the "listening" line) and works: a miss, then a hit.
    let process = Process::start_in(dir, &[]);
    let client = process.client();
    let got = get(&client, &origin.url("/a"), &[]).await;
    let (body, status) = (got.body, got.cache_status);
    assert_eq!(
        body.trim_end(),
        "/a #4",
        "the old entry is gone: fetched again"
    );
    assert!(
        status.contains("fwd=uri-miss") && status.contains("stored"),
        "{status}"
    );
    let got = get(&client, &origin.url("/a"), &[]).await;
    let (body, status) = (got.body, got.cache_status);
    assert_eq!(body.trim_end(), "/a #4");
    assert!(status.contains("hit"), "{status}");
    let (stderr, dir) = process.stop_keeping_dir();

    let aside = moved_aside(dir.path());
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read(&aside[0]).unwrap(),
        damaged,
        "kept as it was, for a post-mortem"
    );
    for path in [&index, &aside[0]] {
        assert!(
            stderr.contains(path.to_str().unwrap()),
            "the warning names {}: {stderr}",
            path.display()
        );
    }
    assert!(stderr.contains("is damaged"), "{stderr}");
    let after = stored_bodies(dir.path());
    assert_eq!(after.len(), 1, "only the new body: {after:?}");
    assert!(
        before.iter().all(|old| !after.contains(old)),
        "no body from before is left: {before:?} {after:?}"
    );
}

#[tokio::test]
async fn a_garbage_index_is_moved_aside_and_hoard_starts_empty() {
    hoard_recovers_from(|_| b"this is not a redb database\n".repeat(1000)).await;
}

#[tokio::test]
async fn a_truncated_index_is_moved_aside_and_hoard_starts_empty() {
    hoard_recovers_from(|mut index| {
        index.truncate(index.len() / 2);
        index
    })
    .await;
}

#[tokio::test]
async fn the_cache_tool_repairs_a_damaged_index_without_blaming_a_running_hoard() {
    let origin = file_body_origin().await;
    let dir = filled_cache(&origin).await;
    let dir = dir.path();
    std::fs::write(dir.join("index.redb"), b"garbage".repeat(100)).unwrap();

    let output = cache_tool_output(dir, &["verify"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(!output.status.success(), "verify reports the damage");
    assert!(
        !stdout.contains("hoard running") && !stderr.contains("hoard running"),
        "{stdout}{stderr}"
    );
    assert!(
        stdout.contains("index: not a redb database; moved to"),
        "{stdout}"
    );
    assert!(stderr.contains("is damaged"), "{stderr}");
    assert_eq!(moved_aside(dir).len(), 1);
    assert!(
        stored_bodies(dir).is_empty(),
        "the orphaned bodies are gone"
    );

    let (ok, report) = cache_tool(dir, &["verify"]);
    assert!(ok && report.contains("checked 0, bad 0"), "{report}");
    let (ok, stats) = cache_tool(dir, &["stats"]);
    assert!(ok && stats.contains("disk bodies 0"), "{stats}");
}

/// Files in `dir`/tmp: the bodies being written.
fn in_flight(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("tmp"))
        .unwrap()
        .map(|file| file.unwrap().path())
        .collect();
    files.sort();
    files
}

const HALF_1: &[u8] = b"first half, ";
const HALF_2: &[u8] = b"second half";

#[tokio::test]
async fn a_second_hoard_on_a_directory_in_use_refuses_before_touching_it() {
    // The origin sends half the body, then waits for the gate to open. The halves are too
    // large for the body to be packed: it is written to a file in tmp/ as it comes.
    let (open, gate) = tokio::sync::watch::channel(false);
    let origin = Origin::start(move |_: http::Request<Incoming>| {
        let mut gate = gate.clone();
        async move {
            let first = futures_util::stream::once(async {
                Ok::<_, std::io::Error>(Frame::data(Bytes::from(HALF_1.repeat(2000))))
            });
            let rest = futures_util::stream::once(async move {
                let _ = gate.wait_for(|open| *open).await;
                Ok(Frame::data(Bytes::from(HALF_2.repeat(2000))))
            });
            Response::builder()
                .header("cache-control", "max-age=600")
                .header("content-length", "46000")
                .body(body::stream(http_body_util::StreamBody::new(
                    first.chain(rest),
                )))
                .unwrap()
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let first = Process::start_at(dir.path(), &[]);
    let client = first.client();
    let url = origin.url("/slow");
    let mut response = client.get(&url).send().await.unwrap();
    let mut first_half = Vec::new();
    while first_half.len() < 24_000 {
        first_half.extend_from_slice(&response.chunk().await.unwrap().unwrap());
    }
    assert_eq!(
        first_half,
        HALF_1.repeat(2000),
        "streamed while the fill is in flight"
    );
    let mut waited = 0;
    while in_flight(dir.path()).is_empty() && waited < 500 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    let filling = in_flight(dir.path());
    assert_eq!(filling.len(), 1, "the fill writes tmp/");

    let second = run_to_exit(dir.path(), &[], Duration::from_secs(20));
    assert_eq!(
        in_flight(dir.path()),
        filling,
        "the fill's file is untouched"
    );
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "the second hoard refused");
    assert!(
        stderr.contains("is in use by another hoard") && stderr.contains("lock"),
        "{stderr}"
    );
    let tool = cache_tool_output(dir.path(), &["stats"]);
    assert!(!tool.status.success());
    let stderr = String::from_utf8_lossy(&tool.stderr);
    assert!(stderr.contains("is in use by another hoard"), "{stderr}");
    assert_eq!(in_flight(dir.path()), filling, "and untouched by the tool");

    open.send(true).unwrap();
    assert_eq!(response.text().await.unwrap(), "second half".repeat(2000));
    let got = get(&client, &url, &[]).await;
    let (body, status) = (got.body, got.cache_status);
    assert_eq!(
        body,
        "first half, ".repeat(2000) + &"second half".repeat(2000)
    );
    assert!(status.contains("hit"), "the fill completed: {status}");
    first.stop();
}
