//! Small bodies packed into the index database instead of one file each.
//!
//! A 100-byte body as a file costs a 4 KiB block, an inode and a directory entry; as a row of
//! the `bodies` table in `index.redb` it costs its bytes and a few dozen more, and the page it
//! sat in is reused once it is deleted. Bodies up to `PACK_LIMIT` bytes go here.
//!
//! A finished body is only staged here (held in memory, readable); the index's writer thread
//! writes it in the same transaction as the row naming it (`write`), and deletes it in the
//! same transaction as the row that goes. A packed body and its row therefore reach the disk,
//! and leave it, together: a crash can leave neither an orphan nor a row without its body,
//! and no extra transaction or fsync is paid per body.
//!
//! Owns the `bodies` table and the staged bodies; which bodies exist is the index's business.
//! The database is lent by the index once it is open (`attach`) and taken back before it
//! closes (`detach`), so a restart in the same process can reopen the file.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, TableDefinition, WriteTransaction};

use super::{BodyId, StorageError};

/// Bodies up to this size are packed. Larger ones waste little in a file (at most one partly
/// filled block) and would make the database copy big pages on every change.
pub const PACK_LIMIT: u64 = 16 * 1024;

/// Body id → bytes.
const BODIES: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("bodies");

/// Staged bodies are spread over this many locks, so disk reads do not meet on one.
const STAGE_SHARDS: usize = 16;

#[derive(Default)]
pub struct Pack {
    db: ArcSwapOption<Database>,
    /// Finished bodies whose rows are not committed yet: at most one per fill in flight.
    staged: [Mutex<HashMap<BodyId, Bytes>>; STAGE_SHARDS],
}

fn failed(e: impl Into<redb::Error>) -> StorageError {
    StorageError::Pack(e.into())
}

/// What the index's transaction did to the packed bodies.
#[derive(Default)]
pub struct Written {
    /// Staged bodies now in the table (unstaged once the transaction commits).
    pub stored: Vec<BodyId>,
    /// Lengths of the packed bodies deleted.
    pub deleted: Vec<u64>,
    /// Bodies to delete that were not packed: files, for the disk tier to remove.
    pub not_packed: Vec<BodyId>,
}

impl Pack {
    /// Starts packing into `db` (creating the table).
    pub fn attach(&self, db: Arc<Database>) -> Result<(), StorageError> {
        let txn = db.begin_write().map_err(failed)?;
        txn.open_table(BODIES).map_err(failed)?;
        txn.commit().map_err(failed)?;
        self.db.store(Some(db));
        Ok(())
    }

    /// Lets go of the database; from now on bodies are written as files.
    pub fn detach(&self) {
        self.db.store(None);
    }

    pub fn is_attached(&self) -> bool {
        self.db.load().is_some()
    }

    fn staged(&self, id: BodyId) -> std::sync::MutexGuard<'_, HashMap<BodyId, Bytes>> {
        self.staged[(id % STAGE_SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Holds a finished body until the index writes it with its row.
    pub(super) fn stage(&self, id: BodyId, body: Bytes) {
        self.staged(id).insert(id, body);
    }

    /// Drops a staged body whose row will never be written; its length if it was staged.
    pub(super) fn unstage(&self, id: BodyId) -> Option<u64> {
        self.staged(id).remove(&id).map(|body| body.len() as u64)
    }

    pub fn get(&self, id: BodyId) -> Result<Option<Bytes>, StorageError> {
        if let Some(body) = self.staged(id).get(&id) {
            return Ok(Some(body.clone()));
        }
        let Some(db) = self.db.load_full() else {
            return Ok(None);
        };
        let txn = db.begin_read().map_err(failed)?;
        let table = match txn.open_table(BODIES) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(failed(e)),
        };
        let body = table.get(id).map_err(failed)?;
        Ok(body.map(|body| Bytes::copy_from_slice(body.value())))
    }

    /// In the index's transaction `txn`: writes the staged bodies among `put`, deletes the
    /// packed ones among `delete`.
    pub fn write(
        &self,
        txn: &WriteTransaction,
        put: &[BodyId],
        delete: &[BodyId],
    ) -> Result<Written, StorageError> {
        let mut table = txn.open_table(BODIES).map_err(failed)?;
        let mut written = Written::default();
        for &id in put {
            let body = self.staged(id).get(&id).cloned();
            if let Some(body) = body {
                table.insert(id, body.as_ref()).map_err(failed)?;
                written.stored.push(id);
            }
        }
        for &id in delete {
            match table.remove(id).map_err(failed)? {
                Some(body) => written.deleted.push(body.value().len() as u64),
                None => written.not_packed.push(id),
            }
        }
        Ok(written)
    }

    /// The transaction that wrote `stored` committed: the table serves them now.
    pub fn committed(&self, stored: &[BodyId]) {
        for &id in stored {
            self.staged(id).remove(&id);
        }
    }
}
