//! Cache-Control parsing and the freshness it feeds must never panic, whatever the origin sends.
#![no_main]

use hoard::cache::control::CacheControl;
use hoard::cache::policy::{Freshness, PolicySettings};
use http::{HeaderMap, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for name in [
        "cache-control",
        "expires",
        "date",
        "last-modified",
        "age",
        "pragma",
    ] {
        headers.insert(name, value.clone());
    }
    let request = CacheControl::parse_request(&headers);
    let settings = PolicySettings {
        heuristic_max: std::time::Duration::from_secs(86_400),
        stale_if_error_grace: std::time::Duration::from_secs(60),
    };
    let freshness = Freshness::new(StatusCode::OK, &headers, 1_000, 1_001, &settings);
    let _ = freshness.verdict(&request, 2_000);
    let _ = freshness.usable_on_error(&request, 2_000, &settings);
});
