//! The forward path: a client's request turned into the origin's (`ForwardRequest`: hop-by-hop
//! fields gone, untrusted forwarding fields dropped, the target checked, the body limited),
//! then put through the cache, following redirects for the gateway when asked. What the
//! cache did is written into the request's `Exchange` here, where it is known.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::http1::RequestBody;
use http::header::{self, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, Response, Uri, Version};

use super::{Mode, OriginClient, Proxy, ProxyError, Rules, headers};
use crate::body::{self, ProxyBody};
use crate::exchange::{Exchange, RequestMode};

/// Redirects hoard follows itself with `--follow-redirects` (the gateway's).
const MAX_REDIRECTS: usize = 10;

/// A request ready for an origin: absolute URI, end-to-end headers only, our `Via` added.
/// This is what the cache keys and stores by.
pub struct ForwardRequest {
    pub request: Request<ProxyBody>,
}

impl Proxy {
    /// With `--follow-redirects`, follows an origin's redirects for GET and HEAD (at most
    /// `MAX_REDIRECTS`, a loop is 508) and returns the final response and its URL.
    pub(super) async fn fetch_following(
        &self,
        forward: ForwardRequest,
        mut url: url::Url,
        follow_redirects: bool,
        origin: &Arc<OriginClient>,
        exchange: &mut Exchange,
    ) -> Result<(Response<ProxyBody>, url::Url), ProxyError> {
        let method = forward.request.method().clone();
        if !follow_redirects || !(method == Method::GET || method == Method::HEAD) {
            return Ok((self.fetch(forward, origin, exchange).await?, url));
        }
        let headers = forward.request.headers().clone();
        let mut response = self.fetch(forward, origin, exchange).await?;
        let mut visited = vec![url.clone()];
        while response.status().is_redirection()
            && response.status() != http::StatusCode::NOT_MODIFIED
        {
            let Some(next) = response
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok())
                .filter(|next| matches!(next.scheme(), "http" | "https"))
            else {
                break;
            };
            if visited.contains(&next) {
                return Err(ProxyError::RedirectLoop(next.to_string()));
            }
            if visited.len() > MAX_REDIRECTS {
                return Err(ProxyError::TooManyRedirects(MAX_REDIRECTS));
            }
            visited.push(next.clone());
            url = next;
            let uri: Uri = url
                .as_str()
                .parse()
                .map_err(|_| ProxyError::BadRequest("redirect to an invalid URL"))?;
            let host = host_value(absolute_authority(&uri)?)?;
            let mut request = Request::new(body::empty());
            *request.method_mut() = method.clone();
            *request.headers_mut() = headers.clone();
            request.headers_mut().insert(header::HOST, host);
            *request.uri_mut() = uri;
            response = self
                .fetch(ForwardRequest { request }, origin, exchange)
                .await?;
        }
        Ok((response, url))
    }

    /// Turns a client's request into the request for the origin.
    pub(super) fn forward_request(
        &self,
        rules: &Rules,
        request: Request<RequestBody>,
        client: SocketAddr,
    ) -> Result<ForwardRequest, ProxyError> {
        let (mut parts, incoming) = request.into_parts();
        // A declared length over the limit is refused before anything is read (and before
        // hyper would send `100 Continue`); a chunked body that grows past it is cut off.
        let declared = hyper::body::Body::size_hint(&incoming).exact();
        let max_request_body = rules.max_request_body;
        if max_request_body > 0 && declared.is_some_and(|len| len > max_request_body) {
            return Err(ProxyError::BodyTooLarge(
                declared.unwrap_or(0),
                max_request_body,
            ));
        }
        headers::remove_hop_by_hop(&mut parts.headers);
        crate::fleet::remove_marker(&mut parts.headers);
        if !rules
            .trust_forwarded
            .iter()
            .any(|net| net.contains(&client.ip()))
        {
            headers::remove_untrusted_forwarding(&mut parts.headers);
        }
        // GET and HEAD bodies have no meaning, so an origin may ignore one and read it as
        // the next request on the connection: that connection is closed after this
        // exchange, and the cache neither stores nor serves such a request.
        if matches!(parts.method, Method::GET | Method::HEAD)
            && !hyper::body::Body::is_end_stream(&incoming)
        {
            if rules.reject_get_body {
                return Err(ProxyError::BadRequest(
                    "GET and HEAD requests must not carry a body",
                ));
            }
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }

        match &self.mode {
            Mode::Reverse {
                upstream,
                upstream_host,
            } => self.to_upstream(rules, &mut parts, client, upstream, upstream_host.as_ref())?,
            Mode::Forward if parts.uri.scheme().is_some() => {
                let authority = absolute_authority(&parts.uri)?;
                // Usually the client's Host already says the same: then no new value is made.
                if parts.headers.get(header::HOST).map(HeaderValue::as_bytes)
                    != Some(authority.as_str().as_bytes())
                {
                    let host = host_value(authority)?;
                    parts.headers.insert(header::HOST, host);
                }
            }
            // Gateway requests arrive here with absolute URIs; anything else names no site.
            Mode::Forward => return Err(ProxyError::GatewayUsage),
        }
        Ok(ForwardRequest {
            request: Request::from_parts(parts, limited(incoming, max_request_body)),
        })
    }

    /// The seam: every forward request goes to the member of the fleet that owns its URL,
    /// or through this node's cache, which decides whether the origin is asked (a member's
    /// own request, `RequestMode::Peer`, always the latter). After redirects the record
    /// holds the last exchange's outcome.
    pub(super) async fn fetch(
        &self,
        forward: ForwardRequest,
        origin: &Arc<OriginClient>,
        exchange: &mut Exchange,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        origin.check_before_cache(forward.request.uri())?;
        // One function, one await of the cache whatever the route: a wrapper around it, or a
        // second await, would be room in this future, which hyper moves for every request.
        let mut unsafe_target = None;
        let forward = match &self.fleet {
            Some(fleet) if exchange.mode != RequestMode::Peer => {
                if !forward.request.method().is_safe() {
                    unsafe_target = Some(forward.request.uri().clone());
                }
                // Boxed, and only when the request goes to another member: a hit here
                // should not pay for moving the peer exchange's future.
                match super::peer::owned_elsewhere(fleet, &forward.request) {
                    Some(route) => {
                        match Box::pin(self.via_owner(fleet, route, forward, origin, exchange))
                            .await
                        {
                            Ok(response) => return Ok(response),
                            Err(forward) => forward,
                        }
                    }
                    None => forward,
                }
            }
            _ => forward,
        };
        let served = self.cache.serve(forward.request, origin).await?;
        exchange.cache = Some(served.outcome);
        exchange.upstream_status = served.upstream_status;
        let mut response = served.response;
        // Stored responses never hold hoard's own targeted field; the origin's may.
        if served.upstream_status.is_some() {
            response
                .headers_mut()
                .remove(self.cache.own_cache_control());
        }
        self.via.append(response.headers_mut(), Version::HTTP_11);
        // The client hears hoard's own HTTP version.
        *response.version_mut() = Version::HTTP_11;
        if let Some(uri) = unsafe_target {
            self.invalidate_in_fleet(&uri, response.status(), response.headers());
        }
        Ok(response)
    }
}

/// The client's body, cut off with an error past `--max-request-body` (0: no limit).
fn limited(incoming: RequestBody, max_request_body: u64) -> ProxyBody {
    match usize::try_from(max_request_body) {
        Ok(limit) if limit > 0 => body::stream(http_body_util::Limited::new(incoming, limit)),
        _ => body::stream(incoming),
    }
}

/// Checks an absolute-form target (RFC 9112 §3.2.2) and returns its authority.
pub(super) fn absolute_authority(uri: &Uri) -> Result<&Authority, ProxyError> {
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(ProxyError::UnsupportedScheme(other.to_owned())),
        None => return Err(ProxyError::BadRequest("missing URL scheme")),
    }
    let authority = uri
        .authority()
        .ok_or(ProxyError::BadRequest("URL has no host"))?;
    let text = authority.as_str();
    if text.contains('@') {
        return Err(ProxyError::BadRequest(
            "URL must not contain user information",
        ));
    }
    // Without user information the text is the host, then the port if any.
    let host = authority.host();
    if host.is_empty() {
        return Err(ProxyError::BadRequest("URL has no host"));
    }
    // `Authority` parses an out-of-range port as no port at all; the text still has it.
    match &text[host.len()..] {
        "" | ":" => {}
        port if port.starts_with(':')
            && port[1..].bytes().all(|b| b.is_ascii_digit())
            && port[1..].parse::<u16>().is_ok_and(|port| port != 0) => {}
        _ => return Err(ProxyError::BadRequest("URL has an invalid port")),
    }
    Ok(authority)
}

pub(super) fn host_value(authority: &Authority) -> Result<HeaderValue, ProxyError> {
    HeaderValue::from_str(authority.as_str()).map_err(|_| ProxyError::BadRequest("invalid host"))
}
