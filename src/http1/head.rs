//! Request heads: parse one with `httparse` under hoard's limits, and decide from its fields how
//! the body that follows is framed (RFC 9112 §6.3). This is where request smuggling is
//! stopped: a head whose framing two parsers could read differently is refused here, before
//! anything acts on it. It knows nothing of proxying.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};

/// The most header fields a request may have (hyper's default, and nginx's order of
/// magnitude): a head of a thousand tiny fields costs far more to index than its size says.
pub const MAX_FIELDS: usize = 100;

/// Why a request head was refused; each maps to one status (`status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("the request head is larger than the {0}-byte limit")]
    TooLarge(usize),
    #[error("the request has more than {MAX_FIELDS} header fields")]
    TooManyFields,
    #[error("the request target is longer than the {0}-byte limit")]
    TargetTooLong(usize),
    /// Content-Length that is not one non-negative decimal number (RFC 9112 §6.3 item 5).
    #[error("invalid Content-Length")]
    ContentLength,
    /// Transfer-Encoding whose last coding is not `chunked`, or in an HTTP/1.0 request: the
    /// body's end cannot be found (RFC 9112 §6.1, §6.3 item 4).
    #[error("the request's Transfer-Encoding does not end in chunked")]
    TransferEncoding,
}

impl HeadError {
    pub fn status(self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            HeadError::TooLarge(_) | HeadError::TooManyFields => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            HeadError::TargetTooLong(_) => StatusCode::URI_TOO_LONG,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// How the request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// A parsed request head, and what the connection must know about it.
#[derive(Debug)]
pub struct RequestHead {
    pub request: Request<()>,
    pub framing: Framing,
    /// The client wants the connection closed after this exchange, or the head was one that
    /// must not be followed by another on the same connection (Content-Length beside
    /// Transfer-Encoding, RFC 9112 §6.1).
    pub close: bool,
    /// `Expect: 100-continue` from an HTTP/1.1 client.
    pub expect_continue: bool,
}

/// Parses the head at the start of `buf` (leading empty lines skipped, RFC 9112 §2.2).
/// `Ok(None)`: more bytes are needed. On success the head's bytes are taken out of `buf`
/// and header values share them rather than copying.
pub fn parse(buf: &mut BytesMut, max_size: usize) -> Result<Option<RequestHead>, HeadError> {
    let blank = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let _ = buf.split_to(blank);
    // Uninitialised: filling 100 empty fields first costs more than parsing a small head.
    let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_FIELDS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() < max_size {
                return Ok(None);
            }
            let request_line = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
            return Err(if request_line >= max_size {
                HeadError::TargetTooLong(max_size)
            } else {
                HeadError::TooLarge(max_size)
            });
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyFields),
        Err(e) => return Err(HeadError::Malformed(parse_error(e))),
    };
    if len > max_size {
        return Err(HeadError::TooLarge(max_size));
    }
    // RFC 9112 §2.2 lets a recipient take a bare LF as a line end; hoard does not, so no
    // server behind or in front of it can split this head where hoard did not.
    if has_bare_lf(&buf[..len]) {
        return Err(HeadError::Malformed("a line ends in a bare LF"));
    }
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| HeadError::Malformed("invalid method"))?;
    let target = parsed.path.unwrap_or_default();
    let (target_at, target_len) = (offset(buf, target.as_bytes()), target.len());
    let mut positions = Vec::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| HeadError::Malformed("invalid header name"))?;
        positions.push((name, offset(buf, field.value), field.value.len()));
    }
    let head: Bytes = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target_at..target_at + target_len))
        .map_err(|_| HeadError::Malformed("invalid request target"))?;
    let mut headers = HeaderMap::with_capacity(positions.len());
    for (name, at, len) in positions {
        let value = HeaderValue::from_maybe_shared(head.slice(at..at + len))
            .map_err(|_| HeadError::Malformed("invalid header value"))?;
        headers.append(name, value);
    }
    let (framing, mixed) = framing(&headers, version)?;
    if mixed {
        // RFC 9112 §6.3 item 3: Transfer-Encoding overrides; the length goes before forwarding.
        headers.remove(header::CONTENT_LENGTH);
    }
    let close = mixed || !keep_alive(&headers, version);
    let expect_continue = version == Version::HTTP_11
        && headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some(RequestHead {
        request,
        framing,
        close,
        expect_continue,
    }))
}

/// Where `part` (a slice of `buf`) starts in `buf`.
fn offset(buf: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - buf.as_ptr() as usize
}

fn parse_error(error: httparse::Error) -> &'static str {
    match error {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid method or request target",
        httparse::Error::TooManyHeaders => "too many header fields",
        httparse::Error::Version => "unsupported HTTP version",
    }
}

/// The body's framing (RFC 9112 §6.3), and whether Content-Length came beside
/// Transfer-Encoding.
fn framing(headers: &HeaderMap, version: Version) -> Result<(Framing, bool), HeadError> {
    let length = content_length(headers)?;
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter().peekable();
    if codings.peek().is_none() {
        return Ok((length.map_or(Framing::None, Framing::Length), false));
    }
    if version == Version::HTTP_10 {
        return Err(HeadError::TransferEncoding);
    }
    let last = codings
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|coding| !coding.is_empty())
        .last();
    match last {
        Some(coding) if coding.eq_ignore_ascii_case(b"chunked") => {
            Ok((Framing::Chunked, length.is_some()))
        }
        _ => Err(HeadError::TransferEncoding),
    }
}

/// Every Content-Length value, each a list of the same decimal number (RFC 9110 §8.6 lets a
/// recipient take `5, 5` as 5); anything else is refused rather than guessed at.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, HeadError> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let item = item.trim_ascii();
            if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
                return Err(HeadError::ContentLength);
            }
            let n: u64 = std::str::from_utf8(item)
                .ok()
                .and_then(|text| text.parse().ok())
                .ok_or(HeadError::ContentLength)?;
            if length.is_some_and(|seen| seen != n) {
                return Err(HeadError::ContentLength);
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// HTTP/1.1 keeps the connection unless `Connection: close`; HTTP/1.0 closes it unless
/// `Connection: keep-alive` (RFC 9112 §9.3).
fn keep_alive(headers: &HeaderMap, version: Version) -> bool {
    let has = |token: &[u8]| connection_has(headers, token);
    if version == Version::HTTP_10 {
        has(b"keep-alive") && !has(b"close")
    } else {
        !has(b"close")
    }
}

/// Whether `Connection` lists `token` (case-insensitive), in a request or a response.
pub(super) fn connection_has(headers: &HeaderMap, token: &[u8]) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
    })
}

/// Whether a line in `bytes` ends in LF without the CR before it.
pub(super) fn has_bare_lf(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .any(|(at, &b)| b == b'\n' && (at == 0 || bytes[at - 1] != b'\r'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<RequestHead>, HeadError> {
        parse(&mut BytesMut::from(text), 8192)
    }

    fn framing_of(text: &str) -> Result<Framing, HeadError> {
        head(text).map(|head| head.expect("complete").framing)
    }

    #[test]
    fn a_plain_head_parses_and_leaves_what_follows() {
        let mut buf = BytesMut::from(
            "\r\nGET http://a.example/x?y HTTP/1.1\r\nHost: a.example\r\nX-Case: V\r\n\r\nNEXT",
        );
        let head = parse(&mut buf, 8192).unwrap().unwrap();
        assert_eq!(head.request.method(), Method::GET);
        assert_eq!(head.request.uri(), "http://a.example/x?y");
        assert_eq!(head.request.headers()["x-case"], "V");
        assert_eq!(head.framing, Framing::None);
        assert!(!head.close && !head.expect_continue);
        assert_eq!(&buf[..], b"NEXT");
    }

    #[test]
    fn partial_heads_wait_and_oversized_ones_are_refused() {
        assert!(head("GET / HTTP/1.1\r\nHost: a").unwrap().is_none());
        let long_target = format!("GET /{} HTTP/1.1\r\n", "a".repeat(9000));
        assert_eq!(
            head(&long_target).unwrap_err(),
            HeadError::TargetTooLong(8192)
        );
        let big_field = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(9000));
        assert_eq!(head(&big_field).unwrap_err(), HeadError::TooLarge(8192));
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            head(&format!("GET / HTTP/1.1\r\n{many}\r\n")).unwrap_err(),
            HeadError::TooManyFields
        );
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        for text in [
            // Two lengths, a negative one, a signed one, hex, empty.
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3, 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            // Obfuscated or non-final chunked.
            "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: \"chunked\"\r\n\r\n",
            // Transfer-Encoding in HTTP/1.0.
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let error = framing_of(text).unwrap_err();
            assert_eq!(error.status(), 400, "{text:?}");
        }
        for text in [
            "POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
            "POST / HTTP/1.1\r\nX: a\rb\r\n\r\n",
            "POST / HTTP/1.1\nX: a\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n",
            "G(T / HTTP/1.1\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
        ] {
            assert!(
                matches!(head(text), Err(HeadError::Malformed(_))),
                "{text:?}: {:?}",
                head(text)
            );
        }
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() {
        assert_eq!(
            framing_of("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            framing_of("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n"),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            framing_of("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"),
            Ok(Framing::Chunked)
        );
        // Both: chunked wins, the length is dropped and the connection closes afterwards.
        let both =
            head("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(both.framing, Framing::Chunked);
        assert!(both.close);
        assert!(!both.request.headers().contains_key(header::CONTENT_LENGTH));
    }

    #[test]
    fn connection_persistence_and_expectations() {
        let close = |text: &str| head(text).unwrap().unwrap().close;
        assert!(!close("GET / HTTP/1.1\r\n\r\n"));
        assert!(close(
            "GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n"
        ));
        assert!(close("GET / HTTP/1.0\r\n\r\n"));
        assert!(!close("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        let expects = |text: &str| head(text).unwrap().unwrap().expect_continue;
        assert!(expects("PUT / HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n"));
        assert!(!expects("PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n"));
    }
}
