//! Console output: the access-log line per request (always on, stderr) and, with `-v`, the
//! seed's step-by-step trace of request and response heads on both sides (never bodies).
//!
//! Logging observes; it must not change a request or a response.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Frame, SizeHint};
use tracing_subscriber::EnvFilter;

use crate::body::{BoxError, ProxyBody};
use crate::cache::CacheOutcome;
use crate::metrics::{Metrics, RequestMode};

/// Starts the stderr subscriber. `RUST_LOG` overrides the level chosen by `-v`.
pub fn init(verbose: u8) {
    let default = match verbose {
        0 => "hoard=info",
        1 => "hoard=debug",
        _ => "hoard=trace,hyper=debug,hyper_util=debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Logs a request head under `step` when the verbose trace is on.
pub fn trace_request<B>(step: &str, request: &Request<B>) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        let start = format!(
            "{} {} {:?}",
            request.method(),
            request.uri(),
            request.version()
        );
        tracing::debug!("{step}:\n{}", head_text(&start, request.headers()));
    }
}

/// Logs a response head under `step` when the verbose trace is on.
pub fn trace_response<B>(step: &str, response: &Response<B>) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        let start = format!("{:?} {}", response.version(), response.status());
        tracing::debug!("{step}:\n{}", head_text(&start, response.headers()));
    }
}

fn head_text(start_line: &str, headers: &HeaderMap) -> String {
    let mut text = format!("  {start_line}\n");
    for (name, value) in headers {
        let _ = writeln!(
            text,
            "  {name}: {}",
            String::from_utf8_lossy(value.as_bytes())
        );
    }
    text
}

/// What the access-log line says about one request, filled in as the request goes.
pub struct AccessRecord {
    pub client: SocketAddr,
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub status: StatusCode,
    /// What the cache did; `None` for requests it never saw (CONNECT, errors).
    pub outcome: Option<CacheOutcome>,
    pub mode: RequestMode,
    pub started: Instant,
    /// Where the finished request is counted.
    pub metrics: std::sync::Arc<Metrics>,
}

impl AccessRecord {
    fn emit(self, bytes: u64, complete: bool) {
        let elapsed = self.started.elapsed();
        self.metrics.record_request(
            self.mode,
            &self.method,
            self.status.as_u16(),
            self.outcome,
            bytes,
            elapsed,
        );
        tracing::info!(
            "{} \"{} {} {:?}\" {} {} {:.1}ms {}{}",
            self.client,
            self.method,
            self.uri,
            self.version,
            self.status.as_u16(),
            bytes,
            elapsed.as_secs_f64() * 1000.0,
            self.outcome.map_or("NONE", CacheOutcome::as_str),
            if complete { "" } else { " aborted" }
        );
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts the bytes sent and writes the access-log line when the
    /// response is finished or dropped (a client that hangs up still gets its line).
    pub struct LoggedBody {
        #[pin]
        inner: ProxyBody,
        record: Option<AccessRecord>,
        bytes: u64,
        complete: bool,
    }

    impl PinnedDrop for LoggedBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(record) = this.record.take() {
                let complete = *this.complete || this.inner.is_end_stream();
                record.emit(*this.bytes, complete);
            }
        }
    }
}

impl LoggedBody {
    pub fn new(inner: ProxyBody, record: AccessRecord) -> Self {
        LoggedBody {
            inner,
            record: Some(record),
            bytes: 0,
            complete: false,
        }
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => *this.complete = true,
            Poll::Ready(Some(Err(e))) => tracing::warn!("response body failed mid-stream: {e}"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
