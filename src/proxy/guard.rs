//! What a request must satisfy before anything acts on it: a head RFC 9112 accepts (one valid
//! `Host`, framing hyper really decoded), and for state-changing admin requests, that no other
//! site sent them through the person's browser.

use http::header::{self, HeaderValue};
use http::{Method, Request, Uri, Version};

use super::ServerName;
use super::{ProxyError, headers};
use crate::body;

/// What RFC 9112 requires of every request head before it is acted on: one valid `Host`
/// (§3.2; an HTTP/1.1 origin-form request must have one) and framing hyper really decoded
/// (§6.1).
pub(super) fn check_head<B>(request: &Request<B>) -> Result<(), ProxyError> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(ProxyError::BadRequest("more than one Host header")),
        (Some(host), None) if !host.is_empty() && !headers::valid_host(host.as_bytes()) => {
            return Err(ProxyError::BadRequest("Host is not a valid host[:port]"));
        }
        (None, _)
            if request.version() == Version::HTTP_11
                && request.uri().scheme().is_none()
                && request.method() != Method::CONNECT =>
        {
            return Err(ProxyError::BadRequest(
                "HTTP/1.1 request without a Host header",
            ));
        }
        _ => {}
    }
    body::check_transfer_encoding(request.headers())?;
    Ok(())
}

/// Refuses an admin request whose `Host` is a name only someone else's DNS could point here
/// (DNS rebinding): a page served under that name would be same-origin with the admin, so
/// neither the browser nor `same_origin` could tell it apart. Accepted: IP literals,
/// `localhost` names, this machine's own name (and names under it), and the reverse
/// proxy's `--server-name`s. A request without `Host` (HTTP/1.0, not a browser) passes.
pub(super) fn admin_host(
    headers: &http::HeaderMap,
    machine: Option<&str>,
    server_names: &[ServerName],
) -> Result<(), ProxyError> {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return Ok(());
    };
    let name = super::reverse::host_name(host);
    let literal = name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok();
    let ours = literal
        || name == "localhost"
        || name.ends_with(".localhost")
        || machine.is_some_and(|machine| {
            name == machine
                || name
                    .strip_prefix(machine)
                    .is_some_and(|rest| rest.starts_with('.'))
        })
        || server_names.iter().any(|s| s.matches(&name));
    if ours {
        Ok(())
    } else {
        Err(ProxyError::CrossSite(
            "the admin interface answers only to an address, localhost or this machine's name",
        ))
    }
}

/// Refuses a state-changing admin request a browser sent on another site's behalf: a
/// cross-site form or script (`Sec-Fetch-Site`), or an `Origin` that is not this admin's
/// own (a sandboxed gateway page sends `null`). Tools like curl send neither.
pub(super) fn same_origin(headers: &http::HeaderMap) -> Result<(), ProxyError> {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Err(ProxyError::CrossSite(
            "cross-site requests may not change the admin interface",
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let own = headers.get(header::HOST).map(HeaderValue::as_bytes);
        let authority = origin
            .to_str()
            .ok()
            .and_then(|o| o.parse::<Uri>().ok())
            .and_then(|uri| uri.authority().map(|a| a.as_str().to_ascii_lowercase()));
        let same = match (authority, own) {
            (Some(authority), Some(own)) => authority.as_bytes().eq_ignore_ascii_case(own),
            _ => false,
        };
        if !same {
            return Err(ProxyError::CrossSite(
                "requests from another origin may not change the admin interface",
            ));
        }
    }
    Ok(())
}
