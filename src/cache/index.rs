//! The index: which responses are cached, answered from memory, and
//! persisted in a redb database so it survives restarts and crashes.
//!
//! In memory it is a size-bounded S3-FIFO map (quick_cache, sharded, no global lock) from a
//! URL's hash to the slots of its variants (`slots.rs`: body id and weight, 16 bytes each);
//! its eviction order is the disk tier's eviction order. The heads (URL, status, headers,
//! freshness) stay in the database's `entries` rows and are read through `heads.rs`, which
//! keeps the recently used ones. A background thread (`writer.rs`) applies changes to the
//! database in batches and deletes evicted bodies, so no request waits for an fsync of the
//! index. Start-up, which reads only the fixed-width `slots` rows, and what happens to a
//! damaged database file, is in `load.rs`.

mod bound;
mod heads;
mod load;
mod loading;
mod slots;
mod writer;

pub use load::{IndexDamage, IndexRebuilt, LoadReport};

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter};
use redb::TableDefinition;

use super::entry::StoredResponse;
use super::key::CacheKey;
use super::storage::BodyId;
use super::storage::{DirLock, Tiers};
use bound::DiskBound;
use heads::Heads;
use load::Sweep;
use loading::{Loader, Loading};
use slots::{Slot, Slots, UrlHasher};
use writer::Writer;

/// Body id → the encoded `StoredResponse` (its head).
const ENTRIES: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("entries");

/// At most this many variants of one URL are kept (the oldest goes first).
const MAX_VARIANTS: usize = 16;

/// All cached variants of one URL, oldest first, with their heads.
pub(super) type Variants = Vec<Arc<StoredResponse>>;

/// Invalidation generations are kept per stripe of keys: a fixed table, so keys never
/// invalidated cost nothing. Two keys sharing a stripe only means an invalidation of one
/// discards a fill of the other that was in flight at that moment (a miss later, never a
/// wrong answer).
const GENERATION_STRIPES: usize = 1 << 16;

/// How many invalidations a key's stripe has seen: taken when a request goes to the origin,
/// checked when its response is published (RFC 9111 §4.4: a response fetched before an
/// unsafe request succeeded must not be stored after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Generation(u64);

/// What became of a fill's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Published {
    Yes,
    /// The key was invalidated since the request went out; the entry is dropped.
    Superseded,
    /// The database could not record it (a full or read-only disk).
    Failed,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cache index database: {0}")]
    Database(#[from] redb::Error),
    #[error("cache storage: {0}")]
    Storage(#[from] super::storage::StorageError),
    #[error("the cache index {} is damaged ({reason}) and cannot be moved aside: {source}", .path.display())]
    MoveAside {
        path: PathBuf,
        reason: String,
        source: std::io::Error,
    },
    #[error(
        "the cache directory is in format {found}, written by a newer hoard (this one knows \
         up to {known}); run that hoard, or point this one at another --cache-dir"
    )]
    NewerFormat { found: u64, known: u64 },
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for IndexError {
            fn from(e: $t) -> Self {
                IndexError::Database(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

enum Op {
    Change(Change),
    /// Apply the change and reply whether the transaction holding it committed (a flush
    /// sent after it could land in a later transaction and report that one instead). The
    /// reply is awaited by a fill's task, which must not hold a thread while the batch is
    /// fsynced.
    Commit(Change, tokio::sync::oneshot::Sender<bool>),
    /// Reply once everything sent before has been committed: whether the commit succeeded.
    #[cfg(test)]
    Flush(mpsc::Sender<bool>),
    /// Commit, close the database, reply, and stop.
    Close(mpsc::Sender<bool>),
}

/// A change to the database, applied in the writer's next transaction.
enum Change {
    Put(Arc<StoredResponse>),
    /// Forget the row and delete the body from every tier. `hash` is the URL's, which finds
    /// its `slots` row; `None` for a row that never had one (undecodable when upgraded).
    Delete {
        hash: Option<u128>,
        body: BodyId,
    },
    /// A URL's variant list left the map, evicted or replaced by a newer list (quick_cache
    /// reports both alike): delete the bodies the map no longer names.
    Released {
        hash: u128,
        bodies: Vec<BodyId>,
    },
}

#[derive(Clone)]
struct SlotsWeight;

impl Weighter<u128, Slots> for SlotsWeight {
    fn weight(&self, _key: &u128, slots: &Slots) -> u64 {
        slots
            .as_slice()
            .iter()
            .map(|s| s.weight)
            .sum::<u64>()
            .max(1)
    }
}

/// Released variant lists are handed to the writer thread, which decides outside the map's
/// lock which bodies are really gone: a list replaced by one that still names a body (a 304
/// refresh, a second variant) must not take that body with it.
#[derive(Clone)]
struct ReleaseToWriter {
    ops: mpsc::Sender<Op>,
}

impl Lifecycle<u128, Slots> for ReleaseToWriter {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), hash: u128, slots: Slots) {
        let bodies = slots.as_slice().iter().map(|s| s.body).collect();
        let _ = self.ops.send(Op::Change(Change::Released { hash, bodies }));
    }
}

type EntryMap = Cache<u128, Slots, SlotsWeight, DefaultHashBuilder, ReleaseToWriter>;

pub(super) struct Index {
    /// URL hash (`UrlHasher`) → that URL's variants.
    map: Arc<EntryMap>,
    heads: Arc<Heads>,
    hasher: UrlHasher,
    ops: mpsc::Sender<Op>,
    /// Serialises read-modify-write of one URL's variant list; hits never take it.
    write_locks: Box<[Mutex<()>]>,
    /// Bumped, under the key's write lock, by every `remove` (see `Generation`).
    generations: Box<[AtomicU64]>,
    evictions: Arc<std::sync::atomic::AtomicU64>,
    loading: Arc<Loading>,
}

/// What opening the index found besides the index itself.
pub(super) struct Opened {
    pub report: LoadReport,
    /// The stored parts of bodies (`slice.rs` registers them).
    pub parts: Vec<Arc<StoredResponse>>,
}

impl Index {
    /// Opens the database in cache directory `dir` (replacing a damaged one by an empty
    /// one), loads the parts of bodies, starts the writer thread, which keeps `lock` until the
    /// database is closed, and the loader (`loading.rs`), and returns once the whole index is
    /// loaded or `loading::WAIT` has passed. The heads of recently used entries take up to
    /// `heads_capacity` bytes of memory.
    pub(super) fn open(
        dir: &Path,
        lock: DirLock,
        capacity: u64,
        max_object: u64,
        heads_capacity: u64,
        tiers: Arc<Tiers>,
    ) -> Result<(Index, Opened), IndexError> {
        let (index, opened, loader) =
            Index::open_unloaded(dir, lock, capacity, max_object, heads_capacity, tiers)?;
        std::thread::Builder::new()
            .name("hoard-index-load".into())
            .spawn(move || loader.run())
            .map_err(|e| IndexError::Storage(e.into()))?;
        index.loading.wait(Some(loading::WAIT));
        Ok((index, opened))
    }

    /// `open`, but with the loader handed back instead of started.
    fn open_unloaded(
        dir: &Path,
        lock: DirLock,
        capacity: u64,
        max_object: u64,
        heads_capacity: u64,
        tiers: Arc<Tiers>,
    ) -> Result<(Index, Opened, Loader), IndexError> {
        // Body files written from now on belong to this run and are never orphans.
        let opened_at = std::time::SystemTime::now();
        let loaded = load::load(dir)?;
        let sweep = if loaded.report.rebuilt.is_some() {
            // No row names any body now, and none has been stored by this run yet: every
            // file there is goes (listed now, deleted in the background).
            Sweep::Listed(tiers.disk().list_all().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cache: cannot list body files");
                Vec::new()
            }))
        } else {
            Sweep::WrittenBefore(opened_at)
        };
        let (ops, receiver) = mpsc::channel();
        let evictions: Arc<std::sync::atomic::AtomicU64> = Arc::default();
        let lifecycle = ReleaseToWriter { ops: ops.clone() };
        // An entry weighs what it occupies on disk (`StoredResponse::weight`), so the map's
        // capacity is the disk bound; `bound.rs` corrects it by what the disk really holds.
        let options = super::storage::bounded_options(capacity, max_object + 256 * 1024);
        let map = Arc::new(Cache::with_options(
            options,
            SlotsWeight,
            DefaultHashBuilder::default(),
            lifecycle,
        ));
        let heads = Arc::new(Heads::new(heads_capacity));
        heads.attach(Arc::clone(&loaded.db));
        let loading = Loading::new();
        let index = Index {
            map,
            heads: Arc::clone(&heads),
            hasher: loaded.hasher,
            ops,
            write_locks: (0..64).map(|_| Mutex::new(())).collect(),
            generations: (0..GENERATION_STRIPES).map(|_| AtomicU64::new(0)).collect(),
            evictions: Arc::clone(&evictions),
            loading: Arc::clone(&loading),
        };

        for body in loaded.undecodable {
            let _ = index
                .ops
                .send(Op::Change(Change::Delete { hash: None, body }));
        }
        let mut known = Vec::with_capacity(loaded.parts.len());
        for &(hash, slot, body_len) in &loaded.parts {
            tiers.disk().adopt(body_len);
            known.push(slot.body);
            let slots = match index.map.peek(&hash) {
                Some(other) => Slots::from_vec([other.as_slice(), &[slot]].concat()),
                None => Some(Slots::One(slot)),
            };
            index.map.insert(hash, slots.unwrap_or(Slots::One(slot)));
        }
        let parts = known.iter().filter_map(|&body| heads.get(body)).collect();

        tiers.disk().pack().attach(Arc::clone(&loaded.db))?;
        let loader = Loader {
            db: Arc::clone(&loaded.db),
            map: Arc::clone(&index.map),
            loading,
            ops: index.ops.clone(),
            tiers: Arc::clone(&tiers),
            sweep,
            known,
        };
        let writer = Writer {
            bound: DiskBound::new(dir, capacity),
            db: loaded.db,
            lock,
            ops: receiver,
            // Weak: the map's lifecycle holds the sender, so a strong reference here would
            // keep both alive forever.
            map: Arc::downgrade(&index.map),
            heads,
            hasher: index.hasher,
            tiers,
            evictions,
        };
        std::thread::Builder::new()
            .name("hoard-index".into())
            .spawn(move || writer.run())
            .map_err(|e| IndexError::Storage(e.into()))?;
        Ok((
            index,
            Opened {
                report: loaded.report,
                parts,
            },
            loader,
        ))
    }

    /// The variants stored for `key`, if any, oldest first.
    pub(super) fn get(&self, key: &CacheKey) -> Option<Variants> {
        let hash = self.hasher.hash(key);
        let slots = self.map.get(&hash)?;
        let mut variants = Vec::with_capacity(slots.as_slice().len());
        for slot in slots.as_slice() {
            match self.heads.get(slot.body) {
                Some(head) => variants.push(head),
                // Its row is gone or damaged: the entry cannot be answered from.
                None => self.forget_slot(hash, slot.body),
            }
        }
        // Another URL with the same hash would be a miss, never its answer.
        if variants.first()?.key != *key {
            return None;
        }
        // Oldest first by when they were received: a list read back after a crash (where a
        // replaced row may not have been deleted yet) is in the order of its body ids.
        if variants.len() > 1 {
            variants.sort_by_key(|head| head.freshness.response_time);
        }
        Some(variants)
    }

    /// Whether a response is stored for `key`, without counting it as a use: its place in
    /// the eviction order and its hit count stay as they were.
    pub(super) fn holds(&self, key: &CacheKey) -> bool {
        let Some(slots) = self.map.peek(&self.hasher.hash(key)) else {
            return false;
        };
        slots
            .as_slice()
            .first()
            .and_then(|slot| self.heads.get(slot.body))
            .is_some_and(|head| head.key == *key)
    }

    /// How many lookups found `key` stored since its variants were last stored or refreshed
    /// (or since hoard started): the map counts each `get`.
    pub(super) fn hits(&self, key: &CacheKey) -> u64 {
        self.map
            .item_stats(&self.hasher.hash(key))
            .map_or(0, |stats| stats.access_count)
    }

    /// `key`'s invalidation generation now.
    pub(super) fn generation(&self, key: &CacheKey) -> Generation {
        Generation(self.stripe(key.hash()).load(Ordering::Acquire))
    }

    fn stripe(&self, hash: u128) -> &AtomicU64 {
        &self.generations[(hash % GENERATION_STRIPES as u128) as usize]
    }

    /// Adds or replaces the variant with the same `Vary` values, unless `key` was
    /// invalidated since `generation` was taken, and persists it in the background (a 304
    /// refresh, whose loss in a crash only means older headers); a replaced body is deleted
    /// unless the new entry keeps it.
    pub(super) fn insert(&self, entry: Arc<StoredResponse>, generation: Generation) -> Published {
        let _guard = self.lock(self.hasher.hash(&entry.key));
        if self.generation(&entry.key) != generation {
            return Published::Superseded;
        }
        self.heads.stage(&entry);
        let _ = self.ops.send(Op::Change(Change::Put(entry.clone())));
        self.publish_locked(&entry);
        Published::Yes
    }

    /// Like `insert`, but returns only once the entry is committed to the database, and
    /// publishes it only then: an entry anyone has seen survives a crash. One superseded
    /// while it was being committed is deleted again, row and body.
    pub(super) async fn insert_durable(
        &self,
        entry: Arc<StoredResponse>,
        generation: Generation,
    ) -> Published {
        if self.generation(&entry.key) != generation {
            return Published::Superseded;
        }
        let (done, committed) = tokio::sync::oneshot::channel();
        let sent = self
            .ops
            .send(Op::Commit(Change::Put(entry.clone()), done))
            .is_ok();
        if !(sent && committed.await.unwrap_or(false)) {
            return Published::Failed;
        }
        let _guard = self.lock(self.hasher.hash(&entry.key));
        if self.generation(&entry.key) != generation {
            let _ = self.ops.send(Op::Change(Change::Delete {
                hash: Some(self.hasher.hash(&entry.key)),
                body: entry.body,
            }));
            return Published::Superseded;
        }
        self.heads.remember(&entry);
        self.publish_locked(&entry);
        Published::Yes
    }

    /// Puts `entry` into the map; the caller holds its key's write lock.
    fn publish_locked(&self, entry: &StoredResponse) {
        let hash = self.hasher.hash(&entry.key);
        self.loading.touch(hash);
        let mut slots: Vec<Slot> = self
            .map
            .peek(&hash)
            .map(|slots| {
                // The other variants of this URL stay (those of another URL with the same
                // hash do not); the one with the same `Vary` values is replaced.
                slots
                    .as_slice()
                    .iter()
                    .filter(|slot| {
                        slot.body != entry.body
                            && self.heads.get(slot.body).is_some_and(|head| {
                                head.key == entry.key && head.vary != entry.vary
                            })
                    })
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        slots.push(Slot::of(entry));
        if slots.len() > MAX_VARIANTS {
            slots.remove(0);
        }
        // The old list is released to the writer, which deletes the bodies this one dropped.
        if let Some(slots) = Slots::from_vec(slots) {
            self.map.insert(hash, slots);
        }
    }

    /// Forgets one variant (a corrupt or vanished body).
    pub(super) fn remove_variant(&self, entry: &StoredResponse) {
        self.forget_slot(self.hasher.hash(&entry.key), entry.body);
    }

    /// Forgets the variant whose body is `body` from the URL hashed `hash`, row and body.
    fn forget_slot(&self, hash: u128, body: BodyId) {
        let _guard = self.lock(hash);
        self.loading.touch(hash);
        if let Some(slots) = self.map.peek(&hash) {
            let rest: Vec<Slot> = slots
                .as_slice()
                .iter()
                .filter(|slot| slot.body != body)
                .copied()
                .collect();
            match Slots::from_vec(rest) {
                Some(rest) => self.map.insert(hash, rest),
                None => {
                    self.map.remove(&hash);
                }
            }
        }
        let _ = self.ops.send(Op::Change(Change::Delete {
            hash: Some(hash),
            body,
        }));
    }

    /// Forgets every variant of `key` (invalidation, purge), and any fill of it still in
    /// flight (its generation moves on). Returns how many variants there were.
    pub(super) fn remove(&self, key: &CacheKey) -> usize {
        let hash = self.hasher.hash(key);
        let _guard = self.lock(hash);
        self.loading.touch(hash);
        self.stripe(key.hash()).fetch_add(1, Ordering::AcqRel);
        let Some(slots) = self.map.peek(&hash) else {
            return 0;
        };
        let slots = slots.as_slice();
        // Every variant has the same URL, so any readable head says whose they are.
        if !slots
            .iter()
            .find_map(|slot| self.heads.get(slot.body))
            .is_some_and(|head| head.key == *key)
        {
            return 0;
        }
        self.map.remove(&hash);
        for slot in slots {
            let _ = self.ops.send(Op::Change(Change::Delete {
                hash: Some(hash),
                body: slot.body,
            }));
        }
        slots.len()
    }

    /// Keys of the stored URLs that start with `prefix`.
    pub(super) fn urls_with_prefix(&self, prefix: &str) -> Vec<CacheKey> {
        self.entries_with_prefix(prefix)
            .into_iter()
            .map(|entry| entry.key.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect()
    }

    /// Every stored variant in cache group `group` of `origin` (`groups.rs`), read from the
    /// group's own rows.
    pub(super) fn entries_in_group(&self, origin: &str, group: &str) -> Vec<Arc<StoredResponse>> {
        let in_group =
            |head: &StoredResponse| crate::cache::groups::is_in(head, Some(origin), group);
        self.heads
            .in_group(self.hasher.group(origin, group), &in_group)
            .into_iter()
            .filter(|head| self.in_map(head))
            .collect()
    }

    /// Whether a head read from the rows is one the map holds (a row whose entry just left
    /// the map may not be deleted yet); while loading, one whose URL is not in the map may
    /// not be loaded yet (and is, for a purge: removing it marks the URL, so the loader
    /// drops the row).
    fn in_map(&self, head: &StoredResponse) -> bool {
        match self.map.peek(&self.hasher.hash(&head.key)) {
            Some(slots) => slots.names(head.body),
            None => self.loading.is_active(),
        }
    }

    /// Every stored variant whose URL starts with `prefix`. Reads every row (see
    /// `Heads::scan`): an admin operation.
    pub(super) fn entries_with_prefix(&self, prefix: &str) -> Vec<Arc<StoredResponse>> {
        self.heads
            .scan(&|url| url.starts_with(prefix))
            .into_iter()
            .filter(|head| self.in_map(head))
            .collect()
    }

    /// Waits until every change made so far is committed to the database; `false` if the
    /// commit failed.
    #[cfg(test)]
    pub(super) fn flush(&self) -> bool {
        self.request(Op::Flush)
    }

    pub(super) fn is_loading(&self) -> bool {
        self.loading.is_active()
    }

    /// Waits until the whole index is loaded (the offline tool, tests).
    pub(super) fn wait_loaded(&self) {
        self.loading.wait(None);
    }

    /// Stops loading, commits everything and closes the database (shutdown); later changes
    /// are not saved.
    pub(super) fn close(&self) -> bool {
        // First, so that the loader's deletions are sent before the close.
        self.loading.cancel();
        self.request(Op::Close)
    }

    fn request(&self, op: fn(mpsc::Sender<bool>) -> Op) -> bool {
        let (done, wait) = mpsc::channel();
        self.ops.send(op(done)).is_ok() && wait.recv().unwrap_or(false)
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn evictions(&self) -> u64 {
        self.evictions.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The write lock of the URL hashed `hash` (`UrlHasher`).
    fn lock(&self, hash: u128) -> std::sync::MutexGuard<'_, ()> {
        let lock = &self.write_locks[(hash % self.write_locks.len() as u128) as usize];
        lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests;

/// Tools for bench/ (run with `--ignored`), kept beside the bench scripts that use them.
#[cfg(test)]
#[path = "../../bench/index_tools.rs"]
mod bench_tools;

/// The eviction-quality bench (run with `--ignored`, see `bench/eviction.sh`).
#[cfg(test)]
#[path = "../../bench/eviction.rs"]
mod eviction_bench;
