//! `OriginClient`, the cache's way to the origin: the upstream client plus what only a request
//! to the origin needs, done here so a cache hit never pays for it.

use http::header;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};

use super::headers::{self, ViaEntry};
use crate::body::ProxyBody;
use crate::cache;
use crate::logging;
use crate::upstream::{UpstreamClient, UpstreamError};

/// The cache's way to the origin: the upstream client. Requests get what only the origin
/// needs (this hop's `Via`, no `Expect`, HTTP/1.1) here rather than before the cache, so a
/// hit does not pay for them; responses lose their hop-by-hop fields.
pub struct OriginClient {
    pub(super) upstream: UpstreamClient,
    pub(super) via: ViaEntry,
    /// Reverse mode: where every request goes. The request's own URI names the host the
    /// upstream is asked for (and so what the cache keys by); the connection is made here.
    pub(super) connect_to: Option<(Scheme, Authority)>,
    /// Whether the destination is checked before the cache too: a client held to the safe
    /// defaults must not read, from storage, what a local client fetched from this host.
    pub(super) check_before_cache: bool,
}

impl OriginClient {
    /// Refuses, before the cache is asked, a target this client may not reach (as far as
    /// the target's name or literal address tells; resolved names are checked on connect).
    pub(super) fn check_before_cache(&self, uri: &Uri) -> Result<(), UpstreamError> {
        if !self.check_before_cache {
            return Ok(());
        }
        Ok(self.upstream.policy().check_uri(uri)?)
    }
}

impl cache::Origin for OriginClient {
    type Error = UpstreamError;

    fn unavailable(error: &UpstreamError) -> bool {
        error.origin_unavailable()
    }

    async fn fetch(
        &self,
        request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        let mut request = request;
        let received = request.version();
        // hyper already answered `100 Continue` to the client when the body was first read;
        // the origin gets the body straight away (RFC 9110 §10.1.1 lets a proxy do so).
        request.headers_mut().remove(header::EXPECT);
        self.via.append(request.headers_mut(), received);
        *request.version_mut() = Version::HTTP_11;
        if let Some((scheme, authority)) = &self.connect_to {
            let mut parts = std::mem::take(request.uri_mut()).into_parts();
            parts.scheme = Some(scheme.clone());
            parts.authority = Some(authority.clone());
            *request.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
        }
        logging::trace_request("request to origin", &request);
        let response = self.upstream.send(request).await?;
        logging::trace_response("response from origin", &response);
        let mut response = response;
        headers::remove_hop_by_hop(response.headers_mut());
        Ok(response)
    }
}
