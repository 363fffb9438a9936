//! Forward proxying of absolute-form requests: methods, bodies, heads, keep-alive, pooling.

use bytes::Bytes;
use hoard::body;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::{Hoard, Origin, raw};

#[tokio::test]
async fn forward_get_returns_the_origin_response_and_adds_via() {
    let origin = Origin::fixed("hello from origin").await;
    let hoard = Hoard::start(&[]).await;
    let response = hoard
        .client()
        .get(origin.url("/x?y=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let via = response.headers()["via"].to_str().unwrap().to_owned();
    assert!(via.starts_with("1.1 hoard "), "{via}");
    assert_eq!(response.text().await.unwrap(), "hello from origin");

    let seen = origin.last();
    assert_eq!(seen.uri, "/x?y=1", "origin gets origin-form");
    assert_eq!(
        seen.headers["host"],
        origin.addr.to_string(),
        "Host comes from the absolute URI"
    );
    assert!(
        seen.headers["via"]
            .to_str()
            .unwrap()
            .starts_with("1.1 hoard ")
    );
}

#[tokio::test]
async fn every_method_and_its_body_reach_the_origin() {
    let origin = Origin::echo().await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    for method in [
        "POST",
        "PUT",
        "PATCH",
        "DELETE",
        "OPTIONS",
        "REPORT",
        "FROBNICATE",
    ] {
        let method = http::Method::from_bytes(method.as_bytes()).unwrap();
        let body = format!("body for {method}");
        let response = client
            .request(method.clone(), origin.url("/m"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{method}");
        assert_eq!(response.text().await.unwrap(), body);
        assert_eq!(origin.last().method, method);
    }
}

#[tokio::test]
async fn unknown_end_to_end_headers_are_forwarded_and_hop_by_hop_ones_removed() {
    let origin = Origin::start(|_| async {
        Response::builder()
            .header("connection", "x-origin-private")
            .header("x-origin-private", "secret")
            .header("keep-alive", "timeout=5")
            .header("x-origin-public", "visible")
            .body(body::full("ok"))
            .unwrap()
    })
    .await;
    let hoard = Hoard::start(&[]).await;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: ignored\r\nConnection: close, X-Client-Private\r\nX-Client-Private: 1\r\n\
         Keep-Alive: 300\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: websocket\r\n\
         Proxy-Authorization: Basic Zm9vOmJhcg==\r\nX-Unknown-Thing: kept\r\n\r\n",
        origin.url("/h")
    );
    let response = raw::exchange(hoard.addr, request.as_bytes())
        .await
        .to_ascii_lowercase();
    assert!(response.starts_with("http/1.1 200 ok"), "{response}");
    assert!(response.contains("x-origin-public: visible"));
    assert!(!response.contains("x-origin-private"), "{response}");
    assert!(!response.contains("keep-alive"), "{response}");

    let seen = origin.last().headers;
    assert_eq!(seen["x-unknown-thing"], "kept");
    for name in [
        "x-client-private",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
        "proxy-authorization",
    ] {
        assert!(!seen.contains_key(name), "{name} reached the origin");
    }
    assert_ne!(
        seen.get("connection").map(|v| v.to_str().unwrap()),
        Some("close, X-Client-Private")
    );
}

#[tokio::test]
async fn response_headers_keep_their_repeats_order_and_case() {
    let origin = raw::origin(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: a=1\r\nX-CamelCase: one\r\n\
          Set-Cookie: b=2\r\nX-CamelCase: two\r\n\r\nok",
        false,
    )
    .await;
    let hoard = Hoard::start(&[]).await;
    let request =
        format!("GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n");
    let response = raw::exchange(hoard.addr, request.as_bytes()).await;
    let a = response.find("Set-Cookie: a=1").expect(&response);
    let b = response.find("Set-Cookie: b=2").expect(&response);
    let one = response.find("X-CamelCase: one").expect(&response);
    let two = response.find("X-CamelCase: two").expect(&response);
    assert!(a < b && one < two, "{response}");
}

#[tokio::test]
async fn unusual_status_codes_and_reason_phrases_pass_through() {
    for status_line in [
        &b"HTTP/1.1 299 Fine Enough\r\nContent-Length: 0\r\n\r\n"[..],
        b"HTTP/1.1 599 Network Weather\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 999 Custom Thing\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 404 Gone Fishing\r\nContent-Length: 9\r\n\r\nnot here\n",
    ] {
        let origin = raw::origin(status_line, false).await;
        let hoard = Hoard::start(&[]).await;
        let request =
            format!("GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n");
        let response = raw::exchange(hoard.addr, request.as_bytes()).await;
        let expected = String::from_utf8_lossy(status_line)
            .lines()
            .next()
            .unwrap()
            .to_owned();
        assert!(
            response.starts_with(&expected),
            "want {expected:?}, got {response:?}"
        );
    }
}

#[tokio::test]
async fn origin_error_statuses_and_bodies_pass_through_untouched() {
    let origin = Origin::start(|request: http::Request<Incoming>| async move {
        let (status, location) = match request.uri().path() {
            "/missing" => (StatusCode::NOT_FOUND, None),
            "/moved" => (
                StatusCode::MOVED_PERMANENTLY,
                Some("http://elsewhere.example/new"),
            ),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, None),
        };
        let mut response = Response::builder().status(status);
        if let Some(location) = location {
            response = response.header("location", location);
        }
        response
            .body(body::full(format!("origin says {status}")))
            .unwrap()
    })
    .await;
    let hoard = Hoard::start(&[]).await;
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{}", hoard.addr)).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (path, status) in [("/missing", 404), ("/moved", 301), ("/broken", 500)] {
        let response = client.get(origin.url(path)).send().await.unwrap();
        assert_eq!(response.status(), status);
        if status == 301 {
            assert_eq!(
                response.headers()["location"],
                "http://elsewhere.example/new"
            );
        }
        let expected = format!("origin says {}", response.status());
        assert_eq!(response.text().await.unwrap(), expected);
    }
}

#[tokio::test]
async fn client_keep_alive_and_origin_connections_are_reused() {
    let origin = Origin::fixed("pooled").await;
    let hoard = Hoard::start(&[]).await;
    let mut stream = TcpStream::connect(hoard.addr).await.unwrap();
    for _ in 0..5 {
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
            origin.url("/k"),
            origin.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let response = raw::read_until(&mut stream, "pooled").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    assert_eq!(origin.seen().len(), 5);
    assert_eq!(
        origin.connections(),
        1,
        "all five requests went over one origin connection"
    );
    assert!(origin.seen().iter().all(|seen| seen.connection == 0));
}

#[tokio::test]
async fn chunked_request_and_response_bodies_stream_through() {
    let origin = Origin::start(|request: http::Request<Incoming>| async move {
        // Re-chunk the echo so the response has no Content-Length either.
        let stream = request.into_body().into_data_stream();
        Response::new(body::stream(http_body_util::StreamBody::new(
            futures_util::StreamExt::map(stream, |chunk| chunk.map(hyper::body::Frame::data)),
        )))
    })
    .await;
    let hoard = Hoard::start(&[]).await;
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        origin.url("/c")
    );
    let response = raw::exchange(hoard.addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{response}"
    );
    assert!(
        response.contains("hello") && response.contains(" world"),
        "{response}"
    );
    assert!(
        response.ends_with("0\r\n\r\n"),
        "a complete chunked body: {response:?}"
    );
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let origin = Origin::echo().await;
    let hoard = Hoard::start(&[]).await;
    let mut stream = TcpStream::connect(hoard.addr).await.unwrap();
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        origin.url("/e")
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let interim = raw::read_until(&mut stream, "\r\n\r\n").await;
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    stream.write_all(b"payload").await.unwrap();
    let rest = raw::read_to_close(&mut stream).await;
    assert!(
        rest.contains("200 OK") && rest.ends_with("payload"),
        "{rest}"
    );
    assert!(!origin.last().headers.contains_key("expect"));
}

#[tokio::test]
async fn head_204_and_304_have_no_body_and_keep_the_connection_usable() {
    let origin = Origin::start(|request: http::Request<Incoming>| async move {
        let status = match request.uri().path() {
            "/204" => StatusCode::NO_CONTENT,
            _ => StatusCode::OK,
        };
        let mut response = Response::builder().status(status).header("etag", "\"v1\"");
        if request.method() == http::Method::HEAD {
            response = response.header("content-length", "1000");
        }
        // A HEAD response has no body, nor has a 204; the 304 is hoard's answer to the
        // client's If-None-Match, evaluated against the origin's 200 (ETag "v1").
        response.body(body::empty()).unwrap()
    })
    .await;
    let hoard = Hoard::start(&[]).await;
    let mut stream = TcpStream::connect(hoard.addr).await.unwrap();
    for (method, path, status) in [
        ("HEAD", "/h", "200"),
        ("GET", "/204", "204"),
        ("GET", "/304", "304"),
    ] {
        // The 304 answers the client's condition (hoard fetches the full response on a miss
        // and evaluates the condition itself).
        let request = format!(
            "{method} {} HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"v1\"\r\n\r\n",
            origin.url(path)
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let response = raw::read_until(&mut stream, "\r\n\r\n").await;
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status}")),
            "{response}"
        );
        assert!(
            response.ends_with("\r\n\r\n"),
            "no body bytes after the head: {response:?}"
        );
        if method == "HEAD" {
            assert!(
                response
                    .to_ascii_lowercase()
                    .contains("content-length: 1000"),
                "{response}"
            );
        }
    }
    // The same connection still carries a normal request afterwards.
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        origin.url("/204")
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    assert!(
        raw::read_to_close(&mut stream)
            .await
            .starts_with("HTTP/1.1 204")
    );
}

#[tokio::test]
async fn a_large_body_streams_to_the_client_before_the_origin_finishes() {
    // The origin sends its first chunk and then waits for the test to release the rest: a proxy
    // that buffered whole bodies would never deliver the first chunk.
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let released = std::sync::Arc::new(tokio::sync::Mutex::new(Some(released)));
    let origin = Origin::start(move |_| {
        let released = released.clone();
        async move {
            let stream = async_stream(released);
            Response::new(body::stream(http_body_util::StreamBody::new(stream)))
        }
    })
    .await;
    let hoard = Hoard::start(&[]).await;
    let mut response = hoard
        .client()
        .get(origin.url("/slow"))
        .send()
        .await
        .unwrap();
    let first = response.chunk().await.unwrap().unwrap();
    assert_eq!(first, Bytes::from_static(b"first"));
    release.send(()).unwrap();
    let rest = response.bytes().await.unwrap();
    assert_eq!(rest, Bytes::from_static(b"second"));
}

fn async_stream(
    released: std::sync::Arc<tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>>,
) -> impl futures_util::Stream<Item = Result<hyper::body::Frame<Bytes>, std::io::Error>> + Send {
    futures_util::stream::unfold(0, move |step| {
        let released = released.clone();
        async move {
            match step {
                0 => Some((
                    Ok(hyper::body::Frame::data(Bytes::from_static(b"first"))),
                    1,
                )),
                1 => {
                    if let Some(rx) = released.lock().await.take() {
                        let _ = rx.await;
                    }
                    Some((
                        Ok(hyper::body::Frame::data(Bytes::from_static(b"second"))),
                        2,
                    ))
                }
                _ => None,
            }
        }
    })
}

#[tokio::test]
async fn a_collected_body_matches_what_the_origin_sent() {
    let payload: Bytes = (0..=255u8)
        .cycle()
        .take(3 * 1024 * 1024 + 17)
        .collect::<Vec<_>>()
        .into();
    let served = payload.clone();
    let origin = Origin::start(move |_| {
        let served = served.clone();
        async move { Response::new(body::full(served)) }
    })
    .await;
    let hoard = Hoard::start(&[]).await;
    let got = hoard
        .client()
        .get(origin.url("/big"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.len(), payload.len());
    assert!(got == payload);
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish() {
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let released = std::sync::Arc::new(tokio::sync::Mutex::new(Some(released)));
    let origin = Origin::start(move |_| {
        let released = released.clone();
        async move {
            Response::new(body::stream(http_body_util::StreamBody::new(async_stream(
                released,
            ))))
        }
    })
    .await;
    let hoard = Hoard::start(&[]).await;
    let addr = hoard.addr;
    let mut response = hoard
        .client()
        .get(origin.url("/inflight"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.chunk().await.unwrap().unwrap(),
        Bytes::from_static(b"first")
    );
    let stopping = tokio::spawn(hoard.shutdown());
    // New connections are refused once shutdown has begun...
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        refused,
        "hoard still accepts connections while shutting down"
    );
    // ...while the response in flight completes.
    release.send(()).unwrap();
    assert_eq!(
        response.bytes().await.unwrap(),
        Bytes::from_static(b"second")
    );
    stopping.await.unwrap();
}
