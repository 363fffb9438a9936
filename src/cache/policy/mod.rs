//! RFC 9111 decisions as pure functions: may a response be stored (§3), how long is it fresh
//! (§4.2.1, §4.2.2), how old is it (§4.2.3), may a stored response be used for this request
//! (§4.2, §5.2.1, RFC 5861), and how a 304 refreshes stored headers (§4.3.4).
//!
//! Hand-written: `http-cache-semantics` drops repeated fields, rewrites `Date`, misreads old
//! `Expires` formats and has no stale-* support (see docs/cache.md).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, StatusCode};

use super::control::CacheControl;
use super::rules::CacheRule;

mod date;
mod freshness;

pub use freshness::{Freshness, StaleOnError, Verdict};

/// Settings the operator can tune.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySettings {
    /// Upper bound for heuristic freshness (10% of the time since Last-Modified).
    pub heuristic_max: Duration,
    /// Staleness hoard accepts when the origin fails, even without `stale-if-error`.
    pub stale_if_error_grace: Duration,
    /// hoard's own targeted field (RFC 9213): obeyed above `CDN-Cache-Control` and
    /// `Cache-Control`, and removed from responses before they go downstream.
    pub own_cache_control: HeaderName,
}

impl PolicySettings {
    /// A response's directives as hoard obeys them (see `CacheControl::parse_response`).
    pub fn directives(&self, response: &HeaderMap) -> CacheControl {
        CacheControl::parse_response(response, &self.own_cache_control)
    }
}

/// Seconds since the Unix epoch, the unit every timestamp here uses.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The first `name` field as an HTTP date (any of the three forms), in Unix seconds.
fn header_date(headers: &HeaderMap, name: HeaderName) -> Option<u64> {
    date::parse(headers.get(name)?.to_str().ok()?, now_secs())
}

/// Final status codes whose caching semantics hoard implements (those RFC 9110 defines, but
/// 206 and 304, which are not complete responses to store).
fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=205 | 300..=303 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505
    )
}

/// RFC 9110 §15.1: statuses a cache may store without explicit freshness.
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Why a response is not stored: the `detail` of its `Cache-Status` and the `reason` label
/// of `hoard_cache_not_stored`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStorable {
    Method,
    /// 206, 304 or an interim status.
    Status,
    NoStore,
    Private,
    /// A response to an authenticated request without `public`, `s-maxage` or
    /// `must-revalidate`.
    Authorization,
    /// A cookie without explicit shared freshness.
    SetCookie,
    VaryStar,
    /// Neither explicit freshness nor a heuristically cacheable status with a validator.
    NoFreshness,
    /// Larger than `--max-object-size`.
    TooLarge,
    /// The URL was invalidated (an unsafe request, a purge) while this response was on its
    /// way; it predates the change, so it is dropped (RFC 9111 §4.4).
    Invalidated,
    /// As many fills as hoard keeps in progress at once (`cache::FILLS_IN_PROGRESS`) were
    /// still being written or committed: this response passed through uncached rather than
    /// queue in memory behind them.
    Busy,
}

impl NotStorable {
    pub const ALL: [NotStorable; 11] = [
        NotStorable::Method,
        NotStorable::Status,
        NotStorable::NoStore,
        NotStorable::Private,
        NotStorable::Authorization,
        NotStorable::SetCookie,
        NotStorable::VaryStar,
        NotStorable::NoFreshness,
        NotStorable::TooLarge,
        NotStorable::Invalidated,
        NotStorable::Busy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotStorable::Method => "method",
            NotStorable::Status => "status",
            NotStorable::NoStore => "no-store",
            NotStorable::Private => "private",
            NotStorable::Authorization => "authorization",
            NotStorable::SetCookie => "set-cookie",
            NotStorable::VaryStar => "vary-star",
            NotStorable::NoFreshness => "no-freshness",
            NotStorable::TooLarge => "too-large",
            NotStorable::Invalidated => "invalidated",
            NotStorable::Busy => "busy",
        }
    }
}

/// RFC 9111 §3: may a shared cache store this response to this request? A cache `rule`
/// that matched the request may overrule the response's `no-store` and `private` (when it
/// says so) and give freshness where the origin gave none.
pub fn storable(
    method: &Method,
    request: &HeaderMap,
    request_cc: &CacheControl,
    status: StatusCode,
    response: &HeaderMap,
    response_cc: &CacheControl,
    rule: Option<&CacheRule>,
) -> Result<(), NotStorable> {
    let overrides = rule.map(|rule| rule.overrides).unwrap_or_default();
    if method != Method::GET {
        return Err(NotStorable::Method);
    }
    // 206 would need partial-object support; 304 is not a complete response; 1xx are interim.
    if status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status.as_u16() < 200
    {
        return Err(NotStorable::Status);
    }
    // §5.2.2.3: `must-understand` is for caches that know the status code's semantics;
    // for those it overrides `no-store` (which older caches obey instead).
    if response_cc.must_understand && !understood(status) {
        return Err(NotStorable::Status);
    }
    if request_cc.no_store
        || (response_cc.no_store && !response_cc.must_understand && !overrides.no_store)
    {
        return Err(NotStorable::NoStore);
    }
    if response_cc.private && !overrides.private {
        return Err(NotStorable::Private);
    }
    // §3.5: a response to an authenticated request is shared only when the origin says so.
    if request.contains_key(header::AUTHORIZATION)
        && !(response_cc.public || response_cc.s_maxage.is_some() || response_cc.must_revalidate)
    {
        return Err(NotStorable::Authorization);
    }
    // A cookie set for one user must not be handed to the next; the origin can opt in with
    // `public` or `s-maxage` (Varnish's default too).
    if PER_CLIENT_FIELDS
        .iter()
        .any(|name| response.contains_key(name))
        && !(response_cc.public || response_cc.s_maxage.is_some())
    {
        return Err(NotStorable::SetCookie);
    }
    if vary_is_star(response) {
        return Err(NotStorable::VaryStar);
    }
    let explicit =
        (has_explicit_freshness(response, response_cc) && !overrides.max_age) || response_cc.public;
    let validator =
        response.contains_key(header::ETAG) || response.contains_key(header::LAST_MODIFIED);
    if !explicit
        && rule.is_some_and(|rule| {
            rule.lifetime_without_explicit(status, heuristically_cacheable(status), None, validator)
                .is_some_and(|lifetime| lifetime > 0 || validator)
        })
    {
        return Ok(());
    }
    if !explicit && !heuristically_cacheable(status) {
        return Err(NotStorable::NoFreshness);
    }
    if !explicit && !validator {
        // Heuristic freshness needs Last-Modified; without it and without an ETag the entry
        // would be stale at once and could never be revalidated.
        return Err(NotStorable::NoFreshness);
    }
    Ok(())
}

/// Whether the response states its own freshness lifetime (§4.2.1).
fn has_explicit_freshness(response: &HeaderMap, response_cc: &CacheControl) -> bool {
    response_cc.s_maxage.is_some()
        || response_cc.max_age.is_some()
        || (!response_cc.targeted && response.contains_key(header::EXPIRES))
}

fn vary_is_star(response: &HeaderMap) -> bool {
    response
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|f| f.trim() == "*")
}

/// Response fields that belong to the one client whose request produced them: a cookie set
/// for one user must never reach the next, so no stored entry (first stored, or refreshed by
/// a 304) carries them.
pub const PER_CLIENT_FIELDS: [HeaderName; 2] =
    [header::SET_COOKIE, HeaderName::from_static("set-cookie2")];

/// `headers` without the `PER_CLIENT_FIELDS`.
pub fn shareable(headers: &HeaderMap) -> std::borrow::Cow<'_, HeaderMap> {
    if !PER_CLIENT_FIELDS
        .iter()
        .any(|name| headers.contains_key(name))
    {
        return std::borrow::Cow::Borrowed(headers);
    }
    let mut shared = headers.clone();
    for name in &PER_CLIENT_FIELDS {
        shared.remove(name);
    }
    std::borrow::Cow::Owned(shared)
}

/// The headers a stored response keeps: `shareable` ones, without hoard's own targeted field
/// (it was read when the freshness was computed, and must never go downstream, so a hit
/// need not look for it).
pub fn stored_headers<'h>(
    headers: &'h HeaderMap,
    settings: &PolicySettings,
) -> std::borrow::Cow<'h, HeaderMap> {
    let mut kept = shareable(headers);
    if kept.contains_key(&settings.own_cache_control) {
        kept.to_mut().remove(&settings.own_cache_control);
    }
    kept
}

/// §4.3.4: the stored headers updated with those of a 304, except framing fields.
pub fn refresh_headers(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    let mut merged = stored.clone();
    let mut replaced: Vec<&HeaderName> = Vec::new();
    for (name, value) in not_modified {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        if !replaced.contains(&name) {
            merged.remove(name);
            replaced.push(name);
        }
        merged.append(name.clone(), value.clone());
    }
    merged
}

/// §4.3.2: does a client's `If-None-Match` / `If-Modified-Since` match the stored response,
/// so a 304 may be sent instead of the body?
pub fn client_validators_match(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if let Some(inm) = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return inm.trim() == "*";
        };
        // Weak comparison (RFC 9110 §8.8.3.2).
        let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
        return inm
            .split(',')
            .any(|candidate| candidate.trim() == "*" || opaque(candidate) == opaque(etag));
    }
    let Some(since) = header_date(request, header::IF_MODIFIED_SINCE) else {
        return false;
    };
    let modified =
        header_date(stored, header::LAST_MODIFIED).or_else(|| header_date(stored, header::DATE));
    modified.is_some_and(|modified| modified <= since)
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
