//! hoard's client-facing HTTP/2, on TLS listeners when the client picks `h2` by ALPN:
//! hyper's HTTP/2 server under hoard's limits (concurrent streams, header list size, reset
//! and error-reset budgets, keep-alive pings), each request made to read like its HTTP/1.1
//! counterpart and handed to the same `http1::Service`. CONNECT is HTTP/1.1's only (the proxy
//! refuses it here: a tunnel holds its connection's `--max-connections` slot, and one HTTP/2
//! connection could otherwise open a hundred on one slot). A connection with no request for
//! `idle` is closed, as HTTP/1.1's is after `--client-header-timeout`.
//!
//! The floods HTTP/2 is known for are bounded by the h2 crate under these settings: rapid
//! reset (CVE-2023-44487) by the pending and error reset budgets, CONTINUATION floods by the
//! header list limit, and PING/SETTINGS floods because h2 stops reading while their
//! acknowledgements wait to be written. tests/integration/http2.rs checks each.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::header::HOST;
use http::{HeaderValue, Method, Request, Uri};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;

use crate::http1::{RequestBody, Service, Stream};

/// A connection's limits.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_streams: u32,
    /// The largest header list, decoded (SETTINGS_MAX_HEADER_LIST_SIZE).
    pub max_header_list: u32,
    /// A connection with no stream open for this long is closed (GOAWAY); it is also how
    /// often an idle connection is pinged to find a dead peer.
    pub idle: Duration,
}

/// When a connection's last stream ended, and how many are open.
#[derive(Default)]
struct Activity {
    open: AtomicUsize,
    /// Milliseconds from `since` to the last stream's end.
    last: AtomicU64,
}

/// One stream being answered; when it ends, however it ends, the connection's activity says
/// so.
struct OpenStream {
    activity: Arc<Activity>,
    since: Instant,
}

impl OpenStream {
    fn new(activity: Arc<Activity>, since: Instant) -> OpenStream {
        activity.open.fetch_add(1, Ordering::Relaxed);
        OpenStream { activity, since }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let at = self.since.elapsed().as_millis() as u64;
        self.activity.last.store(at, Ordering::Relaxed);
        self.activity.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Streams the client reset before hoard answered, queued at once; more is a rapid-reset
/// attack and ends the connection (hyper's default is 20).
const PENDING_RESETS: usize = 20;
/// Streams hoard may reset for protocol errors before it closes the connection instead.
const ERROR_RESETS: usize = 256;

/// Serves `stream` with HTTP/2 until the client closes it or `stop` turns true (then with a
/// GOAWAY, letting streams in flight finish).
pub async fn serve<S>(
    stream: Stream,
    settings: Settings,
    service: Arc<S>,
    mut stop: watch::Receiver<bool>,
) where
    S: Service + Send + Sync + 'static,
    <S::Body as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let since = Instant::now();
    let activity = Arc::new(Activity::default());
    let seen = activity.clone();
    let handler = hyper::service::service_fn(move |request: Request<Incoming>| {
        // Counted until answered or dropped (a stream the client reset is dropped unanswered).
        let stream = OpenStream::new(seen.clone(), since);
        let answer = service.call(adapt(request));
        async move {
            let response = answer.await;
            drop(stream);
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_streams)
        .max_header_list_size(settings.max_header_list)
        .max_pending_accept_reset_streams(PENDING_RESETS)
        .max_local_error_reset_streams(ERROR_RESETS)
        .keep_alive_interval(settings.idle)
        .keep_alive_timeout(Duration::from_secs(20));
    let connection = builder.serve_connection(TokioIo::new(stream), handler);
    tokio::pin!(connection);
    let mut idle_until = since + settings.idle;
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = stop.wait_for(|stopping| *stopping) => break,
            () = tokio::time::sleep_until(idle_until.into()) => {
                let last = since + Duration::from_millis(activity.last.load(Ordering::Relaxed));
                if activity.open.load(Ordering::Relaxed) == 0 && last + settings.idle <= Instant::now() {
                    break;
                }
                idle_until = last.max(Instant::now()) + settings.idle;
            }
        }
    }
    // Streams in flight finish; no new ones are taken.
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// An HTTP/2 request as the proxy reads HTTP/1.1 ones. `:authority` becomes `Host`, and the
/// target is origin-form, except when `:scheme` is `http`: over TLS that can only be a
/// client using hoard as its proxy, so it stays absolute-form like HTTP/1.1's proxy requests.
fn adapt(request: Request<Incoming>) -> Request<RequestBody> {
    let (mut parts, body) = request.into_parts();
    if parts.method != Method::CONNECT && parts.uri.scheme_str() != Some("http") {
        if let Some(authority) = parts.uri.authority()
            && !parts.headers.contains_key(HOST)
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            parts.headers.insert(HOST, host);
        }
        if let Some(path) = parts.uri.path_and_query()
            && let Ok(origin_form) = Uri::builder().path_and_query(path.clone()).build()
        {
            parts.uri = origin_form;
        }
    }
    Request::from_parts(parts, RequestBody::from_stream(body))
}
