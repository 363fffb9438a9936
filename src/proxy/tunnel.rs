//! CONNECT tunnels: check the port against the allowlist and the target against the client's
//! destination policy, dial (or CONNECT through `--parent`), answer 200, then copy bytes
//! both ways until either side closes, the tunnel is idle for `--tunnel-idle-timeout`, or
//! hoard shuts down. hoard never looks inside a tunnel.
//!
//! A tunnel keeps the client connection's `--max-connections` slot for as long as it lives,
//! and reports its bytes each way when it ends, so its access-log line is written then.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::http1::{NotUpgraded, OnUpgrade, RequestBody};
use http::{Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ProxyError;
use crate::body::{self, ProxyBody};
use crate::upstream::{DestinationPolicy, ParentProxy, UpstreamError};

/// A client connection's `--max-connections` permit, which a tunnel takes over: after the
/// upgrade hyper's connection task ends, but the client's socket lives on in the tunnel.
pub struct ConnectionSlot(Mutex<Option<OwnedSemaphorePermit>>);

impl ConnectionSlot {
    pub fn new(permit: Option<OwnedSemaphorePermit>) -> ConnectionSlot {
        ConnectionSlot(Mutex::new(permit))
    }

    pub(super) fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Every open tunnel, so shutdown can end them and wait until they have.
#[derive(Default)]
pub(super) struct Tunnels {
    tracker: TaskTracker,
    closing: CancellationToken,
}

impl Tunnels {
    /// Ends every tunnel and waits until each has reported.
    pub(super) async fn close(&self) {
        self.closing.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// How a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEnd {
    /// A side closed (or the client left before the tunnel opened).
    Closed,
    Idle,
    Shutdown,
    Error,
}

/// What a tunnel carried, reported when it ends.
#[derive(Debug, Clone, Copy)]
pub struct TunnelSummary {
    /// Bytes from the client to the target.
    pub up: u64,
    /// Bytes from the target to the client.
    pub down: u64,
    pub end: TunnelEnd,
}

/// Handed back with a CONNECT's 200 response: says when the tunnel has ended and what it
/// carried.
pub struct TunnelClosed(oneshot::Receiver<TunnelSummary>);

impl TunnelClosed {
    /// The tunnel's summary once it ends; `None` if it ended without one.
    pub async fn wait(self) -> Option<TunnelSummary> {
        self.0.await.ok()
    }
}

/// What `open` needs besides the request.
pub(super) struct TunnelSettings<'a> {
    pub allowed_ports: &'a [u16],
    pub policy: &'a DestinationPolicy,
    /// `--parent`: tunnels to hosts it applies to are a CONNECT through it.
    pub parent: Option<&'a ParentProxy>,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

/// The CONNECT's target, once it is well formed, to an allowed port, and a destination the
/// client may reach (before DNS; the dial checks the addresses).
pub(super) fn checked_target(
    request: &Request<RequestBody>,
    allowed_ports: &[u16],
    policy: &DestinationPolicy,
) -> Result<http::uri::Authority, ProxyError> {
    let authority = request
        .uri()
        .authority()
        .ok_or(ProxyError::BadRequest("CONNECT needs a host:port target"))?
        .clone();
    if authority.as_str().contains('@') {
        return Err(ProxyError::BadRequest(
            "CONNECT target must not contain user information",
        ));
    }
    let port = authority
        .port_u16()
        .ok_or(ProxyError::BadRequest("CONNECT target needs a port"))?;
    if !allowed_ports.contains(&port) {
        let allowed = allowed_ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");
        return Err(ProxyError::ConnectPortDenied { port, allowed });
    }
    policy
        .check_target(authority.host(), port)
        .map_err(UpstreamError::from)?;
    Ok(authority)
}

pub(super) async fn open(
    mut request: Request<RequestBody>,
    settings: TunnelSettings<'_>,
    slot: &ConnectionSlot,
    tunnels: &Tunnels,
) -> Result<(Response<ProxyBody>, TunnelClosed), ProxyError> {
    let authority = checked_target(&request, settings.allowed_ports, settings.policy)?;
    let port = authority.port_u16().expect("checked");
    let host = authority.as_str().to_owned();
    let target = match settings
        .parent
        .filter(|parent| parent.applies_to(authority.host()))
    {
        Some(parent) => parent
            .tunnel(authority.host(), port, settings.connect_timeout)
            .await
            .map_err(UpstreamError::Parent)?,
        None => {
            dial(
                authority.host(),
                port,
                settings.policy,
                settings.connect_timeout,
            )
            .await?
        }
    };

    let (done, closed) = oneshot::channel();
    let permit = slot.take();
    let closing = tunnels.closing.clone();
    let idle_timeout = settings.idle_timeout;
    let client = tracing::Span::current();
    let upgrade = request.extensions_mut().remove::<OnUpgrade>();
    tunnels.tracker.spawn(async move {
        let _permit = permit;
        let upgraded = match upgrade {
            Some(upgrade) => upgrade.wait().await,
            None => Err(NotUpgraded),
        };
        let summary = match upgraded {
            Ok(upgraded) => relay(upgraded, target, idle_timeout, closing).await,
            Err(e) => {
                tracing::debug!(parent: &client, %host, error = %e, "CONNECT: client went away before the tunnel opened");
                TunnelSummary {
                    up: 0,
                    down: 0,
                    end: TunnelEnd::Closed,
                }
            }
        };
        tracing::debug!(parent: &client, %host, end = ?summary.end, up = summary.up, down = summary.down, "CONNECT tunnel closed");
        let _ = done.send(summary);
    });

    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::OK;
    Ok((response, TunnelClosed(closed)))
}

/// Copies both ways until a side closes, nothing moves for `idle_timeout`, or `closing`.
async fn relay<C>(
    client: C,
    target: TcpStream,
    idle_timeout: Duration,
    closing: CancellationToken,
) -> TunnelSummary
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Arc::new(Activity::new());
    let mut client = Counted {
        inner: client,
        bytes: &activity.up,
        activity: &activity,
    };
    let mut target = Counted {
        inner: target,
        bytes: &activity.down,
        activity: &activity,
    };
    let end = tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut target) => match copied {
            Ok(_) => TunnelEnd::Closed,
            Err(_) => TunnelEnd::Error,
        },
        () = activity.idle_for(idle_timeout) => TunnelEnd::Idle,
        () = closing.cancelled() => TunnelEnd::Shutdown,
    };
    TunnelSummary {
        up: activity.up.load(Ordering::Relaxed),
        down: activity.down.load(Ordering::Relaxed),
        end,
    }
}

/// Bytes each way and when anything last moved (milliseconds since the tunnel opened).
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = self.opened.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let idle = self.opened.elapsed().saturating_sub(last);
            if idle >= limit {
                return;
            }
            tokio::time::sleep(limit - idle).await;
        }
    }
}

/// A stream that counts what is read from it and notes the time of every transfer.
struct Counted<'a, T> {
    inner: T,
    bytes: &'a AtomicU64,
    activity: &'a Activity,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            this.bytes.fetch_add(read as u64, Ordering::Relaxed);
            this.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Resolves (checking every address against the policy) and connects, keeping DNS
/// failures, denials, refusals and timeouts apart for the client. The address reached is
/// checked again, so no spelling of an address gets past the rules.
async fn dial(
    name: &str,
    port: u16,
    policy: &DestinationPolicy,
    connect_timeout: Duration,
) -> Result<TcpStream, UpstreamError> {
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let host = format!("{name}:{port}");
    let host = host.as_str();
    let attempt = async {
        let addrs: Vec<SocketAddr> =
            crate::upstream::resolve(policy, name, port)
                .await
                .map_err(|e| {
                    UpstreamError::from_io(&e, || UpstreamError::Dns {
                        host: host.to_owned(),
                        reason: e.to_string(),
                    })
                })?;
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    let peer = stream.peer_addr().unwrap_or(addr);
                    policy
                        .check_connected(name, peer)
                        .map_err(UpstreamError::from)?;
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(UpstreamError::Connect {
            host: host.to_owned(),
            reason: last.map_or_else(|| "no addresses".to_owned(), |e| e.to_string()),
        })
    };
    tokio::time::timeout(connect_timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(UpstreamError::ConnectTimeout {
                host: host.to_owned(),
                after: connect_timeout,
            })
        })
}
