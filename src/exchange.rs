//! `Exchange`: the typed record of one client request: what was asked, how it reached hoard
//! (`RequestMode`), what the cache did, what the origin answered, when it started and, for a
//! CONNECT tunnel, what it carried. `proxy` builds it while it handles the request and
//! hands it back beside the response; the access log and the metrics only read it (the
//! bytes sent and the duration are added when the body has gone). Plain data, no I/O.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};
use prometheus_client::encoding::EncodeLabelValue;

use crate::cache::CacheOutcome;

/// How a request reached hoard, decided once, from the configuration, the listener and the
/// request (`Proxy::mode_of`).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum RequestMode {
    Forward,
    Reverse,
    Gateway,
    Connect,
    Admin,
    /// Sent on by the fleet member that received it (`--peers`): served here, never sent
    /// on again.
    Peer,
}

impl RequestMode {
    /// Every mode, in declaration order (`mode as usize` indexes it).
    pub const ALL: [RequestMode; 6] = [
        RequestMode::Forward,
        RequestMode::Reverse,
        RequestMode::Gateway,
        RequestMode::Connect,
        RequestMode::Admin,
        RequestMode::Peer,
    ];
}

/// The name one request goes by in the access log, the `-v` trace and an error page: the
/// client's own `X-Request-Id` when it sent a usable one (so a request can be followed
/// through a chain of services), else one made here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestId {
    /// Shown as 16 hex digits; distinct for every request of this process.
    Made(u64),
    Given(HeaderValue),
}

/// The request header whose id is kept.
pub const REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// The longest `X-Request-Id` kept; a longer one (or one with spaces or control bytes) is
/// replaced, so a client cannot stuff the log.
const MAX_GIVEN_ID: usize = 128;

impl RequestId {
    /// The client's id if it gave a usable one, else the next one made here.
    pub fn of(headers: &http::HeaderMap) -> RequestId {
        match headers.get(REQUEST_ID) {
            Some(given)
                if !given.is_empty()
                    && given.len() <= MAX_GIVEN_ID
                    && given.as_bytes().iter().all(|b| b.is_ascii_graphic()) =>
            {
                RequestId::Given(given.clone())
            }
            _ => RequestId::next(),
        }
    }

    /// A counter scrambled with a per-process random key: no two requests of one process
    /// share an id (the mix is a bijection), ids do not reveal the request count, and two
    /// processes' ids differ. No system call per request.
    pub fn next() -> RequestId {
        static KEY: OnceLock<u64> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let key = *KEY.get_or_init(|| {
            let mut bytes = [0; 8];
            // Without randomness the ids are still distinct, only predictable.
            let _ = getrandom::getrandom(&mut bytes);
            u64::from_le_bytes(bytes)
        });
        RequestId::Made(splitmix64(
            key.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed)),
        ))
    }
}

/// SplitMix64's finaliser: a bijection on u64 that spreads every input bit.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestId::Made(id) => write!(f, "{id:016x}"),
            // Visible ASCII only (checked in `of`).
            RequestId::Given(id) => f.write_str(id.to_str().unwrap_or("-")),
        }
    }
}

/// What happened to one request.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Its id (`X-Request-Id`, or made here).
    pub id: RequestId,
    /// The client's address (IPv4-mapped IPv6 as IPv4).
    pub client: SocketAddr,
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub referer: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    pub started: Instant,
    pub started_at: SystemTime,
    pub mode: RequestMode,
    /// The status the client was answered with.
    pub status: StatusCode,
    /// What the cache did; `None` for requests it never saw (CONNECT, admin, errors).
    pub cache: Option<CacheOutcome>,
    /// The status the origin answered with, when it was asked.
    pub upstream_status: Option<u16>,
    /// A CONNECT tunnel's bytes (up, down), once it has closed.
    pub tunnel: Option<(u64, u64)>,
    /// The fleet member that answered it, when it was sent to one (`CacheOutcome::Peer`).
    pub peer: Option<std::sync::Arc<str>>,
}

impl Exchange {
    /// The record of a request whose head could not be parsed: method `NONE` and target `*`,
    /// as Squid logs one.
    pub fn unparsed(client: SocketAddr, mode: RequestMode) -> Exchange {
        let mut request = Request::new(());
        *request.method_mut() = Method::from_bytes(b"NONE").expect("a token");
        *request.uri_mut() = Uri::from_static("*");
        Exchange::begin(&request, client, mode, RequestId::next())
    }

    /// The record of `request` as it arrives; the rest is filled in as it is handled.
    pub fn begin<B>(
        request: &Request<B>,
        client: SocketAddr,
        mode: RequestMode,
        id: RequestId,
    ) -> Exchange {
        Exchange {
            id,
            client,
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            referer: request.headers().get(header::REFERER).cloned(),
            user_agent: request.headers().get(header::USER_AGENT).cloned(),
            started: Instant::now(),
            started_at: SystemTime::now(),
            mode,
            status: StatusCode::OK,
            cache: None,
            upstream_status: None,
            tunnel: None,
            peer: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usable_client_id_is_kept_and_others_are_replaced() {
        let with = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(REQUEST_ID, HeaderValue::from_str(value).unwrap());
            RequestId::of(&headers)
        };
        assert_eq!(with("req-42/abc").to_string(), "req-42/abc");
        for unusable in ["", "two words", &"x".repeat(MAX_GIVEN_ID + 1)] {
            assert!(matches!(with(unusable), RequestId::Made(_)), "{unusable:?}");
        }
        let made: std::collections::HashSet<String> = (0..10_000)
            .map(|_| RequestId::of(&http::HeaderMap::new()).to_string())
            .collect();
        assert_eq!(made.len(), 10_000);
        assert!(made.iter().all(|id| id.len() == 16));
    }

    #[test]
    fn every_mode_is_listed_at_its_own_index() {
        for (index, mode) in RequestMode::ALL.into_iter().enumerate() {
            assert_eq!(mode as usize, index);
        }
        // Adding a mode without listing it fails to compile here.
        let _exhaustive = |mode: RequestMode| match mode {
            RequestMode::Forward
            | RequestMode::Reverse
            | RequestMode::Gateway
            | RequestMode::Connect
            | RequestMode::Admin
            | RequestMode::Peer => (),
        };
    }
}
