//! What an exposed hoard must withstand besides poisoning (issue 11): the admin interface
//! driven from a browser (class 10), CONNECT tunnels past every limit (11), file-descriptor
//! limits (12) and protocol leftovers (13).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use hoard::body;
use http::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{Hoard, Origin, chromium, raw};

fn cache_status(response: &reqwest::Response) -> String {
    response.headers()["cache-status"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Stores `path` of `origin` in `hoard` and returns the URL.
async fn stored(hoard: &Hoard, origin: &Origin, path: &str) -> String {
    let url = origin.url(path);
    let client = hoard.client();
    client.get(&url).send().await.unwrap();
    let hit = client.get(&url).send().await.unwrap();
    assert!(cache_status(&hit).contains("hit"));
    url
}

#[tokio::test]
async fn cross_site_admin_requests_change_nothing() {
    let origin = Origin::with_headers(&[("cache-control", "max-age=60")]).await;
    let hoard = Hoard::start(&[]).await;
    let url = stored(&hoard, &origin, "/kept").await;
    let purge = format!("http://{}/_hoard/purge?prefix=http://", hoard.addr);
    let client = reqwest::Client::new();
    for (name, value) in [
        ("origin", "http://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ] {
        let refused = client
            .post(&purge)
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 403, "{name}: {value}");
    }
    let method = http::Method::from_bytes(b"PURGE").unwrap();
    let refused = hoard
        .client()
        .request(method.clone(), &url)
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    // DNS rebinding: a page at evil.example, resolved to this host, is same-origin with
    // whatever answers there; the admin answers only to its own names.
    for request in [
        "POST /_hoard/purge?prefix=http:// HTTP/1.1\r\nHost: evil.example:8080\r\n\
         Origin: http://evil.example:8080\r\nSec-Fetch-Site: same-origin\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n",
        "GET /_hoard/stats HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    ] {
        let answer = raw::exchange(hoard.addr, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    }
    let by_name = raw::exchange(
        hoard.addr,
        b"GET /_hoard/stats HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(by_name.starts_with("HTTP/1.1 200"), "{by_name}");
    let hit = hoard.client().get(&url).send().await.unwrap();
    assert!(cache_status(&hit).contains("hit"), "nothing was purged");

    let own = client
        .post(&purge)
        .header("origin", format!("http://{}", hoard.addr))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200, "the status page's own form still works");
    let gone = hoard.client().get(&url).send().await.unwrap();
    assert!(!cache_status(&gone).contains("hit"));
}

#[tokio::test]
async fn the_admin_can_have_a_listener_of_its_own() {
    let origin = Origin::with_headers(&[("cache-control", "max-age=60")]).await;
    let admin = format!("127.0.0.1:{}", raw::closed_port().await);
    let hoard = Hoard::start(&["--admin-listen", &admin]).await;
    let url = stored(&hoard, &origin, "/x").await;
    let stats = reqwest::get(format!("http://{admin}/_hoard/stats"))
        .await
        .unwrap();
    assert_eq!(stats.status(), 200);
    assert!(stats.text().await.unwrap().contains("\"requests\""));
    let on_proxy = reqwest::get(format!("http://{}/_hoard/stats", hoard.addr))
        .await
        .unwrap();
    assert_eq!(on_proxy.status(), 404);
    assert!(on_proxy.text().await.unwrap().contains(&admin));
    let method = http::Method::from_bytes(b"PURGE").unwrap();
    let purge_on_proxy = hoard.client().request(method, &url).send().await.unwrap();
    assert_eq!(purge_on_proxy.status(), 404);
    let purged = reqwest::Client::new()
        .post(format!("http://{admin}/_hoard/purge?url={url}"))
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status(), 200);
    let proxied = reqwest::get(format!("http://{admin}/")).await.unwrap();
    assert_eq!(proxied.status(), 404, "the admin listener proxies nothing");
}

/// A gateway page whose script tries to read and purge the admin, and a page on another
/// origin that posts a purge form: in a real Chromium neither may read or change anything.
#[tokio::test]
async fn pages_in_a_browser_cannot_read_or_drive_the_admin() {
    let hoard = Hoard::start(&[]).await;
    let hoard_addr = hoard.addr;
    let site = Origin::start(move |request: http::Request<hyper::body::Incoming>| async move {
        let html = match request.uri().path() {
            "/evil.html" => r#"<!doctype html><pre id="result">pending</pre><script>
const out = [];
fetch('/_hoard/stats').then(r => r.text())
  .then(t => out.push('read:' + (t.includes('requests') ? 'LEAKED' : 'empty')), () => out.push('read:blocked'))
  .then(() => fetch('/_hoard/purge?prefix=http://', {method: 'POST'}))
  .then(r => out.push('purge:' + r.status), () => out.push('purge:blocked'))
  .then(() => { document.getElementById('result').textContent = 'done ' + out.join(' '); });
</script>"#
                .to_owned(),
            "/form.html" => format!(
                r#"<!doctype html><form id="f" method="post" action="http://{hoard_addr}/_hoard/purge?prefix=http://"></form>
<script>document.getElementById('f').submit();</script>"#
            ),
            _ => "<p>cached page</p>".to_owned(),
        };
        Response::builder()
            .header("content-type", "text/html")
            .header("cache-control", "max-age=60")
            .body(body::full(html))
            .unwrap()
    })
    .await;
    let url = stored(&hoard, &site, "/cached").await;
    let (dom, _) =
        chromium::dump_dom(&format!("http://{}/{}/evil.html", hoard.addr, site.addr)).await;
    let result = dom
        .split("<pre id=\"result\">")
        .nth(1)
        .and_then(|rest| rest.split("</pre>").next())
        .unwrap_or_default();
    assert!(result.starts_with("done "), "the script ran: {dom}");
    assert!(!result.contains("LEAKED"), "{result}");
    assert!(!result.contains("purge:200"), "{result}");
    chromium::dump_dom(&site.url("/form.html")).await;
    let hit = hoard.client().get(&url).send().await.unwrap();
    assert!(cache_status(&hit).contains("hit"), "nothing was purged");
    assert_eq!(hoard.client().get(&url).send().await.unwrap().status(), 200);
}

/// A TCP echo server, the far end of the tunnels.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

/// Opens a tunnel to `target` through `hoard` and returns it once hoard has said 200.
async fn tunnel(hoard: SocketAddr, target: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(hoard).await.unwrap();
    stream
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = raw::read_until(&mut stream, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stream
}

/// Whether the far side has closed `stream` (reads to EOF within `within`).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn tunnels_hold_connection_slots_close_when_idle_and_log_when_they_end() {
    let echo = echo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let hoard = Hoard::start_in(
        dir.path(),
        &[
            "--connect-ports",
            &echo.port().to_string(),
            "--max-connections",
            "3",
            "--tunnel-idle-timeout",
            "1s",
        ],
    )
    .await;
    let mut first = tunnel(hoard.addr, echo).await;
    first.write_all(b"hello").await.unwrap();
    let mut echoed = [0u8; 5];
    first.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"hello");
    let mut open = vec![
        first,
        tunnel(hoard.addr, echo).await,
        tunnel(hoard.addr, echo).await,
    ];
    // A fourth client waits for a slot: it is served only once an idle tunnel has closed.
    let mut fourth = tunnel(hoard.addr, echo).await;
    let mut any_closed = false;
    for stream in &mut open {
        any_closed |= closed_within(stream, Duration::from_millis(50)).await;
    }
    assert!(
        any_closed,
        "the fourth tunnel opened while three held every slot"
    );
    assert!(
        closed_within(&mut fourth, Duration::from_secs(10)).await,
        "an idle tunnel is closed"
    );
    let log = dir.path().join("access.log");
    let mut line = String::new();
    for _ in 0..100 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(found) = text.lines().find(|l| l.contains("up=5 down=5")) {
            line = found.to_owned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        line.contains("TCP_TUNNEL/200 10 CONNECT"),
        "the tunnel's line, written when it closed: {line:?}"
    );
    hoard.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_open_tunnels() {
    let echo = echo_server().await;
    let hoard = Hoard::start(&["--connect-ports", &echo.port().to_string()]).await;
    let mut open = tunnel(hoard.addr, echo).await;
    tokio::time::timeout(Duration::from_secs(10), hoard.shutdown())
        .await
        .expect("shutdown does not wait for tunnels");
    assert!(closed_within(&mut open, Duration::from_secs(5)).await);
}

#[tokio::test]
async fn transfer_codings_hoard_cannot_decode_are_refused_both_ways() {
    let origin = Origin::echo().await;
    let hoard = Hoard::start(&[]).await;
    for (coding, expected) in [("gzip, chunked", 501), ("chunked, chunked", 400)] {
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: {coding}\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            origin.url("/"),
            origin.addr
        );
        let answer = raw::exchange(hoard.addr, request.as_bytes()).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {expected}")),
            "{coding}: {answer}"
        );
    }
    let malformed = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        origin.url("/"),
        origin.addr
    );
    let answer = raw::exchange(hoard.addr, malformed.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "a client's bad body: {answer}"
    );

    for response in [
        &b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ] {
        let bad = raw::origin(response, false).await;
        let answer = raw::exchange(
            hoard.addr,
            format!("GET http://{bad}/ HTTP/1.1\r\nHost: {bad}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    }
}

#[test]
fn the_open_file_limit_is_raised_and_exposure_is_explained_at_start() {
    let child = Command::new("bash")
        .arg("-c")
        .arg("ulimit -Sn 256 && ulimit -Hn 2048 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_hoard"))
        .args(["0", "--cache-dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .args([
            "--max-connections",
            "5000",
            "--allow",
            "127.0.0.0/8",
            "--local-clients",
            "127.0.0.1/32",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = child;
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening"), "{line}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(open_files[3..5], ["2048", "2048"], "{limits}");
    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--max-connections 5000"), "{stderr}");
    assert!(
        stderr.contains("clients outside --local-clients may reach")
            && stderr.contains("169.254.0.0/16"),
        "{stderr}"
    );
}
