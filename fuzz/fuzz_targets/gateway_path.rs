//! Gateway paths come from any browser: mapping them to origin URLs (and origin URLs back to
//! gateway paths) must never panic.
#![no_main]

use hoard::proxy::gateway;
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = gateway::to_gateway_path(text, "http");
    let Ok(uri) = format!("/{}", text.trim_start_matches('/')).parse::<http::Uri>() else {
        return;
    };
    let recent = gateway::RecentSites::default();
    let _ = gateway::classify(
        &uri,
        &HeaderMap::new(),
        std::net::Ipv4Addr::LOCALHOST.into(),
        &recent,
    );
});
