//! Where a client may make hoard connect (issue 11, classes 3, 5 and 6): `--deny-dest` holds
//! for every spelling of an address on every path that connects, clients outside
//! `--local-clients` cannot reach the proxy host or unsafe ports, and nothing reaches hoard
//! itself. Targets are other loopback addresses (127.0.0.2 is "another host").

use hoard::body;
use http::Response;

use crate::support::{Hoard, Origin, raw};

fn connect(target: &str) -> String {
    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n")
}

/// Sends `request` from 127.0.0.2, which these tests make a LAN client: allowed to use the
/// proxy, but outside `--local-clients`.
async fn from_lan(hoard: std::net::SocketAddr, request: String) -> String {
    raw::exchange_from("127.0.0.2", hoard, request.as_bytes()).await
}

/// A hoard that 127.0.0.0/8 may use, where only 127.0.0.1 is a local client.
async fn lan_hoard(extra: &[&str]) -> Hoard {
    let mut flags = vec!["--allow", "127.0.0.0/8", "--local-clients", "127.0.0.1/32"];
    flags.extend_from_slice(extra);
    Hoard::start(&flags).await
}

fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"))
}

#[tokio::test]
async fn deny_dest_holds_for_every_spelling_and_every_path() {
    let secret = Origin::start_on("127.0.0.2", |_| async {
        Response::new(body::full("secret"))
    })
    .await;
    let port = secret.addr.port();
    let redirector = Origin::start(move |_| async move {
        Response::builder()
            .status(302)
            .header("location", format!("http://[::ffff:127.0.0.2]:{port}/"))
            .body(body::empty())
            .unwrap()
    })
    .await;
    let hoard = Hoard::start(&[
        "--deny-dest",
        "127.0.0.2",
        "--connect-ports",
        &port.to_string(),
        "--follow-redirects",
    ])
    .await;
    for host in [
        "127.0.0.2",
        "[::ffff:127.0.0.2]",
        "[::ffff:7f00:2]",
        "[::127.0.0.2]",
        "[0:0:0:0:0:ffff:7f00:0002]",
    ] {
        let forward = raw::exchange(
            hoard.addr,
            raw::get_request(&format!("http://{host}:{port}/"), "x", "").as_bytes(),
        )
        .await;
        assert_eq!(status(&forward), 403, "forward to {host}: {forward}");
        let tunnel = raw::exchange(hoard.addr, connect(&format!("{host}:{port}")).as_bytes()).await;
        assert_eq!(status(&tunnel), 403, "CONNECT {host}: {tunnel}");
    }
    let followed = raw::exchange(
        hoard.addr,
        raw::get_request(&format!("/{}/go", redirector.addr), "x", "").as_bytes(),
    )
    .await;
    assert_eq!(status(&followed), 403, "followed redirect: {followed}");
    assert_eq!(secret.connections(), 0, "nothing reached the denied host");
}

#[tokio::test]
async fn unspecified_addresses_and_names_are_the_host_itself() {
    let local = Origin::fixed("local service").await;
    let port = local.addr.port();
    let hoard = Hoard::start(&[
        "--deny-dest",
        "127.0.0.1",
        "--deny-dest",
        "::1",
        "--deny-dest",
        "::1/128",
    ])
    .await;
    for host in ["0.0.0.0", "[::]", "[::ffff:0.0.0.0]", "localhost", "[::1]"] {
        let answer = raw::exchange(
            hoard.addr,
            raw::get_request(&format!("http://{host}:{port}/"), "x", "").as_bytes(),
        )
        .await;
        assert_eq!(status(&answer), 403, "{host}: {answer}");
    }
    let gateway = raw::exchange(
        hoard.addr,
        raw::get_request(&format!("/0.0.0.0:{port}/"), "x", "").as_bytes(),
    )
    .await;
    assert_eq!(status(&gateway), 403, "gateway: {gateway}");
    assert_eq!(local.connections(), 0);
}

#[tokio::test]
async fn clients_outside_local_clients_cannot_reach_the_proxy_host() {
    let local = Origin::with_headers(&[("cache-control", "max-age=60")]).await;
    let port = local.addr.port();
    // 127.0.0.2 plays a LAN client: allowed to use the proxy, not a local client.
    let hoard = lan_hoard(&["--connect-ports", &port.to_string()]).await;
    // A local client may, and what it fetched is stored...
    let own = raw::exchange(
        hoard.addr,
        raw::get_request(&format!("http://127.0.0.1:{port}/"), "x", "").as_bytes(),
    )
    .await;
    assert_eq!(status(&own), 200, "{own}");
    // ...but not read from storage by a client that may not reach it.
    for target in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://0.0.0.0:{port}/"),
        format!("http://localhost:{port}/"),
        format!("http://127.9.9.9:{port}/"),
    ] {
        let answer = from_lan(hoard.addr, raw::get_request(&target, "x", "")).await;
        assert_eq!(status(&answer), 403, "{target}: {answer}");
        assert!(answer.contains("proxy host itself"), "{answer}");
    }
    let tunnel = from_lan(hoard.addr, connect(&format!("127.0.0.1:{port}"))).await;
    assert_eq!(status(&tunnel), 403, "{tunnel}");
    assert_eq!(
        local.seen().len(),
        1,
        "only the local client's request arrived"
    );
}

#[tokio::test]
async fn allow_dest_reopens_hosts_and_ports_for_lan_clients() {
    let local = Origin::fixed("local service").await;
    let port = local.addr.port();
    let closed = raw::closed_port().await;
    let hoard = lan_hoard(&["--allow-dest", "127.0.0.1"]).await;
    let reopened = from_lan(
        hoard.addr,
        raw::get_request(&format!("http://127.0.0.1:{port}/"), "x", ""),
    )
    .await;
    assert_eq!(status(&reopened), 200, "{reopened}");
    for unsafe_port in [22, 25, 111, 631] {
        let answer = from_lan(
            hoard.addr,
            raw::get_request(&format!("http://127.0.0.1:{unsafe_port}/"), "x", ""),
        )
        .await;
        assert_eq!(status(&answer), 403, "port {unsafe_port}: {answer}");
        assert!(answer.contains("port below 1024"), "{answer}");
    }
    // Ports above 1023 are not restricted: nothing listens here, so the answer is 502.
    let high = from_lan(
        hoard.addr,
        raw::get_request(&format!("http://127.0.0.1:{closed}/"), "x", ""),
    )
    .await;
    assert_eq!(status(&high), 502, "{high}");

    let ports = lan_hoard(&["--allow-dest", "127.0.0.1", "--allow-dest", ":25"]).await;
    let smtp = from_lan(
        ports.addr,
        raw::get_request("http://127.0.0.1:25/", "x", ""),
    )
    .await;
    assert_ne!(
        status(&smtp),
        403,
        "--allow-dest :25 reopens the port: {smtp}"
    );
}

#[tokio::test]
async fn nothing_reaches_hoard_itself_however_spelled() {
    let admin_port = raw::closed_port().await;
    let admin = format!("127.0.0.1:{admin_port}");
    // Everyone on loopback may use the proxy and is local; only 127.0.0.1 may use the admin.
    let hoard = Hoard::start(&[
        "--allow",
        "127.0.0.0/8",
        "--local-clients",
        "127.0.0.0/8",
        "--admin-allow",
        "127.0.0.1/32",
        "--admin-listen",
        &admin,
        "--connect-ports",
        &admin_port.to_string(),
    ])
    .await;
    let port = hoard.addr.port();
    for host in [
        "127.0.0.1",
        "[::ffff:127.0.0.1]",
        "0.0.0.0",
        "[::]",
        "localhost",
    ] {
        let tunnel = from_lan(hoard.addr, connect(&format!("{host}:{admin_port}"))).await;
        assert_eq!(status(&tunnel), 508, "CONNECT {host}: {tunnel}");
        let absolute = from_lan(
            hoard.addr,
            raw::get_request(&format!("http://{host}:{port}/_hoard/stats"), "x", ""),
        )
        .await;
        assert_eq!(status(&absolute), 508, "GET via {host}: {absolute}");
        assert!(!absolute.contains("\"requests\""), "{absolute}");
    }
    let admin_addr: std::net::SocketAddr = admin.parse().unwrap();
    let denied = from_lan(admin_addr, raw::get_request("/_hoard/stats", "x", "")).await;
    assert_eq!(status(&denied), 403, "{denied}");
}
