//! Hostile and malformed input, as raw bytes: each case says what hoard must answer (or that
//! it closes the connection), and why; hoard must keep serving normal requests afterwards.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Hoard, Origin, raw};

/// What a case must get back.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Status(u16),
    /// Any of these statuses (where the RFCs allow either).
    OneOf(&'static [u16]),
}

struct Case {
    reason: &'static str,
    request: Vec<u8>,
    expect: Expect,
}

/// Sends `bytes` and returns the status of the first response (0 if the connection closed
/// without one).
async fn status_of(hoard: std::net::SocketAddr, bytes: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(hoard).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    let text = String::from_utf8_lossy(&buf);
    text.strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

fn case(reason: &'static str, request: impl Into<Vec<u8>>, expect: Expect) -> Case {
    Case {
        reason,
        request: request.into(),
        expect,
    }
}

#[tokio::test]
async fn malformed_and_hostile_requests_get_clear_answers_and_hoard_keeps_serving() {
    use Expect::*;
    let origin = Origin::fixed("fine").await;
    let o = origin.addr;
    let closed = raw::closed_port().await;
    let hoard = Hoard::start(&["--max-header-size", "8192", "--admin-allow", "127.0.0.9"]).await;
    let get = |target: &str, extra: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: {o}\r\n{extra}Connection: close\r\n\r\n")
    };
    let big = "a".repeat(20_000);
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let long_uri = format!("http://{o}/{}", "p".repeat(70_000));

    let cases = vec![
        case("not HTTP at all", "THIS IS NOT HTTP\r\n\r\n", Status(400)),
        case(
            "request line without a version",
            format!("GET http://{o}/\r\n\r\n"),
            Status(400),
        ),
        case(
            "unknown major version",
            format!("GET http://{o}/ HTTP/3.0\r\nHost: {o}\r\n\r\n"),
            OneOf(&[400, 505]),
        ),
        case(
            "garbage version",
            format!("GET http://{o}/ HTTX/1.1\r\nHost: {o}\r\n\r\n"),
            Status(400),
        ),
        case(
            "token-breaking character in the method",
            format!("GE(T http://{o}/ HTTP/1.1\r\n\r\n"),
            Status(400),
        ),
        case(
            "space inside a header name",
            get(&format!("http://{o}/"), "Bad Header: x\r\n"),
            Status(400),
        ),
        case(
            "header line without a colon",
            get(&format!("http://{o}/"), "NoColonHere\r\n"),
            Status(400),
        ),
        case(
            "whitespace before the colon (RFC 9112 §5.1)",
            get(&format!("http://{o}/"), "X-Test : 1\r\n"),
            Status(400),
        ),
        case(
            "non-token character in a header name",
            get(&format!("http://{o}/"), "X(Y): 1\r\n"),
            Status(400),
        ),
        case(
            "NUL in a header value",
            get(&format!("http://{o}/"), "X-Nul: a\0b\r\n"),
            Status(400),
        ),
        case(
            "bare CR in a header value",
            get(&format!("http://{o}/"), "X-Cr: a\rb\r\n"),
            Status(400),
        ),
        case(
            "obs-fold continuation line (RFC 9112 §5.2)",
            get(&format!("http://{o}/"), "X-Fold: a\r\n  b\r\n"),
            Status(400),
        ),
        case(
            "one huge header line",
            get(&format!("http://{o}/"), &format!("X-Big: {big}\r\n")),
            Status(431),
        ),
        case(
            "too many header fields",
            get(&format!("http://{o}/"), &many),
            Status(431),
        ),
        case(
            "request target too long",
            get(&long_uri, ""),
            OneOf(&[414, 431]),
        ),
        case(
            "two different Content-Lengths (smuggling)",
            format!(
                "POST http://{o}/ HTTP/1.1\r\nHost: {o}\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde"
            ),
            Status(400),
        ),
        case(
            "Content-Length and Transfer-Encoding together: chunked wins, one framing goes on (see below)",
            format!(
                "POST http://{o}/cl-te HTTP/1.1\r\nHost: {o}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            ),
            Status(200),
        ),
        case(
            "chunked not the last transfer coding",
            format!(
                "POST http://{o}/ HTTP/1.1\r\nHost: {o}\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
            ),
            Status(400),
        ),
        case(
            "unknown transfer coding",
            format!("POST http://{o}/ HTTP/1.1\r\nHost: {o}\r\nTransfer-Encoding: rot13\r\n\r\n"),
            OneOf(&[400, 501]),
        ),
        case(
            "Content-Length not a number",
            format!("POST http://{o}/ HTTP/1.1\r\nHost: {o}\r\nContent-Length: ten\r\n\r\n"),
            Status(400),
        ),
        case(
            "negative Content-Length",
            format!("POST http://{o}/ HTTP/1.1\r\nHost: {o}\r\nContent-Length: -1\r\n\r\n"),
            Status(400),
        ),
        case(
            "invalid chunk size",
            format!(
                "POST http://{o}/ HTTP/1.1\r\nHost: {o}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
            ),
            OneOf(&[0, 400, 502]),
        ),
        case(
            "chunk size that overflows",
            format!(
                "POST http://{o}/ HTTP/1.1\r\nHost: {o}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nffffffffffffffffffff\r\nx\r\n0\r\n\r\n"
            ),
            OneOf(&[0, 400, 502]),
        ),
        case(
            "user information in the URL",
            get(&format!("http://user:pw@{o}/"), ""),
            Status(400),
        ),
        case(
            "port out of range",
            get("http://127.0.0.1:99999/", ""),
            Status(400),
        ),
        case(
            "unterminated IPv6 literal",
            get("http://[::1/", ""),
            Status(400),
        ),
        case(
            "IPv6 literal where nothing listens: readable 502",
            get(&format!("http://[::1]:{closed}/"), ""),
            Status(502),
        ),
        case(
            "unsupported scheme ftp",
            get("ftp://127.0.0.1/file", ""),
            Status(400),
        ),
        case(
            "unsupported scheme ws",
            get("ws://127.0.0.1/socket", ""),
            Status(400),
        ),
        case(
            "CONNECT to a port outside the allowlist",
            "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n",
            Status(403),
        ),
        case(
            "CONNECT to the SMTP port",
            "CONNECT 127.0.0.1:25 HTTP/1.1\r\nHost: 127.0.0.1:25\r\n\r\n",
            Status(403),
        ),
        case(
            "CONNECT without a port",
            "CONNECT example.org HTTP/1.1\r\nHost: example.org\r\n\r\n",
            Status(400),
        ),
        case(
            "CONNECT with user information",
            "CONNECT u:p@example.org:443 HTTP/1.1\r\nHost: example.org\r\n\r\n",
            Status(400),
        ),
        case(
            "CONNECT with a path target",
            "CONNECT /x HTTP/1.1\r\nHost: example.org\r\n\r\n",
            Status(400),
        ),
        case(
            "admin page from a client outside --admin-allow",
            get("/_hoard/stats", ""),
            Status(403),
        ),
        case(
            "PURGE from a client outside --admin-allow",
            format!("PURGE http://{o}/ HTTP/1.1\r\nHost: {o}\r\nConnection: close\r\n\r\n"),
            Status(403),
        ),
        case(
            "path traversal that names no site",
            get("/../../etc/passwd", ""),
            Status(400),
        ),
        case(
            "encoded path traversal that names no site",
            get("/%2e%2e/%2e%2e/etc/passwd", ""),
            Status(400),
        ),
        case(
            "origin-form request without Host, naming no site",
            "GET /x HTTP/1.1\r\nConnection: close\r\n\r\n",
            Status(400),
        ),
        case(
            "absolute URI and Host disagree: the URI wins (RFC 9112 §3.2.2)",
            format!("GET http://{o}/h HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"),
            Status(200),
        ),
        case(
            "two Host headers (RFC 9112 §3.2)",
            get(&format!("http://{o}/h"), "Host: evil.example\r\n"),
            Status(400),
        ),
        case(
            "a Host that is not host[:port] (it would be copied into Forwarded)",
            "GET /x HTTP/1.1\r\nHost: a.example\", for=6.6.6.6;host=\"b.example\r\nConnection: close\r\n\r\n",
            Status(400),
        ),
        case(
            "traversal inside a site's path is the origin's business",
            get(&format!("http://{o}/../../x"), ""),
            Status(200),
        ),
        case(
            "empty lines before the request line are ignored (RFC 9112 §2.2)",
            format!("\r\n\r\n{}", get(&format!("http://{o}/"), "")),
            Status(200),
        ),
        case(
            "HTTP/1.0 absolute-form without Host",
            format!("GET http://{o}/ HTTP/1.0\r\n\r\n"),
            Status(200),
        ),
        case(
            "loop through hoard itself",
            get(&format!("http://{}/loop", hoard.addr), ""),
            Status(508),
        ),
    ];
    assert!(cases.len() >= 40, "{} cases", cases.len());

    let mut failures = Vec::new();
    for case in &cases {
        let got = status_of(hoard.addr, &case.request).await;
        let ok = match case.expect {
            Expect::Status(want) => got == want,
            Expect::OneOf(allowed) => allowed.contains(&got),
        };
        if !ok {
            failures.push(format!(
                "{}: got {got}, want {:?}",
                case.reason, case.expect
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // The CL+TE request reached the origin with one framing only (RFC 9112 §6.3: the
    // transfer coding overrides, Content-Length is dropped), so nothing can be smuggled.
    let cl_te = origin
        .seen()
        .into_iter()
        .find(|seen| seen.uri == "/cl-te")
        .expect("forwarded");
    assert!(
        !cl_te.headers.contains_key("content-length"),
        "{:?}",
        cl_te.headers
    );
    assert_eq!(cl_te.headers["transfer-encoding"], "chunked");

    // Still serving.
    let fine = hoard
        .client()
        .get(origin.url("/after"))
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), 200);
}
