//! Origins that misbehave, byte for byte: malformed heads, resets, lies about the body's
//! length, silence mid-body, a 304 nobody asked for. hoard answers 502/504 or aborts the
//! client connection, never stores what it could not receive whole, serves stale where
//! `stale-if-error` allows, and keeps serving afterwards.

use std::net::SocketAddr;

use crate::support::Hoard;
use crate::support::raw::{self, Then};

/// A complete, cacheable answer: what a repaired origin sends next.
const GOOD: &[u8] = b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 9\r\n\
                      Connection: close\r\n\r\ngood body";

/// GETs `path` of `origin` through `hoard` over a raw connection: the whole response.
async fn get_raw(hoard: &Hoard, origin: SocketAddr, path: &str) -> String {
    let target = format!("http://{origin}{path}");
    let request = raw::get_request(&target, &origin.to_string(), "");
    raw::exchange(hoard.addr, request.as_bytes()).await
}

fn body_of(response: &str) -> &str {
    response
        .find("\r\n\r\n")
        .map_or("", |end| &response[end + 4..])
}

#[tokio::test]
async fn malformed_or_missing_heads_get_502_naming_the_problem() {
    let cases: &[(&[u8], Then, &str)] = &[
        (
            b"HTTP/1.1 abc OK\r\n\r\n",
            Then::Close,
            "status code is not a number",
        ),
        (
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
            Then::Close,
            "not HTTP at all",
        ),
        (
            b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            Then::Close,
            "space in a field name",
        ),
        (
            b"HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n",
            Then::Close,
            "NUL in a field value",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
            Then::Close,
            "conflicting Content-Lengths (response smuggling)",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            Then::Close,
            "negative Content-Length",
        ),
        (b"", Then::Close, "closed before sending anything"),
        (b"", Then::Reset, "reset before sending anything"),
        (
            b"HTTP/1.1 200 O",
            Then::Reset,
            "reset in the middle of the head",
        ),
        (
            b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
            Then::Close,
            "304 to a request without conditions",
        ),
    ];
    let hoard = Hoard::start(&[]).await;
    for (response, then, reason) in cases {
        let (origin, taken) =
            raw::scripted_origin(vec![(response, *then), (GOOD, Then::Close)]).await;
        let got = get_raw(&hoard, origin, "/").await;
        assert!(
            got.starts_with("HTTP/1.1 502"),
            "{reason}: expected 502, got {got:?}"
        );
        assert!(
            body_of(&got).contains(&origin.to_string()),
            "{reason}: the error names the origin: {got:?}"
        );
        // The next request reaches the (now repaired) origin and is answered normally.
        let got = get_raw(&hoard, origin, "/").await;
        assert_eq!(body_of(&got), "good body", "{reason}: {got:?}");
        assert_eq!(
            taken.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "{reason}: one failed and one good request reached the origin"
        );
    }
}

#[tokio::test]
async fn the_304_check_names_what_was_wrong() {
    let (origin, _) =
        raw::scripted_origin(vec![(b"HTTP/1.1 304 Not Modified\r\n\r\n", Then::Close)]).await;
    let hoard = Hoard::start(&[]).await;
    let got = get_raw(&hoard, origin, "/").await;
    assert!(
        got.contains("304 Not Modified to a request without"),
        "{got}"
    );
}

#[tokio::test]
async fn bodies_that_end_early_abort_the_client_and_are_never_stored() {
    let cases: &[(&[u8], Then, &str)] = &[
        (
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 1000\r\n\r\nonly part",
            Then::Close,
            "Content-Length longer than the body, then close",
        ),
        (
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 1000\r\n\r\nonly part",
            Then::Reset,
            "Content-Length longer than the body, then reset",
        ),
        (
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nonly",
            Then::Close,
            "closed in the middle of a chunk",
        ),
        (
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nonly\r\n",
            Then::Close,
            "closed before the last chunk",
        ),
        (
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nonly\r\nzz\r\n",
            Then::Close,
            "an invalid chunk size",
        ),
        (
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 1000\r\n\r\nonly part",
            Then::Hang,
            "silent mid-body for longer than --read-timeout",
        ),
    ];
    let hoard = Hoard::start(&["--read-timeout", "300ms"]).await;
    for (n, (response, then, reason)) in cases.iter().enumerate() {
        let (origin, taken) =
            raw::scripted_origin(vec![(response, *then), (GOOD, Then::Close)]).await;
        let path = format!("/broken-{n}");
        let started = std::time::Instant::now();
        let got = get_raw(&hoard, origin, &path).await;
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{reason}: the client is not left waiting"
        );
        assert!(got.starts_with("HTTP/1.1 200"), "{reason}: {got:?}");
        let body = body_of(&got);
        if got.to_ascii_lowercase().contains("content-length: 1000") {
            assert!(body.len() < 1000, "{reason}: {got:?}");
        } else {
            assert!(
                !body.ends_with("0\r\n\r\n"),
                "{reason}: the chunked body must not look complete: {got:?}"
            );
        }
        // Nothing was stored: the next request goes to the origin, and its good answer is the
        // one kept.
        let got = get_raw(&hoard, origin, &path).await;
        assert_eq!(body_of(&got), "good body", "{reason}: {got:?}");
        let got = get_raw(&hoard, origin, &path).await;
        assert_eq!(body_of(&got), "good body", "{reason}: {got:?}");
        assert!(
            got.contains("hit"),
            "{reason}: the good copy is a hit: {got:?}"
        );
        assert_eq!(
            taken.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "{reason}"
        );
    }
}

#[tokio::test]
async fn a_body_longer_than_its_content_length_is_cut_there_and_the_rest_never_served() {
    // The extra bytes stay on a connection that is kept open: they must not become (the start
    // of) the next response.
    let (origin, taken) = raw::scripted_origin(vec![
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngoodHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil!",
            Then::Hang,
        ),
        (GOOD, Then::Close),
    ])
    .await;
    let hoard = Hoard::start(&[]).await;
    let got = get_raw(&hoard, origin, "/first").await;
    assert_eq!(body_of(&got), "good", "{got:?}");
    let got = get_raw(&hoard, origin, "/second").await;
    assert_eq!(
        body_of(&got),
        "good body",
        "the second request gets its own connection: {got:?}"
    );
    assert_eq!(taken.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn stale_if_error_covers_malformed_answers_and_resets() {
    for (bad, then) in [
        (&b"HTTP/1.1 abc OK\r\n\r\n"[..], Then::Close),
        (b"", Then::Reset),
    ] {
        let stale: &[u8] = b"HTTP/1.1 200 OK\r\nCache-Control: max-age=0, stale-if-error=600\r\n\
                             Content-Length: 8\r\nConnection: close\r\n\r\nold copy";
        let (origin, taken) = raw::scripted_origin(vec![(stale, Then::Close), (bad, then)]).await;
        let hoard = Hoard::start(&[]).await;
        assert_eq!(body_of(&get_raw(&hoard, origin, "/sie").await), "old copy");
        let got = get_raw(&hoard, origin, "/sie").await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
        assert_eq!(body_of(&got), "old copy");
        assert!(got.contains("stale-if-error"), "{got:?}");
        assert_eq!(taken.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
