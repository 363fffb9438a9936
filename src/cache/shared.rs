//! The shared tier (`--shared-tier`): an object store that every node of a fleet reads and
//! writes, behind the small `SharedTier` trait. On a miss the node that owns a URL looks
//! there before asking the origin; a response it stored with enough freshness left is
//! written there in the background, once (create-if-absent: one writer wins).
//!
//! An object is the entry's record (`StoredResponse::encode`: URL, Vary values, status,
//! headers, freshness, length and checksum) and then the body; it is served only when its
//! URL, length and BLAKE3 checksum match and it is fresh for the request. Freshness times
//! are absolute, so nodes must keep their clocks in step (NTP), as Date-based ages need
//! anyway. One variant per URL: the first written wins, others are fetched as before.
//!
//! This module owns the object format and when the tier is consulted. It must not talk to
//! a store itself: `shared_tier/` implements the trait (timeouts, circuit breaker, metrics).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Method};
use http_body_util::BodyExt;

use super::admit::Admission;
use super::collapse::FillResult;
use super::control::CacheControl;
use super::index::Published;
use super::lookup::select_variant;
use super::policy::{Verdict, now_secs};
use super::storage::new_body_id;
use super::{Cache, CacheKey, CacheStatus, Served, StoredResponse, fill};
use crate::body;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An object store shared by the fleet.
///
/// Contract: `get` returns the bytes created under `name`, or `None` when there are none
/// *or the store failed or was too slow*: a shared tier is an optimisation, and a failure
/// there must cost a request no more than the tier's timeout. `create` stores `object`
/// unless something is already stored under `name` (one writer wins) and never blocks the
/// caller's request (it runs in the background). `takes_writes` is false while writes would
/// fail anyway (the store is failing), so the caller does not assemble an object for
/// nothing. `remove` deletes an object found damaged, so that a good one can be created.
pub trait SharedTier: Send + Sync + 'static {
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Option<Bytes>>;
    fn create<'a>(&'a self, name: &'a str, object: Bytes) -> BoxFuture<'a, ()>;
    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, ()>;
    fn takes_writes(&self) -> bool;
}

/// The tier and when to write to it.
pub struct Shared {
    tier: Arc<dyn SharedTier>,
    /// Responses with less freshness left than this are not written.
    min_ttl: Duration,
    /// Objects being assembled and written at once; beyond it a write is skipped (a later
    /// fill of the URL offers it again), so a burst of fills cannot hold many bodies in
    /// memory.
    writes: Arc<tokio::sync::Semaphore>,
    /// Objects found absent lately, and when: a miss does not ask the store again for a
    /// while (an uncacheable URL would otherwise cost a store request every time).
    absent: quick_cache::sync::Cache<String, Instant>,
}

/// Writes in flight at once.
const MAX_WRITES: usize = 8;
/// Larger bodies are not written: they would be read and written whole, in memory and
/// within one timeout.
const MAX_OBJECT: u64 = 16 * 1024 * 1024;
/// How long an absent object is not asked for again.
const ABSENT_FOR: Duration = Duration::from_secs(30);

impl Shared {
    pub fn new(tier: Arc<dyn SharedTier>, min_ttl: Duration) -> Shared {
        Shared {
            tier,
            min_ttl,
            writes: Arc::new(tokio::sync::Semaphore::new(MAX_WRITES)),
            absent: quick_cache::sync::Cache::new(65_536),
        }
    }
}

const MAGIC: &[u8] = b"hoard-shared-1\n";

/// The object name of `url`'s entry (under the tier's prefix): its BLAKE3 hash, so no URL
/// can steer a path in the bucket.
pub fn object_name(url: &str) -> String {
    blake3::hash(url.as_bytes()).to_hex().to_string()
}

/// Record and body as one object.
fn encode(entry: &StoredResponse, body: &[u8]) -> Bytes {
    let record = entry.encode();
    let mut object = BytesMut::with_capacity(MAGIC.len() + 4 + record.len() + body.len());
    object.put_slice(MAGIC);
    object.put_u32_le(record.len() as u32);
    object.put_slice(&record);
    object.put_slice(body);
    object.freeze()
}

/// Why an object from the tier is not used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadObject {
    #[error("not a hoard shared-tier object")]
    Format,
    #[error("stored for another URL")]
    OtherUrl,
    #[error("body length or checksum does not match")]
    Checksum,
}

/// The entry and body in `object`, checked against `key` and its own checksum.
fn decode(object: &Bytes, key: &CacheKey) -> Result<(StoredResponse, Bytes), BadObject> {
    let rest = object.strip_prefix(MAGIC).ok_or(BadObject::Format)?;
    let (len, rest) = rest.split_first_chunk::<4>().ok_or(BadObject::Format)?;
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len {
        return Err(BadObject::Format);
    }
    let entry = StoredResponse::decode(&rest[..len]).map_err(|_| BadObject::Format)?;
    if entry.key.url() != key.url() {
        return Err(BadObject::OtherUrl);
    }
    let start = MAGIC.len() + 4 + len;
    let body = object.slice(start..);
    if body.len() as u64 != entry.body_len || *blake3::hash(&body).as_bytes() != entry.checksum {
        return Err(BadObject::Checksum);
    }
    Ok((entry, body))
}

impl Cache {
    /// Uses the shared tier as the `--shared-tier` setting says.
    pub fn set_shared_tier(&mut self, shared: Shared) {
        self.shared = Some(shared);
    }

    /// A miss's look at the shared tier, before the origin: an entry there that is fresh
    /// for this request is stored here and served (`detail=shared-tier`).
    pub(super) async fn from_shared_tier(
        self: &Arc<Self>,
        method: &Method,
        headers: &HeaderMap,
        admission: &mut Admission,
        status: &CacheStatus,
    ) -> Option<Served> {
        let shared = self.shared.as_ref()?;
        if admission.key.is_part() || method != Method::GET {
            return None;
        }
        let name = object_name(admission.key.url());
        if shared
            .absent
            .get(&name)
            .is_some_and(|since| since.elapsed() < ABSENT_FOR)
        {
            return None;
        }
        let Some(object) = shared.tier.get(&name).await else {
            shared.absent.insert(name, Instant::now());
            return None;
        };
        let (entry, body) = match decode(&object, &admission.key) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(url = admission.key.url(), error = %e, "shared tier: ignoring a bad object");
                // Removed, so that this fill's good copy can take its place.
                self.remove_from_shared_tier(name);
                return None;
            }
        };
        let now = now_secs();
        if entry.freshness.verdict(&CacheControl::default(), now) != Verdict::Fresh {
            // Stale for everyone: removed, so that this fill's fresh copy can be written (a
            // create never replaces an object).
            self.remove_from_shared_tier(name);
            return None;
        }
        let fresh = entry.freshness.verdict(&admission.request_cc, now) == Verdict::Fresh;
        let variants = [Arc::new(entry)];
        let entry = select_variant(&variants, headers).filter(|_| fresh)?;
        let entry = self.store_from_shared_tier(&entry, body, admission).await?;
        admission.finish(FillResult::Stored);
        let mut status = status.clone().detail("shared-tier");
        status.stored = true;
        self.answer(&entry, method, headers, status).await
    }

    /// Writes `body` into the tiers under a new id and publishes `entry` for it, as a fill
    /// would (same writer, same durability), and waits until that is done.
    async fn store_from_shared_tier(
        self: &Arc<Self>,
        entry: &StoredResponse,
        body: Bytes,
        admission: &Admission,
    ) -> Option<Arc<StoredResponse>> {
        let mut entry = entry.clone();
        entry.body = new_body_id();
        let body_id = entry.body;
        let permit = Arc::clone(&self.fills).try_acquire_owned().ok()?;
        let (done, stored) = tokio::sync::oneshot::channel();
        let (cache, generation) = (Arc::clone(self), admission.generation);
        let on_done: fill::OnFilled = Box::new(move |written| {
            Box::pin(async move {
                let published = match written {
                    Some(_) => {
                        let entry = Arc::new(entry);
                        let published = cache.publish(Arc::clone(&entry), generation).await;
                        (published == Published::Yes).then_some(entry)
                    }
                    None => None,
                };
                let _ = done.send(published);
            })
        });
        let len = body.len() as u64;
        let tee = fill::tee(
            &self.background,
            body::full(body),
            fill::FillJob {
                tiers: self.tiers.for_writing(),
                body: body_id,
                expected_len: Some(len),
                max_len: self.settings.max_object_size,
                on_done,
                failures: Arc::clone(&self.store_failures),
                permit,
            },
        );
        body::drain(tee).await;
        stored.await.ok().flatten()
    }

    /// Removes `url`'s object from the shared tier, in the background: a purge or an
    /// invalidation here must not be undone by the next miss reading the old copy back.
    pub(super) fn forget_in_shared_tier(&self, key: &CacheKey) {
        if self.shared.is_some() && !key.is_part() {
            self.remove_from_shared_tier(object_name(key.url()));
        }
    }

    fn remove_from_shared_tier(&self, name: String) {
        let Some(shared) = &self.shared else { return };
        shared.absent.remove(&name);
        let tier = Arc::clone(&shared.tier);
        self.background
            .spawn(async move { tier.remove(&name).await });
    }

    /// After a fill from the origin is published: offers the entry to the shared tier when
    /// it has at least `min_ttl` of freshness left, reading its body back from the tiers.
    pub(super) fn offer_to_shared_tier(self: &Arc<Self>, entry: Arc<StoredResponse>) {
        let Some(shared) = &self.shared else { return };
        let left = entry.freshness.lifetime as i64 - entry.freshness.age(now_secs()) as i64;
        if entry.key.is_part()
            || left < shared.min_ttl.as_secs() as i64
            || entry.body_len > MAX_OBJECT
        {
            return;
        }
        let Ok(permit) = Arc::clone(&shared.writes).try_acquire_owned() else {
            tracing::debug!(
                url = entry.key.url(),
                "shared tier: enough writes in flight, skipping"
            );
            return;
        };
        if !shared.tier.takes_writes() {
            return;
        }
        let (cache, tier) = (Arc::clone(self), Arc::clone(&shared.tier));
        self.background.spawn(async move {
            let _permit = permit;
            let read = cache
                .tiers
                .read(entry.body_ref(), (0, entry.body_len), || Box::new(|| {}))
                .await;
            let Ok(body) = read else { return };
            let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
                return;
            };
            let name = object_name(entry.key.url());
            tier.create(&name, encode(&entry, &body)).await;
            if let Some(shared) = &cache.shared {
                shared.absent.remove(&name);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(url: &str, body: &[u8]) -> StoredResponse {
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", "text/plain".parse().unwrap());
        StoredResponse {
            spelling: None,
            key: CacheKey::from_url(url.to_owned()),
            vary: Vec::new(),
            status: http::StatusCode::OK,
            reason: None,
            headers,
            freshness: super::super::policy::Freshness {
                response_time: 1_000,
                initial_age: 0,
                lifetime: 3_600,
                must_revalidate: false,
                no_cache: false,
                stale_while_revalidate: None,
                stale_if_error: None,
            },
            body: 7,
            body_len: body.len() as u64,
            checksum: *blake3::hash(body).as_bytes(),
        }
    }

    #[test]
    fn objects_round_trip_and_any_damage_is_refused() {
        let key = CacheKey::from_url("http://a.example/x".into());
        let object = encode(&entry(key.url(), b"hello"), b"hello");
        let (decoded, body) = decode(&object, &key).unwrap();
        assert_eq!((decoded.key.url(), &body[..]), (key.url(), &b"hello"[..]));
        assert_eq!(decoded.freshness.lifetime, 3_600);
        let other = CacheKey::from_url("http://a.example/y".into());
        assert_eq!(decode(&object, &other).unwrap_err(), BadObject::OtherUrl);
        let mut flipped = object.to_vec();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(
            decode(&flipped.into(), &key).unwrap_err(),
            BadObject::Checksum
        );
        let short = object.slice(..object.len() - 1);
        assert_eq!(decode(&short, &key).unwrap_err(), BadObject::Checksum);
        assert_eq!(
            decode(&Bytes::from_static(b"junk"), &key).unwrap_err(),
            BadObject::Format
        );
        assert_eq!(object_name("http://a.example/x").len(), 64);
    }
}
