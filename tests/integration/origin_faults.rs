//! Origins that misbehave, byte for byte: malformed heads, resets, lies about the body's
//! length, silence mid-body, a 304 nobody asked for. hoard answers 502/504 or aborts the
//! client connection, never stores what it could not receive whole, serves stale where
//! `stale-if-error` allows, and keeps serving afterwards.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// An origin that answers the first request on each connection (keeping it open) and resets
/// the connection when a second request arrives on it: a pooled connection it gave up on.
/// Also returns how many requests it has reset.
async fn one_request_per_connection_origin() -> (SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let resets = Arc::new(AtomicUsize::new(0));
    let counter = resets.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                let mut answered = false;
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen).into_owned();
                    let Some(head_end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    if answered {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let _ = stream.set_zero_linger();
                        return;
                    }
                    let length: usize = text[..head_end]
                        .lines()
                        .find_map(|line| {
                            let line = line.to_ascii_lowercase();
                            let value = line.strip_prefix("content-length:")?;
                            value.trim().parse().ok()
                        })
                        .unwrap_or(0);
                    if seen.len() < head_end + 4 + length {
                        continue;
                    }
                    let method = text.split(' ').next().unwrap_or_default().to_owned();
                    let body = format!("{method} ok");
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    seen.clear();
                    answered = true;
                }
            });
        }
    });
    (addr, resets)
}

#[tokio::test]
async fn an_idempotent_request_on_a_dead_pooled_connection_is_sent_again_on_a_fresh_one() {
    let (origin, resets) = one_request_per_connection_origin().await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    let url = |path: &str| format!("http://{origin}{path}");
    // Each request waits a moment, so the connection the last one used is back in hoard's
    // pool (it returns there from another task once its response has been read).
    let settle = || tokio::time::sleep(std::time::Duration::from_millis(100));
    assert_eq!(
        crate::support::fetch(&client, url("/first")).await,
        "GET ok"
    );
    for (round, method) in [http::Method::PUT, http::Method::DELETE, http::Method::GET]
        .into_iter()
        .enumerate()
    {
        settle().await;
        // A GET with a body would close its connection after it: GETs carry none.
        let body = if method == http::Method::GET {
            ""
        } else {
            "x=1"
        };
        let response = client
            .request(method.clone(), url("/again"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{method}");
        assert_eq!(response.text().await.unwrap(), format!("{method} ok"));
        assert_eq!(
            resets.load(Ordering::SeqCst),
            round + 1,
            "{method} met a dead connection"
        );
    }
    // A POST is not idempotent: it is not sent twice, and the failure is reported.
    settle().await;
    let posted = client.post(url("/post")).body("x=1").send().await.unwrap();
    assert_eq!(resets.load(Ordering::SeqCst), 4);
    assert_eq!(posted.status(), 502);
}

#[tokio::test]
async fn a_pooled_connection_is_given_up_before_the_origins_keep_alive_timeout() {
    let origin = crate::support::Origin::start(|_| async {
        http::Response::builder()
            .header("keep-alive", "timeout=2")
            .body(hoard::body::full("short-lived"))
            .unwrap()
    })
    .await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    crate::support::fetch(&client, origin.url("/a")).await;
    crate::support::fetch(&client, origin.url("/b")).await;
    assert_eq!(origin.connections(), 1, "reused within the timeout");
    // One second before the origin's two would close it, hoard has let the connection go.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    crate::support::fetch(&client, origin.url("/c")).await;
    assert_eq!(
        origin.connections(),
        2,
        "a fresh connection after the timeout"
    );
}
