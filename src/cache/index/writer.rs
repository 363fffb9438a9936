//! The index's writer thread: the only writer of the database after start-up. It applies the
//! map's changes in batches (one transaction and fsync for everything queued), with the packed
//! bodies of the rows it writes or deletes in the same transaction, and deletes body files
//! only once their rows are gone, so the index never names a file we deleted.

use std::sync::Arc;
use std::sync::mpsc;

use redb::{Database, ReadableTableMetadata};

use super::bound::DiskBound;
use super::heads::Heads;
use super::slots::{GROUPS, PARTS, SLOTS, UrlHasher};
use super::{Change, ENTRIES, EntryMap, IndexError, Op};
use crate::cache::entry::StoredResponse;
use crate::cache::storage::{BodyId, Written};
use crate::cache::storage::{DirLock, Tiers};

/// What the writer thread owns.
pub(super) struct Writer {
    /// Shared with the disk tier's pack only (see `storage::Pack`).
    pub db: Arc<Database>,
    /// The cache directory's lock, released right after the database is closed: a restart
    /// (even in this process) may take over as soon as `close` returns.
    pub lock: DirLock,
    pub ops: mpsc::Receiver<Op>,
    pub map: std::sync::Weak<EntryMap>,
    /// Told which rows were committed and which are gone.
    pub heads: Arc<Heads>,
    pub hasher: UrlHasher,
    pub tiers: Arc<Tiers>,
    pub evictions: Arc<std::sync::atomic::AtomicU64>,
    pub bound: DiskBound,
}

impl Writer {
    pub(super) fn run(mut self) {
        while let Ok(first) = self.ops.recv() {
            let mut batch = vec![first];
            while batch.len() < 1024 {
                match self.ops.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let mut replies = Vec::new();
            let mut commits = Vec::new();
            let mut closing = false;
            let mut changes = Vec::with_capacity(batch.len());
            for op in batch {
                match op {
                    #[cfg(test)]
                    Op::Flush(done) => replies.push(done),
                    Op::Close(done) => {
                        replies.push(done);
                        closing = true;
                    }
                    Op::Change(change) => changes.push(change),
                    Op::Commit(change, done) => {
                        changes.push(change);
                        commits.push(done);
                    }
                }
            }
            let mut deleted = Vec::new();
            let mut stored = Vec::new();
            let committed = match self.apply(changes, &mut stored, &mut deleted) {
                // Bodies go only after their rows are gone, so the index never points at a
                // missing file because of us (packed ones went in the same transaction).
                Ok(written) => {
                    self.heads.committed(&stored);
                    for &body in &deleted {
                        self.heads.forget(body);
                    }
                    if let Err(e) = self.tiers.index_committed(&deleted, &written) {
                        tracing::warn!(bodies = deleted.len(), error = %e, "cache: cannot delete bodies");
                    }
                    true
                }
                Err(e) => {
                    // A full or read-only disk: the rows stay as they were, and so do packed
                    // bodies. Files of deleted rows go anyway; a row left naming a missing
                    // file reads as a miss.
                    tracing::error!(error = %e, "cache: index update failed");
                    for &body in &deleted {
                        self.heads.forget(body);
                    }
                    let _ = self.tiers.remove_all(&deleted);
                    false
                }
            };
            if let Some(map) = self.map.upgrade() {
                self.bound.check(&map, self.tiers.disk());
            }
            if closing {
                self.close();
                reply(commits, replies, committed);
                return;
            }
            reply(commits, replies, committed);
        }
    }

    /// Takes the database back from the pack and closes it, then releases the lock.
    fn close(mut self) {
        self.tiers.disk().pack().detach();
        self.heads.detach();
        // A read that loaded the database just before may still be running.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while Arc::strong_count(&self.db) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // Over the disk bound (the file ran ahead of evictions under churn): give the free
        // pages back to the file system, so a stopped cache stays within its bound.
        if self.bound.exceeded(self.tiers.disk())
            && let Some(db) = Arc::get_mut(&mut self.db)
            && let Err(e) = db.compact()
        {
            tracing::warn!(error = %e, "cache: cannot compact the index");
        }
        drop(self.db);
        drop(self.lock);
    }

    /// Applies `changes` in one transaction: the rows written go to `stored`, the bodies of
    /// the rows deleted to `deleted`.
    fn apply(
        &self,
        changes: Vec<Change>,
        stored: &mut Vec<Arc<StoredResponse>>,
        deleted: &mut Vec<BodyId>,
    ) -> Result<Written, IndexError> {
        let txn = self.db.begin_write()?;
        {
            let groups = txn.open_table(GROUPS)?;
            let mut rows = Rows {
                entries: txn.open_table(ENTRIES)?,
                slots: txn.open_table(SLOTS)?,
                parts: txn.open_table(PARTS)?,
                any_groups: !groups.is_empty()?,
                groups,
                hasher: &self.hasher,
            };
            for op in changes {
                match op {
                    Change::Put(entry) => {
                        let (key, value) = self.hasher.row(&entry);
                        rows.entries.insert(entry.body, entry.encode().as_slice())?;
                        rows.slots.insert(key, value)?;
                        if entry.key.is_part() {
                            rows.parts.insert(entry.body, key.0)?;
                        }
                        for group in self.hasher.group_rows(&entry) {
                            rows.groups.insert(group, ())?;
                            rows.any_groups = true;
                        }
                        stored.push(entry);
                    }
                    Change::Delete { hash, body } => {
                        rows.remove(hash, body)?;
                        deleted.push(body);
                    }
                    Change::Released { hash, bodies } => {
                        let current: Vec<BodyId> = self
                            .map
                            .upgrade()
                            .and_then(|map| map.peek(&hash))
                            .map(|slots| slots.as_slice().iter().map(|s| s.body).collect())
                            .unwrap_or_default();
                        for body in bodies.into_iter().filter(|body| !current.contains(body)) {
                            if current.is_empty() {
                                self.evictions
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            rows.remove(Some(hash), body)?;
                            deleted.push(body);
                        }
                    }
                }
            }
        }
        if !stored.is_empty() {
            self.tiers.disk().probe()?;
        }
        let bodies: Vec<BodyId> = stored.iter().map(|entry| entry.body).collect();
        let written = self.tiers.disk().pack().write(&txn, &bodies, deleted)?;
        txn.commit()?;
        Ok(written)
    }
}

/// Tells those waiting for a transaction whether it committed.
fn reply(
    commits: Vec<tokio::sync::oneshot::Sender<bool>>,
    replies: Vec<mpsc::Sender<bool>>,
    committed: bool,
) {
    for done in commits {
        let _ = done.send(committed);
    }
    for done in replies {
        let _ = done.send(committed);
    }
}

/// The tables one stored response has rows in, open in the writer's transaction.
struct Rows<'txn, 'h> {
    entries: redb::Table<'txn, u64, &'static [u8]>,
    slots: redb::Table<'txn, (u128, u64), (u64, u64, bool)>,
    parts: redb::Table<'txn, u64, u128>,
    groups: redb::Table<'txn, (u128, u64), ()>,
    /// Whether `groups` has rows at all: without, a removal need not decode the head.
    any_groups: bool,
    hasher: &'h UrlHasher,
}

impl Rows<'_, '_> {
    /// Removes the rows of the response whose body is `body` and whose URL hashed `hash`.
    fn remove(&mut self, hash: Option<u128>, body: BodyId) -> Result<(), redb::StorageError> {
        let removed = self.entries.remove(body)?;
        // Its groups are in its head, which is read only when some response has groups.
        if self.any_groups
            && let Some(head) = removed.and_then(|row| StoredResponse::decode(row.value()).ok())
        {
            for group in self.hasher.group_rows(&head) {
                self.groups.remove(group)?;
            }
        }
        if let Some(hash) = hash {
            self.slots.remove((hash, body))?;
        }
        self.parts.remove(body)?;
        Ok(())
    }
}
