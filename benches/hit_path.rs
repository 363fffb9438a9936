//! Micro-benchmarks of the pieces a cache hit runs through: key hashing, request
//! Cache-Control parsing, the freshness verdict, and (for fills and start-up) index record
//! encoding, cache rule matching. `cargo bench`; bench/peers.sh measures the whole proxy beside its peers.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hoard::cache::control::CacheControl;
use hoard::cache::policy::{Freshness, PolicySettings};
use hoard::cache::{CacheKey, StoredResponse};
use http::{HeaderMap, HeaderValue, StatusCode, Uri};

fn response_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        "date",
        HeaderValue::from_static("Thu, 26 Nov 2026 04:00:00 GMT"),
    );
    headers.insert(
        "cache-control",
        HeaderValue::from_static("public, max-age=3600, stale-while-revalidate=60"),
    );
    headers.insert("etag", HeaderValue::from_static("\"6b07b644-400\""));
    headers.insert(
        "last-modified",
        HeaderValue::from_static("Thu, 26 Nov 2026 03:00:00 GMT"),
    );
    headers.insert(
        "content-type",
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert("content-length", HeaderValue::from_static("1024"));
    headers
}

fn hit_path(c: &mut Criterion) {
    let uri: Uri = "http://www.example.com:80/static/app.js?v=42"
        .parse()
        .unwrap();
    c.bench_function("key: normalise and hash a URL", |b| {
        b.iter(|| CacheKey::from_uri(black_box(&uri)))
    });

    let mut request = HeaderMap::new();
    request.insert(
        "cache-control",
        HeaderValue::from_static("max-age=0, no-cache"),
    );
    c.bench_function("control: parse a request Cache-Control", |b| {
        b.iter(|| CacheControl::parse_request(black_box(&request)))
    });
    let empty = HeaderMap::new();
    c.bench_function("control: request without Cache-Control", |b| {
        b.iter(|| CacheControl::parse_request(black_box(&empty)))
    });

    let settings = PolicySettings {
        heuristic_max: std::time::Duration::from_secs(86_400),
        stale_if_error_grace: std::time::Duration::ZERO,
        own_cache_control: http::HeaderName::from_static("hoard-cache-control"),
    };
    let headers = response_headers();
    let now = 1_795_665_600;
    let freshness = Freshness::new(StatusCode::OK, &headers, now, now, &settings, None);
    let request_cc = CacheControl::default();
    c.bench_function("policy: freshness verdict of a stored response", |b| {
        b.iter(|| black_box(&freshness).verdict(black_box(&request_cc), now + 10))
    });
    c.bench_function("policy: freshness of a new response", |b| {
        b.iter(|| {
            Freshness::new(
                StatusCode::OK,
                black_box(&headers),
                now,
                now,
                &settings,
                None,
            )
        })
    });
    c.bench_function("headers: clone a stored header map (per hit)", |b| {
        b.iter(|| black_box(&headers).clone())
    });

    let entry = StoredResponse {
        spelling: None,
        key: CacheKey::from_uri(&uri).unwrap(),
        vary: Vec::new(),
        status: StatusCode::OK,
        reason: None,
        headers,
        freshness,
        body: 42,
        body_len: 1024,
        checksum: [7; 32],
    };
    let encoded = entry.encode();
    c.bench_function("entry: encode an index record", |b| {
        b.iter(|| black_box(&entry).encode())
    });
    c.bench_function("entry: decode an index record (start-up)", |b| {
        b.iter(|| StoredResponse::decode(black_box(&encoded)).unwrap())
    });
    // Every request with rules looks for its first matching rule: `--preset packages` has 13.
    let (config, _) = hoard::config::load([
        "hoard",
        "--preset",
        "packages",
        "--cache-dir",
        "/nonexistent",
    ])
    .unwrap();
    let rules = config.cache.rules;
    for (what, url) in [
        (
            "a match",
            "http://deb.debian.org/debian/pool/main/h/hello/hello_2.10-3_amd64.deb",
        ),
        ("no match", "http://www.example.com/static/app.js?v=42"),
    ] {
        c.bench_function(&format!("rules: find in --preset packages, {what}"), |b| {
            b.iter(|| rules.find(black_box(url)).is_some())
        });
    }
}

criterion_group!(benches, hit_path);
criterion_main!(benches);
