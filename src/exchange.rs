//! `Exchange`: the typed record of one client request: what was asked, how it reached hoard
//! (`RequestMode`), what the cache did, what the origin answered, when it started and, for a
//! CONNECT tunnel, what it carried. `proxy` builds it while it handles the request and
//! hands it back beside the response; the access log and the metrics only read it (the
//! bytes sent and the duration are added when the body has gone). Plain data, no I/O.

use std::net::SocketAddr;
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

/// What happened to one request.
#[derive(Debug, Clone)]
pub struct Exchange {
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
        Exchange::begin(&request, client, mode)
    }

    /// The record of `request` as it arrives; the rest is filled in as it is handled.
    pub fn begin<B>(request: &Request<B>, client: SocketAddr, mode: RequestMode) -> Exchange {
        Exchange {
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
