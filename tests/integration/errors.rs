//! Errors a person can read: each failure gets its status and a body that says why.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::support::{Hoard, Origin, raw};

async fn get_through(hoard: &Hoard, url: &str) -> (u16, String) {
    let response = hoard.client().get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn malformed_request_gets_400() {
    let hoard = Hoard::start(&[]).await;
    let response = raw::exchange(hoard.addr, b"THIS IS NOT HTTP\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
}

#[tokio::test]
async fn oversized_header_section_gets_431() {
    let hoard = Hoard::start(&["--max-header-size", "8192"]).await;
    let request = format!(
        "GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let response = raw::exchange(hoard.addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
}

#[tokio::test]
async fn unsupported_scheme_gets_400_naming_it() {
    let hoard = Hoard::start(&[]).await;
    let response = raw::exchange(
        hoard.addr,
        b"GET ftp://127.0.0.1/file HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("\"ftp\""), "{response}");
}

#[tokio::test]
async fn origin_form_request_naming_no_site_gets_a_page_explaining_the_gateway() {
    let hoard = Hoard::start(&[]).await;
    let response = raw::exchange(
        hoard.addr,
        b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("text/html"), "{response}");
    assert!(response.contains("/www.example.com/path"), "{response}");
}

#[tokio::test]
async fn refused_connection_gets_502_naming_host_and_reason() {
    let port = raw::closed_port().await;
    let hoard = Hoard::start(&[]).await;
    let (status, body) = get_through(&hoard, &format!("http://127.0.0.1:{port}/")).await;
    assert_eq!(status, 502);
    assert!(body.contains(&format!("127.0.0.1:{port}")), "{body}");
    assert!(body.contains("refused"), "{body}");
}

#[tokio::test]
async fn a_browser_gets_the_error_as_a_page_and_other_clients_as_text() {
    let port = raw::closed_port().await;
    let hoard = Hoard::start(&[]).await;
    let url = format!("http://127.0.0.1:{port}/");
    let page = hoard
        .client()
        .get(&url)
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 502);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let body = page.text().await.unwrap();
    assert!(body.starts_with("<!doctype html>"), "{body}");
    assert!(body.contains("<h1>502 Bad Gateway</h1>"), "{body}");
    assert!(
        body.contains(&format!("cannot connect to 127.0.0.1:{port}")) && body.contains("hoard"),
        "{body}"
    );
    let text = hoard.client().get(&url).send().await.unwrap();
    assert_eq!(text.headers()["content-type"], "text/plain; charset=utf-8");
    assert!(
        text.text()
            .await
            .unwrap()
            .starts_with("502 Bad Gateway\nhoard: ")
    );
}

#[tokio::test]
async fn dns_failure_gets_502_naming_host() {
    // A 70-character label is invalid DNS, so the resolver fails locally without sending a
    // query: the test stays on this machine.
    let host = format!("{}.test", "a".repeat(70));
    let hoard = Hoard::start(&[]).await;
    let (status, body) = get_through(&hoard, &format!("http://{host}/")).await;
    assert_eq!(status, 502);
    assert!(body.contains(&host) && body.contains("resolve"), "{body}");
}

#[tokio::test]
async fn origin_that_never_answers_gets_504_after_the_first_byte_timeout() {
    let origin = raw::origin(b"", true).await;
    let hoard = Hoard::start(&["--first-byte-timeout", "300ms"]).await;
    let (status, body) = get_through(&hoard, &format!("http://{origin}/")).await;
    assert_eq!(status, 504);
    assert!(body.contains(&origin.to_string()), "{body}");
}

#[tokio::test]
async fn origin_that_cannot_be_reached_in_time_gets_504_after_the_connect_timeout() {
    // A listener with a full accept queue drops further SYNs, so connecting hangs: a
    // connect timeout on loopback.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await
        {
            fillers.push(stream);
        }
    }
    let hoard = Hoard::start(&["--connect-timeout", "300ms"]).await;
    let (status, body) = get_through(&hoard, &format!("http://{addr}/")).await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("no connection"), "{body}");
    drop(listener);
}

#[tokio::test]
async fn origin_dying_mid_body_aborts_the_client_connection() {
    for response in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly a little"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ] {
        let origin = raw::origin(response, false).await;
        let hoard = Hoard::start(&[]).await;
        let request = format!("GET http://{origin}/ HTTP/1.1\r\nHost: x\r\n\r\n");
        let got = raw::exchange(hoard.addr, request.as_bytes()).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        // Either the declared length is not met or the chunked body lacks its last chunk:
        // the client can tell the body is incomplete.
        let body = &got[got.find("\r\n\r\n").unwrap() + 4..];
        if got.to_ascii_lowercase().contains("content-length: 1000") {
            assert!(body.len() < 1000, "{got:?}");
        } else {
            assert!(!body.ends_with("0\r\n\r\n"), "{got:?}");
        }
    }
}

#[tokio::test]
async fn request_that_loops_back_to_hoard_gets_508() {
    let hoard = Hoard::start(&[]).await;
    let (status, body) = get_through(&hoard, &format!("http://{}/loop", hoard.addr)).await;
    assert_eq!(status, 508);
    assert!(body.contains("loops"), "{body}");
}

#[tokio::test]
async fn via_from_another_hoard_is_not_a_loop() {
    let origin = Origin::fixed("fine").await;
    let hoard = Hoard::start(&[]).await;
    let response = hoard
        .client()
        .get(origin.url("/"))
        .header("via", "1.1 hoard (hoard/0.1.0 0000000000000001)")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let via: Vec<_> = origin
        .last()
        .headers
        .get_all("via")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(via.len(), 2, "{via:?}");
}

#[tokio::test]
async fn hoard_keeps_serving_after_bad_input() {
    let origin = Origin::fixed("still here").await;
    let hoard = Hoard::start(&[]).await;
    let mut garbage = TcpStream::connect(hoard.addr).await.unwrap();
    garbage
        .write_all(b"\x00\x01\x02 nonsense\r\n\r\n")
        .await
        .unwrap();
    let _ = raw::read_to_close(&mut garbage).await;
    let (status, body) = get_through(&hoard, &origin.url("/")).await;
    assert_eq!((status, body.as_str()), (200, "still here"));
}

#[tokio::test]
async fn request_bodies_over_the_limit_get_413_without_reaching_the_origin() {
    let origin = Origin::echo().await;
    let hoard = Hoard::start(&["--max-request-body", "1KiB"]).await;
    let client = hoard.client();
    let small = client
        .post(origin.url("/up"))
        .body(vec![b'a'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
    let big = client
        .post(origin.url("/up"))
        .body(vec![b'a'; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    assert!(big.text().await.unwrap().contains("over the limit"));
    assert_eq!(
        origin.seen().len(),
        1,
        "the oversized request never reached the origin"
    );

    // A chunked body has no declared length: it is cut off once it passes the limit.
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n800\r\n{}\r\n800\r\n{}\r\n0\r\n\r\n",
        origin.url("/chunked"),
        "b".repeat(0x800),
        "b".repeat(0x800)
    );
    let response = raw::exchange(hoard.addr, request.as_bytes()).await;
    assert!(!response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let origin = Origin::fixed("slot").await;
    let hoard = Hoard::start(&["--max-connections", "1"]).await;
    let request = format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", origin.url("/"));
    let mut first = TcpStream::connect(hoard.addr).await.unwrap();
    first.write_all(request.as_bytes()).await.unwrap();
    raw::read_until(&mut first, "slot").await;

    // The second connection is accepted by the kernel (the listen queue) and sends its
    // request; hoard must not take it while the first holds the only slot.
    let mut second = TcpStream::connect(hoard.addr).await.unwrap();
    let closing = request.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
    second.write_all(closing.as_bytes()).await.unwrap();
    // The event to wait on: a whole exchange on the first connection, which hoard serves
    // after the second request was sent (and while it could have taken it).
    first.write_all(request.as_bytes()).await.unwrap();
    raw::read_until(&mut first, "slot").await;
    assert_eq!(
        origin.seen().len(),
        2,
        "the second connection was served while the first held the only slot"
    );
    let mut probe = [0u8; 1];
    assert!(
        matches!(second.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the second connection got an answer while the first held the only slot"
    );
    drop(first);
    let response = tokio::time::timeout(Duration::from_secs(5), raw::read_to_close(&mut second))
        .await
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test]
async fn request_timeout_bounds_the_whole_request_body_included() {
    // Before the head: 504.
    let silent = raw::origin(b"", true).await;
    let hoard = Hoard::start(&["--request-timeout", "300ms"]).await;
    let (status, body) = get_through(&hoard, &format!("http://{silent}/")).await;
    assert_eq!(status, 504);
    assert!(body.contains("took longer than 300ms"), "{body}");

    // Mid-body: the connection is aborted, never a short body that looks complete.
    let trickle = raw::origin(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nstarted",
        true,
    )
    .await;
    let request = format!("GET http://{trickle}/ HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut stream = TcpStream::connect(hoard.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    // The origin holds its connection for a minute; only hoard's deadline closes this one.
    let closed = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut received),
    )
    .await;
    assert!(
        closed.is_ok(),
        "hoard closed the connection at the deadline"
    );
    let response = String::from_utf8_lossy(&received);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.ends_with("\r\n\r\nstarted"),
        "a short body, then the close: {response:?}"
    );
}
