//! Pooled origin connections that expire when the origin said they would. An origin that
//! sends `Keep-Alive: timeout=5` (Apache's and Node's default is 5 s) closes its side after
//! five idle seconds; a pool that keeps the connection longer hands the next request a socket
//! the origin is closing, and that request fails. hyper-util's pool has one idle timeout for
//! every origin, so the per-connection one is kept here: once a response has been read to its
//! end and no new request written, the stream waits a second less than the origin's timeout
//! and then reports end-of-file, and hyper drops the connection from the pool.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::spelling::SpellingStream;
use crate::body::{BoxError, ProxyBody};
use crate::http1::HeaderCase;

/// What one connection knows of its origin's keep-alive, shared by the stream and the
/// responses it carries (hyper-util copies `Connected::extra` into every response).
#[derive(Debug, Default)]
pub(super) struct OriginKeepAlive {
    /// The origin's `timeout=`, in seconds; 0 when it did not say.
    timeout: AtomicU64,
    /// Milliseconds after `epoch()` when the last response ended, plus one; 0 while a
    /// request is in flight.
    idle_since: AtomicU64,
    /// The stream's reader, woken when the connection turns idle so it arms its timer.
    reader: AtomicWaker,
    /// Responses received on the connection so far.
    responses: AtomicU64,
    /// Writes so far: a response's end marks the connection idle only if no request was
    /// written after that response arrived (hyper may hand the connection on before the
    /// response's last bytes are read by whoever reads them).
    writes: AtomicU64,
    /// How the latest response head spelled its names (`spelling.rs`), until it is taken.
    spelling: std::sync::Mutex<Option<Arc<HeaderCase>>>,
}

/// The zero of `idle_since`: a monotonic instant early in the process.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl OriginKeepAlive {
    pub(super) fn note_spelling(&self, case: HeaderCase) {
        let case = (!case.is_empty()).then(|| Arc::new(case));
        *self.spelling.lock().unwrap_or_else(|p| p.into_inner()) = case;
    }

    /// The spelling of the response that just arrived, if it had names to keep.
    pub(super) fn take_spelling(&self) -> Option<Arc<HeaderCase>> {
        self.spelling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// A response arrived on the connection: counts it and takes `timeout=N` from its
    /// `Keep-Alive` field, if it has one.
    pub(super) fn answered(&self, headers: &HeaderMap) {
        self.responses.fetch_add(1, Ordering::Relaxed);
        let timeout = headers
            .get_all("keep-alive")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .find_map(|parameter| {
                let (name, value) = parameter.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("timeout")
                    .then(|| value.trim().parse::<u64>().ok())?
            });
        if let Some(seconds) = timeout {
            // A day at most: beyond that the pool's own idle timeout has long acted.
            self.timeout.store(seconds.min(86_400), Ordering::Relaxed);
        }
    }

    /// `body`, marking the connection idle once it has been read to its end.
    pub(super) fn watch(self: Arc<Self>, body: ProxyBody) -> ProxyBody {
        let writes = self.writes.load(Ordering::Acquire);
        if body.is_end_stream() {
            self.turn_idle(writes);
            return body;
        }
        crate::body::stream(IdleWhenDone {
            body,
            keep_alive: Some(self),
            writes,
        })
    }

    /// Whether the connection carried a response before: a pooled one, reused.
    pub(super) fn reused(&self) -> bool {
        self.responses.load(Ordering::Relaxed) > 0
    }

    /// The response that arrived after `writes` writes has ended: idle from now, unless a
    /// request has been written since (the connection already carries the next exchange).
    fn turn_idle(&self, writes: u64) {
        let since = epoch().elapsed().as_millis() as u64 + 1;
        self.idle_since.store(since, Ordering::Release);
        if self.writes.load(Ordering::Acquire) != writes {
            self.idle_since.store(0, Ordering::Release);
            return;
        }
        self.reader.wake();
    }

    fn wrote(&self) {
        self.idle_since.store(0, Ordering::Release);
        self.writes.fetch_add(1, Ordering::AcqRel);
    }

    /// When the connection must be given up, if it is idle and the origin named a timeout.
    fn deadline(&self) -> Option<Instant> {
        let timeout = self.timeout.load(Ordering::Relaxed);
        let since = self.idle_since.load(Ordering::Acquire);
        if timeout == 0 || since == 0 {
            return None;
        }
        // A second early: the origin's clock started when it sent the response.
        Some(epoch() + Duration::from_millis(since - 1) + Duration::from_secs(timeout - 1))
    }
}

/// A connection to an origin that ends itself when the origin's keep-alive timeout is near.
pub(super) struct ExpiringStream {
    io: TokioIo<SpellingStream>,
    keep_alive: Arc<OriginKeepAlive>,
    timer: Option<Pin<Box<Sleep>>>,
    /// A connection to the parent proxy, not the origin: requests on it keep their
    /// absolute form.
    to_parent: bool,
}

impl ExpiringStream {
    /// `stream`, whose response heads' spelling is noted when `plain` (not under TLS).
    pub(super) fn new(stream: TcpStream, plain: bool) -> ExpiringStream {
        ExpiringStream::with_parent(stream, plain, false)
    }

    /// Like `new`, for a plain connection to the parent proxy when `to_parent`.
    pub(super) fn with_parent(stream: TcpStream, plain: bool, to_parent: bool) -> ExpiringStream {
        let keep_alive = Arc::<OriginKeepAlive>::default();
        let stream = SpellingStream::new(stream, plain, Arc::clone(&keep_alive));
        ExpiringStream {
            io: TokioIo::new(stream),
            keep_alive,
            timer: None,
            to_parent,
        }
    }

    /// Whether the idle connection's time is up; arms a wake-up for that moment otherwise.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.keep_alive.reader.register(cx.waker());
        let Some(deadline) = self.keep_alive.deadline() else {
            return false;
        };
        if Instant::now() >= deadline {
            return true;
        }
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

impl Read for ExpiringStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            // Nothing to read while idle: end the connection if its time is up (end of file,
            // as if the origin had closed it, which it is about to).
            Poll::Pending if this.expired(cx) => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

impl Write for ExpiringStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.keep_alive.wrote();
        Pin::new(&mut this.io).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.keep_alive.wrote();
        Pin::new(&mut this.io).poll_write_vectored(cx, data)
    }
}

impl Connection for ExpiringStream {
    fn connected(&self) -> Connected {
        self.io
            .inner()
            .stream()
            .connected()
            .proxy(self.to_parent)
            .extra(Arc::clone(&self.keep_alive))
    }
}

/// A response body that marks its connection idle when it ends.
struct IdleWhenDone {
    body: ProxyBody,
    keep_alive: Option<Arc<OriginKeepAlive>>,
    /// The connection's writes when the response arrived.
    writes: u64,
}

impl Body for IdleWhenDone {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if (matches!(polled, Poll::Ready(None)) || self.body.is_end_stream())
            && let Some(keep_alive) = self.keep_alive.take()
        {
            keep_alive.turn_idle(self.writes);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
