//! Revalidation (RFC 9111 §4.3): conditional requests to the origin, 304 refreshes (only
//! when the merged response is still shareable), stale-if-error fallbacks, and the
//! stale-while-revalidate background refresh.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::collapse::{FillLock, FillResult, Role};
use super::control::CacheControl;
use super::policy::{self, Freshness, now_secs};
use super::{
    Cache, CacheKey, CacheOutcome, CacheStatus, Origin, RequestHead, StoredResponse, entry,
};
use crate::body::ProxyBody;

impl Cache {
    /// A stored response needs the origin's word: ask conditionally, then serve, replace, or
    /// fall back to the stale copy when the origin fails and that is allowed.
    pub(super) async fn revalidate<O: Origin>(
        self: &Arc<Self>,
        key: CacheKey,
        entry: Arc<StoredResponse>,
        request: Request<ProxyBody>,
        request_cc: CacheControl,
        lock: Option<FillLock>,
        origin: &Arc<O>,
    ) -> Result<Response<ProxyBody>, O::Error> {
        let head = RequestHead::of(&request);
        let request_time = now_secs();
        let conditional = conditional_request(without_conditionals(request), &entry);
        let result = origin.fetch(conditional).await;
        let usable_on_error = || {
            entry
                .freshness
                .usable_on_error(&request_cc, now_secs(), &self.settings.policy)
        };
        match result {
            Ok(response) if response.status() == StatusCode::NOT_MODIFIED => {
                let not_modified = response.headers();
                let refreshed = Arc::new(self.refreshed(&entry, not_modified, request_time));
                let mut status = CacheStatus::new(CacheOutcome::Revalidated);
                status.fwd_status = Some(304);
                let shared = self.may_share_refresh(&entry, &head, &request_cc, not_modified);
                match shared {
                    Ok(()) => {
                        self.index.insert(refreshed.clone());
                    }
                    Err(reason) => {
                        self.count_not_stored(reason);
                        status.detail = Some(reason.as_str());
                    }
                }
                if let Some(lock) = lock {
                    lock.finish(if shared.is_ok() {
                        FillResult::Stored
                    } else {
                        FillResult::NotStored
                    });
                }
                // Set-Cookie went to this client's request: it gets it, the entry does not.
                let cookies: Vec<(HeaderName, HeaderValue)> = policy::PER_CLIENT_FIELDS
                    .iter()
                    .flat_map(|name| {
                        not_modified
                            .get_all(name)
                            .iter()
                            .map(|value| (name.clone(), value.clone()))
                    })
                    .collect();
                let mut answered = self
                    .answer_or_fetch(key, refreshed, head, request_cc, status, origin)
                    .await?;
                for (name, value) in cookies {
                    answered.headers_mut().append(name, value);
                }
                if shared.is_err() {
                    // The origin now says this response is not for a shared cache: this
                    // client got it (its body is already open), nobody else does.
                    self.index.remove_variant(&entry);
                }
                Ok(answered)
            }
            Ok(response) if response.status().is_server_error() && usable_on_error() => {
                let mut status = CacheStatus::new(CacheOutcome::Stale).detail("stale-if-error");
                status.fwd_status = Some(response.status().as_u16());
                drop(response);
                self.answer_or_fetch(key, entry, head, request_cc, status, origin)
                    .await
            }
            Err(e) if usable_on_error() => {
                tracing::info!("serving stale {} because the origin failed: {e}", key.url());
                let status = CacheStatus::new(CacheOutcome::Stale).detail("stale-if-error");
                self.answer_or_fetch(key, entry, head, request_cc, status, origin)
                    .await
            }
            Err(e) => Err(e),
            Ok(response) => {
                let mut status = CacheStatus::new(CacheOutcome::Refreshed);
                status.fwd_status = Some(response.status().as_u16());
                Ok(self.admit_and_answer(
                    key,
                    &head,
                    &request_cc,
                    request_time,
                    response,
                    lock,
                    status,
                ))
            }
        }
    }

    /// Serves `entry`, or fetches anew if its body is gone.
    pub(super) async fn answer_or_fetch<O: Origin>(
        self: &Arc<Self>,
        key: CacheKey,
        entry: Arc<StoredResponse>,
        head: RequestHead,
        request_cc: CacheControl,
        status: CacheStatus,
        origin: &Arc<O>,
    ) -> Result<Response<ProxyBody>, O::Error> {
        match self
            .answer(&entry, &head.method, &head.headers, status)
            .await
        {
            Some(response) => Ok(response),
            None => {
                self.fetch(
                    key,
                    head.to_request(),
                    request_cc,
                    CacheOutcome::UriMiss,
                    None,
                    origin,
                )
                .await
            }
        }
    }

    /// stale-while-revalidate: one background refresh per key, however many requests see
    /// the stale entry meanwhile.
    pub(super) fn refresh_in_background<O: Origin>(
        self: &Arc<Self>,
        key: CacheKey,
        entry: Arc<StoredResponse>,
        head: RequestHead,
        origin: &Arc<O>,
    ) {
        let Role::Leader(lock) = self.collapser.join(key.hash()) else {
            return;
        };
        let cache = Arc::clone(self);
        let origin = Arc::clone(origin);
        self.background.spawn(async move {
            let request_time = now_secs();
            let request = conditional_request(without_conditionals(head.to_request()), &entry);
            match origin.fetch(request).await {
                Ok(response) if response.status() == StatusCode::NOT_MODIFIED => {
                    let not_modified = response.headers();
                    let request_cc = CacheControl::default();
                    if cache
                        .may_share_refresh(&entry, &head, &request_cc, not_modified)
                        .is_ok()
                    {
                        let refreshed = cache.refreshed(&entry, not_modified, request_time);
                        cache.index.insert(Arc::new(refreshed));
                        lock.finish(FillResult::Stored);
                    } else {
                        cache.index.remove_variant(&entry);
                        lock.finish(FillResult::NotStored);
                    }
                }
                Ok(response) => {
                    let status = CacheStatus::new(CacheOutcome::Refreshed);
                    let response = cache.admit(
                        key,
                        &head,
                        &CacheControl::default(),
                        request_time,
                        response,
                        Some(lock),
                        status,
                    );
                    // Nobody reads this body; draining it completes the fill.
                    let mut body = response.into_body();
                    while let Some(frame) = body.frame().await {
                        if frame.is_err() {
                            break;
                        }
                    }
                }
                Err(e) => tracing::info!("background refresh of {} failed: {e}", key.url()),
            }
        });
    }

    /// Whether the response a 304 refreshes may still be shared: the merged fields must be
    /// storable by a shared cache (a 304 adding `private`, `no-store` or a cookie without
    /// shared freshness is not). Checked on the merge, before the cookie is taken out.
    pub(super) fn may_share_refresh(
        &self,
        entry: &StoredResponse,
        head: &RequestHead,
        request_cc: &CacheControl,
        not_modified: &HeaderMap,
    ) -> Result<(), policy::NotStorable> {
        let merged = policy::refresh_headers(&entry.headers, not_modified);
        policy::storable(
            &Method::GET,
            &head.headers,
            request_cc,
            entry.status,
            &merged,
            &CacheControl::parse(&merged),
        )
    }

    /// The stored entry with a 304's headers merged in and its freshness recomputed (§4.3.4).
    pub(super) fn refreshed(
        &self,
        entry: &StoredResponse,
        not_modified: &HeaderMap,
        request_time: u64,
    ) -> StoredResponse {
        let merged = policy::refresh_headers(&entry.headers, not_modified);
        let headers = entry::compact_headers(&policy::shareable(&merged));
        let freshness = Freshness::new(
            entry.status,
            &headers,
            request_time,
            now_secs(),
            &self.settings.policy,
        );
        StoredResponse {
            headers,
            freshness,
            ..entry.clone()
        }
    }
}

/// Removes the client's validators and range so the origin sends a complete response the
/// cache can store; the cache answers them itself.
pub(super) fn without_conditionals(mut request: Request<ProxyBody>) -> Request<ProxyBody> {
    let headers = request.headers_mut();
    for name in [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
    ] {
        headers.remove(name);
    }
    request
}

/// §4.3.1: validate with the stored ETag and Last-Modified (or, lacking that, Date).
pub(super) fn conditional_request(
    mut request: Request<ProxyBody>,
    entry: &StoredResponse,
) -> Request<ProxyBody> {
    let headers = request.headers_mut();
    headers.remove(header::RANGE);
    headers.remove(header::IF_RANGE);
    if let Some(etag) = entry.headers.get(header::ETAG) {
        headers.insert(header::IF_NONE_MATCH, etag.clone());
    }
    if let Some(date) = entry
        .headers
        .get(header::LAST_MODIFIED)
        .or_else(|| entry.headers.get(header::DATE))
    {
        headers.insert(header::IF_MODIFIED_SINCE, date.clone());
    }
    request
}
