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

/// Settings the operator can tune.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicySettings {
    /// Upper bound for heuristic freshness (10% of the time since Last-Modified).
    pub heuristic_max: Duration,
    /// Staleness hoard accepts when the origin fails, even without `stale-if-error`.
    pub stale_if_error_grace: Duration,
}

/// Seconds since the Unix epoch, the unit every timestamp here uses.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn header_date(headers: &HeaderMap, name: HeaderName) -> Option<u64> {
    let text = headers.get(name)?.to_str().ok()?;
    let time = httpdate::parse_http_date(text.trim()).ok()?;
    Some(time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

/// RFC 9110 §15.1: statuses a cache may store without explicit freshness.
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
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
}

impl NotStorable {
    pub const ALL: [NotStorable; 9] = [
        NotStorable::Method,
        NotStorable::Status,
        NotStorable::NoStore,
        NotStorable::Private,
        NotStorable::Authorization,
        NotStorable::SetCookie,
        NotStorable::VaryStar,
        NotStorable::NoFreshness,
        NotStorable::TooLarge,
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
        }
    }
}

/// RFC 9111 §3: may a shared cache store this response to this request?
pub fn storable(
    method: &Method,
    request: &HeaderMap,
    request_cc: &CacheControl,
    status: StatusCode,
    response: &HeaderMap,
    response_cc: &CacheControl,
) -> Result<(), NotStorable> {
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
    if request_cc.no_store || response_cc.no_store {
        return Err(NotStorable::NoStore);
    }
    if response_cc.private {
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
    let explicit = response_cc.s_maxage.is_some()
        || response_cc.max_age.is_some()
        || response.contains_key(header::EXPIRES)
        || response_cc.public;
    let validator =
        response.contains_key(header::ETAG) || response.contains_key(header::LAST_MODIFIED);
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

fn vary_is_star(response: &HeaderMap) -> bool {
    response
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|f| f.trim() == "*")
}

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
    /// `response_time`.
    pub fn new(
        status: StatusCode,
        headers: &HeaderMap,
        request_time: u64,
        response_time: u64,
        settings: &PolicySettings,
    ) -> Freshness {
        let cc = CacheControl::parse(headers);
        let date = header_date(headers, header::DATE);
        // §4.2.3
        let age_value = headers
            .get(header::AGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
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

    /// RFC 5861 §4: may this response be served stale because the origin failed?
    pub fn usable_on_error(
        &self,
        request_cc: &CacheControl,
        now: u64,
        settings: &PolicySettings,
    ) -> bool {
        if self.must_revalidate {
            return false;
        }
        let window = [
            self.stale_if_error,
            request_cc.stale_if_error,
            Some(settings.stale_if_error_grace.as_secs()),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0);
        window > 0 && self.staleness(now) <= window
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

/// §4.2.1, then §4.2.2 heuristics.
fn lifetime(
    status: StatusCode,
    headers: &HeaderMap,
    cc: &CacheControl,
    date: u64,
    settings: &PolicySettings,
) -> u64 {
    if let Some(s_maxage) = cc.s_maxage {
        return s_maxage;
    }
    if let Some(max_age) = cc.max_age {
        return max_age;
    }
    if headers.contains_key(header::EXPIRES) {
        // An invalid Expires (e.g. "0") means "already expired" (§5.3).
        return header_date(headers, header::EXPIRES)
            .map_or(0, |expires| expires.saturating_sub(date));
    }
    if (heuristically_cacheable(status) || cc.public)
        && let Some(last_modified) = header_date(headers, header::LAST_MODIFIED)
    {
        let heuristic = date.saturating_sub(last_modified) / 10;
        return heuristic.min(settings.heuristic_max.as_secs());
    }
    0
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
mod tests {
    use super::*;
    use http::HeaderValue;

    const SETTINGS: PolicySettings = PolicySettings {
        heuristic_max: Duration::from_secs(86_400),
        stale_if_error_grace: Duration::ZERO,
    };

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
    }

    fn fresh(pairs: &[(&str, &str)], request_time: u64, response_time: u64) -> Freshness {
        Freshness::new(
            StatusCode::OK,
            &headers(pairs),
            request_time,
            response_time,
            &SETTINGS,
        )
    }

    #[test]
    fn s_maxage_beats_max_age_beats_expires() {
        let t = 1_000_000;
        let d = date(t);
        let e = date(t + 500);
        assert_eq!(
            fresh(
                &[
                    ("date", &d),
                    ("cache-control", "max-age=10, s-maxage=20"),
                    ("expires", &e)
                ],
                t,
                t
            )
            .lifetime,
            20
        );
        assert_eq!(
            fresh(
                &[
                    ("date", &d),
                    ("cache-control", "max-age=10"),
                    ("expires", &e)
                ],
                t,
                t
            )
            .lifetime,
            10
        );
        assert_eq!(fresh(&[("date", &d), ("expires", &e)], t, t).lifetime, 500);
    }

    #[test]
    fn all_three_date_formats_parse_and_invalid_expires_is_expired() {
        let t = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT
        for expires in [
            "Sun, 06 Nov 1994 08:59:37 GMT",
            "Sunday, 06-Nov-94 08:59:37 GMT",
            "Sun Nov  6 08:59:37 1994",
        ] {
            assert_eq!(
                fresh(&[("date", &date(t)), ("expires", expires)], t, t).lifetime,
                600,
                "{expires}"
            );
        }
        assert_eq!(
            fresh(&[("date", &date(t)), ("expires", "0")], t, t).lifetime,
            0
        );
    }

    #[test]
    fn heuristic_is_ten_percent_of_last_modified_age_capped() {
        let t = 10_000_000;
        let lm = date(t - 1000);
        assert_eq!(
            fresh(&[("date", &date(t)), ("last-modified", &lm)], t, t).lifetime,
            100
        );
        let old = date(t - 9_000_000);
        assert_eq!(
            fresh(&[("date", &date(t)), ("last-modified", &old)], t, t).lifetime,
            86_400
        );
        let not_heuristic = Freshness::new(
            StatusCode::from_u16(302).unwrap(),
            &headers(&[("date", &date(t)), ("last-modified", &lm)]),
            t,
            t,
            &SETTINGS,
        );
        assert_eq!(not_heuristic.lifetime, 0);
    }

    #[test]
    fn age_counts_age_header_delay_and_residence() {
        let t = 5_000_000;
        // Origin says Age 30, the response took 2 s to arrive, Date is 5 s before receipt.
        let f = fresh(
            &[
                ("date", &date(t - 5)),
                ("age", "30"),
                ("cache-control", "max-age=100"),
            ],
            t - 2,
            t,
        );
        assert_eq!(f.initial_age, 32);
        assert_eq!(f.age(t + 10), 42);
        assert_eq!(f.verdict(&CacheControl::default(), t + 10), Verdict::Fresh);
        assert_eq!(f.verdict(&CacheControl::default(), t + 67), Verdict::Fresh);
        assert_eq!(
            f.verdict(&CacheControl::default(), t + 68),
            Verdict::Validate
        );
    }

    #[test]
    fn request_directives_narrow_or_widen_what_is_usable() {
        let t = 5_000_000;
        let f = fresh(
            &[("date", &date(t)), ("cache-control", "max-age=100")],
            t,
            t,
        );
        let req = |v: &str| CacheControl::parse(&headers(&[("cache-control", v)]));
        assert_eq!(f.verdict(&req("max-age=5"), t + 10), Verdict::Validate);
        assert_eq!(f.verdict(&req("max-age=0"), t), Verdict::Validate);
        assert_eq!(f.verdict(&req("max-age=20"), t + 10), Verdict::Fresh);
        assert_eq!(f.verdict(&req("min-fresh=95"), t + 10), Verdict::Validate);
        assert_eq!(f.verdict(&req("no-cache"), t), Verdict::Validate);
        assert_eq!(
            f.verdict(&req("max-stale=50"), t + 140),
            Verdict::StaleAllowed
        );
        assert_eq!(f.verdict(&req("max-stale=50"), t + 160), Verdict::Validate);
        assert_eq!(
            f.verdict(&req("max-stale"), t + 100_000),
            Verdict::StaleAllowed
        );
        let strict = fresh(
            &[
                ("date", &date(t)),
                ("cache-control", "max-age=100, must-revalidate"),
            ],
            t,
            t,
        );
        assert_eq!(
            strict.verdict(&req("max-stale"), t + 140),
            Verdict::Validate
        );
    }

    #[test]
    fn stale_while_revalidate_and_stale_if_error_windows() {
        let t = 5_000_000;
        let f = fresh(
            &[
                ("date", &date(t)),
                (
                    "cache-control",
                    "max-age=10, stale-while-revalidate=20, stale-if-error=100",
                ),
            ],
            t,
            t,
        );
        let none = CacheControl::default();
        assert_eq!(f.verdict(&none, t + 25), Verdict::StaleWhileRevalidate);
        assert_eq!(f.verdict(&none, t + 31), Verdict::Validate);
        assert!(f.usable_on_error(&none, t + 100, &SETTINGS));
        assert!(!f.usable_on_error(&none, t + 111, &SETTINGS));
    }

    #[test]
    fn storability_rules() {
        let get = Method::GET;
        let none = HeaderMap::new();
        let cc = |h: &HeaderMap| CacheControl::parse(h);
        let check = |req: &HeaderMap, status: u16, resp: &HeaderMap| {
            storable(
                &get,
                req,
                &cc(req),
                StatusCode::from_u16(status).unwrap(),
                resp,
                &cc(resp),
            )
        };
        let max_age = headers(&[("cache-control", "max-age=60")]);
        assert_eq!(check(&none, 200, &max_age), Ok(()));
        assert_eq!(check(&none, 206, &max_age), Err(NotStorable::Status));
        assert_eq!(
            check(
                &none,
                200,
                &headers(&[("cache-control", "private, max-age=60")])
            ),
            Err(NotStorable::Private)
        );
        assert_eq!(
            check(&none, 200, &headers(&[("cache-control", "no-store")])),
            Err(NotStorable::NoStore)
        );
        assert_eq!(
            check(&headers(&[("cache-control", "no-store")]), 200, &max_age),
            Err(NotStorable::NoStore)
        );
        let auth = headers(&[("authorization", "Basic eA==")]);
        assert_eq!(check(&auth, 200, &max_age), Err(NotStorable::Authorization));
        assert_eq!(
            check(
                &auth,
                200,
                &headers(&[("cache-control", "public, max-age=60")])
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &none,
                200,
                &headers(&[("cache-control", "max-age=60"), ("vary", "*")])
            ),
            Err(NotStorable::VaryStar)
        );
        assert_eq!(
            check(&none, 302, &headers(&[("etag", "\"a\"")])),
            Err(NotStorable::NoFreshness)
        );
        assert_eq!(check(&none, 302, &max_age), Ok(()));
        assert_eq!(
            check(&none, 404, &headers(&[("last-modified", &date(1000))])),
            Ok(())
        );
    }

    #[test]
    fn refresh_replaces_fields_but_not_content_length() {
        let stored = headers(&[
            ("etag", "\"a\""),
            ("content-length", "10"),
            ("x-old", "1"),
            ("cache-control", "max-age=1"),
        ]);
        let fresh304 = headers(&[
            ("cache-control", "max-age=60"),
            ("content-length", "0"),
            ("x-new", "1"),
            ("x-new", "2"),
        ]);
        let merged = refresh_headers(&stored, &fresh304);
        assert_eq!(merged["cache-control"], "max-age=60");
        assert_eq!(merged["content-length"], "10");
        assert_eq!(merged.get_all("x-new").iter().count(), 2);
        assert_eq!(merged["x-old"], "1");
    }

    #[test]
    fn client_conditionals() {
        let stored = headers(&[("etag", "W/\"v1\""), ("last-modified", &date(1000))]);
        assert!(client_validators_match(
            &headers(&[("if-none-match", "\"x\", \"v1\"")]),
            &stored
        ));
        assert!(!client_validators_match(
            &headers(&[("if-none-match", "\"v2\"")]),
            &stored
        ));
        assert!(client_validators_match(
            &headers(&[("if-modified-since", &date(1000))]),
            &stored
        ));
        assert!(!client_validators_match(
            &headers(&[("if-modified-since", &date(999))]),
            &stored
        ));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Age never decreases with time, never falls below the initial age, and a response
        /// stays fresh exactly while its age is under its lifetime (no request directives).
        #[test]
        fn age_and_freshness_move_with_time(
            initial_age in 0u64..1_000_000,
            lifetime in 0u64..1_000_000,
            response_time in 0u64..2_000_000_000,
            elapsed in 0u64..1_000_000,
            later in 0u64..1_000_000,
        ) {
            let freshness = Freshness {
                response_time,
                initial_age,
                lifetime,
                must_revalidate: true,
                no_cache: false,
                stale_while_revalidate: None,
                stale_if_error: None,
            };
            let now = response_time + elapsed;
            let age = freshness.age(now);
            prop_assert!(age >= initial_age);
            prop_assert!(freshness.age(now + later) >= age);
            let verdict = freshness.verdict(&CacheControl::default(), now);
            prop_assert_eq!(verdict == Verdict::Fresh, age < lifetime);
            if verdict != Verdict::Fresh {
                prop_assert_eq!(verdict, Verdict::Validate, "must-revalidate never serves stale");
            }
        }

        /// Request directives only ever narrow what a plain request would accept, except
        /// max-stale, which may widen it.
        #[test]
        fn request_directives_never_make_a_stale_response_fresh(
            lifetime in 0u64..10_000,
            elapsed in 0u64..20_000,
            max_age in 0u64..20_000,
            min_fresh in 0u64..20_000,
        ) {
            let freshness = Freshness {
                response_time: 1_000_000,
                initial_age: 0,
                lifetime,
                must_revalidate: false,
                no_cache: false,
                stale_while_revalidate: None,
                stale_if_error: None,
            };
            let now = 1_000_000 + elapsed;
            let plain = freshness.verdict(&CacheControl::default(), now);
            let narrowed = CacheControl { max_age: Some(max_age), min_fresh: Some(min_fresh), ..CacheControl::default() };
            if plain != Verdict::Fresh {
                prop_assert_ne!(freshness.verdict(&narrowed, now), Verdict::Fresh);
            }
        }
    }
}
