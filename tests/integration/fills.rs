//! Fills in progress: a miss storm against slow origins holds no thread per fill, and past
//! the fills hoard keeps in progress at once a response passes through uncached (whole and
//! correct) instead of queueing in memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::StreamExt;
use hoard::body;
use http::Response;

use crate::support::Origin;
use crate::support::process::Process;

/// `cache::FILLS_IN_PROGRESS`.
const FILLS_IN_PROGRESS: usize = 512;

/// Threads of process `pid`, from /proc.
fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// An origin whose every response is 200 bytes naming its path, cacheable: the first 100 at
/// once, the rest when `release` says so.
async fn slow_origin(release: tokio::sync::watch::Receiver<bool>) -> Origin {
    Origin::start(move |request: http::Request<hyper::body::Incoming>| {
        let mut release = release.clone();
        let text = format!("{:<200}", request.uri().path());
        async move {
            let (first, rest) = text.split_at(100);
            let (first, rest) = (first.to_owned(), rest.to_owned());
            let stream = futures_util::stream::once(async move {
                Ok::<_, std::io::Error>(hyper::body::Frame::data(bytes::Bytes::from(first)))
            })
            .chain(futures_util::stream::once(async move {
                let _ = release.wait_for(|released| *released).await;
                Ok(hyper::body::Frame::data(bytes::Bytes::from(rest)))
            }));
            Response::builder()
                .header("cache-control", "max-age=600")
                .header("content-length", "200")
                .body(body::stream(http_body_util::StreamBody::new(stream)))
                .unwrap()
        }
    })
    .await
}

#[tokio::test]
async fn a_storm_of_slow_fills_holds_no_thread_each_and_past_the_limit_passes_through() {
    const SLOW: usize = FILLS_IN_PROGRESS + 88;
    let (release, released) = tokio::sync::watch::channel(false);
    let origin = slow_origin(released).await;
    let process = Process::start(&[]);
    let client = process.client();
    let answered = Arc::new(AtomicUsize::new(0));
    let fetches: Vec<_> = (0..SLOW)
        .map(|n| {
            let (client, url, answered) = (
                client.clone(),
                origin.url(&format!("/slow/{n}")),
                Arc::clone(&answered),
            );
            tokio::spawn(async move {
                let response = client.get(&url).send().await.unwrap();
                let status = response.headers()["cache-status"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                answered.fetch_add(1, Ordering::SeqCst);
                let body = response.text().await.unwrap();
                (url, status, body)
            })
        })
        .collect();
    for _ in 0..600 {
        if answered.load(Ordering::SeqCst) == SLOW {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(answered.load(Ordering::SeqCst), SLOW, "every head arrived");

    // Every fill is in progress now, waiting for its origin. Each used to hold a thread of
    // the blocking pool (over 512 threads, and fills past that queued behind them).
    let during = threads(process.pid());
    eprintln!("{during} threads with {SLOW} fills in progress");
    assert!(
        during < 100,
        "{during} threads with {SLOW} fills in progress"
    );
    // Past the limit, a response is passed through uncached, and so is a fast one meanwhile.
    let fast = client.get(origin.url("/fast")).send().await.unwrap();
    let fast_status = fast.headers()["cache-status"].to_str().unwrap().to_owned();
    assert!(fast_status.contains("detail=busy"), "{fast_status}");

    release.send(true).unwrap();
    assert_eq!(fast.text().await.unwrap(), format!("{:<200}", "/fast"));
    let mut busy = Vec::new();
    let mut stored = Vec::new();
    for fetch in fetches {
        let (url, status, body) = fetch.await.unwrap();
        let path = url.rsplit_once(&origin.addr.to_string()).unwrap().1;
        assert_eq!(body, format!("{path:<200}"), "{url}");
        assert!(status.contains("fwd=uri-miss"), "{status}");
        if status.contains("detail=busy") {
            busy.push(url);
        } else {
            stored.push(url);
        }
    }
    assert_eq!(
        busy.len(),
        SLOW - FILLS_IN_PROGRESS,
        "passed through uncached"
    );
    assert_eq!(
        process
            .metric("hoard_cache_not_stored_total{reason=\"busy\"}")
            .await,
        (SLOW - FILLS_IN_PROGRESS + 1) as u64
    );
    // Those within the limit were stored; those past it were not, and are fetched again.
    // (published just after its client had the body)
    let mut hit = String::new();
    for _ in 0..50 {
        hit = crate::support::get(&client, &stored[0], &[])
            .await
            .cache_status;
        if hit.contains("hit") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(hit.contains("hit"), "{hit}");
    let refetched = crate::support::get(&client, &busy[0], &[]).await;
    assert!(
        refetched.cache_status.contains("fwd=uri-miss"),
        "{}",
        refetched.cache_status
    );
    assert_eq!(origin.seen().len(), SLOW + 2);
    process.stop();
}
