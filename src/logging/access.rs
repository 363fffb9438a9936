//! Where access-log lines go (`AccessLog`: stderr, a file reopened for logrotate, or
//! nowhere) and when they are written (`LoggedBody`: when the response body has gone, or the
//! client has left; a tunnel's when it closes).
//!
//! Logging observes; it must not change a request or a response.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::line::{Line, LogFormat};
use crate::body::{BoxError, ProxyBody};
use crate::exchange::Exchange;
use crate::metrics::Metrics;

/// `--access-log none`: no access log at all (Squid's spelling).
pub const NO_ACCESS_LOG: &str = "none";

/// Where access-log lines go: stderr, a file reopened on SIGUSR1 (for logrotate), or nowhere
/// (`none`); SIGHUP may change the target and the format.
///
/// Lines are formatted outside the lock and appended to a 64 KiB buffer under it: no system
/// call on the request path. The buffer is written when full and by `flush`, which the
/// server calls every `FLUSH_EVERY` and at shutdown (Squid's buffered logs work the same way).
pub struct AccessLog {
    /// The format, or `None` when the log is off: read once per request without a lock, so
    /// an unused log costs nothing.
    format: ArcSwapOption<LogFormat>,
    state: Mutex<LogState>,
}

/// How long a line may wait in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

struct LogState {
    /// The file, reopened on SIGUSR1; `None` for stderr.
    path: Option<PathBuf>,
    /// `None` when the log is off. A replaced writer writes out its buffer as it is dropped.
    out: Option<Box<dyn Write + Send>>,
}

impl AccessLog {
    pub fn open(path: Option<PathBuf>, format: LogFormat) -> std::io::Result<AccessLog> {
        let log = AccessLog {
            format: ArcSwapOption::empty(),
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
        let format = out.is_some().then(|| Arc::new(format));
        *self.state() = LogState { path, out };
        self.format.store(format);
        Ok(())
    }

    /// Writes out what the buffer holds.
    pub fn flush(&self) {
        if let Some(out) = &mut self.state().out {
            let _ = out.flush();
        }
    }

    fn write(&self, line: &Line<'_>) {
        let Some(format) = &*self.format.load() else {
            return;
        };
        let line = format.line(line);
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
        self.log.write(&Line {
            record: &self.exchange,
            bytes,
            complete,
            elapsed,
        });
    }

    /// Writes a tunnel's line when it has closed: its bytes each way, its whole duration.
    /// `carried` is `None` when the tunnel ended without reporting (the client left first).
    pub fn tunnel_closed(mut self, carried: Option<(u64, u64)>, complete: bool) {
        let (up, down) = carried.unwrap_or_default();
        self.exchange.tunnel = Some((up, down));
        self.emit(up + down, complete && carried.is_some());
    }
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

    #[test]
    fn access_log_none_is_off_and_creates_no_file() {
        let log = AccessLog::open(Some(PathBuf::from(NO_ACCESS_LOG)), LogFormat::Json).unwrap();
        assert!(log.format.load().is_none());
        log.reopen().unwrap();
        assert!(!std::path::Path::new(NO_ACCESS_LOG).exists());
        let file = tempfile::NamedTempFile::new().unwrap();
        log.reconfigure(Some(file.path().to_owned()), LogFormat::Json)
            .unwrap();
        assert_eq!(
            log.format.load().as_deref(),
            Some(&LogFormat::Json),
            "a reload can turn it back on"
        );
    }
}
