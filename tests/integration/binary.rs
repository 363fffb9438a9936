//! The real `hoard` binary: its command line, its console output, and its memory while
//! streaming large bodies.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use bytes::Bytes;
use futures_util::StreamExt;
use hoard::body;
use http::Response;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};

use crate::support::Origin;

/// A running `hoard` process; killed when dropped.
struct Process {
    child: Child,
    addr: SocketAddr,
    _cache_dir: tempfile::TempDir,
}

impl Process {
    fn start(flags: &[&str]) -> Process {
        let cache_dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_hoard"))
            .arg("0")
            .arg("--cache-dir")
            .arg(cache_dir.path())
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "hoard listening on http://127.0.0.1:PORT (forward proxy), cache directory DIR"
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("start line: {line:?}"))
            .parse()
            .unwrap();
        assert!(
            line.contains("forward proxy") && line.contains(cache_dir.path().to_str().unwrap()),
            "{line}"
        );
        Process {
            child,
            addr,
            _cache_dir: cache_dir,
        }
    }

    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::http(format!("http://{}", self.addr)).unwrap())
            .build()
            .unwrap()
    }

    /// Peak resident memory so far, from /proc (VmHWM), in bytes.
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    /// Sends SIGTERM and returns what hoard wrote to stderr; asserts a clean exit.
    fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let output = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap())
            .wait_with_output()
            .unwrap();
        assert!(output.status.success(), "exit status {:?}", output.status);
        String::from_utf8_lossy(&output.stderr).into_owned()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn help_documents_every_flag() {
    let output = Command::new(env!("CARGO_BIN_EXE_hoard"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "[PORT]",
        "--bind",
        "--upstream",
        "--upstream-host",
        "--connect-ports",
        "--ca-file",
        "--connect-timeout",
        "--first-byte-timeout",
        "--client-header-timeout",
        "--max-header-size",
        "--cache-dir",
        "--verbose",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn bad_flags_exit_with_code_2_and_a_clear_message() {
    for (args, expected) in [
        (&["--no-such-flag"][..], "unexpected argument"),
        (&["--connect-timeout", "soon"], "10s"),
        (&["--upstream", "ftp://x"], "http:// or https://"),
        (&["--upstream-host", "a"], "needs --upstream"),
        (&["notaport"], "invalid value"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_hoard"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn default_console_shows_one_access_line_and_verbose_shows_every_step() {
    let origin = Origin::fixed("traced").await;
    for verbose in [false, true] {
        let process = Process::start(if verbose { &["-v"] } else { &[] });
        let response = process
            .client()
            .get(origin.url("/trace"))
            .header("x-marker", "m1")
            .send()
            .await
            .unwrap();
        assert_eq!(response.text().await.unwrap(), "traced");
        let stderr = process.stop();
        let access = format!("\"GET {} HTTP/1.1\" 200 6 ", origin.url("/trace"));
        assert_eq!(stderr.matches(&access).count(), 1, "{stderr}");
        let steps = [
            "request from client:",
            "request to origin:",
            "response from origin:",
            "response to client:",
        ];
        for step in steps {
            assert_eq!(stderr.contains(step), verbose, "{step} in {stderr}");
        }
        assert_eq!(stderr.contains("x-marker: m1"), verbose, "{stderr}");
        assert!(!stderr.contains("traced\n"), "bodies are never traced");
    }
}

const STREAM_MIB: u64 = 64;

/// A body of `STREAM_MIB` MiB, generated 64 KiB at a time (never held whole in memory).
fn generated_body()
-> impl hyper::body::Body<Data = Bytes, Error = std::io::Error> + Send + Sync + 'static {
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let chunks = STREAM_MIB * 16;
    http_body_util::StreamBody::new(
        futures_util::stream::iter(0..chunks)
            .map(move |_| Ok::<_, std::io::Error>(Frame::data(chunk.clone()))),
    )
}

#[tokio::test]
async fn large_bodies_stream_both_ways_with_bounded_memory() {
    let origin = Origin::start(|request: http::Request<Incoming>| async move {
        if request.method() == http::Method::POST {
            let mut received = 0u64;
            let mut body = request.into_body();
            while let Some(frame) = body.frame().await {
                received += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
            }
            Response::new(body::full(received.to_string()))
        } else {
            Response::new(body::stream(generated_body()))
        }
    })
    .await;
    let process = Process::start(&[]);
    let client = process.client();

    let mut download = client.get(origin.url("/big")).send().await.unwrap();
    let mut received = 0u64;
    while let Some(chunk) = download.chunk().await.unwrap() {
        received += chunk.len() as u64;
    }
    assert_eq!(received, STREAM_MIB << 20);

    let upload = client
        .post(origin.url("/upload"))
        .body(reqwest::Body::wrap(generated_body()))
        .send()
        .await
        .unwrap();
    assert_eq!(upload.text().await.unwrap(), (STREAM_MIB << 20).to_string());

    let peak = process.peak_rss();
    eprintln!(
        "peak RSS of hoard while streaming {STREAM_MIB} MiB each way: {} KiB",
        peak >> 10
    );
    assert!(
        peak < 40 << 20,
        "peak RSS {} MiB while streaming {STREAM_MIB} MiB each way",
        peak >> 20
    );
}

#[tokio::test]
async fn curl_through_the_binary_gets_the_origin_response() {
    let origin = Origin::fixed("hello curl").await;
    let process = Process::start(&[]);
    let proxy = format!("http://{}", process.addr);
    let url = origin.url("/x");
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "-i", "-x", &proxy, &url])
        .output()
        .await
        .expect("curl is installed (.ci/run installs it)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("via: 1.1 hoard"),
        "{text}"
    );
    assert!(text.ends_with("hello curl"), "{text}");
}
