//! The one body type that flows through hoard, from clients, origins and the cache, the few
//! ways to make one, and the shape of the responses hoard writes itself. Streaming is the rule:
//! nothing here buffers a body.

mod framing;
mod timeout;

pub use framing::{FramingError, check_transfer_encoding};
pub use timeout::{TimeLimit, time_limited};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming body whose errors are boxed, so client, origin and cache bodies share one type.
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Boxes a body from hyper (a client's request or an origin's response) without copying it.
pub fn stream<B>(body: B) -> ProxyBody
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// Reads a body nobody wants to its end (so that what it feeds, such as a cache fill,
/// completes), discarding the bytes; stops at the first error.
pub async fn drain(mut body: ProxyBody) {
    while let Some(Ok(_)) = body.frame().await {}
}

/// A response hoard writes itself (an error, a page, an admin answer): a complete body of
/// `content_type`, marked `no-store` so no cache downstream keeps it.
pub fn generated(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<ProxyBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
