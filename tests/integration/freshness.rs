//! Freshness as origins really write it: list-valued `Age`, repeated directives, and dates in
//! every form RFC 9110 §5.6.7 makes a recipient accept.

use hoard::body;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::support::{Hoard, Origin, get};

/// An origin that sends, for path `/N`, the `N`-th header set of `cases` (and an ETag).
async fn origin_with(cases: &'static [&'static [(&'static str, &'static str)]]) -> Origin {
    Origin::start(move |request: Request<Incoming>| async move {
        let index: usize = request.uri().path()[1..].parse().unwrap();
        let mut builder = Response::builder().header("etag", "\"e\"");
        for (name, value) in cases[index] {
            builder = builder.header(*name, *value);
        }
        builder.body(body::full("body")).unwrap()
    })
    .await
}

/// Whether the second GET of `/index` is answered from the cache without the origin.
async fn second_is_a_hit(hoard: &Hoard, origin: &Origin, index: usize) -> (bool, String) {
    let client = hoard.client();
    let url = origin.url(&format!("/{index}"));
    get(&client, &url, &[]).await;
    let second = get(&client, &url, &[]).await;
    (second.cache_status.contains("; hit"), second.cache_status)
}

#[tokio::test]
async fn a_list_valued_age_counts_its_first_member() {
    static CASES: &[&[(&str, &str)]] = &[
        // An hour old on a one-hour lifetime: stale on arrival.
        &[("cache-control", "max-age=3600"), ("age", "7200, 0")],
        &[("cache-control", "max-age=3600"), ("age", "7200;x=1")],
        // Invalid: as if absent, so fresh.
        &[("cache-control", "max-age=3600"), ("age", "soon")],
    ];
    let origin = origin_with(CASES).await;
    let hoard = Hoard::start(&[]).await;
    for (index, expect_hit) in [(0, false), (1, false), (2, true)] {
        let (hit, status) = second_is_a_hit(&hoard, &origin, index).await;
        assert_eq!(hit, expect_hit, "{:?}: {status}", CASES[index]);
    }
}

#[tokio::test]
async fn a_directive_given_twice_counts_the_first_time() {
    static CASES: &[&[(&str, &str)]] = &[
        &[("cache-control", "max-age=0, max-age=3600")],
        &[
            ("cache-control", "max-age=0"),
            ("cache-control", "max-age=3600"),
        ],
        &[("cache-control", "max-age=3600, max-age=0")],
    ];
    let origin = origin_with(CASES).await;
    let hoard = Hoard::start(&[]).await;
    for (index, expect_hit) in [(0, false), (1, false), (2, true)] {
        let (hit, status) = second_is_a_hit(&hoard, &origin, index).await;
        assert_eq!(hit, expect_hit, "{:?}: {status}", CASES[index]);
    }
}

#[tokio::test]
async fn dates_are_read_in_every_form_any_case_and_with_a_wrong_weekday() {
    // Expires in 2099 without max-age: fresh only if the date is understood (an invalid
    // Expires means already expired).
    static CASES: &[&[(&str, &str)]] = &[
        &[("expires", "Thu, 01 Jan 2099 00:00:00 GMT")],
        &[("expires", "thu, 01 jan 2099 00:00:00 gmt")],
        &[("expires", "Mon, 01 Jan 2099 00:00:00 GMT")],
        &[("expires", "Thursday, 01-Jan-99 00:00:00 GMT")],
        &[("expires", "Thu Jan  1 00:00:00 2099")],
        &[("expires", "Thu, 32 Jan 2099 00:00:00 GMT")],
        &[("expires", "Thu, 01 Jan 2099 00:00:00 CET")],
    ];
    let origin = origin_with(CASES).await;
    let hoard = Hoard::start(&[]).await;
    // "01-Jan-99" is 1999 (2099 is more than 50 years ahead): expired, like the invalid ones.
    let expected = [true, true, true, false, true, false, false];
    for (index, expect_hit) in expected.into_iter().enumerate() {
        let (hit, status) = second_is_a_hit(&hoard, &origin, index).await;
        assert_eq!(hit, expect_hit, "{:?}: {status}", CASES[index]);
    }
}
