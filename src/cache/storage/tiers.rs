//! The memory tier over the disk tier, as the cache sees them: where a body is written to,
//! read from (memory first; from disk checksum-verified, small ones promoted to memory), and
//! removed from; packed small bodies and files alike. The cache asks for "bytes `start..end` of this body" and gets a stream or a
//! `BodyError`; which tier answered, and how it was checked, stays in here.

use std::path::Path;

use bytes::Bytes;
use std::sync::Arc;

use super::read::{self, Check};
use super::{
    BodyId, DirLock, DiskStorage, MemoryStorage, Storage, StorageError, StoredBody, Usage, Written,
};
use crate::body::{self, ProxyBody};

pub use read::Corrupt;

/// Where a stored body is and what it must hash to.
#[derive(Debug, Clone, Copy)]
pub struct BodyRef {
    pub id: BodyId,
    pub len: u64,
    pub checksum: [u8; 32],
}

/// Why a stored body cannot be served (the entry naming it should go, except when
/// `Unreadable`: the disk may recover).
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body file missing")]
    Missing,
    #[error(transparent)]
    Corrupt(Corrupt),
    #[error("cannot read the body: {0}")]
    Unreadable(String),
}

pub struct Tiers {
    memory: Arc<MemoryStorage>,
    disk: Arc<DiskStorage>,
    /// Large bodies whose checksum matched once in this process (see `read`); bounded, and
    /// one that drops out is simply verified again.
    verified: Arc<quick_cache::sync::Cache<BodyId, ()>>,
}

impl Tiers {
    /// The disk tier in cache directory `dir` (whose lock the caller holds) under a memory
    /// tier of `memory_size` bytes. One object may take at most an eighth of the memory tier,
    /// so a few large bodies cannot flush everything else.
    pub fn open(dir: &Path, lock: &DirLock, memory_size: u64) -> Result<Tiers, StorageError> {
        Ok(Tiers {
            memory: Arc::new(MemoryStorage::new(memory_size, memory_size / 8)),
            disk: Arc::new(DiskStorage::open(dir, lock)?),
            verified: Arc::new(quick_cache::sync::Cache::new(1 << 16)),
        })
    }

    pub fn disk(&self) -> &DiskStorage {
        &self.disk
    }

    /// Whether the memory tier holds this body now (it is always on disk as well).
    pub fn in_memory(&self, id: BodyId) -> bool {
        self.memory.holds(id)
    }

    pub fn memory_usage(&self) -> Usage {
        self.memory.usage()
    }

    pub fn disk_usage(&self) -> Usage {
        self.disk.usage()
    }

    /// The tiers a new body is written to, disk first.
    pub fn for_writing(&self) -> Vec<Arc<dyn Storage>> {
        vec![self.disk.clone(), self.memory.clone()]
    }

    /// Removes bodies no row names yet (a fill that was not published) from every tier.
    /// Blocks (files are deleted).
    pub fn remove_all(&self, ids: &[BodyId]) -> Result<(), StorageError> {
        self.forget_in_memory(ids);
        self.disk.remove_all(ids)
    }

    /// The index committed a transaction that wrote and deleted `written` packed bodies and
    /// deleted the rows of `deleted`: their bodies go from every tier. Blocks.
    pub fn index_committed(
        &self,
        deleted: &[BodyId],
        written: &Written,
    ) -> Result<(), StorageError> {
        self.forget_in_memory(deleted);
        self.disk.index_committed(written)
    }

    fn forget_in_memory(&self, ids: &[BodyId]) {
        for &id in ids {
            let _ = self.memory.remove(id);
        }
    }

    /// Bytes `start..end` of `body`. A large disk body is checked as it streams: if it turns
    /// out corrupt the stream ends with an error and the callback `on_corrupt` makes runs
    /// (made only for such a body: a memory hit pays nothing for it).
    pub async fn read(
        &self,
        body: BodyRef,
        (start, end): (u64, u64),
        on_corrupt: impl FnOnce() -> Box<dyn FnOnce() + Send>,
    ) -> Result<ProxyBody, BodyError> {
        if let Ok(Some(StoredBody::Bytes(bytes))) = self.memory.read(body.id) {
            return Ok(body::full(bytes.slice(start as usize..end as usize)));
        }
        let file = match self.open_disk(body).await? {
            StoredBody::Bytes(bytes) => {
                let bytes = read::check_bytes(bytes, body.len, &body.checksum)
                    .map_err(BodyError::Corrupt)?;
                self.promote(body, &bytes);
                return Ok(body::full(bytes.slice(start as usize..end as usize)));
            }
            StoredBody::File(file) => file,
        };
        if body.len <= self.memory.max_object() {
            let bytes = tokio::task::spawn_blocking(move || {
                read::read_verified(file, body.len, &body.checksum)
            })
            .await
            .map_err(|e| BodyError::Unreadable(e.to_string()))?
            .map_err(|e| BodyError::Unreadable(e.to_string()))?
            .map_err(BodyError::Corrupt)?;
            self.promote(body, &bytes);
            return Ok(body::full(bytes.slice(start as usize..end as usize)));
        }
        let check = if self.verified.get(&body.id).is_some() {
            // Verified before and still its length: the client connection may send it
            // straight from the page cache.
            if file.metadata().is_ok_and(|meta| meta.len() == body.len) {
                let len = body.len;
                return Ok(ProxyBody::file(file, start, end - start, move |file| {
                    read::stream_checked(file, len, (start, end - 1), Check::Length)
                }));
            }
            Check::Length
        } else {
            let verified = Arc::clone(&self.verified);
            Check::Checksum {
                checksum: body.checksum,
                verified: Box::new(move || verified.insert(body.id, ())),
                corrupt: on_corrupt(),
            }
        };
        Ok(read::stream_checked(
            file,
            body.len,
            (start, end - 1),
            check,
        ))
    }

    /// Reads the whole body from disk and checks its length and checksum. Blocks: for the
    /// offline tool.
    pub fn verify(&self, body: BodyRef) -> Result<(), BodyError> {
        let file = match self.disk.read_body(body.id, Some(body.len)) {
            Ok(Some(StoredBody::File(file))) => file,
            Ok(Some(StoredBody::Bytes(bytes))) => {
                return read::check_bytes(bytes, body.len, &body.checksum)
                    .map(drop)
                    .map_err(BodyError::Corrupt);
            }
            Ok(None) => return Err(BodyError::Missing),
            Err(e) => return Err(BodyError::Unreadable(e.to_string())),
        };
        match read::read_verified(file, body.len, &body.checksum) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(corrupt)) => Err(BodyError::Corrupt(corrupt)),
            Err(e) => Err(BodyError::Unreadable(e.to_string())),
        }
    }

    /// A body read from disk and verified, kept in memory when it fits there.
    fn promote(&self, body: BodyRef, bytes: &Bytes) {
        if body.len <= self.memory.max_object() {
            self.memory.insert(body.id, bytes.clone());
        }
    }

    async fn open_disk(&self, body: BodyRef) -> Result<StoredBody, BodyError> {
        let disk = Arc::clone(&self.disk);
        match tokio::task::spawn_blocking(move || disk.read_body(body.id, Some(body.len))).await {
            Ok(Ok(Some(stored))) => Ok(stored),
            Ok(Ok(None)) => Err(BodyError::Missing),
            Ok(Err(e)) => Err(BodyError::Unreadable(e.to_string())),
            Err(e) => Err(BodyError::Unreadable(e.to_string())),
        }
    }
}
