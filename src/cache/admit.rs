//! Admission (RFC 9111 §3): whether the origin's response is stored, and if so streaming it
//! to the client and into the tiers at once.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{self};
use http::{Response, StatusCode};
use http_body_util::BodyExt;

use super::collapse::{FillLock, FillResult};
use super::control::CacheControl;
use super::policy::{self, Freshness, NotStorable, now_secs};
use super::respond::with_status;
use super::storage::Storage;
use super::{Cache, CacheKey, CacheStatus, RequestHead, StoredResponse, entry, fill, key};
use crate::body::{self, ProxyBody};
use std::sync::atomic::AtomicU64;

impl Cache {
    /// Stores the origin's response if allowed (streaming it to the client meanwhile) and
    /// answers a client conditional from it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn admit_and_answer(
        self: &Arc<Self>,
        key: CacheKey,
        head: &RequestHead,
        request_cc: &CacheControl,
        request_time: u64,
        response: Response<ProxyBody>,
        lock: Option<FillLock>,
        status: CacheStatus,
    ) -> Response<ProxyBody> {
        let response = self.admit(key, head, request_cc, request_time, response, lock, status);
        // The client's validators were held back so the cache could get a full response;
        // answer them now. The body still has to arrive for the fill, so drain it aside.
        if response.status() == StatusCode::OK
            && policy::client_validators_match(&head.headers, response.headers())
        {
            let (mut parts, mut body) = response.into_parts();
            tokio::spawn(async move { while let Some(Ok(_)) = body.frame().await {} });
            parts.status = StatusCode::NOT_MODIFIED;
            parts.headers.remove(header::CONTENT_LENGTH);
            return Response::from_parts(parts, body::empty());
        }
        response
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn admit(
        self: &Arc<Self>,
        key: CacheKey,
        head: &RequestHead,
        request_cc: &CacheControl,
        request_time: u64,
        response: Response<ProxyBody>,
        lock: Option<FillLock>,
        mut status: CacheStatus,
    ) -> Response<ProxyBody> {
        let response_cc = CacheControl::parse(response.headers());
        let content_length = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let decision = policy::storable(
            &head.method,
            &head.headers,
            request_cc,
            response.status(),
            response.headers(),
            &response_cc,
        )
        .and_then(|()| match content_length {
            Some(len) if len > self.settings.max_object_size => Err(NotStorable::TooLarge),
            _ => Ok(()),
        });
        let vary = key::vary_fields(response.headers());
        let (Ok(()), Some(vary_fields)) = (decision, vary) else {
            if let Some(lock) = lock {
                lock.finish(FillResult::NotStored);
            }
            if let Err(reason) = decision {
                self.count_not_stored(reason);
                status.detail = Some(reason.as_str());
            }
            return with_status(response, &status);
        };

        let (parts, body) = response.into_parts();
        let freshness = Freshness::new(
            parts.status,
            &parts.headers,
            request_time,
            now_secs(),
            &self.settings.policy,
        );
        let body_id = random_body_id();
        let mut entry = StoredResponse {
            key,
            vary: key::vary_values(&head.headers, &vary_fields),
            status: parts.status,
            reason: parts
                .extensions
                .get::<hyper::ext::ReasonPhrase>()
                .map(|r| Bytes::copy_from_slice(r.as_bytes())),
            headers: entry::compact_headers(&policy::shareable(&parts.headers)),
            freshness,
            body: body_id,
            body_len: 0,
            checksum: [0; 32],
        };
        let cache = Arc::clone(self);
        let on_done = Box::new(move |stored: Option<(u64, [u8; 32])>| {
            if let Some((len, checksum)) = stored {
                entry.body_len = len;
                entry.checksum = checksum;
                if cache.index.insert_durable(Arc::new(entry)) {
                    if let Some(lock) = lock {
                        lock.finish(FillResult::Stored);
                    }
                } else {
                    // The index could not record it (a full or read-only disk): the body
                    // would be unreachable after a restart, so it is not kept now either.
                    cache.store_failures.fetch_add(1, Ordering::Relaxed);
                    let _ = cache.memory.remove(body_id);
                    let _ = cache.disk.remove(body_id);
                }
            }
            // Otherwise the lock drops unfinished: followers retry instead of hanging.
        });
        let tiers: Vec<Arc<dyn Storage>> = vec![self.disk.clone(), self.memory.clone()];
        let body = fill::tee(
            &self.background,
            body,
            fill::FillJob {
                tiers,
                body: body_id,
                expected_len: content_length,
                max_len: self.settings.max_object_size,
                on_done,
                failures: Arc::clone(&self.store_failures),
            },
        );
        status.stored = true;
        status.ttl = Some(freshness.lifetime as i64 - freshness.initial_age as i64);
        with_status(Response::from_parts(parts, body), &status)
    }
}

pub(super) fn random_body_id() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::getrandom(&mut bytes).is_err() {
        // Unique enough within one process when the OS source fails: time and a counter.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(48);
    }
    u64::from_le_bytes(bytes)
}
