//! The body of a client's request as the rest of hoard sees it: frames the connection decodes
//! from the socket (`conn.rs`), handed over one at a time through a channel of one, so a
//! client can never make hoard buffer more than a frame ahead of whoever reads the body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{mpsc, oneshot};

use super::decode::DecodeError;

/// Why a request body ended early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the client's body is malformed: {0}")]
    Decode(#[from] DecodeError),
    #[error("the client closed the connection before its body was complete")]
    Incomplete,
    #[error("reading the client's body failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the client's HTTP/2 stream failed: {0}")]
    Stream(#[from] hyper::Error),
}

/// What the connection sends down the channel. The body ends only on `End`: a channel that
/// closes without one (the connection gave up on the body) is an error to the reader, never a
/// body that looks complete but is short.
#[derive(Debug)]
pub(super) enum Fed {
    Frame(Frame<Bytes>),
    End,
    Failed(BodyError),
}

/// A client request's body.
#[derive(Debug)]
pub struct RequestBody {
    frames: Option<mpsc::Receiver<Fed>>,
    /// Fired on the first read, for `Expect: 100-continue`: the connection then tells the
    /// client to send the body, as late as possible, so a request refused without reading
    /// its body never has it sent.
    wanted: Option<oneshot::Sender<()>>,
    /// Bytes still to come, for a Content-Length body.
    remaining: Option<u64>,
    /// An HTTP/2 request's body, read from its stream by hyper instead.
    stream: Option<hyper::body::Incoming>,
}

impl RequestBody {
    /// A request without a body.
    pub fn empty() -> RequestBody {
        RequestBody {
            frames: None,
            wanted: None,
            remaining: Some(0),
            stream: None,
        }
    }

    /// The body of an HTTP/2 request (hyper reads it, with HTTP/2's flow control).
    pub fn from_stream(stream: hyper::body::Incoming) -> RequestBody {
        RequestBody {
            frames: None,
            wanted: None,
            remaining: stream.size_hint().exact(),
            stream: Some(stream),
        }
    }

    /// A body fed through `frames`; `remaining` is its length when known.
    pub(super) fn channel(
        remaining: Option<u64>,
        wanted: Option<oneshot::Sender<()>>,
    ) -> (mpsc::Sender<Fed>, RequestBody) {
        let (sender, frames) = mpsc::channel(1);
        let body = RequestBody {
            frames: Some(frames),
            wanted,
            remaining,
            stream: None,
        };
        (sender, body)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(wanted) = self.wanted.take() {
            let _ = wanted.send(());
        }
        if let Some(stream) = self.stream.as_mut() {
            return Pin::new(stream)
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(BodyError::Stream)));
        }
        let Some(frames) = self.frames.as_mut() else {
            return Poll::Ready(None);
        };
        let fed = match frames.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(fed) => fed,
        };
        match fed {
            Some(Fed::Frame(frame)) => {
                if let (Some(data), Some(remaining)) = (frame.data_ref(), self.remaining.as_mut()) {
                    *remaining = remaining.saturating_sub(data.len() as u64);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Fed::End) => {
                self.frames = None;
                Poll::Ready(None)
            }
            Some(Fed::Failed(error)) => {
                self.frames = None;
                Poll::Ready(Some(Err(error)))
            }
            None => {
                self.frames = None;
                Poll::Ready(Some(Err(BodyError::Incomplete)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.stream {
            Some(stream) => stream.is_end_stream(),
            None => self.frames.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(stream) = &self.stream {
            return stream.size_hint();
        }
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
