//! `--parent`: misses and CONNECT tunnels through an upstream proxy, here another hoard
//! (one that requires authentication), with `--parent-bypass` and a clear 502 when the
//! parent fails.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::raw::{closed_port, read_until};
use crate::support::{Hoard, Origin, get};

/// An htpasswd file with alice:s3cret, kept as long as the returned handle.
fn users() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        format!("alice:{}\n", bcrypt::hash("s3cret", 4).unwrap()),
    )
    .unwrap();
    file
}

/// The `Via` entries a request arrived with.
fn via_entries(seen: &crate::support::origin::SeenRequest) -> Vec<String> {
    seen.headers
        .get_all("via")
        .iter()
        .flat_map(|value| value.to_str().unwrap().split(','))
        .map(|entry| entry.trim().to_owned())
        .collect()
}

#[tokio::test]
async fn misses_go_through_the_parent_with_its_credentials_and_hits_stay_here() {
    let origin = Origin::with_headers(&[("cache-control", "max-age=60")]).await;
    let users = users();
    let parent = Hoard::start(&["--auth-file", users.path().to_str().unwrap()]).await;
    let child = Hoard::start(&["--parent", &format!("http://alice:s3cret@{}", parent.addr)]).await;
    let client = child.client();
    let first = get(&client, &origin.url("/a"), &[]).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let entries = via_entries(&origin.last());
    assert_eq!(entries.len(), 2, "one Via entry per hoard: {entries:?}");
    // Both caches name themselves; the parent's entry comes first (it is nearer the origin).
    assert_eq!(
        first.headers.get_all("cache-status").iter().count(),
        2,
        "{:?}",
        first.headers
    );
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let second = get(&client, &origin.url("/a"), &[]).await;
    let ours = second
        .headers
        .get_all("cache-status")
        .iter()
        .next_back()
        .unwrap();
    assert!(
        ours.to_str().unwrap().contains("; hit"),
        "{:?}",
        second.headers
    );
    assert_eq!(origin.seen().len(), 1);

    // Wrong credentials, or none: the parent's 407 is hoard's failure, not the client's.
    for url in [
        format!("http://alice:wrong@{}", parent.addr),
        format!("http://{}", parent.addr),
    ] {
        let refused = Hoard::start(&["--parent", &url]).await;
        let got = get(&refused.client(), &origin.url("/b"), &[]).await;
        assert_eq!(got.status, 502, "{}", got.body);
        assert!(
            got.body.contains("parent proxy http://") && got.body.contains("407"),
            "{}",
            got.body
        );
        assert!(
            !got.body.contains("wrong"),
            "the password is never shown: {}",
            got.body
        );
    }
}

#[tokio::test]
async fn tunnels_go_through_the_parent_and_bypassed_hosts_do_not() {
    // A target that greets and then echoes, so a tunnel is seen to reach it.
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_port = target.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = target.accept().await {
            tokio::spawn(async move {
                socket.write_all(b"hello\n").await.unwrap();
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = socket.read(&mut buf).await {
                    socket.write_all(&buf[..n]).await.unwrap();
                }
            });
        }
    });
    let ports = target_port.to_string();
    let users = users();
    let parent = Hoard::start(&[
        "--auth-file",
        users.path().to_str().unwrap(),
        "--connect-ports",
        &ports,
    ])
    .await;
    let parent_url = format!("http://alice:s3cret@{}", parent.addr);
    let child = Hoard::start(&["--parent", &parent_url, "--connect-ports", &ports]).await;
    let mut client = TcpStream::connect(child.addr).await.unwrap();
    client
        .write_all(
            format!(
                "CONNECT 127.0.0.1:{target_port} HTTP/1.1\r\nHost: 127.0.0.1:{target_port}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let answer = read_until(&mut client, "hello\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    client.write_all(b"ping").await.unwrap();
    read_until(&mut client, "ping").await;
    drop(client);

    // The parent that refuses this tunnel names itself in the child's answer.
    let stranger = Hoard::start(&[
        "--parent",
        &format!("http://{}", parent.addr),
        "--connect-ports",
        &ports,
    ])
    .await;
    let mut client = TcpStream::connect(stranger.addr).await.unwrap();
    client
        .write_all(
            format!("CONNECT 127.0.0.1:{target_port} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let answer = read_until(&mut client, "407").await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");

    // Bypassed: straight to the origin, one Via entry.
    let origin = Origin::fixed("direct").await;
    let direct = Hoard::start(&[
        "--parent",
        &format!("http://127.0.0.1:{}", closed_port().await),
        "--parent-bypass",
        "example.test,127.0.0.0/8",
    ])
    .await;
    let got = get(&direct.client(), &origin.url("/d"), &[]).await;
    assert_eq!(got.body, "direct");
    assert_eq!(via_entries(&origin.last()).len(), 1);
}

#[tokio::test]
async fn a_parent_that_is_down_is_a_502_that_names_it() {
    let origin = Origin::fixed("never reached").await;
    let port = closed_port().await;
    let child = Hoard::start(&["--parent", &format!("http://127.0.0.1:{port}")]).await;
    let got = get(&child.client(), &origin.url("/x"), &[]).await;
    assert_eq!(got.status, 502);
    assert!(
        got.body
            .contains(&format!("the parent proxy http://127.0.0.1:{port} failed")),
        "{}",
        got.body
    );
    assert!(origin.seen().is_empty());
    let error = hoard::config::load(["hoard", "--parent-bypass", "example.org"])
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("--parent-bypass needs --parent"), "{error}");
}

#[tokio::test]
async fn an_https_origin_is_reached_through_a_connect_to_the_parent() {
    let ca = crate::support::tls::TestCa::new();
    let origin = ca.origin("https through the parent").await;
    let port = origin.port().to_string();
    let parent_dir = tempfile::tempdir().unwrap();
    let parent = Hoard::start_in(parent_dir.path(), &["--connect-ports", &port]).await;
    let child = Hoard::start(&[
        "--parent",
        &format!("http://{}", parent.addr),
        "--ca-file",
        ca.pem_path().to_str().unwrap(),
    ])
    .await;
    let request = format!(
        "GET https://localhost:{port}/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    );
    let response = crate::support::raw::exchange(child.addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("https through the parent"), "{response}");
    parent.shutdown().await;
    let log = std::fs::read_to_string(parent_dir.path().join("access.log")).unwrap();
    assert!(
        log.contains("TCP_TUNNEL") && log.contains(&format!("localhost:{port}")),
        "the parent carried the TLS connection: {log}"
    );
}
