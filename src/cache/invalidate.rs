//! Invalidation (RFC 9111 §4.4): unsafe methods forwarded, then the target and same-origin
//! `Location` / `Content-Location` forgotten.

use std::sync::Arc;

use http::header::{self};
use http::{Method, Request, Uri};

use super::respond::from_origin;
use super::{Cache, CacheKey, CacheOutcome, CacheStatus, Origin, Served};
use crate::body::ProxyBody;

impl Cache {
    /// Methods the cache does not answer: forward, and after success invalidate the target and
    /// same-origin `Location` / `Content-Location` (RFC 9111 §4.4).
    pub(super) async fn forward_other<O: Origin>(
        &self,
        key: CacheKey,
        request: Request<ProxyBody>,
        origin: &Arc<O>,
    ) -> Result<Served, O::Error> {
        let safe = matches!(*request.method(), Method::OPTIONS | Method::TRACE);
        let uri = request.uri().clone();
        let response = origin.fetch(request).await?;
        if !safe && (response.status().is_success() || response.status().is_redirection()) {
            self.index.remove(&key);
            for name in [header::LOCATION, header::CONTENT_LOCATION] {
                let target = response.headers().get(name).and_then(|v| v.to_str().ok());
                if let Some(target) = target.and_then(|t| same_origin_key(&uri, &key, t)) {
                    self.index.remove(&target);
                }
            }
        }
        Ok(from_origin(
            response,
            &CacheStatus::new(CacheOutcome::Method),
        ))
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
