//! Response heads on the wire: the status line, the fields (in the spelling the origin used,
//! when known), `Date`, and the body framing hoard chooses for the client (RFC 9112 §6):
//! none for HEAD, 1xx, 204, 304 and a CONNECT's 2xx; the length when it is known; chunked for
//! an HTTP/1.1 client otherwise; and for HTTP/1.0, the end of the connection.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use http_body::Body;

use super::case::HeaderCase;

/// How the body goes after the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body bytes at all (HEAD, 1xx, 204, 304, CONNECT 2xx).
    None,
    Length(u64),
    Chunked,
    /// The body ends when the connection does (an HTTP/1.0 client, length unknown).
    UntilClose,
}

/// What the connection knows of the request a response answers.
#[derive(Debug, Clone, Copy)]
pub(super) struct Answering {
    pub head: bool,
    pub connect: bool,
    pub http10: bool,
}

impl Answering {
    pub(super) fn of<B>(request: &http::Request<B>) -> Answering {
        Answering {
            head: request.method() == Method::HEAD,
            connect: request.method() == Method::CONNECT,
            http10: request.version() == Version::HTTP_10,
        }
    }
}

/// Writes `response`'s head into `out` and says how its body is framed and whether the
/// connection can carry another request afterwards (`keep_alive` is what the request allows).
pub(super) fn response_head<B: Body>(
    response: &Response<B>,
    answering: Answering,
    keep_alive: bool,
    out: &mut Vec<u8>,
) -> (Framing, bool) {
    let status = response.status();
    let headers = response.headers();
    let bodiless = answering.head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || (answering.connect && status.is_success());
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let exact = response.body().size_hint().exact();
    let framing = if bodiless {
        Framing::None
    } else if let Some(n) = declared.or(exact) {
        Framing::Length(n)
    } else if !answering.http10 {
        Framing::Chunked
    } else {
        Framing::UntilClose
    };
    let tunnel = answering.connect && status.is_success();
    let keep_alive = keep_alive
        && framing != Framing::UntilClose
        && !super::head::connection_has(headers, b"close");
    status_line(status, response.extensions(), out);
    let case = response.extensions().get::<std::sync::Arc<HeaderCase>>();
    for (name, value) in headers {
        // Framing is written below, once, as hoard frames the body: a passed-through value
        // it could not read (`5, 5`) must not stand beside hoard's own.
        if is_ours(name) || name == header::CONTENT_LENGTH {
            continue;
        }
        match case {
            Some(case) => case.write(name, out),
            None => out.extend_from_slice(name.as_str().as_bytes()),
        }
        field(value, out);
    }
    match framing {
        Framing::Length(n) => length(n, out),
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        // A HEAD answer or a 304 says the length the body would have, when known.
        Framing::None if answering.head || status == StatusCode::NOT_MODIFIED => {
            if let Some(n) = declared.or(exact.filter(|&n| n > 0 && answering.head)) {
                length(n, out);
            }
        }
        _ => {}
    }
    if !headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        DATE.with_borrow_mut(|date| out.extend_from_slice(date.now()));
        out.extend_from_slice(b"\r\n");
    }
    if tunnel {
        // The connection becomes the tunnel: neither closed nor kept for requests.
    } else if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if answering.http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (framing, keep_alive)
}

/// An interim (1xx) response's head.
pub(super) fn interim_head(status: StatusCode, headers: &HeaderMap, out: &mut Vec<u8>) {
    status_line(status, &http::Extensions::new(), out);
    for (name, value) in headers {
        if !is_ours(name) {
            out.extend_from_slice(name.as_str().as_bytes());
            field(value, out);
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn status_line(status: StatusCode, extensions: &http::Extensions, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    let reason = extensions
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| r.as_bytes())
        .or(status.canonical_reason().map(str::as_bytes))
        .unwrap_or(b"");
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
}

/// Fields that describe this hop's framing and connection, which hoard writes itself.
fn is_ours(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == "keep-alive"
        || name == "proxy-connection"
}

/// The rest of a field line after its name.
fn field(value: &HeaderValue, out: &mut Vec<u8>) {
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn length(n: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The chunk-size line for a chunk of `len` bytes.
pub(super) fn chunk_line(len: usize) -> bytes::Bytes {
    bytes::Bytes::from(format!("{len:x}\r\n"))
}

thread_local! {
    static DATE: RefCell<CachedDate> = const { RefCell::new(CachedDate { second: u64::MAX, text: [0; 29] }) };
}

/// The IMF-fixdate of the current second, formatted once per second per thread.
struct CachedDate {
    second: u64,
    text: [u8; 29],
}

impl CachedDate {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second {
            self.second = second;
            self.text
                .copy_from_slice(&httpdate::fmt_http_date(now).as_bytes()[..29]);
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Empty, Full};

    fn answering(head: bool, http10: bool) -> Answering {
        Answering {
            head,
            connect: false,
            http10,
        }
    }

    fn written<B: Body>(response: &Response<B>, answering: Answering) -> (String, Framing, bool) {
        let mut out = Vec::new();
        let (framing, keep) = response_head(response, answering, true, &mut out);
        (String::from_utf8(out).unwrap(), framing, keep)
    }

    #[test]
    fn known_lengths_are_declared_and_unknown_ones_chunked_or_closed() {
        let full = Response::new(Full::new(bytes::Bytes::from_static(b"hello")));
        let (text, framing, keep) = written(&full, answering(false, false));
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("content-length: 5\r\n") && text.contains("date: "));
        assert_eq!((framing, keep), (Framing::Length(5), true));

        let streamed = Response::new(http_body_util::StreamBody::new(
            futures_util::stream::empty::<
                Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>,
            >(),
        ));
        let (text, framing, _) = written(&streamed, answering(false, false));
        assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
        assert_eq!(framing, Framing::Chunked);
        let (text, framing, keep) = written(&streamed, answering(false, true));
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert_eq!((framing, keep), (Framing::UntilClose, false));
    }

    #[test]
    fn bodiless_answers_frame_nothing_and_head_keeps_the_length() {
        let mut response = Response::new(Empty::<bytes::Bytes>::new());
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("42"));
        let (text, framing, _) = written(&response, answering(true, false));
        assert!(text.contains("content-length: 42\r\n"), "{text}");
        assert_eq!(framing, Framing::None);
        *response.status_mut() = StatusCode::NO_CONTENT;
        let (text, framing, _) = written(&response, answering(false, false));
        assert!(!text.contains("content-length"), "{text}");
        assert_eq!(framing, Framing::None);
    }

    #[test]
    fn connection_fields_are_hoards_and_http10_keep_alive_is_said() {
        let mut response = Response::new(Empty::<bytes::Bytes>::new());
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        let (text, _, keep) = written(&response, answering(false, false));
        assert!(!keep);
        assert_eq!(text.matches("connection: close").count(), 1, "{text}");
        let plain = Response::new(Empty::<bytes::Bytes>::new());
        let (text, _, keep) = written(&plain, answering(false, true));
        assert!(
            keep && text.contains("connection: keep-alive\r\n"),
            "{text}"
        );
    }
}
