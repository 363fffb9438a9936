//! Revalidation (RFC 9111 §4.3): conditional requests to the origin, 304 refreshes (only
//! when the merged response is still shareable), stale-if-error fallbacks, and the
//! stale-while-revalidate background refresh.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};

use super::admit::Admission;
use super::collapse::{FillResult, Role};
use super::control::CacheControl;
use super::index::Published;
use super::lookup::RequestHead;
use super::policy::{self, Freshness, NotStorable, StaleOnError, now_secs};
use super::{Cache, CacheKey, CacheOutcome, CacheStatus, Origin, Served, StoredResponse, entry};
use crate::body::{self, ProxyBody};

/// What a 304 did to the stored response it answered.
struct Refresh {
    /// The entry with the 304's fields merged in (stored when `shared` is `Ok`).
    entry: Arc<StoredResponse>,
    /// Whether it may still be shared; when not, the old entry must go too.
    shared: Result<(), NotStorable>,
}

impl Cache {
    /// A stored response needs the origin's word: ask conditionally, then serve, replace, or
    /// fall back to the stale copy when the origin fails and that is allowed.
    pub(super) async fn revalidate<O: Origin>(
        self: &Arc<Self>,
        entry: Arc<StoredResponse>,
        request: Request<ProxyBody>,
        mut admission: Admission,
        forced_by_client: bool,
        origin: &Arc<O>,
    ) -> Result<Served, O::Error> {
        let conditional = conditional_request(without_conditionals(request), &entry);
        let result = origin.fetch(conditional).await;
        let usable_on_error = || {
            entry.freshness.usable_on_error(
                &admission.request_cc,
                now_secs(),
                &self.settings.policy,
            )
        };
        match result {
            Ok(response) if response.status() == StatusCode::NOT_MODIFIED => {
                let not_modified = response.headers();
                let refresh = self.refresh(&entry, &mut admission, not_modified);
                let mut status = CacheStatus::new(CacheOutcome::Revalidated);
                status.fwd_status = Some(304);
                status.fwd_request = forced_by_client;
                if let Err(reason) = refresh.shared {
                    status.detail = Some(reason.as_str());
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
                    .answer_or_fetch(refresh.entry, admission, status, origin)
                    .await?;
                for (name, value) in cookies {
                    answered.response.headers_mut().append(name, value);
                }
                if refresh.shared.is_err() {
                    // The origin now says this response is not for a shared cache: this
                    // client got it (its body is already open), nobody else does.
                    self.index.remove_variant(&entry);
                }
                Ok(answered)
            }
            Ok(response) if response.status().is_server_error() && usable_on_error().is_some() => {
                let why = usable_on_error().map_or("stale-if-error", StaleOnError::detail);
                let mut status = CacheStatus::new(CacheOutcome::Stale).detail(why);
                status.fwd_status = Some(response.status().as_u16());
                drop(response);
                self.answer_or_fetch(entry, admission, status, origin).await
            }
            Err(e) if O::unavailable(&e) && usable_on_error().is_some() => {
                tracing::info!(url = admission.key.url(), error = %e, "serving stale: the origin failed");
                let why = usable_on_error().map_or("stale-if-error", StaleOnError::detail);
                let status = CacheStatus::new(CacheOutcome::Stale).detail(why);
                self.answer_or_fetch(entry, admission, status, origin).await
            }
            Err(e) => Err(e),
            Ok(response) => {
                let outcome = if forced_by_client {
                    CacheOutcome::ClientRefresh
                } else {
                    CacheOutcome::Refreshed
                };
                let mut status = CacheStatus::new(outcome);
                status.fwd_status = Some(response.status().as_u16());
                Ok(self.admit_and_answer(admission, response, status))
            }
        }
    }

    /// Serves `entry`, or fetches anew if its body is gone.
    async fn answer_or_fetch<O: Origin>(
        self: &Arc<Self>,
        entry: Arc<StoredResponse>,
        mut admission: Admission,
        status: CacheStatus,
        origin: &Arc<O>,
    ) -> Result<Served, O::Error> {
        let head = &admission.head;
        if let Some(response) = self
            .answer(&entry, &head.method, &head.headers, status)
            .await
        {
            return Ok(response);
        }
        let request = head.to_request();
        admission.lock = None;
        self.fetch(
            request,
            admission,
            CacheStatus::new(CacheOutcome::UriMiss),
            origin,
        )
        .await
    }

    /// stale-while-revalidate: one background refresh per key, however many requests see
    /// the stale entry meanwhile.
    pub(super) fn refresh_in_background<O: Origin>(
        self: &Arc<Self>,
        key: &CacheKey,
        entry: &Arc<StoredResponse>,
        head: RequestHead,
        origin: &Arc<O>,
    ) {
        let Role::Leader(lock) = self.collapser.join(key.hash()) else {
            return;
        };
        let cache = Arc::clone(self);
        let origin = Arc::clone(origin);
        let entry = Arc::clone(entry);
        let mut admission = self.admission(key.clone(), head, CacheControl::default(), Some(lock));
        self.background.spawn(async move {
            let request = conditional_request(
                without_conditionals(admission.head.to_request()),
                &entry,
            );
            match origin.fetch(request).await {
                Ok(response) if response.status() == StatusCode::NOT_MODIFIED => {
                    let refresh = cache.refresh(&entry, &mut admission, response.headers());
                    if refresh.shared.is_err() {
                        cache.index.remove_variant(&entry);
                    }
                }
                Ok(response) => {
                    let status = CacheStatus::new(CacheOutcome::Refreshed);
                    // Nobody reads this body; draining it completes the fill.
                    body::drain(cache.admit(admission, response, status).response.into_body()).await;
                }
                Err(e) => {
                    tracing::info!(url = admission.key.url(), error = %e, "background refresh failed")
                }
            }
        });
    }

    /// A 304 for `entry` (RFC 9111 §4.3.4): its fields merged in and freshness recomputed,
    /// stored if the merged response may still be shared (a 304 adding `private`,
    /// `no-store` or a cookie without shared freshness makes it not; checked on the merge,
    /// before the cookie is taken out). Finishes the fill lock either way.
    fn refresh(
        &self,
        entry: &StoredResponse,
        admission: &mut Admission,
        not_modified: &HeaderMap,
    ) -> Refresh {
        let merged = policy::refresh_headers(&entry.headers, not_modified);
        // A stored part of a body is a 206 by nature; as a stored response it is judged as
        // the complete one it is part of.
        let status = if entry.key.is_part() {
            StatusCode::OK
        } else {
            entry.status
        };
        let shared = policy::storable(
            &Method::GET,
            &admission.head.headers,
            &admission.request_cc,
            status,
            &merged,
            &self.settings.policy.directives(&merged),
            admission.head.rule.as_deref(),
        );
        let headers =
            entry::compact_headers(&policy::stored_headers(&merged, &self.settings.policy));
        // From the merge, which still has the 304's own targeted field if it sent one.
        let freshness = Freshness::new(
            entry.status,
            &merged,
            admission.request_time,
            now_secs(),
            &self.settings.policy,
            admission.head.rule.as_deref(),
        );
        let refreshed = Arc::new(StoredResponse {
            headers,
            freshness,
            ..entry.clone()
        });
        let shared = shared.and_then(|()| {
            match self
                .index
                .insert(Arc::clone(&refreshed), admission.generation)
            {
                Published::Superseded => Err(NotStorable::Invalidated),
                _ => Ok(()),
            }
        });
        match shared {
            Ok(()) => admission.finish(FillResult::Stored),
            Err(reason) => {
                self.count_not_stored(reason);
                admission.finish(FillResult::NotStored);
            }
        }
        Refresh {
            entry: refreshed,
            shared,
        }
    }
}

/// Removes the client's validators and range so the origin sends a complete response the
/// cache can store; the cache answers them itself.
pub(super) fn without_conditionals(mut request: Request<ProxyBody>) -> Request<ProxyBody> {
    let headers = request.headers_mut();
    for name in CONDITIONALS {
        headers.remove(name);
    }
    request
}

/// A request's validators (RFC 9110 §13.1), `If-Range` apart.
pub const CONDITIONALS: [header::HeaderName; 4] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
];

/// §4.3.1: validate with the stored ETag and Last-Modified (or, lacking that, Date).
pub(super) fn conditional_request(
    mut request: Request<ProxyBody>,
    entry: &StoredResponse,
) -> Request<ProxyBody> {
    let headers = request.headers_mut();
    // A slice is revalidated as the range it is; anything else as the whole response.
    if !entry.key.is_part() {
        headers.remove(header::RANGE);
    }
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
