//! Admission (RFC 9111 §3): whether the origin's response is stored, and if so streaming it
//! to the client and into the tiers at once. A fill publishes its entry only once the body
//! is complete and durable.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header;
use http::{Response, StatusCode};

use super::collapse::{FillLock, FillResult};
use super::control::CacheControl;
use super::index::{Generation, Published};
use super::lookup::RequestHead;
use super::policy::{self, Freshness, NotStorable, now_secs};
use super::respond::from_origin;
use super::storage::new_body_id;
use super::{Cache, CacheKey, CacheStatus, Served, StoredResponse, entry, fill, key, slice};
use crate::body::{self, ProxyBody};
use crate::http1::HeaderCase;

/// Everything about the request that admitting its response needs.
pub(super) struct Admission {
    pub(super) key: CacheKey,
    /// The key's invalidation generation when the request went out: the response is
    /// published only if no invalidation came in between.
    pub(super) generation: Generation,
    pub(super) head: RequestHead,
    pub(super) request_cc: CacheControl,
    /// When the request went to the origin (RFC 9111 §4.2.3), in Unix seconds.
    pub(super) request_time: u64,
    /// Held by the request that leads the fill, so followers learn how it ended.
    pub(super) lock: Option<FillLock>,
}

impl Admission {
    /// Tells waiting followers how the fill ended.
    pub(super) fn finish(&mut self, result: FillResult) {
        if let Some(lock) = self.lock.take() {
            lock.finish(result);
        }
    }
}

impl Cache {
    /// The admission for `request`, about to go to the origin.
    pub(super) fn admission(
        &self,
        key: CacheKey,
        head: RequestHead,
        request_cc: CacheControl,
        lock: Option<FillLock>,
    ) -> Admission {
        Admission {
            generation: self.index.generation(&key),
            key,
            head,
            request_cc,
            request_time: now_secs(),
            lock,
        }
    }

    /// Publishes the entry of a body now in the tiers. When an invalidation came in between
    /// (`Superseded`) or the index could not record it (`Failed`: a full or read-only disk,
    /// so the body would be unreachable after a restart) it is counted and its body removed.
    pub(super) async fn publish(
        &self,
        entry: Arc<StoredResponse>,
        generation: Generation,
    ) -> Published {
        let published = self
            .index
            .insert_durable(Arc::clone(&entry), generation)
            .await;
        match published {
            Published::Yes => return published,
            Published::Superseded => self.count_not_stored(NotStorable::Invalidated),
            Published::Failed => {
                self.store_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        let _ = self.tiers.remove_all(&[entry.body]);
        published
    }

    /// Stores the origin's response if allowed (streaming it to the client meanwhile) and
    /// answers a client conditional from it.
    pub(super) fn admit_and_answer(
        self: &Arc<Self>,
        admission: Admission,
        response: Response<ProxyBody>,
        status: CacheStatus,
    ) -> Served {
        // The client's validators were held back so the cache could get a full response;
        // answer them now. The body still has to arrive for the fill, so drain it aside.
        let answer_not_modified = response.status() == StatusCode::OK
            && policy::client_validators_match(&admission.head.headers, response.headers());
        let mut served = self.admit(admission, response, status);
        if answer_not_modified {
            let (mut parts, body) = served.response.into_parts();
            tokio::spawn(body::drain(body));
            parts.status = StatusCode::NOT_MODIFIED;
            parts.headers.remove(header::CONTENT_LENGTH);
            served.response = Response::from_parts(parts, body::empty());
        }
        served
    }

    pub(super) fn admit(
        self: &Arc<Self>,
        mut admission: Admission,
        response: Response<ProxyBody>,
        mut status: CacheStatus,
    ) -> Served {
        let head = &admission.head;
        let rule = head.rule.as_deref();
        let max_object_size = self.max_object_size(rule);
        let response_cc = self.settings.policy.directives(response.headers());
        let content_length = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        // A part of a body is stored as the 206 the origin sent for it (`slice.rs`);
        // anything else under a part's key (a 200 for the whole object) is not that part.
        let storable_status = match admission.key.part_of() {
            Some((_, part)) if slice::is_part_answer(part, &head.headers, &response) => {
                StatusCode::OK
            }
            Some(_) => StatusCode::PARTIAL_CONTENT,
            None => response.status(),
        };
        let decision = policy::storable(
            &head.method,
            &head.headers,
            &admission.request_cc,
            storable_status,
            response.headers(),
            &response_cc,
            rule,
        )
        .and(match content_length {
            Some(len) if len > max_object_size => Err(NotStorable::TooLarge),
            _ => Ok(()),
        });
        // A place among the fills in progress is taken last, for a response to be stored.
        let admitted = match (decision, key::vary_fields(response.headers())) {
            (Ok(()), Some(vary_fields)) => Arc::clone(&self.fills)
                .try_acquire_owned()
                .map(|permit| (permit, vary_fields))
                .map_err(|_| Some(NotStorable::Busy)),
            (Ok(()), None) => Err(None),
            (Err(reason), _) => Err(Some(reason)),
        };
        let (permit, vary_fields) = match admitted {
            Ok(admitted) => admitted,
            Err(reason) => {
                admission.finish(FillResult::NotStored);
                if let Some(reason) = reason {
                    self.count_not_stored(reason);
                    status.detail = Some(reason.as_str());
                }
                return from_origin(response, &status);
            }
        };

        let (parts, body) = response.into_parts();
        let freshness = Freshness::new(
            parts.status,
            &parts.headers,
            admission.request_time,
            now_secs(),
            &self.settings.policy,
            rule,
        );
        let body_id = new_body_id();
        let mut entry = StoredResponse {
            spelling: parts.extensions.get::<Arc<HeaderCase>>().cloned(),
            vary: key::vary_values(&head.headers, &vary_fields),
            key: admission.key,
            status: parts.status,
            reason: parts
                .extensions
                .get::<hyper::ext::ReasonPhrase>()
                .map(|r| Bytes::copy_from_slice(r.as_bytes())),
            headers: entry::compact_headers(&policy::stored_headers(
                &parts.headers,
                &self.settings.policy,
            )),
            freshness,
            body: body_id,
            body_len: 0,
            checksum: [0; 32],
        };
        let (lock, generation) = (admission.lock, admission.generation);
        let cache = Arc::clone(self);
        let on_done: fill::OnFilled = Box::new(move |stored| {
            Box::pin(async move {
                // Not stored: the lock drops unfinished, and followers retry instead of hanging.
                let Some((len, checksum)) = stored else {
                    return;
                };
                entry.body_len = len;
                entry.checksum = checksum;
                let entry = Arc::new(entry);
                let result = match cache.publish(Arc::clone(&entry), generation).await {
                    Published::Yes => {
                        cache.offer_to_shared_tier(entry);
                        FillResult::Stored
                    }
                    Published::Superseded => FillResult::NotStored,
                    // Followers retry.
                    Published::Failed => return,
                };
                if let Some(lock) = lock {
                    lock.finish(result);
                }
            })
        });
        let body = fill::tee(
            &self.background,
            body,
            fill::FillJob {
                tiers: self.tiers.for_writing(),
                body: body_id,
                expected_len: content_length,
                max_len: max_object_size,
                on_done,
                failures: Arc::clone(&self.store_failures),
                permit,
            },
        );
        status.stored = true;
        status.ttl = Some(freshness.lifetime as i64 - freshness.initial_age as i64);
        from_origin(Response::from_parts(parts, body), &status)
    }
}
