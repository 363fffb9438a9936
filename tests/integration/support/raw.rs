//! Raw TCP on both sides, for what an HTTP library would hide or refuse to produce: exact
//! bytes on the wire, malformed input, unusual status lines, origins that misbehave.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Sends `request` to `addr` and reads until the server closes (or 10 s pass).
/// A `GET target` request head with `Host: host`, `extra` header lines (each ending in
/// `\r\n`) and `Connection: close`.
pub(crate) fn get_request(target: &str, host: &str, extra: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
}

pub(crate) async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_to_close(&mut stream).await
}

/// Like `exchange`, from another loopback address (`127.0.0.2`, ...), as a second client would.
pub(crate) async fn exchange_from(source: &str, addr: SocketAddr, request: &[u8]) -> String {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_to_close(&mut stream).await
}

pub(crate) async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads from `stream` until `needle` has arrived; returns everything read.
pub(crate) async fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while !String::from_utf8_lossy(&out).contains(needle) {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before {needle:?}; got {:?}",
                String::from_utf8_lossy(&out)
            );
            out.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("timed out waiting");
    String::from_utf8_lossy(&out).into_owned()
}

/// An origin that reads one request head per connection, then writes `response` verbatim and
/// closes (or, with `hold_open`, keeps the socket open without writing more).
pub(crate) async fn origin(response: &'static [u8], hold_open: bool) -> SocketAddr {
    let then = if hold_open { Then::Hang } else { Then::Close };
    scripted_origin(vec![(response, then)]).await.0
}

/// What a scripted origin does once it has written its bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Then {
    Close,
    /// Closes with a TCP reset (SO_LINGER 0) instead of a clean FIN.
    Reset,
    /// Keeps the connection open, silent, for a minute.
    Hang,
}

/// An origin whose n-th connection reads one request head, writes `script[n]`'s bytes verbatim
/// and then does what its `Then` says; the last entry repeats. Also returns how many
/// connections (requests) it has taken.
pub(crate) async fn scripted_origin(
    script: Vec<(&'static [u8], Then)>,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let taken = Arc::new(AtomicUsize::new(0));
    let counter = taken.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let (response, then) = script[n.min(script.len() - 1)];
            tokio::spawn(async move {
                if !read_head(&mut stream).await {
                    return;
                }
                let _ = stream.write_all(response).await;
                match then {
                    Then::Close => {}
                    Then::Reset => {
                        let _ = stream.set_zero_linger();
                    }
                    Then::Hang => tokio::time::sleep(Duration::from_secs(60)).await,
                }
            });
        }
    });
    (addr, taken)
}

/// An origin that answers one connection with `response`, then stops listening: later
/// requests find the port closed (connection refused), as when an origin goes down.
pub(crate) async fn origin_that_goes_down(response: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        drop(listener);
        if read_head(&mut stream).await {
            let _ = stream.write_all(response).await;
        }
    });
    addr
}

/// Reads one request head; `false` if the connection ended first.
async fn read_head(stream: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// A port on 127.0.0.1 where nothing listens.
pub(crate) async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}
