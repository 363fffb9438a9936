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

type Boxed = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A streaming body whose errors are boxed, so client, origin and cache bodies share one type.
/// One kind is special: a byte range of a cache file, which the client connection may send
/// with `sendfile` instead of reading it (`file`). Any wrapper around a `ProxyBody` hides that,
/// so only a body nothing transforms is ever sent from its file.
pub struct ProxyBody(Kind);

enum Kind {
    Boxed(Boxed),
    // Boxed: every future that holds a body across an await has room for the largest kind.
    File(Box<FileRange>),
}

/// `len` bytes from `offset` of `file`, streamed by `stream` if anyone reads them.
struct FileRange {
    file: std::fs::File,
    offset: u64,
    len: u64,
    stream: Box<dyn FnOnce(std::fs::File) -> ProxyBody + Send>,
}

impl ProxyBody {
    fn boxed<B>(body: B) -> ProxyBody
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        ProxyBody(Kind::Boxed(body.map_err(Into::into).boxed_unsync()))
    }

    /// A body that is exactly `len` bytes of `file` from `offset` (already checked to be
    /// there); read through `stream` unless the connection sends the file itself.
    pub fn file(
        file: std::fs::File,
        offset: u64,
        len: u64,
        stream: impl FnOnce(std::fs::File) -> ProxyBody + Send + 'static,
    ) -> ProxyBody {
        ProxyBody(Kind::File(Box::new(FileRange {
            file,
            offset,
            len,
            stream: Box::new(stream),
        })))
    }

    /// The file region this body is, if it is one and nothing has been read from it.
    pub fn file_region(&self) -> Option<crate::http1::FileRegion<'_>> {
        match &self.0 {
            Kind::File(range) => Some(crate::http1::FileRegion {
                file: &range.file,
                offset: range.offset,
            }),
            Kind::Boxed(_) => None,
        }
    }

    /// The connection sent the region itself: nothing remains to be read.
    pub fn sent_from_file(&mut self) {
        self.0 = Kind::Boxed(Empty::new().map_err(|never| match never {}).boxed_unsync());
    }
}

impl hyper::body::Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        if let Kind::File(_) = &self.0 {
            let placeholder =
                Kind::Boxed(Empty::new().map_err(|never| match never {}).boxed_unsync());
            let Kind::File(range) = std::mem::replace(&mut self.0, placeholder) else {
                unreachable!("checked above");
            };
            *self = (range.stream)(range.file);
        }
        match &mut self.0 {
            Kind::Boxed(body) => std::pin::Pin::new(body).poll_frame(cx),
            Kind::File(_) => unreachable!("replaced above"),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Boxed(body) => body.is_end_stream(),
            Kind::File(range) => range.len == 0,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match &self.0 {
            Kind::Boxed(body) => body.size_hint(),
            Kind::File(range) => hyper::body::SizeHint::with_exact(range.len),
        }
    }
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Kind::Boxed(_) => f.write_str("ProxyBody::Boxed"),
            Kind::File(range) => write!(f, "ProxyBody::File({} bytes)", range.len),
        }
    }
}

pub fn empty() -> ProxyBody {
    ProxyBody::boxed(Empty::new())
}

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    ProxyBody::boxed(Full::new(bytes.into()))
}

/// Boxes a body (a client's request, an origin's response, a wrapper) without copying it.
pub fn stream<B>(body: B) -> ProxyBody
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    ProxyBody::boxed(body)
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
