//! Reverse-proxy (accelerator) mode: every origin-form request goes to `--upstream`.

use crate::support::{Hoard, Origin, raw};

#[tokio::test]
async fn origin_form_requests_go_to_the_upstream_with_forwarding_headers() {
    let origin = Origin::fixed("from upstream").await;
    let upstream = format!("http://{}", origin.addr);
    let hoard = Hoard::start(&["--upstream", &upstream]).await;
    let response = reqwest::get(format!("http://{}/a/b?c=d", hoard.addr))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "from upstream");

    let seen = origin.last();
    assert_eq!(seen.uri, "/a/b?c=d");
    assert_eq!(
        seen.headers["host"],
        hoard.addr.to_string(),
        "the client's Host is kept"
    );
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(
        seen.headers["forwarded"],
        format!("for=127.0.0.1;proto=http;host=\"{}\"", hoard.addr).as_str()
    );
}

#[tokio::test]
async fn upstream_host_replaces_the_host_header() {
    let origin = Origin::fixed("ok").await;
    let upstream = format!("http://{}", origin.addr);
    let hoard = Hoard::start(&[
        "--upstream",
        &upstream,
        "--upstream-host",
        "backend.internal",
        // A load balancer on this host: its X-Forwarded-For is believed and extended.
        "--trust-forwarded",
        "127.0.0.1",
    ])
    .await;
    let response = raw::exchange(
        hoard.addr,
        b"GET /p HTTP/1.1\r\nHost: public.example\r\nX-Forwarded-For: 10.1.2.3\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = origin.last();
    assert_eq!(seen.headers["host"], "backend.internal");
    assert_eq!(seen.headers["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
}
