//! Unit tests of the storing and freshness decisions, one RFC rule each.

use super::*;
use http::HeaderValue;

const SETTINGS: PolicySettings = PolicySettings {
    heuristic_max: Duration::from_secs(86_400),
    stale_if_error_grace: Duration::ZERO,
    own_cache_control: HeaderName::from_static("hoard-cache-control"),
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
        None,
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
        None,
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
    assert_eq!(
        f.usable_on_error(&none, t + 100, &SETTINGS),
        Some(StaleOnError::Directive)
    );
    assert_eq!(f.usable_on_error(&none, t + 111, &SETTINGS), None);
    let week = PolicySettings {
        stale_if_error_grace: Duration::from_secs(7 * 86_400),
        ..SETTINGS
    };
    assert_eq!(
        f.usable_on_error(&none, t + 111, &week),
        Some(StaleOnError::Grace)
    );
    // Never for responses that forbid serving stale, whatever the grace or the directive.
    for forbids in [
        "no-cache",
        "must-revalidate",
        "proxy-revalidate",
        "s-maxage=10",
    ] {
        let strict = fresh(
            &[
                ("date", &date(t)),
                (
                    "cache-control",
                    &format!("max-age=10, stale-if-error=100, {forbids}"),
                ),
            ],
            t,
            t,
        );
        assert_eq!(
            strict.usable_on_error(&none, t + 50, &week),
            None,
            "{forbids}"
        );
    }
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
            None,
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
