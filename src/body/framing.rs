//! Message framing checks shared by both sides of hoard (RFC 9112 §6.1): hyper decodes the
//! `chunked` transfer coding and nothing else, so any other coding, or `chunked` more than
//! once or not last, would leave a body whose bytes no longer mean what its fields say.

use http::HeaderMap;
use http::header;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// A transfer coding hoard does not implement (RFC 9112 §6.1: 501 for a request).
    #[error("unsupported transfer coding {0:?}")]
    UnsupportedCoding(&'static str),
    /// `chunked` twice, or not the final coding (RFC 9112 §6.3: 400 for a request).
    #[error("Transfer-Encoding must end with a single chunked")]
    Malformed,
}

/// `Ok` when `Transfer-Encoding` is absent or exactly `chunked`.
pub fn check_transfer_encoding(headers: &HeaderMap) -> Result<(), FramingError> {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(|coding| coding.trim_ascii())
        .filter(|coding| !coding.is_empty());
    let Some(first) = codings.next() else {
        return Ok(());
    };
    let mut chunked = 0;
    let mut last_chunked = false;
    let mut unknown = None;
    for coding in std::iter::once(first).chain(codings) {
        last_chunked = coding.eq_ignore_ascii_case(b"chunked");
        if last_chunked {
            chunked += 1;
        } else if unknown.is_none() {
            unknown = Some(known_name(coding));
        }
    }
    if chunked != 1 || !last_chunked {
        return Err(FramingError::Malformed);
    }
    match unknown {
        Some(name) => Err(FramingError::UnsupportedCoding(name)),
        None => Ok(()),
    }
}

/// A static name for the error (the value itself is the sender's text).
fn known_name(coding: &[u8]) -> &'static str {
    const NAMES: [&str; 5] = ["gzip", "x-gzip", "deflate", "compress", "identity"];
    NAMES
        .into_iter()
        .find(|name| coding.eq_ignore_ascii_case(name.as_bytes()))
        .unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn check(values: &[&'static str]) -> Result<(), FramingError> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::TRANSFER_ENCODING, HeaderValue::from_static(value));
        }
        check_transfer_encoding(&headers)
    }

    #[test]
    fn only_a_single_final_chunked_passes() {
        assert_eq!(check(&[]), Ok(()));
        assert_eq!(check(&["chunked"]), Ok(()));
        assert_eq!(check(&["Chunked"]), Ok(()));
        assert_eq!(
            check(&["gzip, chunked"]),
            Err(FramingError::UnsupportedCoding("gzip"))
        );
        assert_eq!(
            check(&["gzip", "chunked"]),
            Err(FramingError::UnsupportedCoding("gzip"))
        );
        assert_eq!(check(&["chunked, chunked"]), Err(FramingError::Malformed));
        assert_eq!(check(&["chunked", "chunked"]), Err(FramingError::Malformed));
        assert_eq!(check(&["chunked, gzip"]), Err(FramingError::Malformed));
        assert_eq!(check(&["gzip"]), Err(FramingError::Malformed));
    }
}
