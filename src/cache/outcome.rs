//! What the cache did with a request: one value that feeds the `Cache-Status` header
//! (RFC 9211), and `Served`, the response with that outcome beside it for the request's
//! record (access log, metrics).

use std::sync::OnceLock;

use http::{HeaderValue, Response};

use super::CACHE_STATUS;
use crate::body::ProxyBody;

/// The cache's part in one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Served from a fresh stored response.
    Hit,
    /// Served from a stale stored response (`max-stale`, `stale-while-revalidate`,
    /// `stale-if-error`).
    Stale,
    /// The origin confirmed the stored response (304); served from the cache.
    Revalidated,
    /// Nothing stored for the URL.
    UriMiss,
    /// The URL is stored, but no variant matches this request's `Vary` fields.
    VaryMiss,
    /// A stored response was stale and the origin sent a new one.
    Refreshed,
    /// The client's `no-cache` sent the request forward.
    ClientRefresh,
    /// A method the cache does not answer (POST, PUT, ...).
    Method,
    /// A request the cache passes through untouched (e.g. a range of an uncached object).
    Bypass,
    /// `only-if-cached` and nothing usable was stored: 504.
    NotCached,
    /// Sent to the fleet member that owns the URL, which answered it (this node stores
    /// nothing of it).
    Peer,
}

impl CacheOutcome {
    /// Every outcome, in declaration order (`outcome as usize` indexes it).
    pub const ALL: [CacheOutcome; 11] = [
        CacheOutcome::Hit,
        CacheOutcome::Stale,
        CacheOutcome::Revalidated,
        CacheOutcome::UriMiss,
        CacheOutcome::VaryMiss,
        CacheOutcome::Refreshed,
        CacheOutcome::ClientRefresh,
        CacheOutcome::Method,
        CacheOutcome::Bypass,
        CacheOutcome::NotCached,
        CacheOutcome::Peer,
    ];

    /// The access-log word.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "HIT",
            CacheOutcome::Stale => "STALE",
            CacheOutcome::Revalidated => "REVALIDATED",
            CacheOutcome::UriMiss | CacheOutcome::VaryMiss => "MISS",
            CacheOutcome::Refreshed => "REFRESHED",
            CacheOutcome::ClientRefresh => "CLIENT_REFRESH",
            CacheOutcome::Method | CacheOutcome::Bypass => "BYPASS",
            CacheOutcome::NotCached => "NOT_CACHED",
            CacheOutcome::Peer => "PEER",
        }
    }

    /// RFC 9211 `fwd` parameter, when the request went forward.
    fn fwd(self) -> Option<&'static str> {
        match self {
            CacheOutcome::Hit | CacheOutcome::Stale | CacheOutcome::NotCached => None,
            CacheOutcome::Revalidated | CacheOutcome::Refreshed => Some("stale"),
            CacheOutcome::UriMiss => Some("uri-miss"),
            CacheOutcome::VaryMiss => Some("vary-miss"),
            CacheOutcome::ClientRefresh => Some("request"),
            CacheOutcome::Method => Some("method"),
            // A node that does not own a URL does not handle it: its owner does.
            CacheOutcome::Bypass | CacheOutcome::Peer => Some("bypass"),
        }
    }
}

/// A response and what the cache did to produce it: the cache's part of the request's
/// record, handed back beside the response rather than inside it.
pub struct Served {
    pub response: Response<ProxyBody>,
    pub outcome: CacheOutcome,
    /// The status the origin answered with, when it was asked (a revalidated hit is a 200
    /// to the client and a 304 from the origin).
    pub upstream_status: Option<u16>,
}

/// The name this cache gives itself in `Cache-Status`: `hoard`, or in a fleet
/// `hoard/HOST:PORT`, so that each node on a request's path has its own entry (RFC 9211 §2).
static CACHE_NAME: OnceLock<String> = OnceLock::new();

/// Sets this process's `Cache-Status` name, once, at start (later calls change nothing).
pub fn set_cache_name(name: String) {
    let _ = CACHE_NAME.set(name);
}

fn cache_name() -> &'static str {
    CACHE_NAME.get().map_or("hoard", String::as_str)
}

/// One `Cache-Status` entry, built as the request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStatus {
    pub outcome: CacheOutcome,
    pub fwd_status: Option<u16>,
    /// The stored response was fresh, but the request's directives (`no-cache`,
    /// `max-age=0`, ...) sent it forward: RFC 9211 `fwd=request`, not `fwd=stale`.
    pub fwd_request: bool,
    pub stored: bool,
    /// Remaining freshness in seconds; negative when stale.
    pub ttl: Option<i64>,
    pub detail: Option<&'static str>,
}

impl CacheStatus {
    pub fn new(outcome: CacheOutcome) -> CacheStatus {
        CacheStatus {
            outcome,
            fwd_status: None,
            fwd_request: false,
            stored: false,
            ttl: None,
            detail: None,
        }
    }

    pub fn detail(mut self, detail: &'static str) -> CacheStatus {
        self.detail = Some(detail);
        self
    }

    /// `hoard; hit; ttl=42`, `hoard; fwd=uri-miss; stored`, `hoard; fwd=stale; fwd-status=304`.
    pub fn header_value(&self) -> HeaderValue {
        use std::fmt::Write as _;
        // One buffer, handed to the HeaderValue without a copy: this runs on every hit.
        let mut text = String::with_capacity(64);
        text.push_str(cache_name());
        let fwd = match self.outcome.fwd() {
            Some(_) if self.fwd_request => Some("request"),
            fwd => fwd,
        };
        match fwd {
            None if self.outcome != CacheOutcome::NotCached => text.push_str("; hit"),
            None => {}
            Some(fwd) => {
                text.push_str("; fwd=");
                text.push_str(fwd);
            }
        }
        // Writing into a String cannot fail.
        if let Some(status) = self.fwd_status {
            let _ = write!(text, "; fwd-status={status}");
        }
        if self.stored {
            text.push_str("; stored");
        }
        if let Some(ttl) = self.ttl {
            let _ = write!(text, "; ttl={ttl}");
        }
        if let Some(detail) = self.detail {
            text.push_str("; detail=");
            text.push_str(detail);
        }
        HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
            .unwrap_or(HeaderValue::from_static("hoard"))
    }
}

/// Adds `rule="NAME"` to this cache's entry (the last) of `response`'s `Cache-Status`: the
/// cache rule that applied to the request.
pub(super) fn name_rule(response: &mut Response<ProxyBody>, rule: &str) {
    let http::header::Entry::Occupied(mut entry) = response.headers_mut().entry(CACHE_STATUS)
    else {
        return;
    };
    let Some(ours) = entry.iter_mut().last() else {
        return;
    };
    let mut text = Vec::with_capacity(ours.len() + rule.len() + 9);
    text.extend_from_slice(ours.as_bytes());
    text.extend_from_slice(b"; rule=\"");
    // Rule names are letters, digits and `.`, `_`, `:`, `-` (checked when parsed), which
    // a structured-field string holds as they are.
    text.extend_from_slice(rule.as_bytes());
    text.push(b'"');
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(text)) {
        *ours = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc_9211_entries() {
        let mut hit = CacheStatus::new(CacheOutcome::Hit);
        hit.ttl = Some(42);
        assert_eq!(hit.header_value(), "hoard; hit; ttl=42");
        let mut miss = CacheStatus::new(CacheOutcome::UriMiss);
        miss.stored = true;
        assert_eq!(miss.header_value(), "hoard; fwd=uri-miss; stored");
        let mut revalidated = CacheStatus::new(CacheOutcome::Revalidated);
        revalidated.fwd_status = Some(304);
        assert_eq!(
            revalidated.header_value(),
            "hoard; fwd=stale; fwd-status=304"
        );
        assert_eq!(
            CacheStatus::new(CacheOutcome::NotCached)
                .detail("only-if-cached")
                .header_value(),
            "hoard; detail=only-if-cached"
        );
    }
}
