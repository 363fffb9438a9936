//! Interception (`--intercept`): a CONNECT to an allowed port is answered 200 without dialling,
//! and the server then speaks TLS to the client under a minted certificate (`tls`); every
//! request inside is taken as `https://` the CONNECT's authority, whatever its own target or
//! Host say, so what is fetched and cached is exactly what the client asked to reach. The
//! origin is then reached over TLS and verified like any https:// origin: never relayed
//! unverified.

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use tokio::sync::OwnedSemaphorePermit;

use super::ProxyError;
use super::tunnel::{ConnectionSlot, checked_target};
use crate::body::{self, ProxyBody};
use crate::http1::{OnUpgrade, RequestBody};
use crate::upstream::DestinationPolicy;

/// An intercepted CONNECT, for the server to finish: the client's connection once the 200 has
/// gone, the authority it asked for, and its `--max-connections` permit.
pub struct Intercept {
    pub authority: Authority,
    pub(super) upgrade: OnUpgrade,
    pub(super) slot: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for Intercept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intercept")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

/// Answers a CONNECT that is to be intercepted: the same checks as a tunnel's, then 200.
pub(super) fn answer(
    mut request: Request<RequestBody>,
    allowed_ports: &[u16],
    policy: &DestinationPolicy,
    slot: &ConnectionSlot,
) -> Result<(Response<ProxyBody>, Intercept), ProxyError> {
    let authority = checked_target(&request, allowed_ports, policy)?;
    // A certificate is minted for this name: only an address or a plain DNS name, never a
    // wildcard or anything a certificate could read as more than one host.
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let mintable = host.parse::<std::net::IpAddr>().is_ok()
        || (!host.contains('*') && rustls::pki_types::DnsName::try_from(host).is_ok());
    if !mintable {
        return Err(ProxyError::BadRequest(
            "CONNECT target is not a host name or address",
        ));
    }
    let upgrade = request
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or(ProxyError::BadRequest(
            "this connection cannot carry a CONNECT tunnel",
        ))?;
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::OK;
    let intercept = Intercept {
        authority,
        upgrade,
        slot: slot.take(),
    };
    Ok((response, intercept))
}

/// Points a request from inside an intercepted CONNECT at `https://authority` + its path.
pub(super) fn target(request: &mut Request<RequestBody>, authority: &Authority) {
    let path = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTPS);
    // The default port is left out, as a browser writes the URL (and the cache keys it).
    let bare = authority.port_u16() == Some(443);
    parts.authority = Some(match bare {
        true => Authority::try_from(authority.host()).unwrap_or_else(|_| authority.clone()),
        false => authority.clone(),
    });
    parts.path_and_query = Some(path);
    if let Ok(uri) = Uri::from_parts(parts) {
        if let Some(authority) = uri.authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            request.headers_mut().insert(header::HOST, host);
        }
        *request.uri_mut() = uri;
    }
}
