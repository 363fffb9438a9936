//! `--request-timeout`: a bound on a whole request, response body included. A response still
//! streaming when the time is up ends with an error, so hyper aborts the connection rather
//! than sending a body that looks complete.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::body::{BoxError, ProxyBody};

pin_project_lite::pin_project! {
    struct Deadline {
        #[pin]
        inner: ProxyBody,
        #[pin]
        expires: Sleep,
        limit: Duration,
    }
}

/// `body`, cut off once `deadline` has passed.
pub fn limit(body: ProxyBody, deadline: Instant, limit: Duration) -> ProxyBody {
    http_body_util::BodyExt::boxed_unsync(Deadline {
        inner: body,
        expires: tokio::time::sleep_until(deadline),
        limit,
    })
}

impl Body for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.expires.poll(cx).is_ready() {
            let limit = *this.limit;
            return Poll::Ready(Some(Err(
                format!("request took longer than {limit:?}").into()
            )));
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
