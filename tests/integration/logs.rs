//! What the real `hoard` writes about each request: a custom access-log template, the
//! request id (the client's `X-Request-Id`, or one made here) in the log, the `-v` trace and
//! the error page, gateway lines naming the site fetched, and CONNECT lines with the bytes
//! each way.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::process::Process;
use crate::support::{Origin, get};

const TEMPLATE: &str = "$request_id $request_method $request_uri $status $cache_status \
     $bytes_up/$bytes_down [$time_iso8601]";

/// The access log's lines once hoard has stopped (and flushed it), and its stderr.
fn lines_after(process: Process, log: &std::path::Path) -> (Vec<String>, String) {
    let stderr = process.stop();
    let text = std::fs::read_to_string(log).unwrap();
    (text.lines().map(str::to_owned).collect(), stderr)
}

#[tokio::test]
async fn request_ids_follow_a_request_through_log_trace_and_error_page() {
    let origin = Origin::fixed("body").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let process = Process::start(&[
        "-v",
        "--access-log",
        log.to_str().unwrap(),
        "--log-format",
        TEMPLATE,
    ]);
    let client = process.client();
    let given = get(
        &client,
        &origin.url("/given"),
        &[("x-request-id", "ci-run-7/42")],
    )
    .await;
    assert_eq!(given.body, "body");
    get(&client, &origin.url("/made"), &[]).await;
    // An id with a space cannot be kept: it would split the log line.
    get(&client, &origin.url("/spaced"), &[("x-request-id", "a b")]).await;
    let closed = crate::support::raw::closed_port().await;
    let failed = get(
        &client,
        &format!("http://127.0.0.1:{closed}/down"),
        &[("accept", "text/html,*/*;q=0.8")],
    )
    .await;
    assert_eq!(failed.status, 502);
    let failed_id = failed.headers["x-request-id"].to_str().unwrap().to_owned();
    assert!(
        failed
            .body
            .contains(&format!("request id <code>{failed_id}</code>")),
        "{}",
        failed.body
    );
    let plain = get(&client, &format!("http://127.0.0.1:{closed}/down"), &[]).await;
    let plain_id = plain.headers["x-request-id"].to_str().unwrap();
    assert!(
        plain.body.ends_with(&format!("\nrequest id: {plain_id}\n")),
        "{}",
        plain.body
    );

    let (lines, stderr) = lines_after(process, &log);
    assert_eq!(lines.len(), 5, "{lines:#?}");
    let fields = |line: &str| line.split(' ').map(str::to_owned).collect::<Vec<_>>();
    let given_line = fields(&lines[0]);
    assert_eq!(
        given_line[..6],
        [
            "ci-run-7/42",
            "GET",
            &origin.url("/given"),
            "200",
            "MISS",
            "-/-"
        ]
    );
    // [2026-12-03T15:04:05.123Z]
    let time = given_line[6].trim_matches(['[', ']']);
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "{time}"
    );
    for made in [&lines[1], &lines[2]] {
        let id = &fields(made)[0];
        assert!(
            id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{made}"
        );
    }
    assert_ne!(fields(&lines[1])[0], fields(&lines[2])[0]);
    assert!(
        lines[3].starts_with(&format!("{failed_id} GET ")),
        "{}",
        lines[3]
    );
    assert!(lines[3].contains(" 502 "), "{}", lines[3]);
    // The -v trace names the request's id on each step, and the failure's warning too.
    assert!(stderr.contains("ci-run-7/42"), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|line| line.contains("origin failed") && line.contains(&failed_id)),
        "{stderr}"
    );
}

#[tokio::test]
async fn gateway_lines_name_the_site_and_tunnel_lines_the_bytes_each_way() {
    let origin = Origin::fixed("through the gateway").await;
    let port = origin.addr.port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let process = Process::start(&[
        "--access-log",
        log.to_str().unwrap(),
        "--log-format",
        TEMPLATE,
        "--connect-ports",
        &port,
    ]);
    let page = reqwest::get(format!("http://{}/127.0.0.1:{port}/page?q=1", process.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(page, "through the gateway");

    // A tunnel to the origin carrying one plain request.
    let mut tunnel = tokio::net::TcpStream::connect(process.addr).await.unwrap();
    let connect = format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    tunnel.write_all(connect.as_bytes()).await.unwrap();
    crate::support::raw::read_until(&mut tunnel, "\r\n\r\n").await;
    let request =
        format!("GET /tunnelled HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    tunnel.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tunnel.read_to_end(&mut answer).await.unwrap();
    drop(tunnel);
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.ends_with("through the gateway"), "{answer}");
    // The line is written when the tunnel has closed on both sides; stopping hoard waits
    // for that.

    let (lines, _) = lines_after(process, &log);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let page_line: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(
        page_line[1..5],
        ["GET", &origin.url("/page?q=1"), "200", "MISS"],
        "the site fetched, not the gateway path: {}",
        lines[0]
    );
    let tunnel_line: Vec<&str> = lines[1].split(' ').collect();
    assert_eq!(
        tunnel_line[1..4],
        ["CONNECT", &format!("127.0.0.1:{port}"), "200"]
    );
    assert_eq!(
        tunnel_line[5],
        format!("{}/{}", request.len(), answer.len()),
        "{}",
        lines[1]
    );
}
