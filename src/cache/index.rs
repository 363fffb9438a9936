//! The index: which responses are cached, answered from memory, and
//! persisted in a redb database so it survives restarts and crashes.
//!
//! In memory it is a size-bounded S3-FIFO map (quick_cache, sharded, no global lock) from the
//! primary key's hash to that URL's variants; its eviction order is the disk tier's eviction
//! order. A background thread (`writer.rs`) applies changes to the database in batches and
//! deletes evicted bodies, so no request waits for an fsync of the index. Start-up, including
//! what happens to a damaged database file, is in `load.rs`.

mod bound;
mod load;
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
use load::Sweep;
use writer::Writer;

const ENTRIES: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("entries");

/// At most this many variants of one URL are kept (the oldest goes first).
const MAX_VARIANTS: usize = 16;

/// All cached variants of one URL; replaced as a whole on change, so readers never lock.
pub(super) type Variants = Arc<Vec<Arc<StoredResponse>>>;

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
    /// sent after it could land in a later transaction and report that one instead).
    Commit(Change, mpsc::Sender<bool>),
    /// Reply once everything sent before has been committed: whether the commit succeeded.
    #[cfg(test)]
    Flush(mpsc::Sender<bool>),
    /// Commit, close the database, reply, and stop.
    Close(mpsc::Sender<bool>),
}

/// A change to the database, applied in the writer's next transaction.
enum Change {
    Put(Arc<StoredResponse>),
    /// Forget the row and delete the body from every tier.
    Delete(BodyId),
    /// A URL's variant list left the map, evicted or replaced by a newer list (quick_cache
    /// reports both alike): delete the bodies the map no longer names.
    Released {
        hash: u128,
        bodies: Vec<BodyId>,
    },
}

#[derive(Clone)]
struct VariantsWeight;

impl Weighter<u128, Variants> for VariantsWeight {
    fn weight(&self, _key: &u128, variants: &Variants) -> u64 {
        variants.iter().map(|v| v.weight()).sum::<u64>().max(1)
    }
}

/// Released variant lists are handed to the writer thread, which decides outside the map's
/// lock which bodies are really gone: a list replaced by one that still names a body (a 304
/// refresh, a second variant) must not take that body with it.
#[derive(Clone)]
struct ReleaseToWriter {
    ops: mpsc::Sender<Op>,
}

impl Lifecycle<u128, Variants> for ReleaseToWriter {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), hash: u128, variants: Variants) {
        let bodies = variants.iter().map(|v| v.body).collect();
        let _ = self.ops.send(Op::Change(Change::Released { hash, bodies }));
    }
}

type EntryMap = Cache<u128, Variants, VariantsWeight, DefaultHashBuilder, ReleaseToWriter>;

pub(super) struct Index {
    map: Arc<EntryMap>,
    ops: mpsc::Sender<Op>,
    /// Serialises read-modify-write of one URL's variant list; hits never take it.
    write_locks: Box<[Mutex<()>]>,
    /// Bumped, under the key's write lock, by every `remove` (see `Generation`).
    generations: Box<[AtomicU64]>,
    evictions: Arc<std::sync::atomic::AtomicU64>,
}

impl Index {
    /// Opens the database in cache directory `dir` (replacing a damaged one by an empty
    /// one), loads every entry, and starts the writer thread, which keeps `lock` until the
    /// database is closed.
    pub(super) fn open(
        dir: &Path,
        lock: DirLock,
        capacity: u64,
        max_object: u64,
        tiers: Arc<Tiers>,
    ) -> Result<(Index, LoadReport), IndexError> {
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
            VariantsWeight,
            DefaultHashBuilder::default(),
            lifecycle,
        ));
        let index = Index {
            map,
            ops,
            write_locks: (0..64).map(|_| Mutex::new(())).collect(),
            generations: (0..GENERATION_STRIPES).map(|_| AtomicU64::new(0)).collect(),
            evictions: Arc::clone(&evictions),
        };

        for id in loaded.undecodable {
            let _ = index.ops.send(Op::Change(Change::Delete(id)));
        }
        for (hash, variants) in loaded.by_url {
            for entry in &variants {
                tiers.disk().adopt(entry.body_len);
            }
            index.map.insert(hash, Arc::new(variants));
        }

        tiers.disk().pack().attach(Arc::clone(&loaded.db))?;
        let known = loaded.known;
        let writer = Writer {
            bound: DiskBound::new(dir, capacity),
            db: loaded.db,
            lock,
            ops: receiver,
            // Weak: the map's lifecycle holds the sender, so a strong reference here would
            // keep both alive forever.
            map: Arc::downgrade(&index.map),
            tiers,
            evictions,
        };
        std::thread::Builder::new()
            .name("hoard-index".into())
            .spawn(move || {
                load::remove_orphans(writer.tiers.disk(), &known, sweep);
                writer.run();
            })
            .map_err(|e| IndexError::Storage(e.into()))?;
        Ok((index, loaded.report))
    }

    /// The variants stored for `key`, if any.
    pub(super) fn get(&self, key: &CacheKey) -> Option<Variants> {
        let variants = self.map.get(&key.hash())?;
        // 128-bit hashes do not collide in practice; comparing the URL makes sure.
        (variants.first()?.key == *key).then_some(variants)
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
        let hash = entry.key.hash();
        let _guard = self.lock(hash);
        if self.generation(&entry.key) != generation {
            return Published::Superseded;
        }
        let _ = self.ops.send(Op::Change(Change::Put(entry.clone())));
        self.publish_locked(entry);
        Published::Yes
    }

    /// Like `insert`, but returns only once the entry is committed to the database, and
    /// publishes it only then: an entry anyone has seen survives a crash. One superseded
    /// while it was being committed is deleted again, row and body. Blocks; call it off the
    /// async reactor.
    pub(super) fn insert_durable(
        &self,
        entry: Arc<StoredResponse>,
        generation: Generation,
    ) -> Published {
        if self.generation(&entry.key) != generation {
            return Published::Superseded;
        }
        let (done, committed) = mpsc::channel();
        let sent = self
            .ops
            .send(Op::Commit(Change::Put(entry.clone()), done))
            .is_ok();
        if !(sent && committed.recv().unwrap_or(false)) {
            return Published::Failed;
        }
        let _guard = self.lock(entry.key.hash());
        if self.generation(&entry.key) != generation {
            let _ = self.ops.send(Op::Change(Change::Delete(entry.body)));
            return Published::Superseded;
        }
        self.publish_locked(entry);
        Published::Yes
    }

    /// Puts `entry` into the map; the caller holds its key's write lock.
    fn publish_locked(&self, entry: Arc<StoredResponse>) {
        let hash = entry.key.hash();
        let mut variants: Vec<Arc<StoredResponse>> = self
            .map
            .peek(&hash)
            .filter(|v| v.first().is_some_and(|first| first.key == entry.key))
            .map(|v| v.as_ref().clone())
            .unwrap_or_default();
        variants.retain(|old| old.vary != entry.vary);
        variants.push(entry);
        if variants.len() > MAX_VARIANTS {
            variants.remove(0);
        }
        // The old list is released to the writer, which deletes the bodies this one dropped.
        self.map.insert(hash, Arc::new(variants));
    }

    /// Forgets one variant (a corrupt or vanished body).
    pub(super) fn remove_variant(&self, entry: &StoredResponse) {
        let hash = entry.key.hash();
        let _guard = self.lock(hash);
        if let Some(variants) = self.map.peek(&hash) {
            let rest: Vec<_> = variants
                .iter()
                .filter(|v| v.body != entry.body)
                .cloned()
                .collect();
            if rest.is_empty() {
                self.map.remove(&hash);
            } else {
                self.map.insert(hash, Arc::new(rest));
            }
        }
        let _ = self.ops.send(Op::Change(Change::Delete(entry.body)));
    }

    /// Forgets every variant of `key` (invalidation, purge), and any fill of it still in
    /// flight (its generation moves on). Returns how many variants there were.
    pub(super) fn remove(&self, key: &CacheKey) -> usize {
        let _guard = self.lock(key.hash());
        self.stripe(key.hash()).fetch_add(1, Ordering::AcqRel);
        match self.map.remove(&key.hash()) {
            Some((_, variants)) if variants.first().is_some_and(|v| v.key == *key) => {
                for variant in variants.iter() {
                    let _ = self.ops.send(Op::Change(Change::Delete(variant.body)));
                }
                variants.len()
            }
            Some((hash, other)) => {
                self.map.insert(hash, other);
                0
            }
            None => 0,
        }
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

    /// Every stored part of a body (`slice.rs`), for start-up.
    pub(super) fn parts(&self) -> Vec<Arc<StoredResponse>> {
        self.map
            .iter()
            .filter_map(|(_, variants)| variants.first().cloned())
            .filter(|entry| entry.key.is_part())
            .collect()
    }

    /// Every stored variant whose URL starts with `prefix`.
    pub(super) fn entries_with_prefix(&self, prefix: &str) -> Vec<Arc<StoredResponse>> {
        self.map
            .iter()
            .flat_map(|(_, variants)| variants.iter().cloned().collect::<Vec<_>>())
            .filter(|entry| entry.key.url().starts_with(prefix))
            .collect()
    }

    /// Waits until every change made so far is committed to the database; `false` if the
    /// commit failed.
    #[cfg(test)]
    pub(super) fn flush(&self) -> bool {
        self.request(Op::Flush)
    }

    /// Commits everything and closes the database (shutdown); later changes are not saved.
    pub(super) fn close(&self) -> bool {
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
