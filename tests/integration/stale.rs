//! Stale responses when the origin cannot answer (RFC 9111 §4.2.4, RFC 5861): served by
//! default for a week, as Squid and Traffic Server do, never when the response forbids it,
//! and always said in `Cache-Status`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use hoard::body;
use http::Response;

use crate::support::{Hoard, Origin, get, raw};

/// A stored, already stale response from an origin that then goes down.
const STALE_NOW: &[u8] = b"HTTP/1.1 200 OK\r\nCache-Control: max-age=0\r\nETag: \"a\"\r\n\
                           Content-Length: 9\r\nConnection: close\r\n\r\nold copy!";

#[tokio::test]
async fn by_default_a_stale_copy_stands_in_for_an_origin_that_is_down() {
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    let origin = raw::origin_that_goes_down(STALE_NOW).await;
    let url = format!("http://{origin}/page");
    assert_eq!(get(&client, &url, &[]).await.body, "old copy!");
    let got = get(&client, &url, &[]).await;
    assert_eq!((got.status, got.body.as_str()), (200, "old copy!"));
    assert!(
        got.cache_status.contains("detail=origin-unavailable"),
        "{}",
        got.cache_status
    );
}

/// An origin answering with the status in `mode`, cacheable with `cache_control`.
async fn switchable_origin(mode: Arc<AtomicU16>, cache_control: &'static str) -> Origin {
    Origin::start(move |_| {
        let status = mode.load(Ordering::SeqCst);
        async move {
            Response::builder()
                .status(status)
                .header("cache-control", cache_control)
                .header("etag", "\"a\"")
                .body(body::full(format!("status {status}")))
                .unwrap()
        }
    })
    .await
}

#[tokio::test]
async fn a_5xx_from_the_origin_is_covered_too_and_says_what_the_origin_said() {
    let mode = Arc::new(AtomicU16::new(200));
    let origin = switchable_origin(mode.clone(), "max-age=0").await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    get(&client, &origin.url("/5xx"), &[]).await;
    mode.store(503, Ordering::SeqCst);
    let got = get(&client, &origin.url("/5xx"), &[]).await;
    assert_eq!((got.status, got.body.as_str()), (200, "status 200"));
    assert!(
        got.cache_status.contains("fwd-status=503")
            && got.cache_status.contains("detail=origin-unavailable"),
        "{}",
        got.cache_status
    );
}

#[tokio::test]
async fn responses_that_forbid_stale_use_are_never_served_stale_even_with_a_grace() {
    for forbids in [
        "max-age=0, no-cache",
        "max-age=0, must-revalidate",
        "max-age=0, proxy-revalidate",
        "s-maxage=0",
        "max-age=0, no-cache, stale-if-error=600",
    ] {
        let mode = Arc::new(AtomicU16::new(200));
        let origin = switchable_origin(mode.clone(), forbids).await;
        let hoard = Hoard::start(&["--stale-if-error", "1h"]).await;
        let client = hoard.client();
        get(&client, &origin.url("/strict"), &[]).await;
        mode.store(500, Ordering::SeqCst);
        let got = get(&client, &origin.url("/strict"), &[]).await;
        assert_eq!(
            (got.status, got.body.as_str()),
            (500, "status 500"),
            "{forbids}: {}",
            got.cache_status
        );
    }
}

#[tokio::test]
async fn the_grace_can_be_turned_off() {
    let hoard = Hoard::start(&["--stale-if-error", "0s"]).await;
    let client = hoard.client();
    let origin = raw::origin_that_goes_down(STALE_NOW).await;
    let url = format!("http://{origin}/off");
    get(&client, &url, &[]).await;
    assert_eq!(get(&client, &url, &[]).await.status, 502);
}

#[tokio::test]
async fn a_clients_no_cache_is_fwd_request_and_a_stale_entry_is_fwd_stale() {
    let origin = Origin::start(|request: http::Request<hyper::body::Incoming>| async move {
        let stale = request.uri().path() == "/stale";
        let builder = Response::builder()
            .header(
                "cache-control",
                if stale { "max-age=0" } else { "max-age=600" },
            )
            .header("etag", "\"v\"");
        if request.headers().contains_key("if-none-match") {
            return builder.status(304).body(body::empty()).unwrap();
        }
        builder.body(body::full("body")).unwrap()
    })
    .await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    get(&client, &origin.url("/fresh"), &[]).await;
    let forced = get(
        &client,
        &origin.url("/fresh"),
        &[("cache-control", "no-cache")],
    )
    .await;
    assert!(
        forced.cache_status.contains("fwd=request")
            && forced.cache_status.contains("fwd-status=304"),
        "{}",
        forced.cache_status
    );
    get(&client, &origin.url("/stale"), &[]).await;
    let stale = get(&client, &origin.url("/stale"), &[]).await;
    assert!(
        stale.cache_status.contains("fwd=stale"),
        "{}",
        stale.cache_status
    );
}
