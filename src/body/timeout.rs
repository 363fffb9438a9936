//! Bodies that give up: a response still streaming when its time is up ends with an error, so
//! hyper aborts the client connection rather than sending a body that looks complete, and the
//! cache's fill sees the error and stores nothing.
//!
//! Two limits use it: `--request-timeout` (a deadline for the whole request, body included) and
//! `--read-timeout` (the longest silence allowed between an origin's body chunks).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::{BoxError, ProxyBody};

/// When a body is cut off.
#[derive(Debug, Clone, Copy)]
pub enum TimeLimit {
    /// At `deadline`, which is `limit` after the request started.
    Total { deadline: Instant, limit: Duration },
    /// When no frame has arrived for this long.
    Idle(Duration),
}

pin_project_lite::pin_project! {
    struct TimeLimited<B> {
        #[pin]
        inner: B,
        #[pin]
        expires: Sleep,
        limit: TimeLimit,
    }
}

/// `body`, ended with an error once `limit` is reached.
pub fn time_limited<B>(body: B, limit: TimeLimit) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let expires = match limit {
        TimeLimit::Total { deadline, .. } => tokio::time::sleep_until(deadline),
        TimeLimit::Idle(idle) => tokio::time::sleep(idle),
    };
    super::stream(TimeLimited {
        inner: body,
        expires,
        limit,
    })
}

impl<B> Body for TimeLimited<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            if let (TimeLimit::Idle(idle), Some(Ok(_))) = (*this.limit, &frame) {
                this.expires.as_mut().reset(Instant::now() + idle);
            }
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        if this.expires.poll(cx).is_ready() {
            let message = match *this.limit {
                TimeLimit::Total { limit, .. } => format!("request took longer than {limit:?}"),
                TimeLimit::Idle(idle) => {
                    format!("the origin sent nothing for {idle:?} in the middle of the body")
                }
            };
            return Poll::Ready(Some(Err(message.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
