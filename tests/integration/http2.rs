//! HTTP/2's known floods against hoard's TLS listener, each sent raw on one connection while
//! another client goes on being served: rapid reset (CVE-2023-44487), CONTINUATION flood,
//! PING flood and SETTINGS flood. The flooding connection may be closed; the process must
//! not stop serving others.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::https::tls_accelerator_with;
use crate::support::Hoard;
use crate::support::origin::Origin;
use crate::support::tls::{TestCa, connect_tls};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK for `GET https://localhost/`: indexed :method GET, :scheme https, :path /, and
/// :authority as a literal.
fn get_block() -> Vec<u8> {
    let mut block = vec![0x82, 0x87, 0x84, 0x41, 9];
    block.extend_from_slice(b"localhost");
    block
}

struct Setup {
    hoard: Hoard,
    ca: TestCa,
    origin: Origin,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    setup_with(&[]).await
}

async fn setup_with(flags: &[&str]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let origin = Origin::with_headers(&[("cache-control", "max-age=300")]).await;
    let hoard = tls_accelerator_with(&ca, &origin, dir.path(), flags).await;
    Setup {
        hoard,
        ca,
        origin,
        _dir: dir,
    }
}

/// An HTTP/2 connection that has sent its preface and SETTINGS.
async fn flooder(setup: &Setup) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut tls = connect_tls(
        setup.hoard.addr,
        "localhost",
        setup.ca.client_config(&[b"h2"]),
    )
    .await
    .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls.write_all(PREFACE).await.unwrap();
    tls.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    tls
}

/// While `flood` runs, another client's requests are all answered.
async fn others_are_served_during(setup: &Setup, flood: impl Future<Output = ()> + Send + 'static) {
    let flooding = tokio::spawn(flood);
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(setup.ca.client_config(&[b"h2"]))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/other", setup.hoard.addr.port());
    for _ in 0..20 {
        let response = client
            .get(&url)
            .send()
            .await
            .expect("served during the flood");
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    flooding.abort();
    // And after it.
    let response = client
        .get(&url)
        .send()
        .await
        .expect("served after the flood");
    assert_eq!(response.status(), 200);
}

/// Reads until the server ends the connection: `true` if it sent GOAWAY or closed within
/// `within`.
async fn ended_by_server<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    within: Duration,
) -> bool {
    let reading = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut seen = Vec::new();
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => {
                    seen.extend_from_slice(&buf[..n]);
                    if goaway_in(&seen) {
                        return true;
                    }
                }
            }
        }
    };
    tokio::time::timeout(within, reading).await.unwrap_or(false)
}

fn goaway_in(bytes: &[u8]) -> bool {
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        if bytes[at + 3] == GOAWAY {
            return true;
        }
        at += 9 + len;
    }
    false
}

#[tokio::test]
async fn rapid_reset_is_cut_off_and_others_are_served() {
    let setup = setup().await;
    let mut tls = flooder(&setup).await;
    // Open and cancel streams as fast as the socket takes them.
    let mut batch = Vec::new();
    for n in 0..10_000u32 {
        let stream = 1 + 2 * n;
        batch.extend(frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            stream,
            &get_block(),
        ));
        batch.extend(frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
    }
    let sent = tokio::time::timeout(Duration::from_secs(10), tls.write_all(&batch)).await;
    let ended =
        matches!(sent, Ok(Err(_))) || ended_by_server(&mut tls, Duration::from_secs(10)).await;
    assert!(ended, "the flooding connection was not closed");
    // Far fewer than the 10 000 requests reached the origin.
    assert!(
        setup.origin.seen().len() < 1000,
        "{}",
        setup.origin.seen().len()
    );
    others_are_served_during(&setup, async {}).await;
}

#[tokio::test]
async fn continuation_flood_is_cut_off_and_others_are_served() {
    let setup = setup().await;
    let mut tls = flooder(&setup).await;
    tls.write_all(&frame(HEADERS, END_STREAM, 1, &get_block()))
        .await
        .unwrap();
    // Literal header fields, new names, 16 KiB per frame, never ending the block.
    let mut field = vec![0x00, 5];
    field.extend_from_slice(b"x-pad");
    field.extend_from_slice(&[0x7f, 0x81, 0x7f]); // value length 127 + 255 = 382
    field.extend(std::iter::repeat_n(b'a', 382));
    let mut payload = Vec::new();
    while payload.len() + field.len() <= 16_000 {
        payload.extend_from_slice(&field);
    }
    let continuation = frame(CONTINUATION, 0, 1, &payload);
    let flood = async {
        for _ in 0..20_000 {
            if tls.write_all(&continuation).await.is_err() {
                return true;
            }
        }
        false
    };
    let cut = tokio::time::timeout(Duration::from_secs(20), flood)
        .await
        .unwrap_or(true);
    assert!(
        cut || ended_by_server(&mut tls, Duration::from_secs(10)).await,
        "320 MB of CONTINUATION frames were read without ending the connection"
    );
    others_are_served_during(&setup, async {}).await;
    assert!(
        setup
            .origin
            .seen()
            .iter()
            .all(|seen| seen.uri.path() == "/other")
    );
}

/// Sends `frame` a million times on one connection, never reading what comes back, while
/// another client is served.
async fn flood_of(frame: Vec<u8>) {
    let setup = setup().await;
    let mut tls = flooder(&setup).await;
    let flood = async move {
        for _ in 0..1_000_000 {
            if tls.write_all(&frame).await.is_err() {
                return;
            }
        }
    };
    others_are_served_during(&setup, flood).await;
}

#[tokio::test]
async fn ping_flood_does_not_stop_others_being_served() {
    // The pongs are never read: hoard must stop reading rather than queue them.
    flood_of(frame(PING, 0, 0, &[7u8; 8])).await;
}

#[tokio::test]
async fn settings_flood_does_not_stop_others_being_served() {
    flood_of(frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100])).await;
}

#[tokio::test]
async fn the_stream_and_header_list_limits_are_announced() {
    let setup = setup().await;
    let mut tls = flooder(&setup).await;
    let mut head = [0u8; 9];
    tls.read_exact(&mut head).await.unwrap();
    assert_eq!(
        head[3], SETTINGS,
        "the server's first frame is its SETTINGS"
    );
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    tls.read_exact(&mut payload).await.unwrap();
    let settings: Vec<(u16, u32)> = payload
        .chunks(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect();
    // SETTINGS_MAX_CONCURRENT_STREAMS and SETTINGS_MAX_HEADER_LIST_SIZE (max-header-size).
    assert!(settings.contains(&(0x3, 100)), "{settings:?}");
    assert!(settings.contains(&(0x6, 64 * 1024)), "{settings:?}");
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_like_an_idle_http11_one() {
    let setup = setup_with(&["--client-header-timeout", "1s"]).await;
    let mut tls = flooder(&setup).await;
    assert!(
        ended_by_server(&mut tls, Duration::from_secs(10)).await,
        "an idle HTTP/2 connection was kept past --client-header-timeout"
    );
}

#[tokio::test]
async fn a_connection_whose_only_stream_was_reset_still_closes_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    // An origin slow enough that the client resets its stream before the answer.
    let origin = Origin::start(|_| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        http::Response::new(hoard::body::full(bytes::Bytes::from_static(b"late")))
    })
    .await;
    let hoard =
        tls_accelerator_with(&ca, &origin, dir.path(), &["--client-header-timeout", "1s"]).await;
    let setup = Setup {
        hoard,
        ca,
        origin,
        _dir: dir,
    };
    let mut tls = flooder(&setup).await;
    tls.write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &get_block()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    tls.write_all(&frame(RST_STREAM, 0, 1, &8u32.to_be_bytes()))
        .await
        .unwrap();
    assert!(
        ended_by_server(&mut tls, Duration::from_secs(10)).await,
        "a reset stream kept the connection counted busy"
    );
}
