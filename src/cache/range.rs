//! Single byte ranges from a complete stored response (RFC 9110 §14), honouring `If-Range`.
//! Several ranges get the whole body (a 200), which §14.2 allows.

use http::header::{self, HeaderMap};

/// How to answer a request from a stored body of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RangeAnswer {
    /// No usable `Range` (absent, invalid, several ranges, or `If-Range` failed): the whole body.
    Full,
    /// Bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// One byte range as a request asks for it, before the length is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Requested {
    /// `bytes=a-b`
    FromTo(u64, u64),
    /// `bytes=a-`
    From(u64),
    /// `bytes=-n`: the last `n` bytes.
    Last(u64),
}

impl Requested {
    /// The request's single byte range; `None` when absent, invalid or several.
    pub(super) fn of(request: &HeaderMap) -> Option<Requested> {
        let range = request.get(header::RANGE)?.to_str().ok()?;
        let (unit, spec) = range.split_once('=')?;
        if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
            return None;
        }
        let (first, last) = spec.trim().split_once('-')?;
        let number = |s: &str| -> Option<u64> {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
        };
        match (first.trim(), last.trim()) {
            ("", suffix) => number(suffix).map(Requested::Last),
            (first, "") => number(first).map(Requested::From),
            (first, last) => match (number(first)?, number(last)?) {
                (start, end) if start <= end => Some(Requested::FromTo(start, end)),
                _ => None,
            },
        }
    }

    /// The bytes of a body of `len` bytes this range means.
    pub(super) fn resolve(self, len: u64) -> RangeAnswer {
        match self {
            Requested::Last(0) => RangeAnswer::Unsatisfiable,
            _ if len == 0 => RangeAnswer::Unsatisfiable,
            Requested::Last(n) => RangeAnswer::Partial {
                start: len - n.min(len),
                end: len - 1,
            },
            Requested::From(start) | Requested::FromTo(start, _) if start >= len => {
                RangeAnswer::Unsatisfiable
            }
            Requested::From(start) => RangeAnswer::Partial {
                start,
                end: len - 1,
            },
            Requested::FromTo(start, end) => RangeAnswer::Partial {
                start,
                end: end.min(len - 1),
            },
        }
    }
}

pub(super) fn answer(request: &HeaderMap, stored: &HeaderMap, len: u64) -> RangeAnswer {
    // Most requests have no range: one lookup, then nothing else (this runs on every hit).
    if !request.contains_key(header::RANGE) || !if_range_holds(request, stored) || len == 0 {
        return RangeAnswer::Full;
    }
    Requested::of(request).map_or(RangeAnswer::Full, |range| range.resolve(len))
}

/// RFC 9110 §13.1.5: a range applies only if the validator in `If-Range` still matches,
/// compared strongly.
fn if_range_holds(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let Some(condition) = request.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let condition = condition.trim();
    if condition.starts_with('"') || condition.starts_with("W/") {
        let etag = stored
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        return !condition.starts_with("W/")
            && etag.is_some_and(|etag| !etag.starts_with("W/") && etag == condition);
    }
    stored
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|last_modified| last_modified.trim() == condition)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ask(range: &str, len: u64) -> RangeAnswer {
        let mut request = HeaderMap::new();
        request.insert(header::RANGE, HeaderValue::from_str(range).unwrap());
        answer(&request, &HeaderMap::new(), len)
    }

    #[test]
    fn single_ranges() {
        assert_eq!(
            ask("bytes=0-4", 10),
            RangeAnswer::Partial { start: 0, end: 4 }
        );
        assert_eq!(
            ask("bytes=5-", 10),
            RangeAnswer::Partial { start: 5, end: 9 }
        );
        assert_eq!(
            ask("bytes=-3", 10),
            RangeAnswer::Partial { start: 7, end: 9 }
        );
        assert_eq!(
            ask("bytes=-30", 10),
            RangeAnswer::Partial { start: 0, end: 9 }
        );
        assert_eq!(
            ask("bytes=8-100", 10),
            RangeAnswer::Partial { start: 8, end: 9 }
        );
    }

    #[test]
    fn unsatisfiable_and_ignored_ranges() {
        assert_eq!(ask("bytes=10-", 10), RangeAnswer::Unsatisfiable);
        assert_eq!(ask("bytes=-0", 10), RangeAnswer::Unsatisfiable);
        assert_eq!(ask("bytes=0-1,4-5", 10), RangeAnswer::Full);
        assert_eq!(ask("items=0-1", 10), RangeAnswer::Full);
        assert_eq!(ask("bytes=5-2", 10), RangeAnswer::Full);
        assert_eq!(ask("bytes=x-2", 10), RangeAnswer::Full);
    }

    #[test]
    fn if_range_needs_a_strong_match() {
        let mut stored = HeaderMap::new();
        stored.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        let mut request = HeaderMap::new();
        request.insert(header::RANGE, HeaderValue::from_static("bytes=0-1"));
        request.insert(header::IF_RANGE, HeaderValue::from_static("\"v1\""));
        assert_eq!(
            answer(&request, &stored, 10),
            RangeAnswer::Partial { start: 0, end: 1 }
        );
        request.insert(header::IF_RANGE, HeaderValue::from_static("\"v2\""));
        assert_eq!(answer(&request, &stored, 10), RangeAnswer::Full);
        request.insert(header::IF_RANGE, HeaderValue::from_static("W/\"v1\""));
        assert_eq!(answer(&request, &stored, 10), RangeAnswer::Full);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the Range header says, a partial answer lies inside the body and is not
        /// empty, and an empty body is never "unsatisfiable".
        #[test]
        fn partial_ranges_stay_inside_the_body(range in "\\PC{0,40}", first in 0u64..200, last in 0u64..200, len in 0u64..150) {
            for text in [range, format!("bytes={first}-{last}"), format!("bytes={first}-"), format!("bytes=-{last}")] {
                let Ok(value) = HeaderValue::from_str(&text) else { continue };
                let mut request = HeaderMap::new();
                request.insert(header::RANGE, value);
                match answer(&request, &HeaderMap::new(), len) {
                    RangeAnswer::Partial { start, end } => {
                        prop_assert!(start <= end && end < len, "{text}: {start}-{end} of {len}");
                    }
                    RangeAnswer::Unsatisfiable => prop_assert!(len > 0, "{text}"),
                    RangeAnswer::Full => {}
                }
            }
        }
    }
}
