//! Targeted cache control (RFC 9213): hoard obeys its own field, then `CDN-Cache-Control`,
//! then `Cache-Control` (and `Expires`); its own field never goes downstream, the others
//! pass unchanged.

use crate::support::{Hoard, Origin, get, second_gets_are_hits};

/// GETs `/index` twice: whether the second was a hit, and both responses' headers.
async fn twice(hoard: &Hoard, origin: &Origin, index: usize) -> (bool, [http::HeaderMap; 2]) {
    let client = hoard.client();
    let url = origin.url(&format!("/{index}"));
    let first = get(&client, &url, &[]).await;
    let second = get(&client, &url, &[]).await;
    (
        second.cache_status.contains("; hit"),
        [first.headers, second.headers],
    )
}

static CASES: &[&[(&str, &str)]] = &[
    // 0: CDN-Cache-Control wins over Cache-Control, both ways.
    &[
        ("cache-control", "no-store"),
        ("cdn-cache-control", "max-age=600"),
    ],
    &[
        ("cache-control", "max-age=600"),
        ("cdn-cache-control", "no-store"),
    ],
    // 2: hoard's own field wins over both.
    &[
        ("cache-control", "no-store"),
        ("cdn-cache-control", "no-store"),
        ("hoard-cache-control", "max-age=600"),
    ],
    // 3: a CDN-Cache-Control that is not a structured dictionary is ignored.
    &[
        ("cache-control", "no-store"),
        ("cdn-cache-control", "max-age=\"600"),
    ],
    // 4: with a targeted field, Expires does not count.
    &[
        ("expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
        ("cdn-cache-control", "max-age=0"),
    ],
    // 5: Surrogate-Control means nothing unless configured.
    &[
        ("cache-control", "no-store"),
        ("surrogate-control", "max-age=600"),
    ],
];

#[tokio::test]
async fn targeted_fields_take_precedence_in_their_order() {
    let expected = [true, false, true, false, false, false];
    second_gets_are_hits(&Hoard::start(&[]).await, CASES, &expected).await;
}

#[tokio::test]
async fn hoards_own_field_stays_home_and_the_others_pass_unchanged() {
    let origin = Origin::per_path(CASES).await;
    let hoard = Hoard::start(&[]).await;
    let (_, responses) = twice(&hoard, &origin, 2).await;
    for headers in &responses {
        assert!(!headers.contains_key("hoard-cache-control"), "{headers:?}");
        assert_eq!(headers["cdn-cache-control"], "no-store");
        assert_eq!(headers["cache-control"], "no-store");
    }
}

#[tokio::test]
async fn the_own_field_can_be_named_for_origins_written_for_other_caches() {
    let origin = Origin::per_path(CASES).await;
    let hoard = Hoard::start(&["--targeted-cache-control", "Surrogate-Control"]).await;
    let (hit, responses) = twice(&hoard, &origin, 5).await;
    assert!(hit, "Surrogate-Control: max-age=600 is obeyed");
    for headers in &responses {
        assert!(!headers.contains_key("surrogate-control"), "{headers:?}");
    }
    // Hoard-Cache-Control is now just another field.
    let (hit, responses) = twice(&hoard, &origin, 2).await;
    assert!(!hit, "CDN-Cache-Control: no-store applies");
    assert_eq!(responses[0]["hoard-cache-control"], "max-age=600");
}
