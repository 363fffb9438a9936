//! The real `hoard` binary: its command line, its console output, and its memory while
//! streaming large bodies.

use std::process::Command;

use bytes::Bytes;
use futures_util::StreamExt;
use hoard::body;
use http::Response;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};

use crate::support::process::{Process, cache_tool};
use crate::support::small_disk::SmallDisk;
use crate::support::{Origin, damage_stored_body, fetch};

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
        "--cache-memory",
        "--cache-disk",
        "--max-object-size",
        "--heuristic-max",
        "--stale-if-error",
        "--follow-redirects",
        "--allow",
        "--admin-allow",
        "--config",
        "--check-config",
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

#[test]
fn check_config_validates_the_example_file_and_names_bad_keys() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/hoard.example.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_hoard"))
        .args(["--config", example, "--check-config"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("configuration OK"));

    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "first-byte-timeout = \"forever\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_hoard"))
        .arg("--config")
        .arg(bad.path())
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("first-byte-timeout") && stderr.contains("forever"),
        "{stderr}"
    );
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
        let access = format!(
            "TCP_MISS/200 6 GET {} - HIER_DIRECT/127.0.0.1 -\n",
            origin.url("/trace")
        );
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

/// MiB streamed each way; `HOARD_STREAM_MIB=1024` for the 1 GiB check.
fn stream_mib() -> u64 {
    std::env::var("HOARD_STREAM_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

/// A body of `stream_mib()` MiB, generated 64 KiB at a time (never held whole in memory).
fn generated_body()
-> impl hyper::body::Body<Data = Bytes, Error = std::io::Error> + Send + Sync + 'static {
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let chunks = stream_mib() * 16;
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
    assert_eq!(received, stream_mib() << 20);

    let upload = client
        .post(origin.url("/upload"))
        .body(reqwest::Body::wrap(generated_body()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        upload.text().await.unwrap(),
        (stream_mib() << 20).to_string()
    );

    let peak = process.peak_rss();
    let mib = stream_mib();
    eprintln!(
        "peak RSS of hoard while streaming {mib} MiB each way: {} KiB",
        peak >> 10
    );
    assert!(
        peak < 40 << 20,
        "peak RSS {} MiB while streaming {mib} MiB each way",
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

/// The body the crash-test origin serves for object `n`: a size and bytes derived from `n`.
fn object_body(n: u64) -> Bytes {
    // A third are small enough to be packed in the index database, the rest are files.
    let len = if n.is_multiple_of(3) {
        (n * 7919) % 16_000 + 1
    } else {
        (n * 7919) % 400_000 + 1
    };
    let mut state = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

async fn crash_test_origin() -> Origin {
    Origin::start(|request: http::Request<Incoming>| async move {
        let n: u64 = request
            .uri()
            .path()
            .trim_start_matches("/obj/")
            .parse()
            .unwrap_or(0);
        let whole = object_body(n);
        let len = whole.len() as u64;
        // Ranges too (hoard fetches slices with them): `bytes=a-b` gets a 206.
        let range = request
            .headers()
            .get("range")
            .and_then(|r| r.to_str().ok()?.strip_prefix("bytes=")?.split_once('-'))
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
            .filter(|&(start, _)| start < len)
            .map(|(start, end)| (start, end.min(len - 1)));
        let mut builder = Response::builder()
            .header("cache-control", "max-age=3600")
            .header("etag", format!("\"{n}\""));
        let body = match range {
            Some((start, end)) => {
                builder = builder
                    .status(206)
                    .header("content-range", format!("bytes {start}-{end}/{len}"));
                whole.slice(start as usize..=end as usize)
            }
            None => whole,
        };
        // Sent in small chunks with pauses so a kill often lands mid-body.
        let chunks: Vec<Bytes> = body.chunks(16 * 1024).map(Bytes::copy_from_slice).collect();
        let stream = futures_util::stream::iter(chunks).then(|chunk| async move {
            tokio::task::yield_now().await;
            Ok::<_, std::io::Error>(Frame::data(chunk))
        });
        builder
            .header("content-length", body.len().to_string())
            .body(body::stream(http_body_util::StreamBody::new(stream)))
            .unwrap()
    })
    .await
}

/// Fetches object `n` through `proxy`; `Some(bytes, cache-status)` only for a complete body.
async fn fetch_object(
    client: &reqwest::Client,
    origin: &Origin,
    n: u64,
) -> Option<(Bytes, String)> {
    fetch_part(client, origin, n, None).await
}

/// GETs object `n`, or bytes `start..=end` of it; the body only if it arrived whole.
async fn fetch_part(
    client: &reqwest::Client,
    origin: &Origin,
    n: u64,
    range: Option<(u64, u64)>,
) -> Option<(Bytes, String)> {
    let mut request = client.get(origin.url(&format!("/obj/{n}")));
    if let Some((start, end)) = range {
        request = request.header("range", format!("bytes={start}-{end}"));
    }
    let response = request.send().await.ok()?;
    let status = response
        .headers()
        .get("cache-status")?
        .to_str()
        .ok()?
        .to_owned();
    Some((response.bytes().await.ok()?, status))
}

#[tokio::test]
async fn kill_9_under_load_never_leads_to_a_wrong_or_truncated_body() {
    const OBJECTS: u64 = 120;
    let rounds: u64 = std::env::var("HOARD_KILL_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let origin = crash_test_origin().await;
    let mut dir = tempfile::tempdir().unwrap();
    // Which objects each worker asks for and when the kill comes: printed, and replayable
    // with HOARD_KILL_SEED=N.
    let mut seed = std::env::var("HOARD_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
        | 1;
    eprintln!("kill -9 test: HOARD_KILL_SEED={seed}");
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut mismatches = 0;
    let mut complete = 0;
    // Slices of 64 KiB: the objects (up to 400 KB) span several, and ranges of them are
    // stored slice by slice beside whole objects.
    let flags = ["--slice-size", "64KiB"];
    for _ in 0..rounds {
        let process = Process::start_in(dir, &flags);
        let client = process.client();
        let mut load = Vec::new();
        for worker in 0..16 {
            let client = client.clone();
            let origin = origin.clone();
            let start = next();
            load.push(tokio::spawn(async move {
                let (mut ok, mut bad) = (0, 0);
                for i in 0.. {
                    let n = (start.wrapping_add(i * 31 + worker)) % OBJECTS;
                    let whole = object_body(n);
                    // Odd workers ask for ranges (some inside one slice, some across several).
                    let range = (worker % 2 == 1).then(|| {
                        let len = whole.len() as u64;
                        let first = start.wrapping_add(i * 7919) % len;
                        (first, (first + (start % 150_000)).min(len - 1))
                    });
                    let expected = match range {
                        Some((first, last)) => whole.slice(first as usize..=last as usize),
                        None => whole,
                    };
                    match fetch_part(&client, &origin, n, range).await {
                        Some((body, _)) if body == expected => ok += 1,
                        Some(_) => bad += 1,
                        None => break,
                    }
                }
                (ok, bad)
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50 + next() % 400)).await;
        dir = process.kill_hard();
        for worker in load {
            let (ok, bad) = worker.await.unwrap();
            complete += ok;
            mismatches += bad;
        }
    }
    // After the last kill, every object and range hoard serves must be exactly the origin's.
    let process = Process::start_in(dir, &flags);
    let client = process.client();
    let mut hits = 0;
    for n in 0..OBJECTS {
        let whole = object_body(n);
        let last = (whole.len() as u64).saturating_sub(1);
        let range = (last / 3, last / 3 + last / 2);
        let (part, _) = fetch_part(&client, &origin, n, Some(range))
            .await
            .expect("a complete range");
        if part != whole.slice(range.0 as usize..=range.1 as usize) {
            mismatches += 1;
        }
        let (body, status) = fetch_object(&client, &origin, n)
            .await
            .expect("a complete response");
        if body != object_body(n) {
            mismatches += 1;
        }
        if status.contains("hit") {
            hits += 1;
        }
    }
    eprintln!(
        "{rounds} kills, {complete} complete responses under load, {hits}/{OBJECTS} hits after restart, {mismatches} mismatches"
    );
    assert_eq!(mismatches, 0);
    assert!(hits > 0, "entries written before the kills survive them");
}

#[tokio::test]
async fn logs_to_a_pipe_carry_no_colour_codes() {
    let origin = Origin::fixed("plain").await;
    // -v: the debug trace too, whose field names are what tracing colours at a terminal.
    let process = Process::start(&["-v"]);
    fetch(&process.client(), origin.url("/plain")).await;
    let stderr = process.stop();
    assert!(stderr.contains("/plain"), "{stderr}");
    assert!(!stderr.contains('\x1b'), "no ANSI escape codes: {stderr:?}");
}

#[tokio::test]
async fn access_log_file_in_json_is_reopened_on_sigusr1() {
    let origin = Origin::fixed("logged").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let process = Process::start(&[
        "--access-log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
    ]);
    let client = process.client();
    fetch(&client, origin.url("/first")).await;

    // logrotate moves the file away, then signals hoard.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    process.signal("USR1");
    for _ in 0..500 {
        if log.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    fetch(&client, origin.url("/second")).await;
    process.stop();

    let first: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&rotated).unwrap().trim()).unwrap();
    assert_eq!(first["url"], origin.url("/first"));
    assert_eq!(first["status"], 200);
    assert_eq!(first["cache"], "MISS");
    assert_eq!(first["upstream_status"], 200);
    assert_eq!(first["bytes"], 6);
    let second: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&log).unwrap().trim()).unwrap();
    assert_eq!(second["url"], origin.url("/second"));
}

#[tokio::test]
async fn the_cache_tool_lists_verifies_and_purges_a_stopped_cache() {
    let origin = Origin::with_headers(&[("cache-control", "max-age=600")]).await;
    let process = Process::start(&[]);
    let client = process.client();
    for path in ["/a", "/b", "/c"] {
        fetch(&client, origin.url(path)).await;
        // The second request is a hit: the entry is stored and durable.
        let again = client.get(origin.url(path)).send().await.unwrap();
        assert!(
            again.headers()["cache-status"]
                .to_str()
                .unwrap()
                .contains("hit")
        );
    }
    let (stderr, cache_dir) = process.stop_keeping_dir();
    let dir = cache_dir.path();
    assert!(stderr.contains("cache index saved"), "{stderr}");

    let (ok, stats) = cache_tool(dir, &["stats"]);
    assert!(
        ok && stats.contains("urls        3") && stats.contains("disk bodies 3"),
        "{stats}"
    );
    let (_, listing) = cache_tool(dir, &["ls", &origin.url("/b")]);
    assert_eq!(listing.lines().count(), 1, "{listing}");
    assert!(
        listing.starts_with("200")
            && listing.contains("fresh")
            && listing.contains(&origin.url("/b")),
        "{listing}"
    );

    // Damage one body (same length) where it is packed: verify finds it and removes it.
    assert!(damage_stored_body(dir, b"/a #1") > 0);
    let (ok, report) = cache_tool(dir, &["verify"]);
    assert!(!ok && report.contains("checked 3, bad 1"), "{report}");
    let (ok, report) = cache_tool(dir, &["verify"]);
    assert!(ok && report.contains("checked 2, bad 0"), "{report}");

    let (_, listing) = cache_tool(dir, &["ls"]);
    let first_url = listing
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_owned();
    let (ok, purged) = cache_tool(dir, &["purge", &first_url]);
    assert!(ok && purged.contains("purged 1"), "{purged}");
    let (_, stats) = cache_tool(dir, &["stats"]);
    assert!(stats.contains("urls        1"), "{stats}");
}

#[tokio::test]
async fn sighup_reloads_access_rules_and_names_what_needs_a_restart() {
    let origin = Origin::fixed("reloaded").await;
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "allow = [\"127.0.0.2\"]\n").unwrap();
    let process = Process::start(&["--config", config.path().to_str().unwrap()]);
    let client = process.client();
    assert_eq!(
        client.get(origin.url("/r")).send().await.unwrap().status(),
        403
    );

    std::fs::write(
        config.path(),
        "allow = [\"127.0.0.0/8\"]\ncache-memory = \"32MiB\"\n",
    )
    .unwrap();
    process.signal("HUP");
    let mut status = 0;
    for _ in 0..500 {
        status = client
            .get(origin.url("/r"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(status, 200, "the new allow list applies without a restart");

    // A file that does not load changes nothing.
    std::fs::write(config.path(), "allow = [\"nonsense\"]\n").unwrap();
    process.signal("HUP");
    process.wait_for_log("reload failed, keeping the running configuration");
    assert_eq!(
        client.get(origin.url("/r")).send().await.unwrap().status(),
        200
    );

    let stderr = process.stop();
    assert!(
        stderr.contains("take effect after a restart: cache-memory"),
        "{stderr}"
    );
    assert!(
        stderr.contains("reload failed, keeping the running configuration"),
        "{stderr}"
    );
}

/// Fetches objects `range` and checks each body byte for byte; returns how many were hits.
async fn fetch_and_check(process: &Process, origin: &Origin, range: std::ops::Range<u64>) -> usize {
    let client = process.client();
    let mut hits = 0;
    for n in range {
        let (body, status) = fetch_object(&client, origin, n)
            .await
            .unwrap_or_else(|| panic!("object {n}: a complete response"));
        assert!(body == object_body(n), "object {n}: the origin's bytes");
        hits += usize::from(status.contains("hit"));
    }
    hits
}

#[tokio::test]
async fn a_full_cache_disk_means_proxying_uncached_and_saying_so() {
    let Some(disk) = SmallDisk::mount("2m") else {
        return;
    };
    let origin = crash_test_origin().await;
    // About 6 MB of objects for a 2 MB disk, with room in the disk tier's budget for all.
    let process = Process::start_at(disk.path(), &["--cache-disk", "100MiB"]);
    assert_eq!(fetch_and_check(&process, &origin, 0..30).await, 0);
    assert!(process.metric("hoard_cache_store_failures_total").await >= 1);
    // Every object again: what fitted is a hit, the rest comes from the origin, all whole.
    let hits = fetch_and_check(&process, &origin, 0..30).await;
    assert!((1..30).contains(&hits), "{hits} hits");
    let stderr = process.stop();
    assert!(
        stderr.contains("No space left on device"),
        "the log says why: {stderr}"
    );
}

#[tokio::test]
async fn a_read_only_cache_disk_means_proxying_uncached_and_saying_so() {
    let Some(disk) = SmallDisk::mount("16m") else {
        return;
    };
    let origin = crash_test_origin().await;
    let process = Process::start_at(disk.path(), &[]);
    fetch_and_check(&process, &origin, 0..5).await;
    // Fills finish just after their responses; asking again waits for them.
    assert_eq!(fetch_and_check(&process, &origin, 0..5).await, 5);
    disk.read_only_from_now_on();
    assert_eq!(fetch_and_check(&process, &origin, 5..10).await, 0);
    assert!(process.metric("hoard_cache_store_failures_total").await >= 1);
    assert_eq!(
        fetch_and_check(&process, &origin, 0..10).await,
        5,
        "what was stored before is still served; nothing new was stored"
    );
    let stderr = process.stop();
    assert!(
        stderr.contains("Read-only file system"),
        "the log says why: {stderr}"
    );
}

#[tokio::test]
async fn shutdown_waits_out_the_grace_and_a_second_signal_ends_hoard_at_once() {
    // Headers, then a body that never comes: a request that cannot finish.
    let origin =
        crate::support::raw::origin(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart", true)
            .await;
    for (grace, signals, code) in [("1s", 1, 0), ("1h", 2, 130)] {
        let process = Process::start(&["--shutdown-grace", grace]);
        let response = process
            .client()
            .get(format!("http://{origin}/stuck"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "the request is in flight");
        process.signal("TERM");
        process.wait_for_log("shutting down: waiting for open connections");
        if signals == 2 {
            // Ctrl-C a second time, as a person does when the first seems to hang.
            std::thread::sleep(std::time::Duration::from_millis(300));
            process.signal("INT");
        }
        let pid = process.pid();
        let exited = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            tokio::task::spawn_blocking(move || process.wait_exit()),
        )
        .await;
        let Ok(exited) = exited else {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("--shutdown-grace {grace}: still running 30 s after {signals} signal(s)");
        };
        let (status, stderr) = exited.unwrap();
        assert_eq!(
            status.code(),
            Some(code),
            "--shutdown-grace {grace}: {stderr}"
        );
        if signals == 1 {
            assert!(stderr.contains("shutdown grace period over"), "{stderr}");
            assert!(stderr.contains("cache index saved"), "{stderr}");
        } else {
            assert!(
                stderr.contains("second signal, exiting without waiting"),
                "{stderr}"
            );
        }
        drop(response);
    }
}
