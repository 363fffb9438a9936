//! Streaming fill: a miss's body goes to the client and, chunk by chunk, to the storage tiers.
//! The client never waits for the whole object; the entry becomes visible only after the last
//! byte is durably written and checksummed. A body that ends early, fails, or outgrows the size
//! limit is discarded, never stored truncated.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio_util::sync::PollSender;
use tokio_util::task::TaskTracker;

use super::storage::BodyId;
use super::storage::{BodyWriter, Storage};
use crate::body::{BoxError, ProxyBody};

/// A stored body's length and checksum.
pub(super) type Filled = (u64, [u8; 32]);

/// Awaited with the stored body, or `None` when the fill was discarded.
pub(super) type OnFilled = Box<dyn FnOnce(Option<Filled>) -> BoxFuture<'static, ()> + Send>;

/// Where the chunks go, and what to do once they are all stored.
pub(super) struct FillJob {
    /// Tiers to write to, most durable first: the entry is stored only if the first one
    /// finishes.
    pub tiers: Vec<Arc<dyn Storage>>,
    pub body: BodyId,
    pub expected_len: Option<u64>,
    pub max_len: u64,
    /// Awaited once every writer has finished, with the body's length and checksum; `None`
    /// when the fill was discarded.
    pub on_done: OnFilled,
    /// Counts storage errors (disk full, cache directory gone or read-only), so metrics can
    /// say hoard is proxying uncached.
    pub failures: Arc<AtomicU64>,
    /// This fill's place among those in progress (`Cache::fills`), held until `on_done`
    /// has returned.
    pub permit: OwnedSemaphorePermit,
}

/// Starts the fill's task and returns the body to give the client.
///
/// The task holds no thread while it waits for the origin's chunks or for the index to
/// commit: only the writes themselves go to the blocking pool, a batch of chunks at a time.
/// A thread per fill would let a miss storm or a few hundred slow origins take the whole
/// blocking pool, queueing every other fill (and stalling its client) behind them.
pub(super) fn tee(tasks: &TaskTracker, body: ProxyBody, job: FillJob) -> ProxyBody {
    // A few chunks of slack; beyond that, a slow disk slows the client rather than growing memory.
    let (sender, receiver) = mpsc::channel(8);
    let ended = Arc::new(AtomicBool::new(false));
    let writer_ended = ended.clone();
    tasks.spawn(async move {
        let FillJob {
            tiers,
            body,
            expected_len,
            max_len,
            on_done,
            failures,
            permit,
        } = job;
        let fill = Fill {
            tiers,
            body,
            expected_len,
            max_len,
            failures,
            writers: None,
            hasher: blake3::Hasher::new(),
            len: 0,
        };
        let stored = write_body(receiver, &writer_ended, fill).await;
        on_done(stored).await;
        drop(permit);
    });
    crate::body::stream(TeeBody {
        inner: body,
        sender: Some(PollSender::new(sender)),
        ended,
    })
}

/// The channel closing with `ended` set means the origin's body ended normally; closing
/// without it means the fill is abandoned.
async fn write_body(
    mut receiver: mpsc::Receiver<Bytes>,
    ended: &AtomicBool,
    mut fill: Fill,
) -> Option<Filled> {
    while let Some(first) = receiver.recv().await {
        let mut chunks = vec![first];
        let closed = loop {
            match receiver.try_recv() {
                Ok(chunk) => chunks.push(chunk),
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        if closed {
            // The usual end of a small body: its only chunk and its end come together, and
            // are written and finished in one trip to the blocking pool.
            if !ended.load(Ordering::Acquire) {
                return fill.discard();
            }
            return blocking(move || fill.write(chunks).then(|| fill.finish()).flatten()).await;
        }
        fill = blocking(move || fill.write(chunks).then_some(fill)).await?;
    }
    if !ended.load(Ordering::Acquire) {
        return fill.discard();
    }
    blocking(move || fill.finish()).await
}

/// Runs `work` on the blocking pool; `None` if it panicked.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Option<T> + Send + 'static,
) -> Option<T> {
    tokio::task::spawn_blocking(work).await.ok().flatten()
}

/// A body on its way into the tiers, moved to the blocking pool for each batch of chunks
/// (the disk tier's writer does file I/O).
struct Fill {
    tiers: Vec<Arc<dyn Storage>>,
    body: BodyId,
    expected_len: Option<u64>,
    max_len: u64,
    failures: Arc<AtomicU64>,
    /// Opened with the first chunks; the first one is the durable tier's.
    writers: Option<Vec<Box<dyn BodyWriter>>>,
    hasher: blake3::Hasher,
    len: u64,
}

impl Fill {
    fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops the writers of an abandoned fill on the blocking pool (the disk tier's removes
    /// its temporary file).
    fn discard(self) -> Option<Filled> {
        if self.writers.is_some() {
            tokio::task::spawn_blocking(move || drop(self));
        }
        None
    }

    /// A writer for each tier that takes the body; `None` when the durable tier does not.
    fn open(&self) -> Option<Vec<Box<dyn BodyWriter>>> {
        let mut writers: Vec<Box<dyn BodyWriter>> = Vec::with_capacity(self.tiers.len());
        for (i, tier) in self.tiers.iter().enumerate() {
            match tier.writer(self.body, self.expected_len) {
                Ok(Some(writer)) => writers.push(writer),
                Ok(None) if i > 0 => {}
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(error = %e, "cache: cannot store a body, passing it through uncached");
                    self.failed();
                    if i == 0 {
                        return None;
                    }
                }
            }
        }
        Some(writers)
    }

    /// Hands `chunks` to every tier still taking the body; `false` once the body cannot be
    /// stored (too large, or the durable tier failed).
    fn write(&mut self, chunks: Vec<Bytes>) -> bool {
        let mut writers = match self.writers.take() {
            Some(writers) => writers,
            None => match self.open() {
                Some(writers) => writers,
                None => return false,
            },
        };
        for chunk in &chunks {
            self.len += chunk.len() as u64;
            if self.len > self.max_len {
                return false;
            }
            self.hasher.update(chunk);
            let mut kept = Vec::with_capacity(writers.len());
            let mut durable_failed = false;
            for (i, mut writer) in writers.drain(..).enumerate() {
                match writer.write(chunk) {
                    Ok(true) => kept.push(writer),
                    Ok(false) => durable_failed |= i == 0,
                    Err(e) => {
                        tracing::warn!(error = %e, "cache: write failed, not storing this response");
                        self.failed();
                        durable_failed |= i == 0;
                    }
                }
            }
            writers = kept;
            if durable_failed {
                return false;
            }
        }
        self.writers = Some(writers);
        true
    }

    /// Finishes every tier's writer: the stored body's length and checksum.
    fn finish(mut self) -> Option<Filled> {
        let writers = match self.writers.take() {
            Some(writers) => writers,
            // An empty body: nothing was written yet.
            None => self.open()?,
        };
        // Every tier must finish; the first one (disk) is the one that makes the entry
        // durable. It finishes last: once it has, the entry is always published or its body
        // removed.
        for writer in writers.into_iter().rev() {
            if let Err(e) = writer.finish() {
                tracing::warn!(error = %e, "cache: storing failed, not caching this response");
                self.failed();
                return None;
            }
        }
        Some((self.len, *self.hasher.finalize().as_bytes()))
    }
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
