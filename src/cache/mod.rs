//! The shared HTTP cache (RFC 9111): decides whether a request is answered from storage,
//! revalidated, collapsed with others, or sent to the origin, and stores what may be stored.
//!
//! It takes and returns `http` types and reaches the origin only through the `Origin` trait;
//! it knows nothing of `proxy/`, `server/` or `upstream/`. This file holds the facade and
//! the lookup (`serve`); storing is `admit.rs`, revalidating `revalidate.rs`, answering from
//! storage `respond.rs`, invalidating `invalidate.rs`. Policy is in `policy.rs` (pure
//! functions), bodies in `storage/`, the persistent index in `index.rs`.

mod admit;
mod collapse;
pub mod control;
mod entry;
mod fill;
mod index;
mod invalidate;
mod key;
pub mod outcome;
pub mod policy;
mod range;
mod read;
mod respond;
mod revalidate;
pub mod storage;

pub use entry::StoredResponse;
pub use index::{IndexDamage, IndexRebuilt, LoadReport};
pub use key::CacheKey;
pub use outcome::{CacheOutcome, CacheStatus, UpstreamStatus};
pub use policy::{NotStorable, PolicySettings};

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Request, Response, Uri};
use tokio_util::task::TaskTracker;

use crate::body::{self, ProxyBody};
use collapse::{Collapser, FillLock, FillResult, Role};
use control::CacheControl;
use entry::BodyId;
use index::{Index, IndexError, Variants};
use policy::{Verdict, now_secs};
use respond::{not_cached, with_status};
use revalidate::without_conditionals;
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

/// Why `Cache::verify` found a stored body bad (missing and corrupt ones are removed).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("body file missing")]
    Missing,
    #[error(transparent)]
    Corrupt(read::Corrupt),
    /// An I/O error reading it; the entry is kept (the disk may recover).
    #[error("cannot read the body: {0}")]
    Unreadable(String),
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
    /// Responses not stored, by `NotStorable as usize`.
    not_stored: [AtomicU64; NotStorable::ALL.len()],
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
                not_stored: Default::default(),
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

    /// How many responses were not stored, for each reason.
    pub fn not_stored(&self) -> impl Iterator<Item = (NotStorable, u64)> + '_ {
        NotStorable::ALL.into_iter().map(|reason| {
            (
                reason,
                self.not_stored[reason as usize].load(Ordering::Relaxed),
            )
        })
    }

    fn count_not_stored(&self, reason: NotStorable) {
        self.not_stored[reason as usize].fetch_add(1, Ordering::Relaxed);
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
    pub fn verify(&self, entry: &StoredResponse) -> Result<(), VerifyError> {
        let file = match self.disk.read(entry.body) {
            Ok(Some(StoredBody::File(file))) => file,
            Ok(_) => {
                self.index.remove_variant(entry);
                return Err(VerifyError::Missing);
            }
            Err(e) => return Err(VerifyError::Unreadable(e.to_string())),
        };
        match read::read_verified(file, entry.body_len, &entry.checksum) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(corrupt)) => {
                self.count_corrupt(entry, &corrupt);
                Err(VerifyError::Corrupt(corrupt))
            }
            Err(e) => Err(VerifyError::Unreadable(e.to_string())),
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
