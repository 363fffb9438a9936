//! Body storage tiers behind one small trait: `memory` (reference-counted `Bytes`) and `disk`
//! (small bodies packed into the index database by `pack`, larger ones one file each, written
//! to a temporary file, fsynced and renamed into place), and
//! `Tiers`, the two together as the cache reads them (`read` checks what comes off disk).
//!
//! A tier stores bodies by `BodyId` and nothing else: which bodies exist, their metadata and
//! eviction order belong to the index (`cache::index`). Disk calls block; callers run them off
//! the async reactor.

mod disk;
mod lock;
mod memory;
mod pack;
mod read;
mod tiers;

pub use disk::{DiskStorage, footprint};
pub use lock::{DirLock, LockError};
pub use memory::MemoryStorage;
pub use pack::{PACK_LIMIT, Pack, Written};
pub use tiers::{BodyError, BodyRef, Corrupt, Tiers};

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

/// Identifies a stored body in every tier; random, so it says nothing about the URL.
pub type BodyId = u64;

/// A fresh random body id.
pub fn new_body_id() -> BodyId {
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

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cache storage I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("cache storage, packed bodies: {0}")]
    Pack(redb::Error),
}

/// Bytes and objects a tier holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub objects: u64,
}

/// Options for a size-bounded quick_cache map holding items of up to `max_item` weight.
///
/// quick_cache splits its capacity across shards and rejects an item heavier than a shard's
/// share, so the shard count is chosen to leave room for the largest item.
pub fn bounded_options(capacity: u64, max_item: u64) -> quick_cache::Options {
    let fit = (capacity as f64 * 0.9 / max_item.max(1) as f64) as usize;
    let shards = fit.clamp(1, 64);
    // The largest power of two not above `shards`.
    let shards = 1 << (usize::BITS - 1 - shards.leading_zeros());
    let estimated_items = (capacity / 16_384).clamp(64, 4 << 20) as usize;
    quick_cache::OptionsBuilder::new()
        .shards(shards)
        .estimated_items_capacity(estimated_items)
        .weight_capacity(capacity.max(1))
        .build()
        .unwrap_or_else(|_| unreachable!("shards, items and capacity are all non-zero"))
}

/// A stored body, as the tier can hand it out without copying.
pub enum StoredBody {
    Bytes(Bytes),
    File(std::fs::File),
}

/// One storage tier.
///
/// Contract: a body becomes readable only when its writer's `finish` returns `Ok`; dropping a
/// writer without `finish` leaves no trace. `read` of an unknown or removed id is `Ok(None)`.
pub trait Storage: Send + Sync + 'static {
    /// Starts storing body `id`. `Ok(None)` when this tier does not take a body of
    /// `expected_len` bytes (when known).
    fn writer(
        &self,
        id: BodyId,
        expected_len: Option<u64>,
    ) -> Result<Option<Box<dyn BodyWriter>>, StorageError>;
    fn read(&self, id: BodyId) -> Result<Option<StoredBody>, StorageError>;
    fn remove(&self, id: BodyId) -> Result<(), StorageError>;
    fn usage(&self) -> Usage;
}

/// Receives one body in order.
pub trait BodyWriter: Send {
    /// Appends a chunk; `Ok(false)` when the tier gave up on this body (too large), after
    /// which further chunks are ignored and `finish` stores nothing.
    fn write(&mut self, chunk: &Bytes) -> Result<bool, StorageError>;
    fn finish(self: Box<Self>) -> Result<(), StorageError>;
}

#[cfg(test)]
mod contract {
    //! The suite every tier passes.
    use std::io::Read;

    use super::*;

    fn read_all(store: &dyn Storage, id: BodyId) -> Option<Vec<u8>> {
        match store.read(id).unwrap()? {
            StoredBody::Bytes(bytes) => Some(bytes.to_vec()),
            StoredBody::File(mut file) => {
                let mut out = Vec::new();
                file.read_to_end(&mut out).unwrap();
                Some(out)
            }
        }
    }

    pub(super) fn check(store: &dyn Storage) {
        check_sized(store, 10);
        check_sized(store, 40_000);
    }

    /// Stores, reads and removes a body of `len` bytes (both sides of the disk tier's pack
    /// limit are tried).
    fn check_sized(store: &dyn Storage, len: usize) {
        let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let (head, tail) = body.split_at(len / 2);
        let mut writer = store.writer(1, Some(len as u64)).unwrap().unwrap();
        assert!(writer.write(&Bytes::copy_from_slice(head)).unwrap());
        assert!(read_all(store, 1).is_none(), "invisible before finish");
        assert!(writer.write(&Bytes::copy_from_slice(tail)).unwrap());
        writer.finish().unwrap();
        assert_eq!(read_all(store, 1).unwrap(), body);
        assert_eq!(
            store.usage(),
            Usage {
                bytes: len as u64,
                objects: 1
            }
        );
        store.remove(1).unwrap();
        assert!(read_all(store, 1).is_none());
        assert_eq!(store.usage(), Usage::default());

        let mut writer = store.writer(1, Some(10)).unwrap().unwrap();
        assert!(writer.write(&Bytes::from_static(b"hello ")).unwrap());
        assert!(read_all(store, 1).is_none(), "invisible before finish");
        assert!(writer.write(&Bytes::from_static(b"world")).unwrap());
        writer.finish().unwrap();
        assert_eq!(read_all(store, 1).unwrap(), b"hello world");
        assert_eq!(
            store.usage(),
            Usage {
                bytes: 11,
                objects: 1
            }
        );

        let mut abandoned = store.writer(2, None).unwrap().unwrap();
        abandoned.write(&Bytes::from_static(b"partial")).unwrap();
        drop(abandoned);
        assert!(
            read_all(store, 2).is_none(),
            "a dropped writer leaves nothing"
        );

        store.remove(1).unwrap();
        assert!(read_all(store, 1).is_none());
        assert_eq!(store.usage(), Usage::default());
        store.remove(99).unwrap();
    }

    #[test]
    fn memory_tier_keeps_the_contract() {
        check(&MemoryStorage::new(1 << 20, 1 << 16));
    }

    #[test]
    fn disk_tier_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DirLock::acquire(dir.path()).unwrap();
        check(&DiskStorage::open(dir.path(), &lock).unwrap());
    }

    #[test]
    fn disk_tier_with_packing_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DirLock::acquire(dir.path()).unwrap();
        let disk = DiskStorage::open(dir.path(), &lock).unwrap();
        let db = redb::Database::create(dir.path().join("pack.redb")).unwrap();
        disk.pack().attach(std::sync::Arc::new(db)).unwrap();
        check(&disk);
        assert_eq!(disk.file_blocks(), 0, "no file left behind");
    }
}
