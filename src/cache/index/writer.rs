//! The index's writer thread: the only user of the database after start-up. It applies the
//! map's changes in batches (one transaction and fsync for everything queued) and deletes
//! bodies only once their rows are gone, so the index never names a file we deleted.

use std::sync::Arc;
use std::sync::mpsc;

use redb::Database;

use super::{Change, ENTRIES, EntryMap, IndexError, Op};
use crate::cache::storage::BodyId;
use crate::cache::storage::{DirLock, Tiers};

/// What the writer thread owns.
pub(super) struct Writer {
    pub db: Database,
    /// The cache directory's lock, released right after the database is closed: a restart
    /// (even in this process) may take over as soon as `close` returns.
    pub lock: DirLock,
    pub ops: mpsc::Receiver<Op>,
    pub map: std::sync::Weak<EntryMap>,
    pub tiers: Arc<Tiers>,
    pub evictions: Arc<std::sync::atomic::AtomicU64>,
}

impl Writer {
    pub(super) fn run(self) {
        while let Ok(first) = self.ops.recv() {
            let mut batch = vec![first];
            while batch.len() < 1024 {
                match self.ops.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let mut replies = Vec::new();
            let mut closing = false;
            let mut changes = Vec::with_capacity(batch.len());
            for op in batch {
                match op {
                    Op::Flush(done) => replies.push(done),
                    Op::Close(done) => {
                        replies.push(done);
                        closing = true;
                    }
                    Op::Change(change) => changes.push(change),
                }
            }
            let mut deleted = Vec::new();
            let committed = match self.apply(changes, &mut deleted) {
                Ok(()) => true,
                Err(e) => {
                    // A full or read-only disk: the rows stay as they were. Bodies of deleted
                    // rows go anyway; a row left naming a missing body reads as a miss.
                    tracing::error!(error = %e, "cache: index update failed");
                    false
                }
            };
            // Bodies go only after their rows are gone, so the index never points at a
            // missing file because of us.
            for body in deleted {
                if let Err(e) = self.tiers.remove(body) {
                    tracing::warn!(body = %format_args!("{body:016x}"), error = %e, "cache: cannot delete a body");
                }
            }
            if closing {
                drop(self.db);
                drop(self.lock);
                for done in replies {
                    let _ = done.send(committed);
                }
                return;
            }
            for done in replies {
                let _ = done.send(committed);
            }
        }
    }

    fn apply(&self, changes: Vec<Change>, deleted: &mut Vec<BodyId>) -> Result<(), IndexError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(ENTRIES)?;
            for op in changes {
                match op {
                    Change::Put(entry) => {
                        table.insert(entry.body, entry.encode().as_slice())?;
                    }
                    Change::Delete(body) => {
                        table.remove(body)?;
                        deleted.push(body);
                    }
                    Change::Released { hash, bodies } => {
                        let current: Vec<BodyId> = self
                            .map
                            .upgrade()
                            .and_then(|map| map.peek(&hash))
                            .map(|variants| variants.iter().map(|v| v.body).collect())
                            .unwrap_or_default();
                        for body in bodies.into_iter().filter(|body| !current.contains(body)) {
                            if current.is_empty() {
                                self.evictions
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            table.remove(body)?;
                            deleted.push(body);
                        }
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}
