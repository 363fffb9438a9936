//! The proxy's side of the fleet (`--peers`): sending a cacheable request to the member
//! that owns its URL and relaying the answer with this node's `Cache-Status` entry; serving
//! what members send here (their forwarded requests and the `/_hoard/fleet/` endpoints);
//! making a purge apply fleet-wide; and telling an owner when an unsafe method went to the
//! origin from here. Where a URL goes is `fleet`'s decision; this module only acts on it.

use http::header::{self, HeaderName};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use super::forward::ForwardRequest;
use super::{Mode, OriginClient, Proxy, ProxyError, headers};
use crate::admin::{self, AdminRequest};
use crate::body::{self, ProxyBody};
use crate::cache::{CacheKey, CacheOutcome, CacheStatus, control::CacheControl};
use crate::exchange::Exchange;
use crate::fleet::{self, ClientTrust, FLEET_PREFIX, Fleet};

impl Proxy {
    /// Sends `forward` to the member that owns its URL (or, when that one is down or does not
    /// answer, to the next candidate) and returns the member's answer; gives the request
    /// back when this node is to serve it: it owns the URL, the request is not one a shared
    /// cache may answer, or no member answered.
    pub(super) async fn via_owner(
        &self,
        fleet: &Fleet,
        forward: ForwardRequest,
        origin: &OriginClient,
        exchange: &mut Exchange,
    ) -> Result<Response<ProxyBody>, ForwardRequest> {
        let request = &forward.request;
        if !routable(request) {
            return Err(forward);
        }
        let Some(key) = CacheKey::from_uri(request.uri()) else {
            return Err(forward);
        };
        let route = fleet.route(key.url());
        if route.is_empty() {
            return Err(forward);
        }
        let (parts, body) = forward.request.into_parts();
        let trust = if origin.check_before_cache {
            ClientTrust::Restricted
        } else {
            ClientTrust::Local
        };
        for member in route {
            let Ok(response) = fleet.forward(&member, &parts, trust).await else {
                continue;
            };
            let (mut head, body) = response.into_parts();
            headers::remove_hop_by_hop(&mut head.headers);
            let mut status = CacheStatus::new(CacheOutcome::Peer).detail("peer");
            status.fwd_status = Some(head.status.as_u16());
            head.headers.append(
                HeaderName::from_static("cache-status"),
                status.header_value(),
            );
            self.via.append(&mut head.headers, Version::HTTP_11);
            head.version = Version::HTTP_11;
            exchange.cache = Some(CacheOutcome::Peer);
            exchange.upstream_status = Some(head.status.as_u16());
            exchange.peer = Some(member.name.clone());
            return Ok(Response::from_parts(head, body));
        }
        Err(ForwardRequest {
            request: Request::from_parts(parts, body),
        })
    }

    /// After an unsafe method went to the origin from this node: the member that stores the
    /// URL forgets it too (RFC 9111 §4.4).
    pub(super) fn invalidate_in_fleet(&self, method: &Method, uri: &http::Uri, status: StatusCode) {
        let Some(fleet) = &self.fleet else { return };
        let safe = matches!(
            *method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        );
        if safe || status.is_client_error() || status.is_server_error() {
            return;
        }
        if let Some(key) = CacheKey::from_uri(uri) {
            fleet.invalidate_at_owner(key.url());
        }
    }

    /// A request a member sent here (its head already checked): a forwarded request to
    /// serve from this node's cache (never sent on again), or a `/_hoard/fleet/` endpoint.
    pub(super) async fn serve_member(
        &self,
        request: Request<Incoming>,
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
        self.fetch_here(forward, origin, exchange).await
    }

    /// `GET /_hoard/fleet/health` (the probe) and `POST /_hoard/fleet/purge?url=|prefix=`
    /// (a purge another member was given, applied here only).
    async fn fleet_endpoint(
        &self,
        request: &Request<Incoming>,
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
                let purge = admin::parse(&Method::POST, &local, None)?;
                Ok(admin::answer(purge, &self.cache, &self.metrics, None))
            }
            _ => Err(admin::AdminError::NotFound(path.to_owned()).into()),
        }
    }

    /// An admin request; a purge given to this node is applied by every member.
    pub(super) async fn answer_admin(&self, request: AdminRequest) -> Response<ProxyBody> {
        let fleet = self.fleet.as_deref();
        let (kind, target) = match &request {
            AdminRequest::PurgeUrl(uri) => ("url", uri.to_string()),
            AdminRequest::PurgePrefix(prefix) => ("prefix", prefix.clone()),
            _ => return admin::answer(request, &self.cache, &self.metrics, fleet),
        };
        let Some(fleet) = fleet else {
            return admin::answer(request, &self.cache, &self.metrics, None);
        };
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair(kind, &target)
            .finish();
        let here = admin::purge(&request, &self.cache);
        let others = fleet
            .tell_others(Method::POST, &format!("{FLEET_PREFIX}purge?{query}"))
            .await;
        admin::purged_in_fleet(here, &others)
    }
}

/// Whether a shared cache may answer the request, so that it goes to the URL's owner: GET
/// or HEAD without a body, no credentials (RFC 9111 §3.5), not `no-store`, and not already
/// sent on inside the fleet (a member not trusted by its address, or a loop).
fn routable(request: &Request<ProxyBody>) -> bool {
    matches!(*request.method(), Method::GET | Method::HEAD)
        && hyper::body::Body::is_end_stream(request.body())
        && !request.headers().contains_key(header::AUTHORIZATION)
        && fleet::marker_in(request.headers()).is_none()
        && !CacheControl::parse_request(request.headers()).no_store
}
