//! Responses built from stored entries: `Age`, `Cache-Status`, a 304 for a matching client
//! conditional, a 206/416 for a range, no body for HEAD; the body read from the tiers.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use super::CACHE_STATUS;
use super::policy::{self, now_secs};
use super::range::{self, RangeAnswer};
use super::storage::BodyError;
use super::{Cache, CacheOutcome, CacheStatus, Served, StoredResponse};
use crate::body::{self, ProxyBody};
use crate::http1::HeaderCase;

impl Cache {
    /// Builds the response for a stored entry: `Age`, `Cache-Status`, a 304 for a matching
    /// client conditional, a 206/416 for a range, no body for HEAD. `None` when the body is
    /// gone or corrupt (the entry is then removed).
    pub(super) async fn answer(
        self: &Arc<Self>,
        entry: &Arc<StoredResponse>,
        method: &Method,
        request_headers: &HeaderMap,
        mut status: CacheStatus,
    ) -> Option<Served> {
        let age = entry.freshness.age(now_secs());
        status.ttl = Some(entry.freshness.lifetime as i64 - age as i64);
        let mut headers = entry.headers.clone();
        headers.insert(header::AGE, HeaderValue::from(age));
        let complete_ok = entry.status == StatusCode::OK;

        if complete_ok && policy::client_validators_match(request_headers, &entry.headers) {
            headers.remove(header::CONTENT_LENGTH);
            return Some(build(
                StatusCode::NOT_MODIFIED,
                None,
                headers,
                body::empty(),
                &status,
                entry.spelling.as_ref(),
            ));
        }
        let len = entry.body_len;
        let range = if complete_ok && method == Method::GET {
            range::answer(request_headers, &entry.headers, len)
        } else {
            RangeAnswer::Full
        };
        let (code, reason, span) = match range {
            RangeAnswer::Full => (entry.status, entry.reason.clone(), (0, len)),
            RangeAnswer::Partial { start, end } => {
                headers.insert(
                    header::CONTENT_RANGE,
                    header_value(format!("bytes {start}-{end}/{len}")),
                );
                (StatusCode::PARTIAL_CONTENT, None, (start, end + 1))
            }
            RangeAnswer::Unsatisfiable => {
                headers.insert(
                    header::CONTENT_RANGE,
                    header_value(format!("bytes */{len}")),
                );
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
                return Some(build(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    None,
                    headers,
                    body::empty(),
                    &status,
                    entry.spelling.as_ref(),
                ));
            }
        };
        // The origin may have sent the body chunked; a stored body has a known length.
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(span.1 - span.0));
        let body = if method == Method::HEAD || span.0 == span.1 {
            body::empty()
        } else {
            self.body(entry, span).await?
        };
        Some(build(
            code,
            reason,
            headers,
            body,
            &status,
            entry.spelling.as_ref(),
        ))
    }

    /// The stored body bytes `start..end`, from whichever tier has it. `None` when it is
    /// gone or fails its check; the entry is then removed.
    async fn body(
        self: &Arc<Self>,
        entry: &Arc<StoredResponse>,
        span: (u64, u64),
    ) -> Option<ProxyBody> {
        let on_corrupt = || -> Box<dyn FnOnce() + Send> {
            let (cache, entry) = (Arc::clone(self), Arc::clone(entry));
            Box::new(move || cache.count_corrupt(&entry, &"checksum mismatch while streaming"))
        };
        match self.tiers.read(entry.body_ref(), span, on_corrupt).await {
            Ok(body) => Some(body),
            Err(BodyError::Corrupt(corrupt)) => {
                self.count_corrupt(entry, &corrupt);
                None
            }
            Err(e) => {
                tracing::warn!(url = entry.key.url(), error = %e, "cache: stored body unusable; refetching");
                self.index.remove_variant(entry);
                None
            }
        }
    }

    pub(super) fn count_corrupt(&self, entry: &StoredResponse, why: &dyn std::fmt::Display) {
        tracing::warn!(url = entry.key.url(), reason = %why, "cache: dropping a corrupt body");
        self.corrupt_bodies.fetch_add(1, Ordering::Relaxed);
        self.index.remove_variant(entry);
    }
}

pub(super) fn header_value(text: String) -> HeaderValue {
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(""))
}

pub(super) fn build(
    status: StatusCode,
    reason: Option<Bytes>,
    headers: HeaderMap,
    body: ProxyBody,
    cache_status: &CacheStatus,
    spelling: Option<&Arc<HeaderCase>>,
) -> Served {
    let mut response = Response::new(body);
    if let Some(spelling) = spelling {
        response.extensions_mut().insert(Arc::clone(spelling));
    }
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    if let Some(reason) = reason.and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok()) {
        response.extensions_mut().insert(reason);
    }
    from_storage(response, cache_status)
}

/// A response from the origin, with `Cache-Status` added.
pub(super) fn from_origin(response: Response<ProxyBody>, status: &CacheStatus) -> Served {
    let upstream_status = Some(response.status().as_u16());
    served(response, status, upstream_status)
}

/// A response built from storage, with `Cache-Status` added; the origin was asked only if
/// it revalidated (`fwd_status`).
pub(super) fn from_storage(response: Response<ProxyBody>, status: &CacheStatus) -> Served {
    served(response, status, status.fwd_status)
}

fn served(
    mut response: Response<ProxyBody>,
    status: &CacheStatus,
    upstream_status: Option<u16>,
) -> Served {
    response
        .headers_mut()
        .append(CACHE_STATUS, status.header_value());
    Served {
        response,
        outcome: status.outcome,
        upstream_status,
    }
}

/// RFC 9111 §5.2.1.7: `only-if-cached` with nothing usable stored.
pub(super) fn not_cached() -> Served {
    let response = body::generated(
        StatusCode::GATEWAY_TIMEOUT,
        "text/plain; charset=utf-8",
        "504 Gateway Timeout\nhoard: only-if-cached and nothing usable is cached\n",
    );
    from_storage(
        response,
        &CacheStatus::new(CacheOutcome::NotCached).detail("only-if-cached"),
    )
}
