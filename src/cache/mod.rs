//! The shared HTTP cache (RFC 9111): decides whether a request is answered from storage,
//! revalidated, collapsed with others, or sent to the origin, and stores what may be stored.
//!
//! It takes and returns `http` types and reaches the origin only through the `Origin` trait;
//! it knows nothing of `proxy/`, `server/` or `upstream/`. This file holds only the facade:
//! the lookup is `lookup.rs`, storing `admit.rs`, revalidating `revalidate.rs`, answering
//! from storage `respond.rs`, invalidating `invalidate.rs`. Policy is in `policy.rs` (pure
//! functions), bodies in `storage/` (read through `storage::Tiers`), the persistent index in
//! `index.rs`.

mod admit;
mod collapse;
pub mod control;
mod entry;
mod fill;
pub mod groups;
mod index;
mod invalidate;
mod key;
mod lookup;
pub mod outcome;
mod parts;
pub mod policy;
mod range;
mod respond;
mod revalidate;
pub mod rules;
pub mod shared;
mod slice;
pub mod storage;

pub use entry::StoredResponse;
pub use index::{IndexDamage, IndexRebuilt, LoadReport};
pub use key::CacheKey;
pub use outcome::{CacheOutcome, CacheStatus, Served};
pub use policy::{NotStorable, PolicySettings};
pub use revalidate::CONDITIONALS;
pub use rules::{CacheRule, CacheRules, Overrides, RulePattern};
/// Why `Cache::verify` found a stored body bad (missing and corrupt ones are removed; an
/// unreadable one is kept, as the disk may recover).
pub use storage::BodyError as VerifyError;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::header::HeaderName;
use http::{Method, Request, Response, Uri};
use tokio_util::task::TaskTracker;

use crate::body::ProxyBody;
use collapse::Collapser;
use index::{Index, IndexError};
use respond::from_origin;
use storage::Tiers;

/// The heads of recently used entries (the index's map holds only slots) are kept in memory
/// up to this fraction of `--cache-memory`, beside the memory tier's bodies.
const HEADS_SHARE: u64 = 16;

const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Sizes and rules the cache runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    pub dir: PathBuf,
    pub memory_size: u64,
    pub disk_size: u64,
    /// Larger responses stream through without being stored (unless a rule says otherwise).
    pub max_object_size: u64,
    pub policy: PolicySettings,
    /// `--rule`s and `--preset`s, in the order they are tried (at start; see
    /// `Cache::reload_rules`).
    pub rules: CacheRules,
    /// How long a collapsed request waits for the leader before fetching on its own.
    pub collapse_wait: Duration,
    /// Range requests are answered from slices of this many bytes, each fetched and stored
    /// on its own (`slice.rs`); 0: ranges are fetched as asked and stored as pieces.
    pub slice_size: u64,
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

    /// Whether `error` means the origin could not answer (unreachable, timed out, a broken
    /// response): then a stale copy may stand in (RFC 9111 §4.2.4). A refusal (a denied
    /// destination, a bad request body) is not that.
    fn unavailable(error: &Self::Error) -> bool;
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

/// Fills in progress at once, beyond which a response passes through uncached (counted as
/// `not_stored{reason="busy"}`). Each holds its body's buffer and, once the client has it,
/// waits for the index's next commit; without a bound a miss storm faster than the disk
/// would queue them in memory without end (Traffic Server's `agg_write_backlog` is the same
/// guard).
const FILLS_IN_PROGRESS: usize = 512;

pub struct Cache {
    index: Index,
    tiers: Arc<Tiers>,
    collapser: Arc<Collapser>,
    settings: CacheSettings,
    corrupt_bodies: AtomicU64,
    /// Fills that failed on a storage error (disk full, directory gone or read-only).
    store_failures: Arc<AtomicU64>,
    /// Places for fills in progress, from the first byte until the entry is published.
    fills: Arc<tokio::sync::Semaphore>,
    /// Responses not stored, by `NotStorable as usize`.
    not_stored: [AtomicU64; NotStorable::ALL.len()],
    /// Fills and background refreshes, awaited at shutdown.
    background: TaskTracker,
    /// The URLs with stored parts (slices and pieces) and which.
    parts: parts::Parts,
    /// `--shared-tier`: the fleet's object store.
    shared: Option<shared::Shared>,
    /// The cache rules in force: `settings.rules` at start, swapped whole by a reload.
    rules: arc_swap::ArcSwap<CacheRules>,
}

impl Cache {
    /// Opens the cache directory and loads the index (blocking; call at start-up).
    pub fn open(settings: CacheSettings) -> Result<(Cache, LoadReport), CacheError> {
        std::fs::create_dir_all(&settings.dir)
            .map_err(|e| CacheError::Directory(settings.dir.clone(), e.into()))?;
        // Before anything else touches the directory: a second hoard must not empty the
        // first one's tmp/ (its fills in flight) before finding out it cannot run.
        let lock = storage::DirLock::acquire(&settings.dir)?;
        let tiers = Tiers::open(&settings.dir, &lock, settings.memory_size)
            .map_err(|e| CacheError::Directory(settings.dir.clone(), e))?;
        let tiers = Arc::new(tiers);
        let (index, opened) = Index::open(
            &settings.dir,
            lock,
            settings.disk_size,
            settings.max_object_size,
            settings.memory_size / HEADS_SHARE,
            Arc::clone(&tiers),
        )?;
        let report = opened.report;
        let (parts, unregistered) = parts::Parts::of_stored(opened.parts);
        for entry in unregistered {
            index.remove_variant(&entry);
        }
        Ok((
            Cache {
                index,
                tiers,
                collapser: Arc::default(),
                corrupt_bodies: AtomicU64::new(0),
                store_failures: Arc::default(),
                fills: Arc::new(tokio::sync::Semaphore::new(FILLS_IN_PROGRESS)),
                not_stored: Default::default(),
                background: TaskTracker::new(),
                parts,
                shared: None,
                rules: arc_swap::ArcSwap::from_pointee(settings.rules.clone()),
                settings,
            },
            report,
        ))
    }

    /// Lets fills in progress finish, for at most `grace`, then saves and closes the index.
    /// A fill still streaming then is dropped unpublished (its body file is removed at the
    /// next start), so no entry is ever left with a partial body.
    pub async fn shutdown(self: &Arc<Self>, grace: Duration) {
        self.background.close();
        if tokio::time::timeout(grace, self.background.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                unfinished = self.background.len(),
                "shutdown grace period over, dropping fills still streaming"
            );
        }
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
        self.tiers.memory_usage()
    }

    pub fn disk_usage(&self) -> storage::Usage {
        self.tiers.disk_usage()
    }

    /// Forgets every stored variant of `uri`, and its slices; returns how many variants
    /// there were.
    pub fn purge(&self, uri: &Uri) -> usize {
        CacheKey::from_uri(uri).map_or(0, |key| {
            self.forget_parts(&key);
            self.forget_in_shared_tier(&key);
            self.index.remove(&key)
        })
    }

    /// Every stored response whose URL starts with `prefix` (`""` for all), for the offline
    /// tool and admin listings.
    pub fn entries(&self, prefix: &str) -> Vec<Arc<StoredResponse>> {
        let mut entries = self.index.entries_with_prefix(prefix);
        entries.sort_by(|a, b| a.key.url().cmp(b.key.url()));
        entries
    }

    /// How many requests found `entry`'s URL stored since it was last stored or refreshed
    /// (for the status page's listing; counted per URL, not per variant).
    pub fn hits(&self, entry: &StoredResponse) -> u64 {
        self.index.hits(&entry.key)
    }

    /// Whether `entry`'s body is in the memory tier now (for the status page's listing).
    pub fn in_memory(&self, entry: &StoredResponse) -> bool {
        self.tiers.in_memory(entry.body)
    }

    /// Reads `entry`'s body from disk and checks its length and checksum; a bad one is
    /// removed. Blocks: for the offline tool.
    pub fn verify(&self, entry: &StoredResponse) -> Result<(), VerifyError> {
        let result = self.tiers.verify(entry.body_ref());
        match &result {
            Err(VerifyError::Missing) => self.index.remove_variant(entry),
            Err(VerifyError::Corrupt(corrupt)) => self.count_corrupt(entry, corrupt),
            _ => {}
        }
        result
    }

    /// Whether the index is still being loaded in the background (its entries not loaded yet
    /// are misses until they are).
    pub fn index_loading(&self) -> bool {
        self.index.is_loading()
    }

    /// Waits until the whole index is loaded (hoard serves before a large one is; see
    /// `index/loading.rs`). Blocks: for the offline tool.
    pub fn wait_until_loaded(&self) {
        self.index.wait_loaded();
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
            .map(|key| {
                self.forget_in_shared_tier(key);
                self.index.remove(key)
            })
            .sum()
    }

    /// hoard's own targeted field, which is for hoard alone: whoever sends a response
    /// downstream removes it.
    pub fn own_cache_control(&self) -> &HeaderName {
        &self.settings.policy.own_cache_control
    }

    /// Replaces the cache rules (a reload): requests from now on are matched against these;
    /// responses already stored keep the freshness they were given.
    pub fn reload_rules(&self, rules: CacheRules) {
        self.rules.store(Arc::new(rules));
    }

    /// The largest response stored under `rule` (or with no rule).
    fn max_object_size(&self, rule: Option<&CacheRule>) -> u64 {
        rule.and_then(|rule| rule.max_object_size)
            .map_or(self.settings.max_object_size, |size| {
                size.min(self.settings.disk_size)
            })
    }

    /// Answers `request` (absolute URI) from the cache, the origin, or both.
    pub async fn serve<O: Origin>(
        self: &Arc<Self>,
        mut request: Request<ProxyBody>,
        origin: &Arc<O>,
    ) -> Result<Served, O::Error> {
        // The branches that go straight to the origin are boxed: inline, their futures (some
        // 3 KiB each) would be room in every hit's future, which is moved with it.
        let Some(mut key) = CacheKey::from_uri(request.uri()) else {
            let response = Box::pin(origin.fetch(request)).await?;
            return Ok(from_origin(
                response,
                &CacheStatus::new(CacheOutcome::Bypass),
            ));
        };
        let Some(rule) = self.rules.load().find(key.url()).cloned() else {
            return self.serve_keyed(key, request, origin).await;
        };
        if rule.bypass {
            let response = Box::pin(origin.fetch(request)).await?;
            let mut served = from_origin(
                response,
                &CacheStatus::new(CacheOutcome::Bypass).detail("rule"),
            );
            outcome::name_rule(&mut served.response, &rule.name);
            return Ok(served);
        }
        // Parameters left out of the key are left out of the request too, and the key is
        // that request's: a response must never depend on what its key does not hold, or one
        // client's `?utm_content=<script>` reflected by the origin would be served to all.
        if let Some(uri) = rule
            .key_url(&request.uri().to_string())
            .and_then(|uri| uri.parse::<Uri>().ok())
            && let Some(stripped) = CacheKey::from_uri(&uri)
        {
            *request.uri_mut() = uri;
            key = stripped;
        }
        // Admission and revalidation find the rule with the request (`RequestHead`).
        request
            .extensions_mut()
            .insert(rules::Applied(Arc::clone(&rule)));
        let mut served = self.serve_keyed(key, request, origin).await?;
        outcome::name_rule(&mut served.response, &rule.name);
        Ok(served)
    }

    /// `serve` once the request's key (and rule) are known.
    async fn serve_keyed<O: Origin>(
        self: &Arc<Self>,
        key: CacheKey,
        request: Request<ProxyBody>,
        origin: &Arc<O>,
    ) -> Result<Served, O::Error> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return Box::pin(self.forward_other(key, request, origin)).await;
        }
        // A GET or HEAD with a body: the body may change the answer (or be a request of its
        // own to an origin that ignores it), and the URL alone cannot say so. Never stored,
        // never answered from storage.
        if !hyper::body::Body::is_end_stream(request.body()) {
            let response = Box::pin(origin.fetch(request)).await?;
            return Ok(from_origin(
                response,
                &CacheStatus::new(CacheOutcome::Bypass).detail("request-body"),
            ));
        }
        // Parts of bodies (slices, pieces) answer what they can; the rest is the lookup's.
        // Asked only when they could: a hit should not box and move its request for nothing.
        let mut request = request;
        if slice::parts_may_answer(self, &request) {
            request = match Box::pin(self.serve_from_parts(&key, request, origin)).await? {
                Ok(served) => return Ok(served),
                Err(request) => request,
            };
        }
        self.look_up_and_serve(key, request, origin).await
    }
}
