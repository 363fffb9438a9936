//! RFC 9111 §4.4: after an unsafe request succeeds, no response fetched before it is served,
//! however the timing falls: a fill still being stored, a 304 refresh or a background
//! revalidation still on its way when the invalidation comes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hoard::body;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::Notify;

use crate::support::{Hoard, Origin, get};

/// An origin whose GETs carry `cache-control` and a body naming the path and how many
/// requests it has answered (large: `size` bytes), and whose POSTs succeed.
async fn changing_origin(cache_control: &'static str, size: usize) -> Origin {
    let served = Arc::new(AtomicUsize::new(0));
    Origin::start(move |request: Request<Incoming>| {
        let n = served.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if request.method() == Method::POST {
                return Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .body(body::empty())
                    .unwrap();
            }
            let mut text = format!("{} #{n}\n", request.uri().path());
            text.extend(std::iter::repeat_n('x', size.saturating_sub(text.len())));
            Response::builder()
                .header("cache-control", cache_control)
                .header("etag", format!("\"v{n}\""))
                .body(body::full(text))
                .unwrap()
        }
    })
    .await
}

#[tokio::test]
async fn a_post_right_after_a_fill_is_never_undone_by_the_fill_being_stored() {
    // The fill of a 300 KB body becomes visible only after fsync and the index commit; a POST
    // in that window used to find nothing to remove, and the fill then published the old copy.
    let origin = changing_origin("max-age=600", 300_000).await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    for round in 0..40 {
        let url = origin.url(&format!("/item{round}"));
        let before = get(&client, &url, &[]).await;
        let posted = client.post(&url).send().await.unwrap();
        assert_eq!(posted.status(), 204);
        let after = get(&client, &url, &[]).await;
        assert_ne!(
            after.body.lines().next(),
            before.body.lines().next(),
            "round {round}: the copy from before the POST was served after it ({})",
            after.cache_status
        );
        assert!(
            after.cache_status.contains("fwd=uri-miss"),
            "{}",
            after.cache_status
        );
    }
}

/// An origin whose first GET of a path is fresh for one second; later GETs are
/// revalidations, answered 304 only when `release` is notified, so a test can send an
/// invalidation while the 304 is on its way.
async fn slow_revalidation_origin(release: Arc<Notify>, cache_control: &'static str) -> Origin {
    let served = Arc::new(AtomicUsize::new(0));
    Origin::start(move |request: Request<Incoming>| {
        let n = served.fetch_add(1, Ordering::SeqCst) + 1;
        let release = release.clone();
        async move {
            if request.method() == Method::POST {
                return Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .body(body::empty())
                    .unwrap();
            }
            if request.headers().contains_key("if-none-match") {
                release.notified().await;
                return Response::builder()
                    .status(StatusCode::NOT_MODIFIED)
                    .header("cache-control", cache_control)
                    .header("etag", "\"v1\"")
                    .body(body::empty())
                    .unwrap();
            }
            Response::builder()
                .header("cache-control", cache_control)
                .header("etag", "\"v1\"")
                .body(body::full(format!("copy #{n}")))
                .unwrap()
        }
    })
    .await
}

#[tokio::test]
async fn a_304_arriving_after_an_invalidation_refreshes_nothing() {
    let release = Arc::new(Notify::new());
    let origin = slow_revalidation_origin(release.clone(), "max-age=1").await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    let url = origin.url("/doc");
    assert_eq!(get(&client, &url, &[]).await.body, "copy #1");
    tokio::time::sleep(Duration::from_millis(1100)).await; // stale now

    // The revalidation goes out and waits at the origin; the POST invalidates meanwhile.
    let revalidating = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move { get(&client, &url, &[]).await }
    });
    while origin.seen().len() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(client.post(&url).send().await.unwrap().status(), 204);
    release.notify_one();
    revalidating.await.unwrap();

    let after = get(&client, &url, &[]).await;
    assert!(
        after.cache_status.contains("fwd=uri-miss"),
        "the 304 re-published the copy from before the POST: {}",
        after.cache_status
    );
}

#[tokio::test]
async fn a_background_revalidation_finishing_after_an_invalidation_stores_nothing() {
    let release = Arc::new(Notify::new());
    let origin =
        slow_revalidation_origin(release.clone(), "max-age=1, stale-while-revalidate=60").await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    let url = origin.url("/swr");
    assert_eq!(get(&client, &url, &[]).await.body, "copy #1");
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Served stale at once; the refresh waits at the origin while the POST invalidates.
    let stale = get(&client, &url, &[]).await;
    assert!(
        stale.cache_status.contains("stale-while-revalidate"),
        "{}",
        stale.cache_status
    );
    while origin.seen().len() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(client.post(&url).send().await.unwrap().status(), 204);
    release.notify_one();
    // The refresh's fill lock is released when it ends: a GET that waits on it and then
    // finds nothing shows that the refresh stored nothing.
    let after = get(&client, &url, &[]).await;
    assert!(
        after.cache_status.contains("fwd=uri-miss"),
        "the background 304 re-published the copy from before the POST: {}",
        after.cache_status
    );
}

/// An origin whose POST answers name `content_location` and are fresh for ten minutes, and
/// whose GETs are counted in their body.
async fn posting_origin(content_location: &'static str) -> Origin {
    let served = Arc::new(AtomicUsize::new(0));
    Origin::start(move |request: Request<Incoming>| {
        let n = served.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if request.method() == Method::POST {
                return Response::builder()
                    .header("cache-control", "max-age=600")
                    .header("content-location", content_location)
                    .body(body::full("the result of the post"))
                    .unwrap();
            }
            Response::builder()
                .header("cache-control", "max-age=600")
                .body(body::full(format!("get #{n}")))
                .unwrap()
        }
    })
    .await
}

#[tokio::test]
async fn a_post_response_that_is_the_targets_representation_answers_later_gets() {
    let origin = posting_origin("/form").await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    let url = origin.url("/form");
    let posted = client.post(&url).body("a=1").send().await.unwrap();
    assert_eq!(posted.text().await.unwrap(), "the result of the post");
    let got = get(&client, &url, &[]).await;
    assert_eq!(got.body, "the result of the post", "{}", got.cache_status);
    assert!(got.cache_status.contains("; hit"), "{}", got.cache_status);
    assert_eq!(origin.seen().len(), 1, "the GET never reached the origin");
}

#[tokio::test]
async fn a_post_response_for_another_url_is_not_stored_for_the_target() {
    let origin = posting_origin("/elsewhere").await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    let url = origin.url("/form");
    client.post(&url).body("a=1").send().await.unwrap();
    let got = get(&client, &url, &[]).await;
    assert_eq!(got.body, "get #2");
}

#[tokio::test]
async fn must_understand_stores_understood_statuses_despite_no_store() {
    let origin = Origin::start(|request: Request<Incoming>| async move {
        let status = if request.uri().path() == "/odd" {
            299
        } else {
            200
        };
        Response::builder()
            .status(status)
            .header("cache-control", "no-store, must-understand, max-age=600")
            .body(body::full("body"))
            .unwrap()
    })
    .await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    get(&client, &origin.url("/known"), &[]).await;
    let known = get(&client, &origin.url("/known"), &[]).await;
    assert!(
        known.cache_status.contains("; hit"),
        "{}",
        known.cache_status
    );
    let odd = get(&client, &origin.url("/odd"), &[]).await;
    assert!(
        odd.cache_status.contains("detail=status"),
        "{}",
        odd.cache_status
    );
}
