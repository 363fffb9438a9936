//! TLS: CONNECT tunnels to an HTTPS origin, and hoard itself talking to https:// origins.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::tls::TestCa;
use crate::support::{Hoard, raw};

#[tokio::test]
async fn connect_tunnel_carries_tls_to_a_local_origin() {
    let ca = TestCa::new();
    let origin = ca.origin("secret over tls").await;
    let port = origin.port().to_string();
    let hoard = Hoard::start(&["--connect-ports", &format!("443,{port}")]).await;

    let mut stream = TcpStream::connect(hoard.addr).await.unwrap();
    stream
        .write_all(
            format!("CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let head = raw::read_until(&mut stream, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let mut tls = ca.connect(stream).await;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("secret over tls"), "{response}");
}

#[tokio::test]
async fn connect_to_a_port_outside_the_allowlist_gets_403() {
    let hoard = Hoard::start(&[]).await;
    let response = raw::exchange(
        hoard.addr,
        b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert!(response.contains("port 22 is not allowed"), "{response}");
}

#[tokio::test]
async fn https_origin_is_reached_with_the_extra_ca() {
    let ca = TestCa::new();
    let origin = ca.origin("hello over https").await;
    let ca_file = ca.pem_path();
    let hoard = Hoard::start(&["--ca-file", ca_file.to_str().unwrap()]).await;
    let request = format!(
        "GET https://localhost:{}/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        origin.port()
    );
    let response = raw::exchange(hoard.addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("hello over https"), "{response}");
}

#[tokio::test]
async fn https_origin_with_an_untrusted_certificate_gets_502() {
    let ca = TestCa::new();
    let origin = ca.origin("never seen").await;
    let hoard = Hoard::start(&[]).await;
    let request = format!(
        "GET https://localhost:{}/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        origin.port()
    );
    let response = raw::exchange(hoard.addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 502"), "{response}");
    assert!(response.contains("localhost"), "{response}");
    // In words, not rustls's debug names.
    assert!(
        response.contains(
            "the TLS handshake failed: the origin's certificate is not signed by an authority \
             hoard trusts"
        ),
        "{response}"
    );
}

#[tokio::test]
async fn reverse_mode_to_an_https_upstream() {
    let ca = TestCa::new();
    let origin = ca.origin("reverse over https").await;
    let ca_file = ca.pem_path();
    let upstream = format!("https://localhost:{}", origin.port());
    let hoard = Hoard::start(&[
        "--upstream",
        &upstream,
        "--ca-file",
        ca_file.to_str().unwrap(),
    ])
    .await;
    let response = reqwest::get(format!("http://{}/", hoard.addr))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "reverse over https");
}
