//! Freshness as origins really write it: list-valued `Age`, repeated directives, and dates in
//! every form RFC 9110 §5.6.7 makes a recipient accept.

use crate::support::{Hoard, second_gets_are_hits};

#[tokio::test]
async fn a_list_valued_age_counts_its_first_member() {
    static CASES: &[&[(&str, &str)]] = &[
        // An hour old on a one-hour lifetime: stale on arrival.
        &[("cache-control", "max-age=3600"), ("age", "7200, 0")],
        &[("cache-control", "max-age=3600"), ("age", "7200;x=1")],
        // Invalid: as if absent, so fresh.
        &[("cache-control", "max-age=3600"), ("age", "soon")],
    ];
    second_gets_are_hits(&Hoard::start(&[]).await, CASES, &[false, false, true]).await;
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
    second_gets_are_hits(&Hoard::start(&[]).await, CASES, &[false, false, true]).await;
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
    // "01-Jan-99" is 1999 (2099 is more than 50 years ahead): expired, like the invalid ones.
    let expected = [true, true, true, false, true, false, false];
    second_gets_are_hits(&Hoard::start(&[]).await, CASES, &expected).await;
}
