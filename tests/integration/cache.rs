//! The cache as a client and an origin see it: what is stored, for how long, how it is
//! revalidated, varied, collapsed, invalidated, and what survives a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use hoard::body;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::support::{Hoard, Origin, damage_stored_body, get, stored_bodies};

#[tokio::test]
async fn fresh_response_is_stored_and_served_as_a_hit_with_age() {
    let origin = Origin::with_headers(&[
        ("cache-control", "max-age=60"),
        ("x-repeat", "a"),
        ("x-repeat", "b"),
    ])
    .await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    let first = get(&client, &origin.url("/fresh"), &[]).await;
    // ttl is 60, or 59 when the origin's Date fell in the previous second.
    assert!(
        [
            "hoard; fwd=uri-miss; stored; ttl=60",
            "hoard; fwd=uri-miss; stored; ttl=59"
        ]
        .contains(&first.cache_status.as_str()),
        "{}",
        first.cache_status
    );
    let second = get(&client, &origin.url("/fresh"), &[]).await;
    assert_eq!(second.body, "/fresh #1");
    assert!(
        second.cache_status.starts_with("hoard; hit; ttl="),
        "{}",
        second.cache_status
    );
    assert!(second.headers.contains_key("age"));
    let repeats: Vec<_> = second.headers.get_all("x-repeat").iter().collect();
    assert_eq!(
        repeats,
        vec!["a", "b"],
        "stored headers keep repeats and order"
    );
    assert_eq!(origin.seen().len(), 1);
}

#[tokio::test]
async fn uncacheable_responses_are_not_stored() {
    for (headers, request_headers, reason) in [
        (&[("cache-control", "no-store")][..], &[][..], "no-store"),
        (&[("cache-control", "private, max-age=60")], &[], "private"),
        (
            &[("cache-control", "max-age=60")],
            &[("authorization", "Basic eDp5")][..],
            "authorization",
        ),
        (
            &[("cache-control", "max-age=60"), ("vary", "*")],
            &[],
            "vary-star",
        ),
        (
            &[("cache-control", "max-age=60"), ("set-cookie", "id=1")],
            &[],
            "set-cookie",
        ),
        (&[], &[], "no-freshness"),
    ] {
        let headers: &'static [(&'static str, &'static str)] =
            Box::leak(headers.to_vec().into_boxed_slice());
        let origin = Origin::with_headers(headers).await;
        let hoard = Hoard::start(&[]).await;
        let client = hoard.client();
        let first = get(&client, &origin.url("/u"), request_headers).await;
        assert!(
            first.cache_status.ends_with(&format!("detail={reason}")),
            "{reason}: {}",
            first.cache_status
        );
        let second = get(&client, &origin.url("/u"), request_headers).await;
        assert_eq!(second.body, "/u #2", "{reason}");
        assert_eq!(origin.seen().len(), 2, "{reason}");
        let metrics = crate::support::fetch(
            &reqwest::Client::new(),
            format!("http://{}/_hoard/metrics", hoard.addr),
        )
        .await;
        let line = format!("hoard_cache_not_stored_total{{reason=\"{reason}\"}} 2");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
}

#[tokio::test]
async fn authorized_response_marked_public_is_shared() {
    let origin = Origin::with_headers(&[("cache-control", "public, max-age=60")]).await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    get(
        &client,
        &origin.url("/p"),
        &[("authorization", "Basic eDp5")],
    )
    .await;
    let second = get(&client, &origin.url("/p"), &[]).await;
    assert_eq!(second.body, "/p #1");
}

/// An origin whose resource has ETag "v1" and a Last-Modified date, is always stale
/// (max-age=0), and answers conditional requests with 304 carrying a new header.
async fn validating_origin() -> Origin {
    let served = Arc::new(AtomicUsize::new(0));
    Origin::start(move |request: Request<Incoming>| {
        let n = served.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let matches = request
                .headers()
                .get("if-none-match")
                .is_some_and(|v| v == "\"v1\"");
            let response = Response::builder()
                .header("cache-control", "max-age=0")
                .header("etag", "\"v1\"")
                .header("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT")
                .header("x-served", n.to_string());
            if matches {
                response.status(304).body(body::empty()).unwrap()
            } else {
                response.body(body::full(format!("body #{n}"))).unwrap()
            }
        }
    })
    .await
}

#[tokio::test]
async fn stale_entry_is_revalidated_with_if_none_match_and_a_304_refreshes_it() {
    let origin = validating_origin().await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    assert_eq!(get(&client, &origin.url("/v"), &[]).await.body, "body #1");
    let second = get(&client, &origin.url("/v"), &[]).await;
    assert_eq!(second.status, 200);
    assert_eq!(
        second.body, "body #1",
        "the stored body is served after a 304"
    );
    assert!(
        second
            .cache_status
            .starts_with("hoard; fwd=stale; fwd-status=304; ttl="),
        "{}",
        second.cache_status
    );
    assert_eq!(
        second.headers["x-served"], "2",
        "the 304's headers replace the stored ones"
    );
    let conditional = origin.last();
    assert_eq!(conditional.headers["if-none-match"], "\"v1\"");
    assert_eq!(
        conditional.headers["if-modified-since"],
        "Sun, 06 Nov 1994 08:49:37 GMT"
    );
}

#[tokio::test]
async fn stale_entry_without_etag_is_revalidated_with_if_modified_since() {
    let origin = Origin::start(|request: Request<Incoming>| async move {
        if request.headers().contains_key("if-modified-since") {
            return Response::builder().status(304).body(body::empty()).unwrap();
        }
        Response::builder()
            .header("cache-control", "max-age=0")
            .header("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT")
            .body(body::full("timestamped"))
            .unwrap()
    })
    .await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    get(&client, &origin.url("/t"), &[]).await;
    let second = get(&client, &origin.url("/t"), &[]).await;
    assert_eq!(second.body, "timestamped");
    assert!(
        second.cache_status.contains("fwd-status=304"),
        "{}",
        second.cache_status
    );
    let seen = origin.last();
    assert_eq!(
        seen.headers["if-modified-since"],
        "Sun, 06 Nov 1994 08:49:37 GMT"
    );
    assert!(!seen.headers.contains_key("if-none-match"));
}

#[tokio::test]
async fn a_new_200_on_revalidation_replaces_the_entry() {
    let origin =
        Origin::with_headers(&[("cache-control", "max-age=0"), ("etag", "\"changes\"")]).await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    assert_eq!(get(&client, &origin.url("/r"), &[]).await.body, "/r #1");
    let second = get(&client, &origin.url("/r"), &[]).await;
    assert_eq!(second.body, "/r #2");
    assert!(
        second
            .cache_status
            .starts_with("hoard; fwd=stale; fwd-status=200; stored"),
        "{}",
        second.cache_status
    );
}

#[tokio::test]
async fn client_conditionals_are_answered_304_from_a_fresh_entry() {
    let origin = Origin::with_headers(&[
        ("cache-control", "max-age=60"),
        ("etag", "\"e1\""),
        ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
    ])
    .await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    get(&client, &origin.url("/c"), &[]).await;
    let by_etag = get(&client, &origin.url("/c"), &[("if-none-match", "\"e1\"")]).await;
    assert_eq!((by_etag.status, by_etag.body.as_str()), (304, ""));
    let by_date = get(
        &client,
        &origin.url("/c"),
        &[("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")],
    )
    .await;
    assert_eq!(by_date.status, 304);
    let changed = get(
        &client,
        &origin.url("/c"),
        &[("if-none-match", "\"other\"")],
    )
    .await;
    assert_eq!((changed.status, changed.body.as_str()), (200, "/c #1"));
    assert_eq!(origin.seen().len(), 1);
}

#[tokio::test]
async fn a_conditional_miss_stores_the_full_response_and_answers_304() {
    let origin = Origin::with_headers(&[("cache-control", "max-age=60"), ("etag", "\"e1\"")]).await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    let first = get(&client, &origin.url("/cm"), &[("if-none-match", "\"e1\"")]).await;
    assert_eq!(first.status, 304);
    assert!(
        !origin.last().headers.contains_key("if-none-match"),
        "the origin is asked for the full response"
    );
    let second = get(&client, &origin.url("/cm"), &[]).await;
    assert_eq!((second.status, second.body.as_str()), (200, "/cm #1"));
}

#[tokio::test]
async fn client_no_cache_and_pragma_force_revalidation() {
    let origin = validating_origin().await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    get(&client, &origin.url("/n"), &[]).await;
    for header in [("cache-control", "no-cache"), ("pragma", "no-cache")] {
        let before = origin.seen().len();
        let got = get(&client, &origin.url("/n"), &[header]).await;
        assert_eq!(
            got.body,
            "body #1",
            "{}: {:#?}",
            got.cache_status,
            origin.seen()
        );
        assert_eq!(
            origin.seen().len(),
            before + 1,
            "{header:?} reached the origin"
        );
        assert_eq!(origin.last().headers["if-none-match"], "\"v1\"");
    }
}

#[tokio::test]
async fn request_max_age_min_fresh_and_max_stale() {
    let origin = Origin::with_headers(&[("cache-control", "max-age=100"), ("etag", "\"x\"")]).await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    get(&client, &origin.url("/d"), &[]).await;
    assert!(
        get(
            &client,
            &origin.url("/d"),
            &[("cache-control", "max-age=50")]
        )
        .await
        .cache_status
        .contains("hit")
    );
    let too_old = get(
        &client,
        &origin.url("/d"),
        &[("cache-control", "max-age=0")],
    )
    .await;
    assert!(
        // A fresh response the request's directives would not take: RFC 9211 fwd=request.
        too_old.cache_status.contains("fwd=request"),
        "{}",
        too_old.cache_status
    );
    let not_fresh_enough = get(
        &client,
        &origin.url("/d"),
        &[("cache-control", "min-fresh=1000")],
    )
    .await;
    assert!(
        // A fresh response the request's directives would not take: RFC 9211 fwd=request.
        not_fresh_enough.cache_status.contains("fwd=request"),
        "{}",
        not_fresh_enough.cache_status
    );

    let stale_origin =
        Origin::with_headers(&[("cache-control", "max-age=0"), ("etag", "\"y\"")]).await;
    get(&client, &stale_origin.url("/s"), &[]).await;
    let stale_ok = get(
        &client,
        &stale_origin.url("/s"),
        &[("cache-control", "max-stale=60")],
    )
    .await;
    assert_eq!(stale_ok.body, "/s #1");
    assert!(
        stale_ok.cache_status.contains("hit") && stale_ok.cache_status.contains("detail=max-stale"),
        "{}",
        stale_ok.cache_status
    );
    assert_eq!(stale_origin.seen().len(), 1);
}

#[tokio::test]
async fn only_if_cached_gets_504_when_nothing_is_stored() {
    let origin = Origin::with_headers(&[("cache-control", "max-age=60")]).await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    let missing = get(
        &client,
        &origin.url("/o"),
        &[("cache-control", "only-if-cached")],
    )
    .await;
    assert_eq!(missing.status, 504);
    assert_eq!(origin.seen().len(), 0);
    get(&client, &origin.url("/o"), &[]).await;
    let cached = get(
        &client,
        &origin.url("/o"),
        &[("cache-control", "only-if-cached")],
    )
    .await;
    assert_eq!((cached.status, cached.body.as_str()), (200, "/o #1"));
}

#[tokio::test]
async fn vary_keeps_one_variant_per_request_header_value() {
    let origin = Origin::start(|request: Request<Incoming>| async move {
        let encoding = request
            .headers()
            .get("accept-encoding")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_else(|| "none".into());
        Response::builder()
            .header("cache-control", "max-age=60")
            .header("vary", "Accept-Encoding")
            .body(body::full(format!("encoded for {encoding}")))
            .unwrap()
    })
    .await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    let gzip = get(
        &client,
        &origin.url("/vary"),
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert!(gzip.cache_status.contains("fwd=uri-miss"));
    let br = get(&client, &origin.url("/vary"), &[("accept-encoding", "br")]).await;
    assert!(
        br.cache_status.contains("fwd=vary-miss"),
        "{}",
        br.cache_status
    );
    assert_eq!(br.body, "encoded for br");
    // Case and whitespace do not make a new variant.
    let gzip_again = get(
        &client,
        &origin.url("/vary"),
        &[("accept-encoding", " GZIP ")],
    )
    .await;
    assert_eq!(gzip_again.body, "encoded for gzip");
    assert!(gzip_again.cache_status.contains("hit"));
    let br_again = get(&client, &origin.url("/vary"), &[("accept-encoding", "br")]).await;
    assert_eq!(br_again.body, "encoded for br");
    assert_eq!(origin.seen().len(), 2);
}

#[tokio::test]
async fn stale_while_revalidate_serves_stale_and_refreshes_once_in_the_background() {
    let release = Arc::new(tokio::sync::Notify::new());
    let refreshing = Arc::new(tokio::sync::Notify::new());
    let served = Arc::new(AtomicUsize::new(0));
    let origin = {
        let release = release.clone();
        let refreshing = refreshing.clone();
        Origin::start(move |_| {
            let n = served.fetch_add(1, Ordering::SeqCst) + 1;
            let release = release.clone();
            let refreshing = refreshing.clone();
            async move {
                if n > 1 {
                    refreshing.notify_one();
                    release.notified().await;
                }
                Response::builder()
                    .header("cache-control", "max-age=0, stale-while-revalidate=600")
                    .body(body::full(format!("version {n}")))
                    .unwrap()
            }
        })
        .await
    };
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    assert_eq!(
        get(&client, &origin.url("/swr"), &[]).await.body,
        "version 1"
    );
    // While the single background refresh is held at the origin, every request is served
    // the stale copy at once.
    for _ in 0..10 {
        let stale = get(&client, &origin.url("/swr"), &[]).await;
        assert_eq!(stale.body, "version 1");
        assert!(
            stale.cache_status.contains("detail=stale-while-revalidate"),
            "{}",
            stale.cache_status
        );
    }
    // The refresh runs in the background; wait until it has reached the origin.
    tokio::time::timeout(Duration::from_secs(10), refreshing.notified())
        .await
        .expect("a background refresh reached the origin");
    assert_eq!(
        origin.seen().len(),
        2,
        "one refresh, not one per request: {:?}",
        origin.seen()
    );
    release.notify_one();
    // The refresh lands; the next request sees it.
    let mut body = String::new();
    for _ in 0..200 {
        body = get(
            &client,
            &origin.url("/swr"),
            &[("cache-control", "max-stale=600")],
        )
        .await
        .body;
        if body == "version 2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(body, "version 2");
}

#[tokio::test]
async fn stale_if_error_serves_stale_when_the_origin_fails_or_times_out() {
    let mode = Arc::new(AtomicU16::new(200));
    let origin = {
        let mode = mode.clone();
        Origin::start(move |_| {
            let mode = mode.load(Ordering::SeqCst);
            async move {
                match mode {
                    200 => Response::builder()
                        .header("cache-control", "max-age=0, stale-if-error=600")
                        .body(body::full("good copy"))
                        .unwrap(),
                    0 => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        Response::new(body::empty())
                    }
                    status => Response::builder()
                        .status(status)
                        .body(body::full("broken"))
                        .unwrap(),
                }
            }
        })
        .await
    };
    let hoard = Hoard::start(&["--first-byte-timeout", "300ms"]).await;
    let client = hoard.client();
    get(&client, &origin.url("/sie"), &[]).await;
    mode.store(503, Ordering::SeqCst);
    let on_503 = get(&client, &origin.url("/sie"), &[]).await;
    assert_eq!((on_503.status, on_503.body.as_str()), (200, "good copy"));
    assert!(
        on_503.cache_status.contains("fwd-status=503")
            && on_503.cache_status.contains("stale-if-error"),
        "{}",
        on_503.cache_status
    );
    mode.store(0, Ordering::SeqCst);
    let on_timeout = get(&client, &origin.url("/sie"), &[]).await;
    assert_eq!(
        (on_timeout.status, on_timeout.body.as_str()),
        (200, "good copy")
    );
}

#[tokio::test]
async fn with_the_stale_grace_off_a_failing_origin_passes_its_error_through() {
    let mode = Arc::new(AtomicU16::new(200));
    let origin = {
        let mode = mode.clone();
        Origin::start(move |_| {
            let status = mode.load(Ordering::SeqCst);
            async move {
                Response::builder()
                    .status(status)
                    .header("cache-control", "max-age=0")
                    .header("etag", "\"a\"")
                    .body(body::full(format!("status {status}")))
                    .unwrap()
            }
        })
        .await
    };
    let hoard = Hoard::start(&["--stale-if-error", "0s"]).await;
    let client = hoard.client();
    get(&client, &origin.url("/e"), &[]).await;
    mode.store(500, Ordering::SeqCst);
    let got = get(&client, &origin.url("/e"), &[]).await;
    assert_eq!((got.status, got.body.as_str()), (500, "status 500"));
    // The configured grace makes hoard serve stale anyway.
    let lenient = Hoard::start(&["--stale-if-error", "1h"]).await;
    let lenient_client = lenient.client();
    mode.store(200, Ordering::SeqCst);
    get(&lenient_client, &origin.url("/g"), &[]).await;
    mode.store(500, Ordering::SeqCst);
    assert_eq!(
        get(&lenient_client, &origin.url("/g"), &[]).await.body,
        "status 200"
    );
}

#[tokio::test]
async fn unsafe_methods_invalidate_the_uri_and_same_origin_locations() {
    let served = Arc::new(AtomicUsize::new(0));
    let origin = Origin::start(move |request: Request<Incoming>| {
        let n = served.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if request.method() == http::Method::POST {
                return Response::builder()
                    .status(StatusCode::CREATED)
                    .header("location", "/other")
                    .body(body::empty())
                    .unwrap();
            }
            Response::builder()
                .header("cache-control", "max-age=600")
                .body(body::full(format!("{} #{n}", request.uri().path())))
                .unwrap()
        }
    })
    .await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    get(&client, &origin.url("/item"), &[]).await;
    get(&client, &origin.url("/other"), &[]).await;
    assert!(
        get(&client, &origin.url("/item"), &[])
            .await
            .cache_status
            .contains("hit")
    );
    assert!(
        get(&client, &origin.url("/other"), &[])
            .await
            .cache_status
            .contains("hit")
    );
    let post = client
        .post(origin.url("/item"))
        .body("new")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 201);
    assert_eq!(post.headers()["cache-status"], "hoard; fwd=method");
    assert!(
        get(&client, &origin.url("/item"), &[])
            .await
            .cache_status
            .contains("fwd=uri-miss")
    );
    assert!(
        get(&client, &origin.url("/other"), &[])
            .await
            .cache_status
            .contains("fwd=uri-miss")
    );
}

#[tokio::test]
async fn ranges_and_head_are_answered_from_a_stored_get() {
    let origin = Origin::start(|_| async {
        Response::builder()
            .header("cache-control", "max-age=60")
            .header("etag", "\"r1\"")
            .body(body::full("0123456789"))
            .unwrap()
    })
    .await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    get(&client, &origin.url("/range"), &[]).await;
    let partial = get(&client, &origin.url("/range"), &[("range", "bytes=2-5")]).await;
    assert_eq!((partial.status, partial.body.as_str()), (206, "2345"));
    assert_eq!(partial.headers["content-range"], "bytes 2-5/10");
    let suffix = get(&client, &origin.url("/range"), &[("range", "bytes=-3")]).await;
    assert_eq!((suffix.status, suffix.body.as_str()), (206, "789"));
    let beyond = get(&client, &origin.url("/range"), &[("range", "bytes=20-")]).await;
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.headers["content-range"], "bytes */10");
    let if_range_fails = get(
        &client,
        &origin.url("/range"),
        &[("range", "bytes=0-1"), ("if-range", "\"old\"")],
    )
    .await;
    assert_eq!(
        (if_range_fails.status, if_range_fails.body.as_str()),
        (200, "0123456789")
    );
    let head = client.head(origin.url("/range")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "10");
    assert!(
        head.headers()["cache-status"]
            .to_str()
            .unwrap()
            .contains("hit")
    );
    assert_eq!(
        origin.seen().len(),
        1,
        "only the first GET reached the origin"
    );
}

#[tokio::test]
async fn concurrent_misses_are_collapsed_into_one_origin_request() {
    let origin = Origin::start(|_| async {
        // Long enough for all clients to arrive while the first request is in flight.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Response::builder()
            .header("cache-control", "max-age=60")
            .body(body::full("shared"))
            .unwrap()
    })
    .await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    let url = origin.url("/popular");
    let requests = (0..100).map(|_| {
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move { get(&client, &url, &[]).await })
    });
    for got in futures_util::future::join_all(requests).await {
        let got = got.unwrap();
        assert_eq!((got.status, got.body.as_str()), (200, "shared"));
    }
    assert_eq!(origin.seen().len(), 1);
}

#[tokio::test]
async fn private_responses_are_never_shared_by_collapsing() {
    let origin = Origin::start(|request: Request<Incoming>| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let user = request.headers()["x-user"].to_str().unwrap().to_owned();
        Response::builder()
            .header("cache-control", "private, max-age=60")
            .body(body::full(format!("for {user}")))
            .unwrap()
    })
    .await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    let url = origin.url("/mine");
    let requests = (0..10).map(|i| {
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            (
                i,
                get(&client, &url, &[("x-user", &format!("user{i}"))]).await,
            )
        })
    });
    for joined in futures_util::future::join_all(requests).await {
        let (i, got) = joined.unwrap();
        assert_eq!(got.body, format!("for user{i}"));
    }
    assert_eq!(origin.seen().len(), 10);
}

#[tokio::test]
async fn objects_over_the_size_limit_stream_through_uncached() {
    let origin = Origin::start(|_| async {
        Response::builder()
            .header("cache-control", "max-age=60")
            .body(body::full(vec![b'z'; 200_000]))
            .unwrap()
    })
    .await;
    let hoard = Hoard::start(&["--max-object-size", "100KiB"]).await;
    let client = hoard.client();
    for _ in 0..2 {
        let got = get(&client, &origin.url("/big"), &[]).await;
        assert_eq!(got.body.len(), 200_000);
        assert!(
            got.cache_status.contains("detail=too-large"),
            "{}",
            got.cache_status
        );
    }
    assert_eq!(origin.seen().len(), 2);
}

#[tokio::test]
async fn a_client_leaving_mid_body_never_leaves_a_truncated_entry() {
    let release = Arc::new(tokio::sync::Notify::new());
    let served = Arc::new(AtomicUsize::new(0));
    let origin = {
        let release = release.clone();
        Origin::start(move |_| {
            let n = served.fetch_add(1, Ordering::SeqCst);
            let release = release.clone();
            async move {
                let first = hyper::body::Frame::data(bytes::Bytes::from(vec![b'a'; 1000]));
                let rest = futures_util::stream::once(async move {
                    if n == 0 {
                        release.notified().await;
                    }
                    Ok::<_, std::io::Error>(hyper::body::Frame::data(bytes::Bytes::from(vec![
                        b'b';
                        1000
                    ])))
                });
                let stream = futures_util::StreamExt::chain(
                    futures_util::stream::once(async { Ok(first) }),
                    rest,
                );
                Response::builder()
                    .header("cache-control", "max-age=60")
                    .body(body::stream(http_body_util::StreamBody::new(stream)))
                    .unwrap()
            }
        })
        .await
    };
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    let mut partial = client.get(origin.url("/cut")).send().await.unwrap();
    assert_eq!(partial.chunk().await.unwrap().unwrap().len(), 1000);
    drop(partial);
    release.notify_one();
    let again = get(&client, &origin.url("/cut"), &[]).await;
    assert_eq!(again.body.len(), 2000);
    assert!(
        again.cache_status.contains("fwd=uri-miss"),
        "{}",
        again.cache_status
    );
    assert_eq!(origin.seen().len(), 2);
}

#[tokio::test]
async fn entries_survive_a_restart_and_are_hits_without_the_origin() {
    let origin = Origin::with_headers(&[("cache-control", "max-age=600")]).await;
    let dir = tempfile::tempdir().unwrap();
    let hoard = Hoard::start_in(dir.path(), &[]).await;
    let client = hoard.client();
    for path in ["/a", "/b", "/c"] {
        get(&client, &origin.url(path), &[]).await;
    }
    hoard.shutdown().await;
    let restarted = Hoard::start_in(dir.path(), &[]).await;
    let client = restarted.client();
    for (path, body) in [("/a", "/a #1"), ("/b", "/b #2"), ("/c", "/c #3")] {
        let got = get(&client, &origin.url(path), &[]).await;
        assert_eq!(got.body, body);
        assert!(
            got.cache_status.contains("hit"),
            "{path}: {}",
            got.cache_status
        );
    }
    assert_eq!(origin.seen().len(), 3);
}

#[tokio::test]
async fn a_corrupted_body_on_disk_is_detected_dropped_and_refetched() {
    let origin = Origin::with_headers(&[("cache-control", "max-age=600")]).await;
    let dir = tempfile::tempdir().unwrap();
    let hoard = Hoard::start_in(dir.path(), &[]).await;
    get(&hoard.client(), &origin.url("/corrupt"), &[]).await;
    hoard.shutdown().await;
    // Flip the stored body's bytes (same length), as a bad disk would: it is small, so it is
    // packed inside the index database.
    assert!(damage_stored_body(dir.path(), b"/corrupt #1") > 0);

    let restarted = Hoard::start_in(dir.path(), &[]).await;
    let got = get(&restarted.client(), &origin.url("/corrupt"), &[]).await;
    assert_eq!(got.body, "/corrupt #2", "the corrupt copy is never served");
    assert!(
        got.cache_status.contains("fwd=uri-miss"),
        "{}",
        got.cache_status
    );
}

#[tokio::test]
async fn the_disk_tier_stays_within_its_size_by_evicting() {
    let origin = Origin::start(|request: Request<Incoming>| async move {
        let fill = request.uri().path().as_bytes()[1];
        Response::builder()
            .header("cache-control", "max-age=600")
            .body(body::full(vec![fill; 100_000]))
            .unwrap()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let hoard = Hoard::start_in(
        dir.path(),
        &["--cache-disk", "500KiB", "--max-object-size", "200KiB"],
    )
    .await;
    let client = hoard.client();
    for name in "abcdefghijklmnopqrst".chars() {
        let got = get(&client, &origin.url(&format!("/{name}")), &[]).await;
        assert_eq!(got.body.len(), 100_000);
    }
    hoard.shutdown().await;
    let stored: u64 = stored_bodies(dir.path())
        .iter()
        .map(|file| file.metadata().unwrap().len())
        .sum();
    assert!(
        stored <= 500 * 1024,
        "{stored} bytes on disk for a 500 KiB tier"
    );
    assert!(
        stored >= 200_000,
        "recent objects are kept ({stored} bytes)"
    );
}

#[tokio::test]
async fn a_vanished_cache_directory_means_proxying_uncached_and_saying_so() {
    let origin = Origin::with_headers(&[("cache-control", "max-age=600")]).await;
    let dir = tempfile::tempdir().unwrap();
    let hoard = Hoard::start_in(dir.path(), &[]).await;
    let client = hoard.client();
    assert!(
        get(&client, &origin.url("/before"), &[])
            .await
            .cache_status
            .contains("stored")
    );
    assert!(
        get(&client, &origin.url("/before"), &[])
            .await
            .cache_status
            .contains("hit")
    );

    // Someone deletes the cache directory while hoard runs.
    std::fs::remove_dir_all(dir.path()).unwrap();
    // The origin numbers its answers: #1 was /before; each /after goes to the origin.
    for n in 2..=3 {
        let got = get(&client, &origin.url("/after"), &[]).await;
        assert_eq!(
            (got.status, got.body),
            (200, format!("/after #{n}")),
            "still proxying, uncached"
        );
    }
    let failures = crate::support::metric(hoard.addr, "hoard_cache_store_failures_total").await;
    assert!(failures >= 1, "the failed stores are counted");
}
