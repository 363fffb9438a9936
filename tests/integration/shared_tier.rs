//! The shared tier on a real S3-compatible server (`moto_server`) behind a fleet of real
//! hoard processes: a fleet whose disks are all wiped serves long-lived objects from it
//! without asking the origin, a killed node costs no origin fetch, short-lived objects are
//! not written, a damaged object is never served, and a store that does not answer never
//! holds a request up (timeouts, then the circuit breaker).

use std::time::{Duration, Instant};

use hoard::body;
use http::Response;

use crate::support::fleet::Fleet;
use crate::support::moto::{BUCKET, Moto};
use crate::support::process::Process;
use crate::support::{Origin, get};

/// Objects under `/long/` are fresh for an hour, under `/short/` for 30 s.
async fn origin() -> Origin {
    Origin::start(|request: http::Request<hyper::body::Incoming>| async move {
        let path = request.uri().path().to_owned();
        let max_age = if path.starts_with("/short/") {
            30
        } else {
            3600
        };
        Response::builder()
            .header("cache-control", format!("max-age={max_age}"))
            .body(body::full(format!("object {path}")))
            .unwrap()
    })
    .await
}

fn tier_flags<'a>(moto: &'a Moto, prefix: &'a str) -> Vec<String> {
    vec![
        "--shared-tier".into(),
        format!("s3://{BUCKET}/{prefix}"),
        "--shared-tier-endpoint".into(),
        moto.endpoint.clone(),
        "--shared-tier-min-ttl".into(),
        "60s".into(),
    ]
}

async fn wait_for_objects(moto: &Moto, prefix: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let stored = moto.objects(prefix).await.len();
        if stored >= count {
            assert_eq!(stored, count, "more objects than expected under {prefix}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{stored} of {count} objects written"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_fleet_on_wiped_disks_serves_long_lived_objects_from_the_shared_tier() {
    let moto = Moto::start().await;
    let origin = origin().await;
    let flags = tier_flags(&moto, "wiped");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut fleet = Fleet::start_with_env(3, &flags, moto.env()).await;
    for n in 0..20 {
        let got = get(
            &fleet.client(n % 3),
            &origin.url(&format!("/long/{n}")),
            &[],
        )
        .await;
        assert_eq!(got.status, 200);
    }
    get(&fleet.client(0), &origin.url("/short/0"), &[]).await;
    // The owners write in the background; the short-lived one is not written.
    wait_for_objects(&moto, "wiped/", 20).await;
    assert_eq!(origin.seen().len(), 21);

    for i in 0..3 {
        fleet.kill(i);
    }
    for i in 0..3 {
        fleet.start_node(i, true).await;
    }
    fleet.wait_until_up(3).await;
    for n in 0..20 {
        let url = origin.url(&format!("/long/{n}"));
        for i in 0..3 {
            let got = get(&fleet.client(i), &url, &[]).await;
            assert_eq!((got.status, got.body), (200, format!("object /long/{n}")));
            if i == 0 {
                assert!(
                    got.cache_status.contains("detail=shared-tier"),
                    "{}",
                    got.cache_status
                );
            }
        }
    }
    assert_eq!(
        origin.seen().len(),
        21,
        "0 origin fetches for the 20 objects in the shared tier"
    );
    get(&fleet.client(1), &origin.url("/short/0"), &[]).await;
    assert_eq!(
        origin.seen().len(),
        22,
        "the short-lived object was not in the shared tier"
    );
}

#[tokio::test]
async fn a_killed_node_costs_no_origin_fetch_with_the_shared_tier() {
    let moto = Moto::start().await;
    let origin = origin().await;
    let flags = tier_flags(&moto, "killed");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut fleet = Fleet::start_with_env(3, &flags, moto.env()).await;
    for n in 0..30 {
        get(
            &fleet.client(n % 3),
            &origin.url(&format!("/long/{n}")),
            &[],
        )
        .await;
    }
    wait_for_objects(&moto, "killed/", 30).await;
    fleet.kill(0);
    for n in 0..30 {
        for i in [1, 2] {
            let got = get(&fleet.client(i), &origin.url(&format!("/long/{n}")), &[]).await;
            assert_eq!((got.status, got.body), (200, format!("object /long/{n}")));
        }
    }
    assert_eq!(
        origin.seen().len(),
        30,
        "the killed node's keys came from the shared tier"
    );
}

#[tokio::test]
async fn a_damaged_object_is_never_served() {
    let moto = Moto::start().await;
    let origin = origin().await;
    let flags = tier_flags(&moto, "damaged");
    let mut flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    flags.extend(["--access-log", "none"]);
    let url = origin.url("/long/d");
    let first = tempfile::tempdir().unwrap();
    let node = Process::start_on_port(first.path(), 0, &flags, &moto.env());
    get(&node.client(), &url, &[]).await;
    wait_for_objects(&moto, "damaged/", 1).await;
    drop(node);
    // One byte of the body flipped: same length, wrong checksum.
    let name = moto.objects("damaged/").await.remove(0);
    let mut object = moto.read(&name).await;
    *object.last_mut().unwrap() ^= 0x20;
    moto.put(&name, object.clone()).await;

    let second = tempfile::tempdir().unwrap();
    let node = Process::start_on_port(second.path(), 0, &flags, &moto.env());
    let got = get(&node.client(), &url, &[]).await;
    assert_eq!(got.body, "object /long/d", "{}", got.cache_status);
    assert!(
        !got.cache_status.contains("shared-tier"),
        "{}",
        got.cache_status
    );
    assert_eq!(origin.seen().len(), 2, "fetched again instead");
    node.wait_for_log("shared tier: ignoring a bad object");
    // The bad object was removed and the good copy written in its place.
    let deadline = Instant::now() + Duration::from_secs(10);
    while moto.objects("damaged/").await.is_empty() || moto.read(&name).await == object {
        assert!(
            Instant::now() < deadline,
            "the damaged object is still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(node);
    let third = tempfile::tempdir().unwrap();
    let node = Process::start_on_port(third.path(), 0, &flags, &moto.env());
    let got = get(&node.client(), &url, &[]).await;
    assert!(
        got.cache_status.contains("detail=shared-tier"),
        "{}",
        got.cache_status
    );
    assert_eq!(origin.seen().len(), 2);
}

#[tokio::test]
async fn a_store_that_does_not_answer_never_holds_requests_up() {
    // Accepts connections and never answers.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", black_hole.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = black_hole.accept().await {
            held.push(stream);
        }
    });
    let origin = origin().await;
    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        ("AWS_ACCESS_KEY_ID".to_owned(), "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), "test".to_owned()),
    ];
    let node = Process::start_on_port(
        dir.path(),
        0,
        &[
            "--shared-tier",
            "s3://bucket/x",
            "--shared-tier-endpoint",
            &endpoint,
            "--shared-tier-timeout",
            "200ms",
            "--access-log",
            "none",
        ],
        &env,
    );
    for n in 0..12 {
        let got = get(&node.client(), &origin.url(&format!("/long/{n}")), &[]).await;
        assert_eq!((got.status, got.body), (200, format!("object /long/{n}")));
    }
    let timeouts = crate::support::metric(
        node.addr,
        r#"hoard_shared_tier_operations_total{operation="get",result="timeout"}"#,
    )
    .await;
    let skipped = crate::support::metric(
        node.addr,
        r#"hoard_shared_tier_operations_total{operation="get",result="circuit-open"}"#,
    )
    .await;
    assert!(timeouts >= 1, "{timeouts} timed-out reads");
    assert!(skipped >= 1, "the breaker opened: {skipped} reads skipped");
    assert_eq!(
        timeouts + skipped,
        12,
        "every miss asked or skipped the store once"
    );
    assert_eq!(
        node.metric(r#"hoard_shared_tier_circuit_open{side="read"}"#)
            .await,
        1
    );
}

#[tokio::test]
async fn a_purge_removes_the_shared_copy_too() {
    let moto = Moto::start().await;
    let origin = origin().await;
    let flags = tier_flags(&moto, "purged");
    let mut flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    flags.extend(["--access-log", "none"]);
    let dir = tempfile::tempdir().unwrap();
    let node = Process::start_on_port(dir.path(), 0, &flags, &moto.env());
    let url = origin.url("/long/p");
    get(&node.client(), &url, &[]).await;
    wait_for_objects(&moto, "purged/", 1).await;
    // PURGE through the proxy, naming the URL as its target.
    let purged = node
        .client()
        .request(http::Method::from_bytes(b"PURGE").unwrap(), &url)
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !moto.objects("purged/").await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the shared copy outlived the purge"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // So a node on an empty disk asks the origin again rather than reading the old copy.
    drop(node);
    let empty = tempfile::tempdir().unwrap();
    let node = Process::start_on_port(empty.path(), 0, &flags, &moto.env());
    let got = get(&node.client(), &url, &[]).await;
    assert!(
        !got.cache_status.contains("shared-tier"),
        "{}",
        got.cache_status
    );
    assert_eq!(origin.seen().len(), 2);
}
