//! The proxy's side of the fleet (`--peers`): sending a cacheable request to the member
//! that owns its URL and relaying the answer with this node's `Cache-Status` entry; serving
//! what members send here (their forwarded requests and the `/_hoard/fleet/` endpoints);
//! making a purge apply fleet-wide; and telling the members when an unsafe method went to the
//! origin from here. Where a URL goes is `fleet`'s decision; this module only acts on it.

use std::sync::Arc;

use crate::http1::RequestBody;
use http::header::{self, HeaderName};
use http::{Method, Request, Response, StatusCode, Version};

use super::forward::ForwardRequest;
use super::{Mode, OriginClient, Proxy, ProxyError, headers};
use crate::admin::{self, AdminRequest};
use crate::body::{self, ProxyBody};
use crate::cache::{CacheKey, CacheOutcome, CacheStatus, control::CacheControl};
use crate::exchange::Exchange;
use crate::fleet::{self, ClientTrust, FLEET_PREFIX, Fleet, HotCopies, HotCopy, Member, PeerError};

const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

impl Proxy {
    /// Sends `forward` to `owner`, the member `owned_elsewhere` named for its URL `key` (or,
    /// when that one does not answer, to the next candidate) and returns the member's
    /// answer; gives the request back when no member answered, for this node to serve.
    pub(super) async fn via_owner(
        &self,
        fleet: &Fleet,
        (key, owner): (CacheKey, Arc<Member>),
        forward: ForwardRequest,
        origin: &OriginClient,
        exchange: &mut Exchange,
    ) -> Result<Response<ProxyBody>, ForwardRequest> {
        let request = &forward.request;
        let hot = match &fleet.hot {
            Some(hot) => {
                if let Some(copy) = hot.get(key.url(), request) {
                    return Ok(self.hot_copy_response(&copy, request.method(), exchange));
                }
                hot.is_hot(key.url(), request)
            }
            None => false,
        };
        let (parts, body) = forward.request.into_parts();
        let trust = if origin.check_before_cache {
            ClientTrust::Restricted
        } else {
            ClientTrust::Local
        };
        // The owner, then (it is marked down when it fails) the next candidate; past those
        // this node serves the request itself.
        let mut next = Some(owner);
        for _ in 0..2 {
            let Some(member) = next.take() else {
                break;
            };
            let response = match fleet.forward(&member, &parts, trust).await {
                Ok(response) => response,
                // Slow rather than gone (say, busy with a slow origin): served here, and the
                // owner keeps its keys.
                Err(PeerError::Timeout(_)) => break,
                Err(_) => {
                    next = fleet.owner_elsewhere(key.url());
                    continue;
                }
            };
            let (mut head, mut body) = response.into_parts();
            headers::remove_hop_by_hop(&mut head.headers);
            exchange.cache = Some(CacheOutcome::Peer);
            exchange.upstream_status = Some(head.status.as_u16());
            exchange.peer = Some(Arc::clone(&member.name));
            if let Some(copies) = &fleet.hot
                && hot
                && copies.may_keep(&parts.method, &head)
            {
                body = keep_copy(copies, key.url(), &head, body).await;
            }
            let mut status = CacheStatus::new(CacheOutcome::Peer).detail("peer");
            status.fwd_status = Some(head.status.as_u16());
            self.relay(&mut head.headers, &status);
            head.version = Version::HTTP_11;
            return Ok(Response::from_parts(head, body));
        }
        Err(ForwardRequest {
            request: Request::from_parts(parts, body),
        })
    }

    /// This node's `Cache-Status` entry and `Via` on an answer that came from a member.
    fn relay(&self, headers: &mut http::HeaderMap, status: &CacheStatus) {
        headers.append(CACHE_STATUS, status.header_value());
        self.via.append(headers, Version::HTTP_11);
    }

    /// A hot copy's answer (`fleet/hot.rs`): what the owner said, aged since, with this
    /// node's own `Cache-Status` entry and `Via`.
    fn hot_copy_response(
        &self,
        copy: &HotCopy,
        method: &Method,
        exchange: &mut Exchange,
    ) -> Response<ProxyBody> {
        let body = if method == Method::HEAD {
            body::empty()
        } else {
            body::full(copy.body.clone())
        };
        let mut response = Response::new(body);
        *response.status_mut() = copy.status;
        *response.headers_mut() = copy.headers_now();
        let status = CacheStatus::new(CacheOutcome::Hit).detail("hot-copy");
        self.relay(response.headers_mut(), &status);
        exchange.cache = Some(CacheOutcome::Hit);
        response
    }

    /// After an unsafe method went to the origin from this node: every member forgets the
    /// URL too (RFC 9111 §4.4), the owner above all, and the groups the response names
    /// (RFC 9875), which span owners.
    pub(super) fn invalidate_in_fleet(
        &self,
        uri: &http::Uri,
        status: StatusCode,
        response: &http::HeaderMap,
    ) {
        let Some(fleet) = &self.fleet else { return };
        if status.is_client_error() || status.is_server_error() {
            return;
        }
        if let Some(hot) = &fleet.hot {
            hot.clear();
        }
        if let Some(key) = CacheKey::from_uri(uri) {
            fleet.invalidate_everywhere(&[("url", key.url())]);
            let origin = crate::cache::groups::origin_of(key.url());
            for group in crate::cache::groups::invalidated_groups(response) {
                fleet.invalidate_everywhere(&[("group", &group), ("origin", origin)]);
            }
        }
    }

    /// A request a member sent here (its head already checked): a forwarded request to
    /// serve from this node's cache (never sent on again), or a `/_hoard/fleet/` endpoint.
    pub(super) async fn serve_member(
        &self,
        request: Request<RequestBody>,
        exchange: &mut Exchange,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let Some(fleet) = &self.fleet else {
            return Err(ProxyError::BadRequest("this node is in no fleet"));
        };
        let trust = fleet
            .from_member(exchange.client.ip(), request.headers())
            .unwrap_or(ClientTrust::Restricted);
        if request.uri().scheme().is_none() {
            return self.fleet_endpoint(&request).await;
        }
        let (mut parts, incoming) = request.into_parts();
        headers::remove_hop_by_hop(&mut parts.headers);
        fleet::remove_marker(&mut parts.headers);
        let origin = match (&self.mode, trust) {
            (Mode::Reverse { .. }, _) | (_, ClientTrust::Local) => &self.local_origin,
            (Mode::Forward, ClientTrust::Restricted) => &self.restricted_origin,
        };
        let forward = ForwardRequest {
            request: Request::from_parts(parts, body::stream(incoming)),
        };
        self.fetch(forward, origin, exchange).await
    }

    /// `GET /_hoard/fleet/health` (the probe) and `POST /_hoard/fleet/purge?url=|prefix=`
    /// (a purge another member was given, applied here only).
    async fn fleet_endpoint(
        &self,
        request: &Request<RequestBody>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let path = request.uri().path();
        match (request.method(), path.strip_prefix(FLEET_PREFIX)) {
            (&Method::GET | &Method::HEAD, Some("health")) => Ok(fleet::health_response()),
            (&Method::POST, Some("purge")) => {
                let local: http::Uri = format!(
                    "{}purge?{}",
                    admin::PREFIX,
                    request.uri().query().unwrap_or("")
                )
                .parse()
                .map_err(|_| ProxyError::BadRequest("invalid purge"))?;
                let purge = admin::parse(&Method::POST, &local, request.headers(), None)?;
                if let Some(hot) = self.fleet.as_ref().and_then(|f| f.hot.as_ref()) {
                    hot.clear();
                }
                Ok(admin::answer(
                    purge,
                    &self.cache,
                    &self.metrics,
                    None,
                    &self.about.load(),
                ))
            }
            _ => Err(admin::AdminError::NotFound(path.to_owned()).into()),
        }
    }

    /// An admin request; a purge given to this node is applied by every member.
    pub(super) async fn answer_admin(&self, request: AdminRequest) -> Response<ProxyBody> {
        let fleet = self.fleet.as_deref();
        let (Some(fleet), Some(query)) = (fleet, request.purge_query()) else {
            return admin::answer(
                request,
                &self.cache,
                &self.metrics,
                fleet,
                &self.about.load(),
            );
        };
        if let Some(hot) = &fleet.hot {
            hot.clear();
        }
        let here = admin::purge(&request, &self.cache);
        let others = fleet
            .tell_others(Method::POST, &format!("{FLEET_PREFIX}purge?{query}"))
            .await;
        admin::purged_in_fleet(here, &others)
    }
}

/// Reads a hot object's answer whole (its length is known and small), keeps a copy, and
/// returns the body to send on; an answer that fails to arrive whole is not kept and its
/// body ends in that error (the client's connection is aborted, as for any such body).
async fn keep_copy(
    copies: &HotCopies,
    url: &str,
    head: &http::response::Parts,
    body: ProxyBody,
) -> ProxyBody {
    use http_body_util::BodyExt;
    match body.collect().await {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            copies.keep(url, head.status, &head.headers, bytes.clone());
            body::full(bytes)
        }
        Err(e) => {
            let failed = futures_util::stream::once(async move {
                Err::<hyper::body::Frame<bytes::Bytes>, body::BoxError>(e)
            });
            body::stream(http_body_util::StreamBody::new(failed))
        }
    }
}

/// The key of `request` and the member to send it to, when it goes to another member: a
/// request a shared cache may answer, for a URL this node does not own. Cheap and
/// allocation-light, as every request of a fleet node asks it.
pub(super) fn owned_elsewhere(
    fleet: &Fleet,
    request: &Request<ProxyBody>,
) -> Option<(CacheKey, Arc<Member>)> {
    if !routable(request) {
        return None;
    }
    let key = CacheKey::from_uri(request.uri())?;
    let owner = fleet.owner_elsewhere(key.url())?;
    Some((key, owner))
}

/// Whether a shared cache may answer the request, so that it goes to the URL's owner: GET
/// or HEAD without a body, no credentials (RFC 9111 §3.5), not `no-store`. (A member's own
/// requests never get here: `fetch` serves `RequestMode::Peer` itself, and a client's
/// fleet marker is removed on the way in.)
fn routable(request: &Request<ProxyBody>) -> bool {
    matches!(*request.method(), Method::GET | Method::HEAD)
        && hyper::body::Body::is_end_stream(request.body())
        && !request.headers().contains_key(header::AUTHORIZATION)
        && !CacheControl::parse_request(request.headers()).no_store
}
