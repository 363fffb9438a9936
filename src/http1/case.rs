//! Header-name spelling. `http::HeaderMap` keeps names lowercase; some clients and scripts
//! still look for `Content-Type` as sent. `HeaderCase` remembers how the origin spelled each
//! name so the connection writes it back the same way, on pass-through and from the cache.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName};

/// How each header name was spelled where it came from (the first spelling seen wins).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderCase(HeaderMap<Bytes>);

impl HeaderCase {
    /// From the names as received; only those not already lowercase need remembering.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a [u8]>) -> HeaderCase {
        let mut map = HeaderMap::<Bytes>::default();
        for spelled in names {
            if !spelled.iter().any(u8::is_ascii_uppercase) {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(spelled)
                && !map.contains_key(&name)
            {
                map.insert(name, Bytes::copy_from_slice(spelled));
            }
        }
        HeaderCase(map)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `name` as it was spelled, or as `http` keeps it.
    pub fn spelling<'a>(&'a self, name: &'a HeaderName) -> &'a [u8] {
        self.0
            .get(name)
            .map_or(name.as_str().as_bytes(), |spelled| &spelled[..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_are_kept_per_name() {
        let case = HeaderCase::from_names([
            &b"Content-Type"[..],
            b"X-CamelCase",
            b"x-camelcase",
            b"etag",
        ]);
        assert_eq!(case.spelling(&http::header::CONTENT_TYPE), b"Content-Type");
        assert_eq!(
            case.spelling(&HeaderName::from_static("x-camelcase")),
            b"X-CamelCase"
        );
        assert_eq!(case.spelling(&http::header::ETAG), b"etag");
        assert_eq!(case.spelling(&http::header::AGE), b"age");
    }
}
