//! Reverse mode (`--upstream`): the request for the upstream, the cache key it is stored
//! under (the Host the upstream sees, so each site behind the accelerator has its own
//! entries), which hosts are "ours" (`--server-name`), and the URL a `PURGE` names.

use http::Uri;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use std::net::SocketAddr;

use super::Mode;
use super::forward::{absolute_authority, host_value};
use super::{Proxy, ProxyError, Rules, headers};

impl Proxy {
    /// The absolute URL a `PURGE` names: its absolute-form target, or in reverse mode the
    /// URL the cache keys that path by (the Host the upstream sees, then the path).
    pub(super) fn purge_target(&self, uri: &Uri, headers: &http::HeaderMap) -> Option<Uri> {
        if uri.scheme().is_some() {
            return Some(uri.clone());
        }
        let Mode::Reverse {
            upstream,
            upstream_host,
        } = &self.mode
        else {
            return None;
        };
        let host = upstream_host
            .as_ref()
            .or_else(|| headers.get(header::HOST))
            .and_then(|h| h.to_str().ok())
            .or_else(|| upstream.authority().map(Authority::as_str))?;
        let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
        // Keys carry the client's scheme (see `to_upstream`): the plain one here, and the
        // PURGE purges its https twin too (`https_twin`).
        format!("http://{host}{path}").parse().ok()
    }

    /// In reverse mode, the https key of an http one: a `PURGE` of a path purges what plain
    /// and TLS clients were each served.
    pub(super) fn https_twin(&self, purged: &Uri) -> Option<Uri> {
        if !matches!(self.mode, Mode::Reverse { .. }) || purged.scheme() != Some(&Scheme::HTTP) {
            return None;
        }
        let mut parts = purged.clone().into_parts();
        parts.scheme = Some(Scheme::HTTPS);
        Uri::from_parts(parts).ok()
    }

    /// Reverse mode: the request for the upstream. Its URI names the Host the upstream sees
    /// (the client's, or `--upstream-host`), so the cache keys every site apart; the
    /// `OriginClient` connects to the upstream itself.
    pub(super) fn to_upstream(
        &self,
        rules: &Rules,
        parts: &mut http::request::Parts,
        client: SocketAddr,
        upstream: &Uri,
        upstream_host: Option<&HeaderValue>,
    ) -> Result<(), ProxyError> {
        // The host the client asked for: an absolute-form target replaces Host (RFC 9112
        // §3.2.2), and must name this accelerator rather than somewhere else to go.
        let asked: Option<HeaderValue> = if parts.uri.scheme().is_some() {
            let authority = absolute_authority(&parts.uri)?;
            if !self.is_ours(rules, authority, upstream, upstream_host) {
                return Err(ProxyError::BadRequest(
                    "absolute-form target names a host this reverse proxy does not serve",
                ));
            }
            Some(host_value(authority)?)
        } else {
            parts
                .headers
                .get(header::HOST)
                .filter(|h| !h.is_empty())
                .cloned()
        };
        if !rules.server_names.is_empty() {
            let name = asked
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .map(host_name)
                .unwrap_or_default();
            if !rules.server_names.iter().any(|s| s.matches(&name)) {
                return Err(ProxyError::MisdirectedRequest(name));
            }
        }
        let seen = match (upstream_host, &asked) {
            (Some(host), _) => host.clone(),
            (None, Some(asked)) => asked.clone(),
            (None, None) => host_value(
                upstream
                    .authority()
                    .ok_or(ProxyError::BadRequest("upstream has no host"))?,
            )?,
        };
        let authority = Authority::try_from(seen.as_bytes())
            .map_err(|_| ProxyError::BadRequest("invalid Host"))?;
        // The forwarding fields name the same host as `Host`: nothing the upstream sees may
        // depend on a client's Host unless the cache keys by it.
        let tls = parts.extensions.get::<super::ClientTls>().is_some();
        let proto = match tls {
            true => headers::Proto::Https,
            false => headers::Proto::Http,
        };
        headers::append_forwarded(&mut parts.headers, client.ip(), Some(&seen), proto);
        parts.headers.insert(header::HOST, seen);
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        // The scheme is the client's, as nginx's `$scheme` in its default key: the upstream
        // is told which one the client used (`X-Forwarded-Proto`) and may answer each
        // differently (a redirect to https), so plain and TLS clients never share an entry.
        // The `OriginClient` connects with the upstream's own scheme whatever this says.
        let scheme = match tls {
            true => Scheme::HTTPS,
            false => Scheme::HTTP,
        };
        parts.uri = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|_| ProxyError::BadRequest("request target is not a valid path"))?;
        Ok(())
    }

    /// Whether an absolute-form target in reverse mode names this accelerator: one of the
    /// `--server-name`s, or without those the upstream's own name, `--upstream-host`, or an
    /// address hoard listens on.
    fn is_ours(
        &self,
        rules: &Rules,
        authority: &Authority,
        upstream: &Uri,
        upstream_host: Option<&HeaderValue>,
    ) -> bool {
        let text = authority.as_str().to_ascii_lowercase();
        if !rules.server_names.is_empty() {
            return rules
                .server_names
                .iter()
                .any(|s| s.matches(&host_name(&text)));
        }
        let same = |other: &str| other.eq_ignore_ascii_case(&text);
        upstream.authority().is_some_and(|a| same(a.as_str()))
            || upstream_host
                .and_then(|h| h.to_str().ok())
                .is_some_and(same)
            || self.listening.iter().any(|addr| same(&addr.to_string()))
    }
}

/// The name part of a `Host` value, lowercase, without port or trailing dot.
pub(super) fn host_name(host: &str) -> String {
    let name = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}
