//! hoard's own client-facing HTTP/1.1 connection (`hoard::http1`), as raw bytes on the wire:
//! request smuggling shapes, pipelining, `Expect: 100-continue`, interim responses relayed
//! from the origin, header spelling on cached responses, head timeouts, and disk hits sent
//! from the cache file.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Hoard, Origin, get, raw};
use hoard::body;

/// The status codes of every response head in `text`, in order.
fn statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok())
        .collect()
}

/// An origin that answers with what it received: method, path and body.
async fn recorder() -> Origin {
    Origin::start(|request: Request<Incoming>| async move {
        let line = format!("{} {}:", request.method(), request.uri().path());
        let body = http_body_util::BodyExt::collect(request.into_body())
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let mut text = line.into_bytes();
        text.extend_from_slice(&body);
        Response::new(body::full(text))
    })
    .await
}

#[tokio::test]
async fn content_length_beside_chunked_is_read_as_chunked_and_the_connection_ends() {
    let origin = recorder().await;
    let hoard = Hoard::start(&[]).await;
    let o = origin.addr;
    // A front end that believed Content-Length would see `0\r\n\r\n` as the body and the
    // smuggled GET as the next request; hoard reads the chunked body and then closes.
    let request = format!(
        "POST http://{o}/upload HTTP/1.1\r\nHost: {o}\r\nContent-Length: 30\r\n\
         Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
         GET http://{o}/smuggled HTTP/1.1\r\nHost: {o}\r\n\r\n"
    );
    let response = raw::exchange(hoard.addr, request.as_bytes()).await;
    assert_eq!(statuses(&response), [200], "{response}");
    assert!(response.contains("POST /upload:hello"), "{response}");
    assert!(response.to_ascii_lowercase().contains("connection: close"));
    let paths: Vec<String> = origin.seen().iter().map(|s| s.uri.to_string()).collect();
    assert_eq!(paths, ["/upload"]);
}

#[tokio::test]
async fn ambiguous_lengths_and_obfuscated_codings_are_refused_before_the_origin() {
    let origin = recorder().await;
    let hoard = Hoard::start(&[]).await;
    let o = origin.addr;
    let post = |fields: &str, body: &str| {
        format!("POST http://{o}/x HTTP/1.1\r\nHost: {o}\r\n{fields}\r\n{body}")
    };
    let cases = [
        (
            "two different Content-Lengths",
            post("Content-Length: 3\r\nContent-Length: 5\r\n", "abcde"),
        ),
        (
            "a list of different lengths",
            post("Content-Length: 3, 5\r\n", "abcde"),
        ),
        (
            "a negative Content-Length",
            post("Content-Length: -3\r\n", "abc"),
        ),
        (
            "a signed Content-Length",
            post("Content-Length: +3\r\n", "abc"),
        ),
        (
            "a hex Content-Length",
            post("Content-Length: 0x3\r\n", "abc"),
        ),
        (
            "xchunked",
            post("Transfer-Encoding: xchunked\r\n", "3\r\nabc\r\n0\r\n\r\n"),
        ),
        (
            "chunked not last",
            post(
                "Transfer-Encoding: chunked, identity\r\n",
                "3\r\nabc\r\n0\r\n\r\n",
            ),
        ),
        (
            "chunked then another field",
            post("Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n", ""),
        ),
        (
            "quoted chunked",
            post(
                "Transfer-Encoding: \"chunked\"\r\n",
                "3\r\nabc\r\n0\r\n\r\n",
            ),
        ),
        (
            "space before the colon",
            post("Transfer-Encoding : chunked\r\n", "3\r\nabc\r\n0\r\n\r\n"),
        ),
        (
            "vertical tab before the value",
            post("Transfer-Encoding:\x0bchunked\r\n", "3\r\nabc\r\n0\r\n\r\n"),
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            format!(
                "POST http://{o}/x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            ),
        ),
        (
            "obs-fold hiding a coding",
            post("X-A: 1\r\n Transfer-Encoding: chunked\r\n", ""),
        ),
        (
            "bare LF ending a field line",
            post("Transfer-Encoding: chunked\n", "3\r\nabc\r\n0\r\n\r\n"),
        ),
        (
            "bare CR inside a field",
            post("X-A: 1\rTransfer-Encoding: chunked\r\n", ""),
        ),
    ];
    for (reason, request) in &cases {
        let response = raw::exchange(hoard.addr, request.as_bytes()).await;
        assert_eq!(statuses(&response), [400], "{reason}: {response}");
    }
    assert!(origin.seen().is_empty(), "{:?}", origin.seen());
}

#[tokio::test]
async fn a_malformed_chunk_ends_the_exchange_without_a_complete_body_reaching_the_origin() {
    let origin = recorder().await;
    let hoard = Hoard::start(&[]).await;
    let o = origin.addr;
    for body in [
        "5\nhello\r\n0\r\n\r\n",
        "5\r\nhelloXX0\r\n\r\n",
        "5 junk\r\nhello\r\n0\r\n\r\n",
        "-5\r\nhello\r\n0\r\n\r\n",
    ] {
        let request = format!(
            "POST http://{o}/c HTTP/1.1\r\nHost: {o}\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
        );
        let response = raw::exchange(hoard.addr, request.as_bytes()).await;
        assert!(
            !response.contains("POST /c:hello"),
            "{body:?} was accepted: {response}"
        );
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_with_their_own_bodies() {
    let origin = recorder().await;
    let hoard = Hoard::start(&[]).await;
    let o = origin.addr;
    let request = format!(
        "GET http://{o}/one HTTP/1.1\r\nHost: {o}\r\n\r\n\
         POST http://{o}/two HTTP/1.1\r\nHost: {o}\r\nContent-Length: 3\r\n\r\nabc\
         POST http://{o}/three HTTP/1.1\r\nHost: {o}\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n\
         GET http://{o}/four HTTP/1.1\r\nHost: {o}\r\nConnection: close\r\n\r\n"
    );
    let response = raw::exchange(hoard.addr, request.as_bytes()).await;
    assert_eq!(statuses(&response), [200, 200, 200, 200], "{response}");
    let one = response.find("GET /one:").expect(&response);
    let two = response.find("POST /two:abc").expect(&response);
    let three = response.find("POST /three:de").expect(&response);
    let four = response.find("GET /four:").expect(&response);
    assert!(one < two && two < three && three < four, "{response}");
    assert_eq!(origin.seen().len(), 4);
}

#[tokio::test]
async fn expect_100_continue_is_answered_only_when_the_body_is_wanted() {
    let origin = recorder().await;
    let hoard = Hoard::start(&["--max-request-body", "1KiB"]).await;
    let o = origin.addr;
    let mut stream = TcpStream::connect(hoard.addr).await.unwrap();
    let head = format!(
        "PUT http://{o}/up HTTP/1.1\r\nHost: {o}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let interim = raw::read_until(&mut stream, "\r\n\r\n").await;
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{interim}"
    );
    stream.write_all(b"hello").await.unwrap();
    let response = raw::read_until(&mut stream, "PUT /up:hello").await;
    assert_eq!(statuses(&response), [200], "{response}");
    // The origin never sees the client's Expect: that was this hop's business.
    assert!(!origin.last().headers.contains_key("expect"));

    // Too large to accept: refused at once, with no 100 and without waiting for the body.
    let mut stream = TcpStream::connect(hoard.addr).await.unwrap();
    let head = format!(
        "PUT http://{o}/big HTTP/1.1\r\nHost: {o}\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let refused = raw::read_until(&mut stream, "\r\n\r\n").await;
    assert!(refused.starts_with("HTTP/1.1 413 "), "{refused}");
    // The client may send the body anyway or never: either way the connection ends, so no
    // body bytes can be read as a next request.
    let rest = raw::read_to_close(&mut stream).await;
    assert!(!rest.contains("HTTP/1.1"), "{rest}");
    assert_eq!(origin.seen().len(), 1);
}

#[tokio::test]
async fn a_connect_from_an_http10_client_becomes_a_tunnel() {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut socket, _) = echo.accept().await.unwrap();
        let mut buf = [0u8; 64];
        let n = socket.read(&mut buf).await.unwrap();
        socket.write_all(&buf[..n]).await.unwrap();
    });
    let hoard = Hoard::start(&["--connect-ports", &port.to_string()]).await;
    let mut stream = TcpStream::connect(hoard.addr).await.unwrap();
    let connect = format!("CONNECT 127.0.0.1:{port} HTTP/1.0\r\n\r\n");
    stream.write_all(connect.as_bytes()).await.unwrap();
    let head = raw::read_until(&mut stream, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    stream.write_all(b"ping").await.unwrap();
    assert_eq!(raw::read_until(&mut stream, "ping").await, "ping");
}

/// A client that shuts its side while a request is pending counts as gone (as with hyper's,
/// nginx's and Squid's defaults): that is how a response nobody will read is told apart. But
/// a request whose successor has already arrived is still answered.
#[tokio::test]
async fn a_pipelined_request_is_answered_when_the_client_shuts_its_side_after_the_next() {
    let origin = recorder().await;
    let hoard = Hoard::start(&[]).await;
    let o = origin.addr;
    let mut stream = TcpStream::connect(hoard.addr).await.unwrap();
    let requests = format!(
        "GET http://{o}/a HTTP/1.1\r\nHost: {o}\r\n\r\nGET http://{o}/b HTTP/1.1\r\nHost: {o}\r\n\r\n"
    );
    stream.write_all(requests.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    let response = raw::read_to_close(&mut stream).await;
    assert_eq!(statuses(&response).first(), Some(&200), "{response}");
    assert!(response.contains("GET /a:"), "{response}");
}

/// An origin that sends interim responses before its final one.
const EARLY_HINTS: &[u8] = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
HTTP/1.1 102 Processing\r\n\r\n\
HTTP/1.1 200 OK\r\nContent-Length: 2\r\nCache-Control: max-age=60\r\nX-Final: yes\r\n\r\nok";

#[tokio::test]
async fn interim_responses_from_the_origin_reach_the_client_in_order_and_are_never_stored() {
    let (origin, taken) = raw::scripted_origin(vec![(EARLY_HINTS, raw::Then::Close)]).await;
    let hoard = Hoard::start(&[]).await;
    let request = raw::get_request(&format!("http://{origin}/hinted"), &origin.to_string(), "");
    let first = raw::exchange(hoard.addr, request.as_bytes()).await;
    assert_eq!(statuses(&first), [103, 102, 200], "{first}");
    let (interims, last) = first.split_at(first.find("HTTP/1.1 200").unwrap());
    assert!(
        interims.contains("Link: </style.css>; rel=preload")
            || interims.contains("link: </style.css>; rel=preload"),
        "{first}"
    );
    // The hint's fields are the hint's alone.
    assert!(!last.to_ascii_lowercase().contains("link:"), "{last}");
    assert!(last.ends_with("ok"), "{last}");

    // Served from the cache: the final response only, and the origin is not asked again.
    let second = raw::exchange(hoard.addr, request.as_bytes()).await;
    assert_eq!(statuses(&second), [200], "{second}");
    assert!(
        second
            .to_ascii_lowercase()
            .contains("cache-status: hoard; hit"),
        "{second}"
    );
    assert_eq!(taken.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_http10_client_gets_no_interim_responses() {
    let (origin, _) = raw::scripted_origin(vec![(EARLY_HINTS, raw::Then::Close)]).await;
    let hoard = Hoard::start(&[]).await;
    let request = format!("GET http://{origin}/old HTTP/1.0\r\n\r\n");
    let response = raw::exchange(hoard.addr, request.as_bytes()).await;
    assert_eq!(statuses(&response), [200], "{response}");
}

#[tokio::test]
async fn cached_responses_keep_the_origins_header_spelling_across_a_restart() {
    let origin = raw::origin(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nCache-Control: max-age=600\r\n\
          X-CamelCase: one\r\nETag: \"v1\"\r\n\r\nok",
        false,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let request = raw::get_request(&format!("http://{origin}/spelled"), &origin.to_string(), "");
    let hoard = Hoard::start_in(dir.path(), &[]).await;
    for expected in ["fwd=uri-miss", "; hit"] {
        let response = raw::exchange(hoard.addr, request.as_bytes()).await;
        assert!(response.contains(expected), "{response}");
        for spelled in [
            "X-CamelCase: one",
            "ETag: \"v1\"",
            "Cache-Control: max-age=600",
        ] {
            assert!(response.contains(spelled), "{spelled} in {response}");
        }
    }
    hoard.shutdown().await;
    let hoard = Hoard::start_in(dir.path(), &[]).await;
    let response = raw::exchange(hoard.addr, request.as_bytes()).await;
    assert!(response.contains("; hit"), "{response}");
    assert!(response.contains("X-CamelCase: one"), "{response}");
}

#[tokio::test]
async fn a_head_that_does_not_arrive_in_time_closes_the_connection() {
    let origin = Origin::fixed("fine").await;
    let hoard = Hoard::start(&["--client-header-timeout", "1s"]).await;
    let mut partial = TcpStream::connect(hoard.addr).await.unwrap();
    partial.write_all(b"GET http://").await.unwrap();
    let mut idle = TcpStream::connect(hoard.addr).await.unwrap();
    let started = std::time::Instant::now();
    for stream in [&mut partial, &mut idle] {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest));
        assert!(read.await.is_ok(), "still open after 10 s");
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    }
    assert!(started.elapsed() >= Duration::from_millis(900));
    // Others are served meanwhile and after.
    let fine = get(&hoard.client(), &origin.url("/"), &[]).await;
    assert_eq!(fine.status, 200);
}

#[tokio::test]
async fn disk_hits_sent_from_the_file_are_whole_and_ranges_exact() {
    let body: Bytes = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let served = body.clone();
    let origin = Origin::start(move |_| {
        let served = served.clone();
        async move {
            Response::builder()
                .header("cache-control", "max-age=600")
                .body(body::full(served))
                .unwrap()
        }
    })
    .await;
    // Too big for the memory tier: every hit comes from disk; the first is hashed as it is
    // read, the later ones go by sendfile.
    let hoard = Hoard::start(&["--cache-memory", "1MiB"]).await;
    let client = hoard.client();
    let url = origin.url("/big.bin");
    for round in 0..4 {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let status = response.headers()["cache-status"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(response.bytes().await.unwrap(), body, "round {round}");
        assert_eq!(status.contains("; hit"), round > 0, "{status}");
    }
    let ranged = client
        .get(&url)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.bytes().await.unwrap(), body.slice(1000..2000));
    let head = client.head(&url).send().await.unwrap();
    assert_eq!(head.headers()["content-length"], "300000");
    // Keep-alive survived all of it: one connection from the client.
    assert_eq!(origin.seen().len(), 1);
}
