//! The shared HTTP cache (RFC 9111): decides whether a request is answered from storage,
//! revalidated, collapsed with others, or sent to the origin, and stores what may be stored.
//!
//! It takes and returns `http` types and reaches the origin only through the `Origin` trait;
//! it knows nothing of `proxy/`, `server/` or `upstream/`. Policy is in `policy.rs`
//! (pure functions), bodies in `storage/`, the persistent index in `index.rs`.

mod collapse;
pub mod control;
mod entry;
mod fill;
mod index;
mod key;
pub mod outcome;
pub mod policy;
mod range;
mod read;
pub mod storage;

pub use entry::StoredResponse;
pub use index::{IndexDamage, IndexRebuilt, LoadReport};
pub use key::CacheKey;
pub use outcome::{CacheOutcome, CacheStatus, UpstreamStatus};
pub use policy::PolicySettings;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use tokio_util::task::TaskTracker;

use crate::body::{self, ProxyBody};
use collapse::{Collapser, FillLock, FillResult, Role};
use control::CacheControl;
use entry::BodyId;
use index::{Index, IndexError, Variants};
use policy::{Freshness, Verdict, now_secs};
use range::RangeAnswer;
use storage::{DiskStorage, MemoryStorage, Storage, StoredBody};

const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Sizes and rules the cache runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    pub dir: PathBuf,
    pub memory_size: u64,
    pub disk_size: u64,
    /// Larger responses stream through without being stored.
    pub max_object_size: u64,
    pub policy: PolicySettings,
    /// How long a collapsed request waits for the leader before fetching on its own.
    pub collapse_wait: Duration,
}

/// How the cache reaches the origin. The proxy implements it; the cache never dials itself.
pub trait Origin: Send + Sync + 'static {
    type Error: std::fmt::Display + Send + 'static;

    /// Sends a request with an absolute URI and returns the origin's response with hop-by-hop
    /// fields already removed.
    fn fetch(
        &self,
        request: Request<ProxyBody>,
    ) -> impl Future<Output = Result<Response<ProxyBody>, Self::Error>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache directory {0}: {1}")]
    Directory(PathBuf, storage::StorageError),
    /// Another hoard or `hoard cache` holds the directory's lock (or it cannot be taken).
    #[error(transparent)]
    Locked(#[from] storage::LockError),
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// The request head, kept when the request itself has gone to the origin.
#[derive(Clone)]
struct RequestHead {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl RequestHead {
    fn of<B>(request: &Request<B>) -> RequestHead {
        RequestHead {
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers: request.headers().clone(),
        }
    }

    /// A body-less request with this head (GET and HEAD carry no body).
    fn to_request(&self) -> Request<ProxyBody> {
        let mut request = Request::new(body::empty());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

pub struct Cache {
    index: Index,
    memory: Arc<MemoryStorage>,
    disk: Arc<DiskStorage>,
    collapser: Arc<Collapser>,
    settings: CacheSettings,
    corrupt_bodies: AtomicU64,
    /// Fills that failed on a storage error (disk full, directory gone or read-only).
    store_failures: Arc<AtomicU64>,
    /// Fills and background refreshes, awaited at shutdown.
    background: TaskTracker,
    /// Large bodies whose checksum matched once in this process (see `read`); bounded, and
    /// one that drops out is simply verified again.
    verified_bodies: Arc<quick_cache::sync::Cache<BodyId, ()>>,
}

impl Cache {
    /// Opens the cache directory and loads the index (blocking; call at start-up).
    pub fn open(settings: CacheSettings) -> Result<(Cache, LoadReport), CacheError> {
        std::fs::create_dir_all(&settings.dir)
            .map_err(|e| CacheError::Directory(settings.dir.clone(), e.into()))?;
        // Before anything else touches the directory: a second hoard must not empty the
        // first one's tmp/ (its fills in flight) before finding out it cannot run.
        let lock = storage::DirLock::acquire(&settings.dir)?;
        let disk = Arc::new(
            DiskStorage::open(&settings.dir, &lock)
                .map_err(|e| CacheError::Directory(settings.dir.clone(), e))?,
        );
        // One object may take at most an eighth of the memory tier, so a few large bodies
        // cannot flush everything else.
        let memory = Arc::new(MemoryStorage::new(
            settings.memory_size,
            settings.memory_size / 8,
        ));
        let (index, report) = Index::open(
            &settings.dir,
            lock,
            settings.disk_size,
            settings.max_object_size,
            disk.clone(),
            memory.clone(),
        )?;
        Ok((
            Cache {
                index,
                memory,
                disk,
                collapser: Arc::default(),
                settings,
                corrupt_bodies: AtomicU64::new(0),
                store_failures: Arc::default(),
                background: TaskTracker::new(),
                verified_bodies: Arc::new(quick_cache::sync::Cache::new(1 << 16)),
            },
            report,
        ))
    }

    /// Lets fills in progress finish, then saves and closes the index.
    pub async fn shutdown(self: &Arc<Self>) {
        self.background.close();
        self.background.wait().await;
        let cache = Arc::clone(self);
        let _ = tokio::task::spawn_blocking(move || cache.index.close()).await;
    }

    /// Stored URLs (each may have several variants).
    pub fn urls(&self) -> usize {
        self.index.len()
    }

    pub fn corrupt_bodies(&self) -> u64 {
        self.corrupt_bodies.load(Ordering::Relaxed)
    }

    pub fn store_failures(&self) -> u64 {
        self.store_failures.load(Ordering::Relaxed)
    }

    pub fn evictions(&self) -> u64 {
        self.index.evictions()
    }

    pub fn memory_usage(&self) -> storage::Usage {
        self.memory.usage()
    }

    pub fn disk_usage(&self) -> storage::Usage {
        self.disk.usage()
    }

    /// Forgets every stored variant of `uri`; returns how many there were.
    pub fn purge(&self, uri: &Uri) -> usize {
        CacheKey::from_uri(uri).map_or(0, |key| self.index.remove(&key))
    }

    /// Every stored response whose URL starts with `prefix` (`""` for all), for the offline
    /// tool and admin listings.
    pub fn entries(&self, prefix: &str) -> Vec<Arc<StoredResponse>> {
        let mut entries = self.index.entries_with_prefix(prefix);
        entries.sort_by(|a, b| a.key.url().cmp(b.key.url()));
        entries
    }

    /// Reads `entry`'s body from disk and checks its length and checksum; a bad one is
    /// removed. Blocks: for the offline tool.
    pub fn verify(&self, entry: &StoredResponse) -> Result<(), String> {
        let file = match self.disk.read(entry.body) {
            Ok(Some(StoredBody::File(file))) => file,
            Ok(_) => {
                self.index.remove_variant(entry);
                return Err("body file missing".into());
            }
            Err(e) => return Err(e.to_string()),
        };
        match read::read_verified(file, entry.body_len, &entry.checksum) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(corrupt)) => {
                self.count_corrupt(entry, &corrupt);
                Err(corrupt.to_string())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Saves and closes the index without a runtime (the offline tool).
    pub fn close(&self) {
        self.index.close();
    }

    /// Forgets every stored URL that starts with `prefix` (e.g. `http://example.com/img/`);
    /// returns how many variants went. Walks the whole index: an admin operation.
    pub fn purge_prefix(&self, prefix: &str) -> usize {
        let prefix = CacheKey::from_uri(&prefix.parse().unwrap_or_default())
            .map_or_else(|| prefix.to_owned(), |key| key.url().to_owned());
        self.index
            .urls_with_prefix(&prefix)
            .iter()
            .map(|key| self.index.remove(key))
            .sum()
    }

    /// Answers `request` (absolute URI) from the cache, the origin, or both.
    pub async fn serve<O: Origin>(
        self: &Arc<Self>,
        request: Request<ProxyBody>,
        origin: &Arc<O>,
    ) -> Result<Response<ProxyBody>, O::Error> {
        let Some(key) = CacheKey::from_uri(request.uri()) else {
            let response = origin.fetch(request).await?;
            return Ok(with_status(
                response,
                &CacheStatus::new(CacheOutcome::Bypass),
            ));
        };
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return self.forward_other(key, request, origin).await;
        }
        // A GET or HEAD with a body: the body may change the answer (or be a request of its
        // own to an origin that ignores it), and the URL alone cannot say so. Never stored,
        // never answered from storage.
        if !hyper::body::Body::is_end_stream(request.body()) {
            let response = origin.fetch(request).await?;
            return Ok(with_status(
                response,
                &CacheStatus::new(CacheOutcome::Bypass).detail("request-body"),
            ));
        }
        let request_cc = CacheControl::parse_request(request.headers());
        let collapsible = request.method() == Method::GET;
        let mut lock = None;
        let mut round = 0;
        let (outcome, stale) = loop {
            round += 1;
            let mut outcome = CacheOutcome::UriMiss;
            let mut stale = None;
            if let Some(variants) = self.index.get(&key) {
                outcome = CacheOutcome::VaryMiss;
                if let Some(entry) = select_variant(&variants, request.headers()) {
                    let mut status = match entry.freshness.verdict(&request_cc, now_secs()) {
                        Verdict::Fresh => CacheStatus::new(CacheOutcome::Hit),
                        Verdict::StaleAllowed => {
                            CacheStatus::new(CacheOutcome::Stale).detail("max-stale")
                        }
                        Verdict::StaleWhileRevalidate => {
                            self.refresh_in_background(
                                key.clone(),
                                entry.clone(),
                                RequestHead::of(&request),
                                origin,
                            );
                            CacheStatus::new(CacheOutcome::Stale).detail("stale-while-revalidate")
                        }
                        Verdict::Validate if request_cc.only_if_cached => return Ok(not_cached()),
                        Verdict::Validate => {
                            outcome = CacheOutcome::Refreshed;
                            stale = Some(entry.clone());
                            CacheStatus::new(CacheOutcome::Refreshed)
                        }
                    };
                    if stale.is_none() {
                        if round > 1 && status.detail.is_none() {
                            status.detail = Some("collapsed");
                        }
                        if let Some(response) = self
                            .answer(&entry, request.method(), request.headers(), status)
                            .await
                        {
                            return Ok(response);
                        }
                        // The body vanished (replaced or evicted meanwhile) or failed its
                        // checksum; that entry is gone, so look again.
                        outcome = CacheOutcome::UriMiss;
                        if round <= 3 {
                            continue;
                        }
                    }
                }
            }
            let may_lead = collapsible && !request_cc.only_if_cached;
            if round > 3 || (!may_lead && stale.is_some()) {
                break (outcome, stale);
            }
            // One request per key goes to the origin at a time; the others wait for its
            // result and look again (RFC 9111 §4 allows reusing the leader's response).
            // Requests that cannot lead (HEAD, only-if-cached) still wait for a fill in flight.
            let waiting = if may_lead {
                match self.collapser.join(key.hash()) {
                    Role::Leader(leader) => {
                        lock = Some(leader);
                        break (outcome, stale);
                    }
                    Role::Follower(waiting) => Some(waiting),
                }
            } else {
                self.collapser.in_flight(key.hash())
            };
            let Some(waiting) = waiting else {
                break (outcome, stale);
            };
            if collapse::wait(waiting, self.settings.collapse_wait).await == FillResult::NotStored {
                break (outcome, stale);
            }
        };
        if stale.is_none() && request_cc.only_if_cached {
            return Ok(not_cached());
        }
        // Boxed so that the future of a hit (the fast path) is not as large as the origin
        // exchange's, which would be copied with it on every request.
        match stale {
            Some(entry) => {
                Box::pin(self.revalidate(key, entry, request, request_cc, lock, origin)).await
            }
            None => Box::pin(self.fetch(key, request, request_cc, outcome, lock, origin)).await,
        }
    }

    /// A miss: fetch from the origin and store what may be stored.
    async fn fetch<O: Origin>(
        self: &Arc<Self>,
        key: CacheKey,
        request: Request<ProxyBody>,
        request_cc: CacheControl,
        outcome: CacheOutcome,
        lock: Option<FillLock>,
        origin: &Arc<O>,
    ) -> Result<Response<ProxyBody>, O::Error> {
        let head = RequestHead::of(&request);
        if head.method != Method::GET || head.headers.contains_key(header::RANGE) {
            // HEAD and ranges of uncached objects pass through; the next full GET fills.
            let response = origin.fetch(request).await?;
            return Ok(with_status(
                response,
                &CacheStatus::new(CacheOutcome::Bypass),
            ));
        }
        let request = without_conditionals(request);
        let request_time = now_secs();
        let response = origin.fetch(request).await?;
        Ok(self.admit_and_answer(
            key,
            &head,
            &request_cc,
            request_time,
            response,
            lock,
            CacheStatus::new(outcome),
        ))
    }

    /// A stored response needs the origin's word: ask conditionally, then serve, replace, or
    /// fall back to the stale copy when the origin fails and that is allowed.
    async fn revalidate<O: Origin>(
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
                    Err(reason) => status.detail = Some(reason),
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
    async fn answer_or_fetch<O: Origin>(
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
    fn refresh_in_background<O: Origin>(
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
    fn may_share_refresh(
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
    fn refreshed(
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

    /// Stores the origin's response if allowed (streaming it to the client meanwhile) and
    /// answers a client conditional from it.
    #[allow(clippy::too_many_arguments)]
    fn admit_and_answer(
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
    fn admit(
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
            Some(len) if len > self.settings.max_object_size => Err("too-large"),
            _ => Ok(()),
        });
        let vary = key::vary_fields(response.headers());
        let (Ok(()), Some(vary_fields)) = (decision, vary) else {
            if let Some(lock) = lock {
                lock.finish(FillResult::NotStored);
            }
            if let Err(reason) = decision {
                status.detail = Some(reason);
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

    /// Builds the response for a stored entry: `Age`, `Cache-Status`, a 304 for a matching
    /// client conditional, a 206/416 for a range, no body for HEAD. `None` when the body is
    /// gone or corrupt (the entry is then removed).
    async fn answer(
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
    async fn body(
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

    fn count_corrupt(&self, entry: &StoredResponse, why: &dyn std::fmt::Display) {
        tracing::warn!("cache: dropping {}: {why}", entry.key.url());
        self.corrupt_bodies.fetch_add(1, Ordering::Relaxed);
        self.index.remove_variant(entry);
    }

    /// Methods the cache does not answer: forward, and after success invalidate the target and
    /// same-origin `Location` / `Content-Location` (RFC 9111 §4.4).
    async fn forward_other<O: Origin>(
        &self,
        key: CacheKey,
        request: Request<ProxyBody>,
        origin: &Arc<O>,
    ) -> Result<Response<ProxyBody>, O::Error> {
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
        Ok(with_status(
            response,
            &CacheStatus::new(CacheOutcome::Method),
        ))
    }
}

/// The most recently stored variant whose `Vary` values match the request (RFC 9111 §4.1).
fn select_variant(variants: &Variants, request: &HeaderMap) -> Option<Arc<StoredResponse>> {
    variants
        .iter()
        .rev()
        .find(|entry| {
            entry.vary.is_empty() || {
                let names: Vec<HeaderName> = entry
                    .vary
                    .iter()
                    .filter_map(|(name, _)| HeaderName::from_bytes(name.as_bytes()).ok())
                    .collect();
                key::vary_values(request, &names) == entry.vary
            }
        })
        .cloned()
}

/// Removes the client's validators and range so the origin sends a complete response the
/// cache can store; the cache answers them itself.
fn without_conditionals(mut request: Request<ProxyBody>) -> Request<ProxyBody> {
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
fn conditional_request(
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

fn same_origin_key(base: &Uri, base_key: &CacheKey, target: &str) -> Option<CacheKey> {
    let absolute = if target.starts_with('/') && !target.starts_with("//") {
        format!("{}://{}{}", base.scheme_str()?, base.authority()?, target)
    } else {
        target.to_owned()
    };
    let key = CacheKey::from_uri(&absolute.parse().ok()?)?;
    let origin_of = |url: &str| url.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    (origin_of(key.url()) == origin_of(base_key.url())).then_some(key)
}

fn random_body_id() -> u64 {
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

fn header_value(text: String) -> HeaderValue {
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(""))
}

fn build(
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
fn with_status(mut response: Response<ProxyBody>, status: &CacheStatus) -> Response<ProxyBody> {
    response
        .headers_mut()
        .append(CACHE_STATUS, status.header_value());
    response.extensions_mut().insert(status.outcome);
    response
}

/// RFC 9111 §5.2.1.7: `only-if-cached` with nothing usable stored.
fn not_cached() -> Response<ProxyBody> {
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
