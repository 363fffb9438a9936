//! Slices (`--slice-size`, like nginx's `slice` module): a range request fetches only the
//! slices it covers, each with a range request of its own, and later ranges reuse them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hoard::body;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::support::{Hoard, Origin};

const LEN: u64 = 5 * 1024 * 1024;
const MIB: u64 = 1024 * 1024;

/// Byte `i` of version `v` of the object.
fn byte(v: u64, i: u64) -> u8 {
    ((i * 7 + i / 251 + v * 13) % 256) as u8
}

fn bytes(v: u64, start: u64, end: u64) -> Vec<u8> {
    (start..=end).map(|i| byte(v, i)).collect()
}

/// The `bytes=a-b` range a request asks for.
fn asked_range(request: &Request<Incoming>) -> Option<(u64, u64)> {
    let range = request.headers().get("range")?.to_str().ok()?;
    let (first, last) = range.strip_prefix("bytes=")?.split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()?))
}

/// An origin serving a 5 MiB object, in version `version`, with byte ranges (206) unless
/// `ranges` is false.
async fn ranged_origin(version: Arc<AtomicU64>, ranges: bool) -> Origin {
    Origin::start(move |request: Request<Incoming>| {
        let v = version.load(Ordering::SeqCst);
        async move {
            let builder = Response::builder()
                .header("cache-control", "max-age=600")
                .header("etag", format!("\"v{v}\""))
                .header("accept-ranges", "bytes");
            let range = asked_range(&request);
            match range {
                Some((start, _)) if ranges && start >= LEN => builder
                    .status(416)
                    .header("content-range", format!("bytes */{LEN}"))
                    .body(body::empty())
                    .unwrap(),
                Some((start, end)) if ranges => {
                    let end = end.min(LEN - 1);
                    builder
                        .status(206)
                        .header("content-range", format!("bytes {start}-{end}/{LEN}"))
                        .body(body::full(bytes(v, start, end)))
                        .unwrap()
                }
                _ => builder.body(body::full(bytes(v, 0, LEN - 1))).unwrap(),
            }
        }
    })
    .await
}

/// The `Range` of every request the origin got, in order (`-` for none).
fn ranges_seen(origin: &Origin) -> Vec<String> {
    origin
        .seen()
        .iter()
        .map(|seen| {
            seen.headers
                .get("range")
                .map_or("-".to_owned(), |r| r.to_str().unwrap().to_owned())
        })
        .collect()
}

/// POSTs to `url` and changes the object to version 2: the range `(start, end)` asked for
/// next must be version 2's, whatever was stored before.
async fn changed_by_a_post(
    client: &reqwest::Client,
    url: &str,
    version: &AtomicU64,
    (start, end): (u64, u64),
) {
    client.post(url).send().await.unwrap();
    version.store(2, Ordering::SeqCst);
    let after = get_range(client, url, &format!("bytes={start}-{end}")).await;
    assert_eq!(after.bytes().await.unwrap(), bytes(2, start, end));
}

async fn get_range(client: &reqwest::Client, url: &str, range: &str) -> reqwest::Response {
    client.get(url).header("range", range).send().await.unwrap()
}

/// Asserts that `response` was answered from the cache.
fn assert_hit(response: &reqwest::Response) {
    let status = response.headers()["cache-status"].to_str().unwrap();
    assert!(status.contains("; hit"), "{status:?}");
}

#[tokio::test]
async fn a_range_fetches_only_the_slices_it_covers_and_later_ranges_reuse_them() {
    let origin = ranged_origin(Arc::new(AtomicU64::new(1)), true).await;
    let hoard = Hoard::start(&["--slice-size", "1MiB"]).await;
    let client = hoard.client();
    let url = origin.url("/video.mp4");

    let response = get_range(&client, &url, "bytes=1500000-2600000").await;
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        response.headers()["content-range"],
        format!("bytes 1500000-2600000/{LEN}").as_str()
    );
    assert_eq!(
        response.bytes().await.unwrap(),
        bytes(1, 1_500_000, 2_600_000)
    );
    assert_eq!(
        ranges_seen(&origin),
        [
            format!("bytes={}-{}", MIB, 2 * MIB - 1),
            format!("bytes={}-{}", 2 * MIB, 3 * MIB - 1)
        ],
        "only the two slices the range covers"
    );

    // A range inside them needs the origin no more.
    let again = get_range(&client, &url, "bytes=1600000-2200000").await;
    assert_hit(&again);
    assert_eq!(again.bytes().await.unwrap(), bytes(1, 1_600_000, 2_200_000));
    assert_eq!(origin.seen().len(), 2, "{:?}", ranges_seen(&origin));

    // The last bytes, and an open-ended range: never the whole object from the origin.
    let tail = get_range(&client, &url, "bytes=-1000").await;
    assert_eq!(tail.bytes().await.unwrap(), bytes(1, LEN - 1000, LEN - 1));
    let open = get_range(&client, &url, &format!("bytes={}-", LEN - 10)).await;
    assert_eq!(open.bytes().await.unwrap(), bytes(1, LEN - 10, LEN - 1));
    assert!(ranges_seen(&origin).iter().all(|range| range != "-"));
    let beyond = get_range(&client, &url, &format!("bytes={LEN}-")).await;
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);
}

#[tokio::test]
async fn an_object_that_changes_between_slices_is_cut_off_and_then_fetched_afresh() {
    let version = Arc::new(AtomicU64::new(1));
    let origin = ranged_origin(version.clone(), true).await;
    let hoard = Hoard::start(&["--slice-size", "1MiB"]).await;
    let client = hoard.client();
    let url = origin.url("/changing");
    let first = get_range(&client, &url, "bytes=0-99").await;
    assert_eq!(first.bytes().await.unwrap(), bytes(1, 0, 99));

    version.store(2, Ordering::SeqCst);
    // Slice 0 is the stored version 1, slice 1 comes as version 2: never a mix.
    let mixed = get_range(&client, &url, &format!("bytes=0-{}", MIB + 99)).await;
    assert_eq!(mixed.status(), StatusCode::PARTIAL_CONTENT);
    assert!(mixed.bytes().await.is_err(), "the response is cut off");

    let fresh = get_range(&client, &url, &format!("bytes=0-{}", MIB + 99)).await;
    assert_eq!(fresh.bytes().await.unwrap(), bytes(2, 0, MIB + 99));
}

#[tokio::test]
async fn an_unsafe_request_forgets_the_slices() {
    let version = Arc::new(AtomicU64::new(1));
    let origin = ranged_origin(version.clone(), true).await;
    let hoard = Hoard::start(&["--slice-size", "1MiB"]).await;
    let client = hoard.client();
    let url = origin.url("/doc");
    get_range(&client, &url, "bytes=10-20")
        .await
        .bytes()
        .await
        .unwrap();
    changed_by_a_post(&client, &url, &version, (10, 20)).await;
}

#[tokio::test]
async fn an_origin_that_ignores_ranges_has_its_whole_answer_passed_on() {
    let origin = ranged_origin(Arc::new(AtomicU64::new(1)), false).await;
    let hoard = Hoard::start(&["--slice-size", "1MiB"]).await;
    let client = hoard.client();
    let response = get_range(&client, &origin.url("/whole"), "bytes=0-9").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap().len() as u64, LEN);
}

#[tokio::test]
async fn without_slices_a_206_is_stored_as_it_came_and_answers_the_ranges_inside_it() {
    let version = Arc::new(AtomicU64::new(1));
    let origin = ranged_origin(version.clone(), true).await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    let url = origin.url("/piece");
    let first = get_range(&client, &url, "bytes=1000-2999").await;
    assert_eq!(first.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(first.bytes().await.unwrap(), bytes(1, 1000, 2999));

    for (range, start, end) in [
        ("bytes=1000-2999", 1000, 2999),
        ("bytes=1500-1600", 1500, 1600),
    ] {
        let again = get_range(&client, &url, range).await;
        assert_eq!(
            again.headers()["content-range"],
            format!("bytes {start}-{end}/{LEN}").as_str()
        );
        assert!(
            again.headers()["cache-status"]
                .to_str()
                .unwrap()
                .contains("; hit"),
            "{range}: {:?}",
            again.headers()["cache-status"]
        );
        assert_eq!(again.bytes().await.unwrap(), bytes(1, start, end));
    }
    assert_eq!(ranges_seen(&origin), ["bytes=1000-2999"]);

    // Outside the piece: the origin is asked (and that piece is kept too).
    let outside = get_range(&client, &url, "bytes=5000-5099").await;
    assert_eq!(outside.bytes().await.unwrap(), bytes(1, 5000, 5099));
    assert_eq!(origin.seen().len(), 2);

    // An unsafe request forgets the pieces.
    changed_by_a_post(&client, &url, &version, (1500, 1600)).await;
}

#[tokio::test]
async fn a_whole_get_of_a_sliced_object_is_completed_from_its_slices() {
    let origin = ranged_origin(Arc::new(AtomicU64::new(1)), true).await;
    let hoard = Hoard::start(&["--slice-size", "1MiB"]).await;
    let client = hoard.client();
    let url = origin.url("/image.iso");
    get_range(&client, &url, "bytes=1500000-2600000")
        .await
        .bytes()
        .await
        .unwrap();

    let whole = client.get(&url).send().await.unwrap();
    assert_eq!(whole.status(), StatusCode::OK);
    assert!(!whole.headers().contains_key("content-range"));
    assert_eq!(whole.bytes().await.unwrap(), bytes(1, 0, LEN - 1));
    let seen = ranges_seen(&origin);
    assert!(
        seen.iter().all(|range| range != "-"),
        "never fetched whole: {seen:?}"
    );
    assert_eq!(seen.len(), 5, "each slice once: {seen:?}");

    // All five slices are stored now: the next whole GET needs no origin.
    let again = client.get(&url).send().await.unwrap();
    assert_hit(&again);
    assert_eq!(again.bytes().await.unwrap(), bytes(1, 0, LEN - 1));
    assert_eq!(origin.seen().len(), 5);
}

#[tokio::test]
async fn pieces_with_one_validator_are_combined_for_ranges_and_into_the_whole_object() {
    let origin = ranged_origin(Arc::new(AtomicU64::new(1)), true).await;
    let hoard = Hoard::start(&[]).await;
    let client = hoard.client();
    let url = origin.url("/combined");
    for range in ["bytes=0-2999999", &format!("bytes=3000000-{}", LEN - 1)] {
        get_range(&client, &url, range).await.bytes().await.unwrap();
    }
    assert_eq!(origin.seen().len(), 2);

    let across = get_range(&client, &url, "bytes=2999000-3001000").await;
    assert_eq!(across.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        across.bytes().await.unwrap(),
        bytes(1, 2_999_000, 3_001_000)
    );
    let whole = client.get(&url).send().await.unwrap();
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.bytes().await.unwrap(), bytes(1, 0, LEN - 1));
    assert_eq!(origin.seen().len(), 2, "both answered from the two pieces");
}

/// An origin that says its object is 4 EiB long and answers every range with a slice of
/// zeros.
async fn enormous_origin() -> Origin {
    Origin::start(|request: Request<Incoming>| async move {
        let start = asked_range(&request).map_or(0, |(start, _)| start);
        const TOTAL: u64 = 4_611_686_018_427_387_904;
        if start >= TOTAL {
            return Response::builder()
                .status(416)
                .header("content-range", format!("bytes */{TOTAL}"))
                .body(body::empty())
                .unwrap();
        }
        Response::builder()
            .status(206)
            .header("etag", "\"big\"")
            .header("cache-control", "max-age=600")
            .header(
                "content-range",
                format!("bytes {start}-{}/{TOTAL}", start + MIB - 1),
            )
            .body(body::full(vec![0u8; MIB as usize]))
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn hostile_totals_and_offsets_cost_nothing_but_the_bytes_sent() {
    let origin = enormous_origin().await;
    let hoard = Hoard::start(&["--slice-size", "1MiB"]).await;
    let client = hoard.client();
    let url = origin.url("/huge");
    let mut open = get_range(&client, &url, "bytes=0-").await;
    assert_eq!(open.status(), StatusCode::PARTIAL_CONTENT);
    assert!(
        open.chunk().await.unwrap().is_some(),
        "the first bytes arrive"
    );
    drop(open);
    // An offset near the end of u64, and then an invalidation of everything asked for.
    let far = get_range(&client, &url, "bytes=18446744073709551000-").await;
    assert_eq!(far.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let posted = tokio::time::timeout(std::time::Duration::from_secs(10), client.post(&url).send())
        .await
        .expect("an invalidation does not walk a client's offsets");
    assert!(posted.is_ok());
}

#[tokio::test]
async fn without_a_strong_validator_slices_are_not_combined() {
    let origin = Origin::start(|request: Request<Incoming>| async move {
        let (start, end) = asked_range(&request).unwrap();
        let end = end.min(LEN - 1);
        Response::builder()
            .status(206)
            .header("etag", "W/\"weak\"")
            .header("cache-control", "max-age=600")
            .header("content-range", format!("bytes {start}-{end}/{LEN}"))
            .body(body::full(bytes(1, start, end)))
            .unwrap()
    })
    .await;
    let hoard = Hoard::start(&["--slice-size", "1MiB"]).await;
    let client = hoard.client();
    let response = get_range(&client, &origin.url("/weak"), "bytes=1500000-2600000").await;
    assert_eq!(
        response.headers()["content-range"],
        format!("bytes 1500000-{}/{LEN}", 2 * MIB - 1).as_str(),
        "only the first slice's bytes: the client asks again for the rest"
    );
    assert_eq!(
        response.bytes().await.unwrap(),
        bytes(1, 1_500_000, 2 * MIB - 1)
    );
}

#[tokio::test]
async fn slices_with_validators_only_are_revalidated_and_kept() {
    // No Cache-Control: heuristic freshness from Last-Modified (206 is heuristically
    // cacheable), and a 304 keeps the slice.
    let origin = Origin::start(|request: Request<Incoming>| async move {
        let builder = Response::builder()
            .header("etag", "\"static\"")
            .header("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT");
        if request.headers().contains_key("if-none-match") {
            return builder.status(304).body(body::empty()).unwrap();
        }
        let (start, end) = asked_range(&request).unwrap();
        let end = end.min(LEN - 1);
        builder
            .status(206)
            .header("content-range", format!("bytes {start}-{end}/{LEN}"))
            .body(body::full(bytes(1, start, end)))
            .unwrap()
    })
    .await;
    let hoard = Hoard::start(&["--slice-size", "1MiB"]).await;
    let client = hoard.client();
    let url = origin.url("/static.bin");
    get_range(&client, &url, "bytes=10-20")
        .await
        .bytes()
        .await
        .unwrap();
    let again = get_range(&client, &url, "bytes=10-20").await;
    assert_hit(&again);
    // A client's no-cache revalidates; the 304 keeps the slice for the next one.
    let forced = client
        .get(&url)
        .header("range", "bytes=10-20")
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(forced.bytes().await.unwrap(), bytes(1, 10, 20));
    let after = get_range(&client, &url, "bytes=10-20").await;
    assert_hit(&after);
}
