//! Header-name spelling. `http::HeaderMap` keeps names lowercase; some clients and scripts
//! still look for `Content-Type` as sent. `HeaderCase` remembers how the origin spelled its
//! names so the connection writes them back the same way, on pass-through and from the cache.
//!
//! Most origins spell every name in Title-Case (`Content-Type`, `Cache-Control`), so that is
//! kept as one flag, and only the names spelled otherwise (`ETag`, `X-CamelCase`, or a
//! lowercase one beside Title-Case ones) are listed: writing a head then costs a comparison
//! or two per field, not a lookup.

use bytes::Bytes;
use http::header::HeaderName;

/// How an origin spelled its header names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderCase {
    /// Names not listed in `exceptions` are written in Title-Case (else as `http` keeps them,
    /// lowercase). Names hoard adds itself follow the same rule.
    title: bool,
    exceptions: Vec<(HeaderName, Bytes)>,
}

impl HeaderCase {
    /// From the names as received, in order (the first spelling of a name wins).
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a [u8]> + Clone) -> HeaderCase {
        let title = names
            .clone()
            .into_iter()
            .any(|spelled| spelled.iter().any(u8::is_ascii_uppercase) && is_title(spelled));
        let mut exceptions: Vec<(HeaderName, Bytes)> = Vec::new();
        for spelled in names {
            let default = if title {
                is_title(spelled)
            } else {
                !spelled.iter().any(u8::is_ascii_uppercase)
            };
            if default {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(spelled)
                && !exceptions.iter().any(|(seen, _)| *seen == name)
            {
                exceptions.push((name, Bytes::copy_from_slice(spelled)));
            }
        }
        HeaderCase { title, exceptions }
    }

    /// Whether it spells anything differently from `http`'s lowercase.
    pub fn is_empty(&self) -> bool {
        !self.title && self.exceptions.is_empty()
    }

    /// Appends `name` to `out` as the origin spelled it.
    pub fn write(&self, name: &HeaderName, out: &mut Vec<u8>) {
        if let Some((_, spelled)) = self.exceptions.iter().find(|(known, _)| known == name) {
            return out.extend_from_slice(spelled);
        }
        let lower = name.as_str().as_bytes();
        if !self.title {
            return out.extend_from_slice(lower);
        }
        let mut upper = true;
        out.extend(lower.iter().map(|&b| {
            let spelled = if upper { b.to_ascii_uppercase() } else { b };
            upper = b == b'-';
            spelled
        }));
    }
}

/// `Content-Type`, `X-Cache`: each word's first letter upper case, the rest lower.
fn is_title(spelled: &[u8]) -> bool {
    let mut upper = true;
    spelled.iter().all(|&b| {
        let fits = if upper {
            !b.is_ascii_lowercase()
        } else {
            !b.is_ascii_uppercase()
        };
        upper = b == b'-';
        fits
    })
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
            b"ETag",
            b"expires",
        ]);
        let spelled = |name: &str| {
            let mut out = Vec::new();
            case.write(&HeaderName::from_bytes(name.as_bytes()).unwrap(), &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(spelled("content-type"), "Content-Type");
        assert_eq!(spelled("x-camelcase"), "X-CamelCase");
        assert_eq!(spelled("etag"), "ETag");
        assert_eq!(spelled("expires"), "expires");
        // Names the origin did not send follow its style.
        assert_eq!(spelled("cache-status"), "Cache-Status");

        let lowercase = HeaderCase::from_names([&b"content-type"[..], b"X-ID"]);
        assert!(!lowercase.title);
        let mut out = Vec::new();
        lowercase.write(&HeaderName::from_static("content-type"), &mut out);
        assert_eq!(out, b"content-type");
        assert!(HeaderCase::from_names([&b"etag"[..]]).is_empty());
    }
}
