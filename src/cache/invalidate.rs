//! Invalidation (RFC 9111 §4.4): unsafe methods forwarded, then the target and same-origin
//! `Location` / `Content-Location` forgotten, and the groups its response names
//! (`groups.rs`); and a POST response that says it is the
//! target's representation (explicit freshness, `Content-Location` = the target) stored to
//! answer later GETs (RFC 9110 §9.3.3).

use std::sync::Arc;

use http::header::{self};
use http::{Method, Request, Uri};

use super::control::CacheControl;
use super::lookup::RequestHead;
use super::respond::from_origin;
use super::{Cache, CacheKey, CacheOutcome, CacheStatus, Origin, Served};
use crate::body::ProxyBody;

impl Cache {
    /// Methods the cache does not answer: forward, and after success invalidate the target and
    /// same-origin `Location` / `Content-Location` (RFC 9111 §4.4).
    pub(super) async fn forward_other<O: Origin>(
        self: &Arc<Self>,
        key: CacheKey,
        request: Request<ProxyBody>,
        origin: &Arc<O>,
    ) -> Result<Served, O::Error> {
        let safe = matches!(*request.method(), Method::OPTIONS | Method::TRACE);
        let post = RequestHead::of(&request);
        let request_cc = CacheControl::parse_request(request.headers());
        let response = origin.fetch(request).await?;
        let status = CacheStatus::new(CacheOutcome::Method);
        if safe || !(response.status().is_success() || response.status().is_redirection()) {
            return Ok(from_origin(response, &status));
        }
        self.index.remove(&key);
        self.forget_parts(&key);
        self.forget_in_shared_tier(&key);
        self.invalidate_groups(&key, response.headers());
        let mut represents_target = false;
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let target = response.headers().get(&name).and_then(|v| v.to_str().ok());
            if let Some(target) = target.and_then(|t| same_origin_key(&post.uri, &key, t)) {
                represents_target |= name == header::CONTENT_LOCATION && target == key;
                self.index.remove(&target);
                self.forget_parts(&target);
                self.forget_in_shared_tier(&target);
            }
        }
        let response_cc = self.settings.policy.directives(response.headers());
        let explicit = response_cc.max_age.is_some()
            || response_cc.s_maxage.is_some()
            || (!response_cc.targeted && response.headers().contains_key(header::EXPIRES));
        let representation = matches!(response.status().as_u16(), 200 | 203);
        if post.method == Method::POST && represents_target && explicit && representation {
            // Stored as the target's GET response; the generation is taken after the
            // invalidation above, which this response is newer than.
            let get = RequestHead {
                method: Method::GET,
                ..post
            };
            // Leading the key's fill, if no GET does, makes GETs arriving meanwhile wait for it.
            let lock = self.collapser.lead_if_free(key.hash());
            let admission = self.admission(key, get, request_cc, lock);
            return Ok(self.admit(admission, response, status));
        }
        Ok(from_origin(response, &status))
    }
}

pub(super) fn same_origin_key(base: &Uri, base_key: &CacheKey, target: &str) -> Option<CacheKey> {
    let absolute = if target.starts_with('/') && !target.starts_with("//") {
        format!("{}://{}{}", base.scheme_str()?, base.authority()?, target)
    } else {
        target.to_owned()
    };
    let key = CacheKey::from_uri(&absolute.parse().ok()?)?;
    let origin_of = |url: &str| url.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    (origin_of(key.url()) == origin_of(base_key.url())).then_some(key)
}
