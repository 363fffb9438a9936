//! hoard's client-facing HTTP/2, on TLS listeners when the client picks `h2` by ALPN:
//! hyper's HTTP/2 server under hoard's limits (concurrent streams, header list size, reset
//! and error-reset budgets, keep-alive pings), each request made to read like its HTTP/1.1
//! counterpart and handed to the same `http1::Service`.
//!
//! The floods HTTP/2 is known for are bounded by the h2 crate under these settings: rapid
//! reset (CVE-2023-44487) by the pending and error reset budgets, CONTINUATION floods by the
//! header list limit, and PING/SETTINGS floods because h2 stops reading while their
//! acknowledgements wait to be written. tests/integration/http2.rs checks each.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::header::HOST;
use http::{HeaderValue, Method, Request, Uri};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;

use crate::http1::{OnUpgrade, RequestBody, Service, Stream, Upgraded};

/// A connection's limits.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_streams: u32,
    /// The largest header list, decoded (SETTINGS_MAX_HEADER_LIST_SIZE).
    pub max_header_list: u32,
    /// Pings an idle connection to find dead peers; closes one that does not answer.
    pub keep_alive: Duration,
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
    let handler = hyper::service::service_fn(move |request: Request<Incoming>| {
        let answer = service.call(adapt(request));
        async move { Ok::<_, Infallible>(answer.await) }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_streams)
        .max_header_list_size(settings.max_header_list)
        .max_pending_accept_reset_streams(PENDING_RESETS)
        .max_local_error_reset_streams(ERROR_RESETS)
        .keep_alive_interval(settings.keep_alive)
        .keep_alive_timeout(Duration::from_secs(20));
    let connection = builder.serve_connection(TokioIo::new(stream), handler);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = stop.wait_for(|stopping| *stopping) => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// An HTTP/2 request as the proxy reads HTTP/1.1 ones. `:authority` becomes `Host`, and the
/// target is origin-form, except when `:scheme` is `http`: over TLS that can only be a
/// client using hoard as its proxy, so it stays absolute-form like HTTP/1.1's proxy requests.
fn adapt(mut request: Request<Incoming>) -> Request<RequestBody> {
    if request.method() == Method::CONNECT {
        // A CONNECT tunnel is this one stream: hand it over as HTTP/1.1 hands its socket.
        let upgrading = hyper::upgrade::on(&mut request);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        request.extensions_mut().insert(OnUpgrade::new(receiver));
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrading.await {
                let stream = Stream::new(TokioIo::new(upgraded));
                let _ = sender.send(Upgraded::new(bytes::Bytes::new(), stream));
            }
        });
    }
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
