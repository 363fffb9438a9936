//! Console and log output: the access-log line per request (stderr or `--access-log FILE`, in
//! Squid, combined or JSON format) and, with `-v`, a step-by-step trace of request and
//! response heads on both sides (never bodies).
//!
//! Logging observes; it must not change a request or a response.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use tracing_subscriber::EnvFilter;

use crate::body::{BoxError, ProxyBody};
use crate::cache::CacheOutcome;
use crate::exchange::Exchange;
use crate::metrics::Metrics;

/// Starts the stderr subscriber. `RUST_LOG` overrides the level chosen by `-v`.
pub fn init(verbose: u8) {
    let default = match verbose {
        0 => "hoard=info",
        1 => "hoard=debug",
        _ => "hoard=trace,hyper=debug,hyper_util=debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only for a person at a terminal: a file, a pipe or journald gets plain text, and
    // NO_COLOR (https://no-color.org: set and not empty) turns it off everywhere.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
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

/// The access log's line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Squid's native format: time, duration, client, result/status, bytes, method, URL,
    /// hierarchy/origin.
    Squid,
    /// Apache/nginx combined, followed by the cache outcome, duration and upstream status.
    Combined,
    /// One JSON object per line.
    Json,
}

/// `--access-log none`: no access log at all (Squid's spelling).
pub const NO_ACCESS_LOG: &str = "none";

/// Where access-log lines go: stderr, a file reopened on SIGUSR1 (for logrotate), or nowhere
/// (`none`); SIGHUP may change the target and the format.
///
/// Lines are formatted outside the lock and appended to a 64 KiB buffer under it: no system
/// call on the request path. The buffer is written when full and by `flush`, which the
/// server calls every `FLUSH_EVERY` and at shutdown (Squid's buffered logs work the same way).
pub struct AccessLog {
    /// The format, or `OFF`: read once per request, so an unused log costs nothing.
    format: AtomicU8,
    state: Mutex<LogState>,
}

/// How long a line may wait in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

const OFF: u8 = u8::MAX;

struct LogState {
    /// The file, reopened on SIGUSR1; `None` for stderr.
    path: Option<PathBuf>,
    /// `None` when the log is off. A replaced writer writes out its buffer as it is dropped.
    out: Option<Box<dyn Write + Send>>,
}

impl AccessLog {
    pub fn open(path: Option<PathBuf>, format: LogFormat) -> std::io::Result<AccessLog> {
        let log = AccessLog {
            format: AtomicU8::new(OFF),
            state: Mutex::new(LogState {
                path: None,
                out: None,
            }),
        };
        log.reconfigure(path, format)?;
        Ok(log)
    }

    /// Where lines go: stderr for no path, nowhere (`None`) for `none`, else that file.
    fn target(path: Option<&std::path::Path>) -> std::io::Result<Option<Box<dyn Write + Send>>> {
        const BUFFER: usize = 64 * 1024;
        Ok(match path {
            Some(path) if path.as_os_str() == NO_ACCESS_LOG => None,
            Some(path) => Some(Box::new(BufWriter::with_capacity(
                BUFFER,
                OpenOptions::new().create(true).append(true).open(path)?,
            ))),
            None => Some(Box::new(BufWriter::with_capacity(
                BUFFER,
                std::io::stderr(),
            ))),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens the file again (after logrotate moved it); a no-op for stderr.
    pub fn reopen(&self) -> std::io::Result<()> {
        let path = self.state().path.clone();
        if path.is_some() {
            let fresh = Self::target(path.as_deref())?;
            self.state().out = fresh;
        }
        Ok(())
    }

    /// Switches to another file (or stderr, or none) and format; on error the old ones stay.
    pub fn reconfigure(&self, path: Option<PathBuf>, format: LogFormat) -> std::io::Result<()> {
        let out = Self::target(path.as_deref())?;
        let code = if out.is_some() { format as u8 } else { OFF };
        *self.state() = LogState { path, out };
        self.format.store(code, Ordering::Relaxed);
        Ok(())
    }

    /// Writes out what the buffer holds.
    pub fn flush(&self) {
        if let Some(out) = &mut self.state().out {
            let _ = out.flush();
        }
    }

    fn write(&self, record: &Exchange, bytes: u64, complete: bool, elapsed: Duration) {
        let line = match self.format.load(Ordering::Relaxed) {
            OFF => return,
            f if f == LogFormat::Squid as u8 => squid_line(record, bytes, complete, elapsed),
            f if f == LogFormat::Combined as u8 => combined_line(record, bytes, complete, elapsed),
            _ => json_line(record, bytes, complete, elapsed),
        };
        // A full disk or closed stderr must not fail the request; the line is lost.
        if let Some(out) = &mut self.state().out {
            let _ = out.write_all(line.as_bytes());
        }
    }
}

/// A finished request's record and where it is counted and written.
pub struct AccessRecord {
    pub exchange: Exchange,
    pub metrics: Arc<Metrics>,
    pub log: Arc<AccessLog>,
}

impl AccessRecord {
    fn emit(self, bytes: u64, complete: bool) {
        let elapsed = self.exchange.started.elapsed();
        self.metrics.record_request(&self.exchange, bytes, elapsed);
        self.log.write(&self.exchange, bytes, complete, elapsed);
    }

    /// Writes a tunnel's line when it has closed: its bytes each way, its whole duration.
    /// `carried` is `None` when the tunnel ended without reporting (the client left first).
    pub fn tunnel_closed(mut self, carried: Option<(u64, u64)>, complete: bool) {
        let (up, down) = carried.unwrap_or_default();
        self.exchange.tunnel = Some((up, down));
        self.emit(up + down, complete && carried.is_some());
    }
}

/// ` up=12 down=34` for a tunnel, nothing otherwise.
fn tunnel_text(record: &Exchange) -> String {
    record
        .tunnel
        .map_or_else(String::new, |(up, down)| format!(" up={up} down={down}"))
}

/// Squid's result code for the cache outcome.
fn squid_result(record: &Exchange) -> &'static str {
    match record.cache {
        Some(CacheOutcome::Hit) => "TCP_HIT",
        Some(CacheOutcome::Stale) => "TCP_STALE_HIT",
        Some(CacheOutcome::Revalidated) => "TCP_REFRESH_UNMODIFIED",
        Some(CacheOutcome::Refreshed) => "TCP_REFRESH_MODIFIED",
        Some(CacheOutcome::NotCached) => "TCP_OFFLINE_MISS",
        Some(_) => "TCP_MISS",
        None if record.method == Method::CONNECT && record.status.is_success() => "TCP_TUNNEL",
        None if record.status == StatusCode::FORBIDDEN => "TCP_DENIED",
        None => "NONE",
    }
}

fn header_text(value: Option<&http::HeaderValue>) -> std::borrow::Cow<'_, str> {
    value.map_or("-".into(), |v| String::from_utf8_lossy(v.as_bytes()))
}

fn upstream_text(record: &Exchange) -> String {
    record
        .upstream_status
        .map_or_else(|| "-".to_owned(), |s| s.to_string())
}

fn aborted(complete: bool) -> &'static str {
    if complete { "" } else { " aborted" }
}

/// `1732595544.123     12 127.0.0.1 TCP_MISS/200 1234 GET http://h/x - HIER_DIRECT/h -`
fn squid_line(record: &Exchange, bytes: u64, complete: bool, elapsed: Duration) -> String {
    let since_epoch = record
        .started_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // Integer formatting: `{:.3}` of an f64 costs more than the rest of the line.
    let time = format_args!(
        "{}.{:03}",
        since_epoch.as_secs(),
        since_epoch.subsec_millis()
    );
    // Squid names a peer picked by hashing the URL `CARP/peer`.
    let hierarchy = match (record.upstream_status, record.uri.authority()) {
        _ if record.peer.is_some() => format!(
            "CARP/{}",
            record
                .peer
                .as_deref()
                .unwrap_or("-")
                .trim_start_matches("http://")
        ),
        (Some(_), Some(authority)) => format!("HIER_DIRECT/{}", authority.host()),
        (Some(_), None) => "HIER_DIRECT/-".to_owned(),
        (None, _) => "HIER_NONE/-".to_owned(),
    };
    format!(
        "{time} {:>6} {} {}/{} {bytes} {} {} - {hierarchy} -{}{}\n",
        elapsed.as_millis(),
        record.client.ip(),
        squid_result(record),
        record.status.as_u16(),
        record.method,
        record.uri,
        tunnel_text(record),
        aborted(complete)
    )
}

/// Apache's combined format, then the cache outcome, the duration in ms and the upstream
/// status.
fn combined_line(record: &Exchange, bytes: u64, complete: bool, elapsed: Duration) -> String {
    // "Thu, 26 Nov 2026 04:52:24 GMT" → "26/Nov/2026:04:52:24 +0000"
    let date = httpdate::fmt_http_date(record.started_at);
    let parts: Vec<&str> = date.split(' ').collect();
    let time = match parts.as_slice() {
        [_, day, month, year, clock, _] => format!("{day}/{month}/{year}:{clock} +0000"),
        _ => date.clone(),
    };
    format!(
        "{} - - [{time}] \"{} {} {:?}\" {} {bytes} \"{}\" \"{}\" {} {:.1} {}{}{}\n",
        record.client.ip(),
        record.method,
        record.uri,
        record.version,
        record.status.as_u16(),
        header_text(record.referer.as_ref()),
        header_text(record.user_agent.as_ref()),
        record.cache.map_or("NONE", CacheOutcome::as_str),
        elapsed.as_secs_f64() * 1000.0,
        upstream_text(record),
        tunnel_text(record),
        aborted(complete)
    )
}

fn json_line(record: &Exchange, bytes: u64, complete: bool, elapsed: Duration) -> String {
    let mut line = serde_json::json!({
        "time": httpdate::fmt_http_date(record.started_at),
        "client": record.client.to_string(),
        "method": record.method.as_str(),
        "url": record.uri.to_string(),
        "version": format!("{:?}", record.version),
        "status": record.status.as_u16(),
        "bytes": bytes,
        "duration_ms": elapsed.as_secs_f64() * 1000.0,
        "cache": record.cache.map(CacheOutcome::as_str),
        "upstream_status": record.upstream_status,
        "complete": complete,
        "referer": record.referer.as_ref().and_then(|v| v.to_str().ok()),
        "user_agent": record.user_agent.as_ref().and_then(|v| v.to_str().ok()),
        "bytes_up": record.tunnel.map(|(up, _)| up),
        "bytes_down": record.tunnel.map(|(_, down)| down),
    })
    .to_string();
    line.push('\n');
    line
}

pin_project_lite::pin_project! {
    /// A response body that counts the bytes sent and writes the access-log line when the
    /// response is finished or dropped (a client that hangs up still gets its line).
    pub struct LoggedBody {
        #[pin]
        inner: ProxyBody,
        // Boxed: the response body is moved around several times per request, and the
        // record is a few hundred bytes.
        record: Option<Box<AccessRecord>>,
        bytes: u64,
        complete: bool,
        // Sent by the connection from its file: `complete` alone says whether all of it went.
        from_file: bool,
    }

    impl PinnedDrop for LoggedBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(record) = this.record.take() {
                let complete = *this.complete || (!*this.from_file && this.inner.is_end_stream());
                record.emit(*this.bytes, complete);
            }
        }
    }
}

impl LoggedBody {
    pub fn new(inner: ProxyBody, record: AccessRecord) -> Self {
        LoggedBody {
            inner,
            record: Some(Box::new(record)),
            bytes: 0,
            complete: false,
            from_file: false,
        }
    }

    /// A body whose request is logged elsewhere (a tunnel, when it closes).
    pub fn unlogged(inner: ProxyBody) -> Self {
        LoggedBody {
            inner,
            record: None,
            bytes: 0,
            complete: false,
            from_file: false,
        }
    }
}

impl crate::http1::FileBody for LoggedBody {
    fn file(&mut self) -> Option<crate::http1::FileRegion<'_>> {
        self.inner.file_region()
    }

    fn sent_from_file(&mut self, bytes: u64) {
        let complete = Some(bytes) == self.inner.size_hint().exact();
        self.inner.sent_from_file();
        self.bytes += bytes;
        self.complete = complete;
        self.from_file = true;
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
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(error = %e, "response body failed mid-stream")
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::RequestMode;

    #[test]
    fn access_log_none_is_off_and_creates_no_file() {
        let log = AccessLog::open(Some(PathBuf::from(NO_ACCESS_LOG)), LogFormat::Json).unwrap();
        assert_eq!(log.format.load(Ordering::Relaxed), OFF);
        log.reopen().unwrap();
        assert!(!std::path::Path::new(NO_ACCESS_LOG).exists());
        let file = tempfile::NamedTempFile::new().unwrap();
        log.reconfigure(Some(file.path().to_owned()), LogFormat::Json)
            .unwrap();
        assert_eq!(
            log.format.load(Ordering::Relaxed),
            LogFormat::Json as u8,
            "a reload can turn it back on"
        );
    }

    fn record(outcome: Option<CacheOutcome>, upstream_status: Option<u16>) -> Exchange {
        Exchange {
            client: "192.0.2.9:5555".parse().unwrap(),
            method: Method::GET,
            uri: "http://example.com/a?b".parse().unwrap(),
            version: http::Version::HTTP_11,
            status: StatusCode::OK,
            cache: outcome,
            upstream_status,
            mode: RequestMode::Forward,
            referer: Some(http::HeaderValue::from_static("http://ref.example/")),
            user_agent: Some(http::HeaderValue::from_static("curl/8")),
            started: std::time::Instant::now(),
            started_at: UNIX_EPOCH + Duration::from_millis(784_111_777_250),
            tunnel: None,
            peer: None,
        }
    }

    #[test]
    fn squid_lines_name_the_fleet_member_that_answered() {
        let mut via_peer = record(Some(CacheOutcome::Peer), Some(200));
        via_peer.peer = Some("http://10.0.0.6:8080".into());
        let line = squid_line(&via_peer, 10, true, Duration::from_millis(3));
        assert!(line.contains(" TCP_MISS/200 "), "{line}");
        assert!(line.ends_with(" CARP/10.0.0.6:8080 -\n"), "{line}");
    }

    #[test]
    fn squid_lines_carry_result_code_and_hierarchy() {
        let hit = squid_line(
            &record(Some(CacheOutcome::Hit), None),
            10,
            true,
            Duration::from_millis(3),
        );
        assert_eq!(
            hit,
            "784111777.250      3 192.0.2.9 TCP_HIT/200 10 GET http://example.com/a?b - HIER_NONE/- -\n"
        );
        let miss = squid_line(
            &record(Some(CacheOutcome::UriMiss), Some(200)),
            10,
            false,
            Duration::ZERO,
        );
        assert!(miss.contains(" TCP_MISS/200 "), "{miss}");
        assert!(
            miss.ends_with(" HIER_DIRECT/example.com - aborted\n"),
            "{miss}"
        );
    }

    #[test]
    fn combined_lines_follow_apache_then_add_cache_fields() {
        let line = combined_line(
            &record(Some(CacheOutcome::Revalidated), Some(304)),
            10,
            true,
            Duration::from_millis(2),
        );
        assert_eq!(
            line,
            "192.0.2.9 - - [06/Nov/1994:08:49:37 +0000] \"GET http://example.com/a?b HTTP/1.1\" 200 10 \"http://ref.example/\" \"curl/8\" REVALIDATED 2.0 304\n"
        );
    }
}
