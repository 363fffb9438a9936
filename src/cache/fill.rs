//! Streaming fill: a miss's body goes to the client and, chunk by chunk, to the storage tiers.
//! The client never waits for the whole object; the entry becomes visible only after the last
//! byte is durably written and checksummed. A body that ends early, fails, or outgrows the size
//! limit is discarded, never stored truncated.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;
use tokio_util::task::TaskTracker;

use super::storage::BodyId;
use super::storage::{BodyWriter, Storage};
use crate::body::{BoxError, ProxyBody};

/// Called with a stored body's length and checksum, or `None` when the fill was discarded.
pub(super) type OnFilled = Box<dyn FnOnce(Option<(u64, [u8; 32])>) + Send>;

/// Where the chunks go, and what to do once they are all stored.
pub(super) struct FillJob {
    /// Tiers to write to, most durable first: the entry is stored only if the first one
    /// finishes.
    pub tiers: Vec<Arc<dyn Storage>>,
    pub body: BodyId,
    pub expected_len: Option<u64>,
    pub max_len: u64,
    /// Called on the writer thread with the body's length and checksum once every writer has
    /// finished; `None` when the fill was discarded.
    pub on_done: OnFilled,
    /// Counts storage errors (disk full, cache directory gone or read-only), so metrics can
    /// say hoard is proxying uncached.
    pub failures: Arc<std::sync::atomic::AtomicU64>,
}

/// Starts the writer for `job` on the blocking pool and returns the body to give the client.
pub(super) fn tee(tasks: &TaskTracker, body: ProxyBody, job: FillJob) -> ProxyBody {
    // A few chunks of slack; beyond that, a slow disk slows the client rather than growing memory.
    let (sender, receiver) = mpsc::channel(8);
    let ended = Arc::new(AtomicBool::new(false));
    let writer_ended = ended.clone();
    tasks.spawn_blocking(move || write_body(receiver, &writer_ended, job));
    crate::body::stream(TeeBody {
        inner: body,
        sender: Some(PollSender::new(sender)),
        ended,
    })
}

/// Runs on the blocking pool. The channel closing with `ended` set means the origin's body
/// ended normally; closing without it means the fill is abandoned.
fn write_body(mut receiver: mpsc::Receiver<Bytes>, ended: &AtomicBool, job: FillJob) {
    let FillJob {
        tiers,
        body,
        expected_len,
        max_len,
        on_done,
        failures,
    } = job;
    let failed = || failures.fetch_add(1, Ordering::Relaxed);
    let mut writers: Vec<Box<dyn BodyWriter>> = Vec::with_capacity(tiers.len());
    for (i, tier) in tiers.iter().enumerate() {
        match tier.writer(body, expected_len) {
            Ok(Some(writer)) => writers.push(writer),
            Ok(None) if i > 0 => {}
            Ok(None) => return on_done(None),
            Err(e) => {
                tracing::warn!(error = %e, "cache: cannot store a body, passing it through uncached");
                failed();
                if i == 0 {
                    return on_done(None);
                }
            }
        }
    }
    let mut hasher = blake3::Hasher::new();
    let mut len = 0u64;
    let complete = loop {
        match receiver.blocking_recv() {
            Some(chunk) => {
                len += chunk.len() as u64;
                if len > max_len {
                    break false;
                }
                hasher.update(&chunk);
                let mut kept = Vec::with_capacity(writers.len());
                let mut durable_failed = false;
                for (i, mut writer) in writers.drain(..).enumerate() {
                    match writer.write(&chunk) {
                        Ok(true) => kept.push(writer),
                        Ok(false) => durable_failed |= i == 0,
                        Err(e) => {
                            tracing::warn!(error = %e, "cache: write failed, not storing this response");
                            failed();
                            durable_failed |= i == 0;
                        }
                    }
                }
                writers = kept;
                if durable_failed {
                    break false;
                }
            }
            None => break ended.load(Ordering::Acquire),
        }
    };
    if !complete {
        drop(writers);
        on_done(None);
        return;
    }
    // Every tier must finish; the first one (disk) is the one that makes the entry durable.
    // It finishes last: once it has, the entry is always published or its body removed.
    for writer in writers.into_iter().rev() {
        if let Err(e) = writer.finish() {
            tracing::warn!(error = %e, "cache: storing failed, not caching this response");
            failed();
            on_done(None);
            return;
        }
    }
    on_done(Some((len, *hasher.finalize().as_bytes())));
}

/// Passes frames through and copies each data chunk (a reference-count increment) to the
/// writer. If the writer goes away the client's stream continues uncached.
struct TeeBody {
    inner: ProxyBody,
    sender: Option<PollSender<Bytes>>,
    ended: Arc<AtomicBool>,
}

impl TeeBody {
    /// Tells the writer the body is complete and lets it finish.
    fn end(&mut self) {
        self.ended.store(true, Ordering::Release);
        self.sender = None;
    }
}

impl Body for TeeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(sender) = &mut this.sender
            && ready!(sender.poll_reserve(cx)).is_err()
        {
            this.sender = None;
        }
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(sender) = &mut this.sender {
            match &frame {
                Some(Ok(frame)) => match frame.data_ref() {
                    Some(data) => {
                        if sender.send_item(data.clone()).is_err() {
                            this.sender = None;
                        }
                    }
                    None => {
                        sender.abort_send();
                    }
                },
                // Dropping the sender without `end` discards the fill.
                Some(Err(_)) => this.sender = None,
                None => this.end(),
            }
            // hyper stops polling once a body says it has ended, so the last data frame is
            // where a Content-Length body completes.
            if this.sender.is_some() && this.inner.is_end_stream() {
                this.end();
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TeeBody {
    fn drop(&mut self) {
        // An empty body may never be polled at all; it is complete nonetheless.
        if self.sender.is_some() && self.inner.is_end_stream() {
            self.end();
        }
    }
}
