//! Responses built from stored entries: `Age`, `Cache-Status`, a 304 for a matching client
//! conditional, a 206/416 for a range, no body for HEAD; the body read from the memory tier
//! or, checksum-verified, from disk.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use super::CACHE_STATUS;
use super::policy::{self, now_secs};
use super::range::{self, RangeAnswer};
use super::storage::{Storage, StoredBody};
use super::{Cache, CacheOutcome, CacheStatus, StoredResponse, read};
use crate::body::{self, ProxyBody};

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
    ) -> Option<Response<ProxyBody>> {
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
        Some(build(code, reason, headers, body, &status))
    }

    /// The stored body bytes `start..end`: memory first, else disk (promoted to memory when
    /// small enough), checksum-verified.
    pub(super) async fn body(
        self: &Arc<Self>,
        entry: &Arc<StoredResponse>,
        (start, end): (u64, u64),
    ) -> Option<ProxyBody> {
        if let Ok(Some(StoredBody::Bytes(bytes))) = self.memory.read(entry.body) {
            return Some(body::full(bytes.slice(start as usize..end as usize)));
        }
        let disk = Arc::clone(&self.disk);
        let id = entry.body;
        let file = match tokio::task::spawn_blocking(move || disk.read(id)).await {
            Ok(Ok(Some(StoredBody::File(file)))) => file,
            Ok(Err(e)) => {
                tracing::warn!("cache: cannot read the body of {}: {e}", entry.key.url());
                self.index.remove_variant(entry);
                return None;
            }
            _ => {
                tracing::warn!(
                    "cache: the body of {} is missing; refetching",
                    entry.key.url()
                );
                self.index.remove_variant(entry);
                return None;
            }
        };
        let (len, checksum) = (entry.body_len, entry.checksum);
        if len <= self.memory.max_object() {
            let verified =
                tokio::task::spawn_blocking(move || read::read_verified(file, len, &checksum))
                    .await;
            return match verified {
                Ok(Ok(Ok(bytes))) => {
                    self.memory.insert(id, bytes.clone());
                    Some(body::full(bytes.slice(start as usize..end as usize)))
                }
                Ok(Ok(Err(corrupt))) => {
                    self.count_corrupt(entry, &corrupt);
                    None
                }
                Ok(Err(e)) => {
                    tracing::warn!("cache: cannot read the body of {}: {e}", entry.key.url());
                    None
                }
                Err(_) => None,
            };
        }
        let check = if self.verified_bodies.get(&id).is_some() {
            read::Check::Length
        } else {
            let cache = Arc::clone(self);
            let corrupt_entry = Arc::clone(entry);
            let verified_bodies = Arc::clone(&self.verified_bodies);
            read::Check::Checksum {
                checksum,
                verified: Box::new(move || verified_bodies.insert(id, ())),
                corrupt: Box::new(move || {
                    cache.count_corrupt(&corrupt_entry, &"checksum mismatch while streaming")
                }),
            }
        };
        Some(read::stream_checked(file, len, (start, end - 1), check))
    }

    pub(super) fn count_corrupt(&self, entry: &StoredResponse, why: &dyn std::fmt::Display) {
        tracing::warn!("cache: dropping {}: {why}", entry.key.url());
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
) -> Response<ProxyBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    if let Some(reason) = reason.and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok()) {
        response.extensions_mut().insert(reason);
    }
    with_status(response, cache_status)
}

/// Adds `Cache-Status` and records the outcome for the access log.
pub(super) fn with_status(
    mut response: Response<ProxyBody>,
    status: &CacheStatus,
) -> Response<ProxyBody> {
    response
        .headers_mut()
        .append(CACHE_STATUS, status.header_value());
    response.extensions_mut().insert(status.outcome);
    response
}

/// RFC 9111 §5.2.1.7: `only-if-cached` with nothing usable stored.
pub(super) fn not_cached() -> Response<ProxyBody> {
    let response = body::generated(
        StatusCode::GATEWAY_TIMEOUT,
        "text/plain; charset=utf-8",
        "504 Gateway Timeout\nhoard: only-if-cached and nothing usable is cached\n",
    );
    with_status(
        response,
        &CacheStatus::new(CacheOutcome::NotCached).detail("only-if-cached"),
    )
}
