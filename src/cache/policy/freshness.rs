//! Freshness (RFC 9111 §4.2): a stored response's lifetime, age and what they allow for one
//! request, computed once when it is stored or refreshed.

use http::StatusCode;
use http::header::{self, HeaderMap};

use super::{PolicySettings, has_explicit_freshness, header_date, heuristically_cacheable};
use crate::cache::control::CacheControl;
use crate::cache::rules::CacheRule;

/// What a stored response needs for every later freshness decision, computed once when it is
/// stored or refreshed so a hit does not re-parse headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// When the response was received (seconds since the epoch).
    pub response_time: u64,
    /// §4.2.3 `corrected_initial_age`.
    pub initial_age: u64,
    /// §4.2.1 freshness lifetime in seconds.
    pub lifetime: u64,
    /// `must-revalidate`, `proxy-revalidate` or `s-maxage` (§4.2.4, §5.2.2.10): never
    /// serve stale.
    pub must_revalidate: bool,
    /// Response `no-cache`: validate before every use.
    pub no_cache: bool,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

impl Freshness {
    /// Computes freshness for a response requested at `request_time` and received at
    /// `response_time`, under the cache `rule` that matched its request, if any.
    pub fn new(
        status: StatusCode,
        headers: &HeaderMap,
        request_time: u64,
        response_time: u64,
        settings: &PolicySettings,
        rule: Option<&CacheRule>,
    ) -> Freshness {
        let cc = settings.directives(headers);
        let date = header_date(headers, header::DATE);
        // §4.2.3; a list (`Age: 7200, 0`, from a hop that appended) counts its first member,
        // parameters ignored; an invalid value is as if absent.
        let age_value = headers
            .get(header::AGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.split(';').next())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .map_or(0, |v| v.parse::<u64>().unwrap_or(1 << 31));
        let apparent_age = date.map_or(0, |date| response_time.saturating_sub(date));
        let response_delay = response_time.saturating_sub(request_time);
        let corrected_age_value = age_value.saturating_add(response_delay);
        let initial_age = apparent_age.max(corrected_age_value);

        Freshness {
            response_time,
            initial_age,
            lifetime: lifetime(
                status,
                headers,
                &cc,
                date.unwrap_or(response_time),
                settings,
                rule,
            ),
            must_revalidate: cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some(),
            no_cache: cc.no_cache,
            stale_while_revalidate: cc.stale_while_revalidate,
            stale_if_error: cc.stale_if_error,
        }
    }

    /// §4.2.3 `current_age` at `now`.
    pub fn age(&self, now: u64) -> u64 {
        self.initial_age
            .saturating_add(now.saturating_sub(self.response_time))
    }

    fn staleness(&self, now: u64) -> u64 {
        self.age(now).saturating_sub(self.lifetime)
    }

    /// May this stored response answer a request with these directives, and how?
    pub fn verdict(&self, request_cc: &CacheControl, now: u64) -> Verdict {
        if self.no_cache || request_cc.no_cache {
            return Verdict::Validate;
        }
        let age = self.age(now);
        // Ages are whole seconds, so `max-age=0` (a browser's reload) would accept anything
        // under a second old; like Squid, treat it as "revalidate".
        if request_cc
            .max_age
            .is_some_and(|max_age| age > max_age || max_age == 0)
        {
            return Verdict::Validate;
        }
        let remaining = self.lifetime.saturating_sub(age);
        if let Some(min_fresh) = request_cc.min_fresh
            && remaining < min_fresh
        {
            return Verdict::Validate;
        }
        if age < self.lifetime {
            return Verdict::Fresh;
        }
        if self.must_revalidate {
            return Verdict::Validate;
        }
        let staleness = self.staleness(now);
        if let Some(max_stale) = request_cc.max_stale
            && max_stale.is_none_or(|limit| staleness <= limit)
        {
            return Verdict::StaleAllowed;
        }
        if self
            .stale_while_revalidate
            .is_some_and(|window| staleness <= window)
        {
            return Verdict::StaleWhileRevalidate;
        }
        Verdict::Validate
    }

    /// May this response be served stale because the origin failed, and on whose word:
    /// a `stale-if-error` directive (RFC 5861 §4), or hoard's grace for a disconnected cache
    /// (RFC 9111 §4.2.4, `--stale-if-error`). Never for `must-revalidate`,
    /// `proxy-revalidate`, `s-maxage` (§5.2.2.2, §5.2.2.8, §5.2.2.10) or `no-cache`
    /// (§5.2.2.4: not without successful validation).
    pub fn usable_on_error(
        &self,
        request_cc: &CacheControl,
        now: u64,
        settings: &PolicySettings,
    ) -> Option<StaleOnError> {
        if self.must_revalidate || self.no_cache {
            return None;
        }
        let staleness = self.staleness(now);
        let directive = [self.stale_if_error, request_cc.stale_if_error]
            .into_iter()
            .flatten()
            .max();
        if directive.is_some_and(|window| staleness <= window) {
            return Some(StaleOnError::Directive);
        }
        let grace = settings.stale_if_error_grace.as_secs();
        (grace > 0 && staleness <= grace).then_some(StaleOnError::Grace)
    }
}

/// Why a stale response may stand in for a failed origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleOnError {
    /// The response's or the request's `stale-if-error`.
    Directive,
    /// hoard's own grace (`--stale-if-error`).
    Grace,
}

impl StaleOnError {
    /// The `Cache-Status` detail that says so.
    pub fn detail(self) -> &'static str {
        match self {
            StaleOnError::Directive => "stale-if-error",
            StaleOnError::Grace => "origin-unavailable",
        }
    }
}

/// How a stored response may be used for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Fresh,
    /// Stale, but the client accepts it (`max-stale`).
    StaleAllowed,
    /// Stale within `stale-while-revalidate`: serve it and refresh in the background.
    StaleWhileRevalidate,
    /// Ask the origin first (conditionally when there is a validator).
    Validate,
}

/// §4.2.1, then §4.2.2 heuristics, then what a cache rule says.
fn lifetime(
    status: StatusCode,
    headers: &HeaderMap,
    cc: &CacheControl,
    date: u64,
    settings: &PolicySettings,
    rule: Option<&CacheRule>,
) -> u64 {
    let overruled = rule.is_some_and(|rule| rule.overrides.max_age);
    if !overruled && has_explicit_freshness(headers, cc) {
        let explicit = explicit_lifetime(headers, cc, date);
        return rule.map_or(explicit, |rule| rule.capped(explicit));
    }
    let heuristically_cacheable = heuristically_cacheable(status) || cc.public;
    let heuristic = header_date(headers, header::LAST_MODIFIED)
        .filter(|_| heuristically_cacheable)
        .map(|last_modified| {
            (date.saturating_sub(last_modified) / 10).min(settings.heuristic_max.as_secs())
        });
    let Some(rule) = rule else {
        return heuristic.unwrap_or(0);
    };
    let validator =
        headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
    rule.capped(
        rule.lifetime_without_explicit(status, heuristically_cacheable, heuristic, validator)
            .unwrap_or(0),
    )
}

/// §4.2.1: `s-maxage`, `max-age`, then `Expires` (only when `has_explicit_freshness`).
fn explicit_lifetime(headers: &HeaderMap, cc: &CacheControl, date: u64) -> u64 {
    if let Some(s_maxage) = cc.s_maxage {
        return s_maxage;
    }
    if let Some(max_age) = cc.max_age {
        return max_age;
    }
    // An invalid Expires (e.g. "0") means "already expired" (§5.3).
    header_date(headers, header::EXPIRES).map_or(0, |expires| expires.saturating_sub(date))
}
