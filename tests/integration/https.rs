//! HTTPS for clients: hoard's TLS listener (certificates by SNI, reloaded on SIGHUP, a plain
//! port beside it, plain HTTP refused clearly), HTTP/2 by ALPN with every feature as over
//! HTTP/1.1, and opt-in interception of CONNECT with a CA made by `hoard ca init`.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::origin::Origin;
use crate::support::tls::{TestCa, connect_tls, pem_cert};
use crate::support::{Hoard, process::Process, raw};

const CACHEABLE: &[(&str, &str)] = &[("cache-control", "max-age=300")];

/// A reverse-proxy hoard for `origin` speaking TLS with a certificate for localhost from
/// `ca` (files in `dir`), on its main port unless `flags` add `--tls-port`.
pub(crate) async fn tls_accelerator_with(
    ca: &TestCa,
    origin: &Origin,
    dir: &std::path::Path,
    flags: &[&str],
) -> Hoard {
    let (cert, key) = ca.leaf_files(&["localhost", "127.0.0.1"], dir);
    let upstream = format!("http://{}", origin.addr);
    let mut all = vec![
        "--upstream",
        &upstream,
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    all.extend_from_slice(flags);
    Hoard::start(&all).await
}

async fn tls_accelerator(ca: &TestCa, origin: &Origin, dir: &std::path::Path) -> Hoard {
    tls_accelerator_with(ca, origin, dir, &[]).await
}

/// Plain HTTP and TLS from one process, one site whatever port the client names in Host.
const BOTH_PORTS: &[&str] = &["--upstream-host", "localhost", "--tls-port", "0"];

/// Runs curl with `args`; its stdout (bodies, then `-w` output) and whether it succeeded.
async fn curl(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let output = Command::new("curl")
            .args(["-sS", "--max-time", "20"])
            .args(&args)
            .output()
            .expect("curl runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// `curl -i` through the accelerator at `url` with `version` (`--http2` or `--http1.1`):
/// the response head and body, and the HTTP version curl used.
async fn curl_get(ca: &TestCa, version: &str, url: &str) -> (String, String) {
    let (ok, out, err) = curl(vec![
        "-i".into(),
        version.into(),
        "--cacert".into(),
        ca.pem_path().to_str().unwrap().into(),
        "-w".into(),
        "\n%{http_version}".into(),
        url.into(),
    ])
    .await;
    assert!(ok, "curl failed: {err}");
    let (response, used) = out.rsplit_once('\n').unwrap();
    (response.to_owned(), used.to_owned())
}

#[tokio::test]
async fn accelerator_over_tls_caches_over_http2_and_http11() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let origin = Origin::with_headers(CACHEABLE).await;
    let hoard = tls_accelerator(&ca, &origin, dir.path()).await;
    let url = format!("https://localhost:{}/page", hoard.addr.port());

    let (first, version) = curl_get(&ca, "--http2", &url).await;
    assert_eq!(version, "2", "{first}");
    assert!(first.starts_with("HTTP/2 200"), "{first}");
    assert!(first.contains("fwd=uri-miss"), "{first}");
    let (second, _) = curl_get(&ca, "--http2", &url).await;
    assert!(second.contains("cache-status: hoard; hit"), "{second}");
    assert!(second.ends_with("/page #1"), "{second}");
    let (third, version) = curl_get(&ca, "--http1.1", &url).await;
    assert_eq!(version, "1.1");
    assert!(
        third
            .to_ascii_lowercase()
            .contains("cache-status: hoard; hit"),
        "{third}"
    );
    assert_eq!(origin.seen().len(), 1);
    // The origin learns the client came over TLS.
    assert_eq!(origin.last().headers["x-forwarded-proto"], "https");

    // reqwest over HTTP/2 too, and the admin interface over the same listener.
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(ca.client_config(&[b"h2"]))
        .build()
        .unwrap();
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert!(
        response.headers()["cache-status"]
            .to_str()
            .unwrap()
            .contains("hit")
    );
    let stats = client
        .get(format!(
            "https://127.0.0.1:{}/_hoard/stats",
            hoard.addr.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 200);
    assert_eq!(origin.seen().len(), 1);
}

#[tokio::test]
async fn plain_http_to_a_tls_port_gets_a_clear_400() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let origin = Origin::with_headers(CACHEABLE).await;
    let hoard = tls_accelerator(&ca, &origin, dir.path()).await;
    let response = raw::exchange(hoard.addr, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("This port speaks HTTPS"), "{response}");
    assert!(origin.seen().is_empty());
}

#[tokio::test]
async fn a_plain_port_and_a_tls_port_from_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let origin = Origin::with_headers(CACHEABLE).await;
    let hoard = tls_accelerator_with(&ca, &origin, dir.path(), BOTH_PORTS).await;
    let tls = hoard.tls_addr.expect("a TLS listener");
    let plain = raw::exchange(
        hoard.addr,
        b"GET /both HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(plain.starts_with("HTTP/1.1 200"), "{plain}");
    let url = format!("https://localhost:{}/both", tls.port());
    let (secure, _) = curl_get(&ca, "--http2", &url).await;
    assert!(secure.starts_with("HTTP/2 200"), "{secure}");
    let (secure, _) = curl_get(&ca, "--http2", &url).await;
    assert!(secure.contains("cache-status: hoard; hit"), "{secure}");
    // One fetch per scheme (see plain_and_tls_clients_of_an_accelerator_never_share_an_entry).
    assert_eq!(origin.seen().len(), 2);
}

#[tokio::test]
async fn the_certificate_is_chosen_by_sni_with_the_first_as_default() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let origin = Origin::with_headers(CACHEABLE).await;
    let (a_cert, a_key) = ca.leaf_files(&["a.test"], dir.path());
    let (b_cert, b_key) = ca.leaf_files(&["b.test", "*.b.test"], dir.path());
    let upstream = format!("http://{}", origin.addr);
    let hoard = Hoard::start(&[
        "--upstream",
        &upstream,
        "--tls-cert",
        a_cert.to_str().unwrap(),
        "--tls-key",
        a_key.to_str().unwrap(),
        "--tls-cert",
        b_cert.to_str().unwrap(),
        "--tls-key",
        b_key.to_str().unwrap(),
    ])
    .await;
    let served_cert = |name: &'static str| {
        let config = ca.client_config(&[]);
        async move {
            let tls = connect_tls(hoard.addr, name, config).await.unwrap();
            tls.get_ref().1.peer_certificates().unwrap()[0].clone()
        }
    };
    assert_eq!(served_cert("a.test").await, pem_cert(&a_cert));
    assert_eq!(served_cert("b.test").await, pem_cert(&b_cert));
    assert_eq!(served_cert("www.b.test").await, pem_cert(&b_cert));
    // A name neither covers gets the default, which the client then refuses.
    let other = connect_tls(hoard.addr, "c.test", ca.client_config(&[])).await;
    assert!(other.is_err());
}

#[tokio::test]
async fn sighup_swaps_the_certificate_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let origin = Origin::with_headers(CACHEABLE).await;
    let (cert, key) = ca.leaf_files(&["localhost"], dir.path());
    let old = pem_cert(&cert);
    let hoard = Process::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tls-port",
        "0",
    ]);
    let tls_addr = hoard.tls_addr.expect("a TLS listener");
    let mut open = connect_tls(tls_addr, "localhost", ca.client_config(&[b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(open.get_ref().1.peer_certificates().unwrap()[0], old);

    // A new certificate in the same files (written as a deploy tool would).
    let renewed = tempfile::tempdir().unwrap();
    let (new_cert, new_key) = ca.leaf_files(&["localhost"], renewed.path());
    std::fs::copy(&new_key, &key).unwrap();
    std::fs::copy(&new_cert, &cert).unwrap();
    hoard.signal("HUP");
    hoard.wait_for_log("TLS certificates reloaded");
    let fresh = connect_tls(tls_addr, "localhost", ca.client_config(&[]))
        .await
        .unwrap();
    assert_eq!(
        fresh.get_ref().1.peer_certificates().unwrap()[0],
        pem_cert(&new_cert)
    );

    // The connection opened before the reload still works.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        origin.url("/still"),
        origin.addr
    );
    open.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    open.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test]
async fn forward_proxy_over_https_as_curl_proxy_https_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let origin = Origin::with_headers(CACHEABLE).await;
    let (cert, key) = ca.leaf_files(&["localhost", "127.0.0.1"], dir.path());
    let hoard = Hoard::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
    .await;
    let proxy = format!("https://localhost:{}", hoard.addr.port());
    for round in 0..2 {
        let (ok, out, err) = curl(vec![
            "-i".into(),
            "--proxy".into(),
            proxy.clone(),
            "--proxy-cacert".into(),
            ca.pem_path().to_str().unwrap().into(),
            origin.url("/via-tls-proxy"),
        ])
        .await;
        assert!(ok, "{err}");
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        if round == 1 {
            assert!(
                out.to_ascii_lowercase()
                    .contains("cache-status: hoard; hit"),
                "{out}"
            );
        }
    }
    assert_eq!(origin.seen().len(), 1);
}

/// A CA made the way an operator makes it, and a hoard intercepting with it.
async fn intercepting_hoard(ca_dir: &std::path::Path, flags: &[&str]) -> Hoard {
    let told = hoard::tls::init_ca(ca_dir).unwrap();
    assert!(told.contains("update-ca-certificates"), "{told}");
    assert!(told.contains("NODE_EXTRA_CA_CERTS"), "{told}");
    let mut all = vec!["--intercept", ca_dir.to_str().unwrap()];
    all.extend_from_slice(flags);
    Hoard::start(&all).await
}

#[tokio::test]
async fn interception_caches_https_and_gives_hits_on_the_second_request() {
    let origin_ca = TestCa::new();
    let served = Arc::new(AtomicUsize::new(0));
    let origin = origin_ca
        .origin_with("intercepted body", CACHEABLE, served.clone())
        .await;
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_dir = ca_dir.path().join("ca");
    let ports = format!("443,{}", origin.port());
    let origin_ca_file = origin_ca.pem_path();
    let hoard = intercepting_hoard(
        &ca_dir,
        &[
            "--connect-ports",
            &ports,
            "--ca-file",
            origin_ca_file.to_str().unwrap(),
        ],
    )
    .await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ca_dir.join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let url = format!("https://localhost:{}/pkg.tar", origin.port());
    let proxy = format!("http://{}", hoard.addr);
    let hoard_ca = ca_dir.join("ca.crt");
    for (round, version) in ["--http1.1", "--http2"].into_iter().enumerate() {
        let (ok, out, err) = curl(vec![
            "-i".into(),
            "--suppress-connect-headers".into(),
            version.into(),
            "--proxy".into(),
            proxy.clone(),
            "--cacert".into(),
            hoard_ca.to_str().unwrap().into(),
            url.clone(),
        ])
        .await;
        assert!(ok, "{err}");
        assert!(out.ends_with("intercepted body"), "{out}");
        let lower = out.to_ascii_lowercase();
        if round == 0 {
            assert!(lower.contains("fwd=uri-miss"), "{out}");
        } else {
            assert!(lower.contains("cache-status: hoard; hit"), "{out}");
        }
    }
    assert_eq!(served.load(Ordering::SeqCst), 1);
    // A client that does not trust hoard's CA refuses the handshake.
    let (ok, _, err) = curl(vec![
        "--proxy".into(),
        proxy.clone(),
        "--cacert".into(),
        origin_ca_file.to_str().unwrap().into(),
        url.clone(),
    ])
    .await;
    assert!(!ok, "a client not trusting the CA must fail: {err}");
}

#[tokio::test]
async fn interception_refuses_an_origin_certificate_that_does_not_verify() {
    let untrusted = TestCa::new();
    let served = Arc::new(AtomicUsize::new(0));
    let origin = untrusted
        .origin_with("must not be relayed", CACHEABLE, served.clone())
        .await;
    let ca_dir = tempfile::tempdir().unwrap();
    let ports = format!("443,{}", origin.port());
    // No --ca-file: the origin's issuer is unknown to hoard.
    let hoard = intercepting_hoard(ca_dir.path(), &["--connect-ports", &ports]).await;
    let (ok, out, err) = curl(vec![
        "-i".into(),
        "--suppress-connect-headers".into(),
        "--http1.1".into(),
        "--proxy".into(),
        format!("http://{}", hoard.addr),
        "--cacert".into(),
        ca_dir.path().join("ca.crt").to_str().unwrap().into(),
        format!("https://localhost:{}/", origin.port()),
    ])
    .await;
    assert!(ok, "{err}");
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    assert!(out.to_ascii_lowercase().contains("certificate"), "{out}");
    assert!(!out.contains("must not be relayed"), "{out}");
}

#[tokio::test]
async fn intercept_skip_tunnels_named_hosts_blind() {
    let origin_ca = TestCa::new();
    let served = Arc::new(AtomicUsize::new(0));
    let origin = origin_ca
        .origin_with("pinned", CACHEABLE, served.clone())
        .await;
    let ca_dir = tempfile::tempdir().unwrap();
    let ports = format!("443,{}", origin.port());
    let hoard = intercepting_hoard(
        ca_dir.path(),
        &["--connect-ports", &ports, "--intercept-skip", "localhost"],
    )
    .await;
    for _ in 0..2 {
        // The client sees the origin's own certificate, so trusts only the origin's CA.
        let (ok, out, err) = curl(vec![
            "--proxy".into(),
            format!("http://{}", hoard.addr),
            "--cacert".into(),
            origin_ca.pem_path().to_str().unwrap().into(),
            format!("https://localhost:{}/", origin.port()),
        ])
        .await;
        assert!(ok, "{err}");
        assert_eq!(out, "pinned");
    }
    assert_eq!(
        served.load(Ordering::SeqCst),
        2,
        "a blind tunnel caches nothing"
    );
}

#[tokio::test]
async fn ca_init_refuses_to_replace_an_existing_key() {
    let dir = tempfile::tempdir().unwrap();
    hoard::tls::init_ca(dir.path()).unwrap();
    let again = hoard::tls::init_ca(dir.path()).unwrap_err().to_string();
    assert!(again.contains("already exists"), "{again}");
}

#[tokio::test]
async fn plain_and_tls_clients_of_an_accelerator_never_share_an_entry() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let origin = Origin::with_headers(CACHEABLE).await;
    let hoard = tls_accelerator_with(&ca, &origin, dir.path(), BOTH_PORTS).await;
    let tls = hoard.tls_addr.unwrap();
    let plain = || {
        raw::exchange(
            hoard.addr,
            b"GET /app HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
    };
    // An app that redirects plain clients to https must not have that redirect served to
    // its TLS clients (or the other way round): the origin is told the scheme, so the scheme
    // is in the key.
    assert!(plain().await.starts_with("HTTP/1.1 200"));
    let url = format!("https://localhost:{}/app", tls.port());
    let (secure, _) = curl_get(&ca, "--http2", &url).await;
    assert!(secure.contains("fwd=uri-miss"), "{secure}");
    let protos: Vec<String> = origin
        .seen()
        .iter()
        .map(|seen| {
            seen.headers["x-forwarded-proto"]
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(protos, ["http", "https"]);
    assert!(plain().await.contains("hoard; hit"));
    let (secure, _) = curl_get(&ca, "--http2", &url).await;
    assert!(secure.contains("hoard; hit"), "{secure}");

    // A PURGE of the path purges what both were served.
    let purged = raw::exchange(
        hoard.addr,
        b"PURGE /app HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(purged.starts_with("HTTP/1.1 200"), "{purged}");
    assert!(plain().await.contains("fwd=uri-miss"));
    let (secure, _) = curl_get(&ca, "--http2", &url).await;
    assert!(secure.contains("fwd=uri-miss"), "{secure}");
}

#[tokio::test]
async fn interception_mints_only_for_plain_names_and_addresses() {
    let ca_dir = tempfile::tempdir().unwrap();
    let hoard = intercepting_hoard(ca_dir.path(), &[]).await;
    let response = raw::exchange(
        hoard.addr,
        b"CONNECT *.example.org:443 HTTP/1.1\r\nHost: *.example.org:443\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
}
