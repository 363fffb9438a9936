//! The disk tier: small bodies packed into the index database (`pack.rs`), larger ones one
//! file each under `objects/XX/`, named by their random id. Usage counts both.
//!
//! File write protocol (crash safety): the body goes to `tmp/ID`, is fsynced, renamed to
//! `objects/XX/ID`, and the directory is fsynced; only then does the index learn of it. A crash
//! at any point leaves either no file, a temporary file (deleted at the next start), or a
//! complete file the index may not know (an orphan, deleted at the next start). A body of
//! unknown length is held in memory until it outgrows `PACK_LIMIT`, then spills to a file.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::pack::{PACK_LIMIT, Pack, Written};
use super::{BodyId, BodyWriter, DirLock, Storage, StorageError, StoredBody, Usage};

/// File sizes are counted in blocks of this many bytes, as the file system allocates them.
const BLOCK: u64 = 4096;

/// What a body of `len` bytes occupies on disk: a file whole blocks; a packed body its row
/// (bytes, key and slot) in B-tree pages about half full (see `StoredResponse::weight`) while
/// several share a page, and once it needs pages of its own, the run redb allocates for it:
/// a power of two of pages (measured with redb 4.6 under churn: 8 000 bytes take 8.5 KB,
/// 12 000 take 17 KB, 16 384 take 34 KB).
pub fn footprint(len: u64) -> u64 {
    const PAGE: u64 = 4096;
    const ROW: u64 = 24;
    if len > PACK_LIMIT {
        len.div_ceil(BLOCK) * BLOCK
    } else if (len + ROW) * 2 <= PAGE {
        (len + ROW) * 2
    } else {
        (len + ROW).div_ceil(PAGE).next_power_of_two() * PAGE
    }
}

pub struct DiskStorage {
    objects: PathBuf,
    tmp: PathBuf,
    pack: Arc<Pack>,
    usage: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    bytes: AtomicU64,
    objects: AtomicU64,
    /// Blocks the body files occupy, in bytes (packed bodies are in the database's size).
    file_blocks: AtomicU64,
}

impl Counters {
    fn add(&self, len: u64, file: bool) {
        self.bytes.fetch_add(len, Ordering::Relaxed);
        self.objects.fetch_add(1, Ordering::Relaxed);
        if file {
            self.file_blocks
                .fetch_add(footprint(len.max(PACK_LIMIT + 1)), Ordering::Relaxed);
        }
    }

    fn sub(&self, len: u64, file: bool) {
        self.bytes.fetch_sub(len, Ordering::Relaxed);
        self.objects.fetch_sub(1, Ordering::Relaxed);
        if file {
            self.file_blocks
                .fetch_sub(footprint(len.max(PACK_LIMIT + 1)), Ordering::Relaxed);
        }
    }
}

impl DiskStorage {
    /// Opens (creating) the tier under `root`, discarding unfinished temporary files. The
    /// lock on `root` proves no other process is filling `tmp/` at the same time.
    pub fn open(root: &Path, _locked: &DirLock) -> Result<DiskStorage, StorageError> {
        let objects = root.join("objects");
        let tmp = root.join("tmp");
        fs::create_dir_all(&objects)?;
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        Ok(DiskStorage {
            objects,
            tmp,
            pack: Arc::default(),
            usage: Arc::default(),
        })
    }

    /// Where small bodies are packed (see `pack.rs`).
    pub fn pack(&self) -> &Pack {
        &self.pack
    }

    /// Bytes of disk blocks the body files occupy.
    pub fn file_blocks(&self) -> u64 {
        self.usage.file_blocks.load(Ordering::Relaxed)
    }

    fn path(&self, id: BodyId) -> PathBuf {
        self.objects
            .join(format!("{:02x}", id & 0xff))
            .join(format!("{id:016x}"))
    }

    /// Counts a body that is already on disk (found at start-up) toward usage.
    pub fn adopt(&self, len: u64) {
        // A small body may also be a file stored by a hoard before packing; counted as packed,
        // it makes the footprint look a little smaller until it is evicted.
        self.usage.add(len, len > PACK_LIMIT);
    }

    /// Ids of the body files last written before `started` (with a few seconds' margin, as
    /// file times are coarser than the clock), for start-up orphan removal: bodies stored by
    /// this run are never candidates.
    pub fn list_written_before(
        &self,
        started: std::time::SystemTime,
    ) -> Result<Vec<BodyId>, StorageError> {
        let before = started - std::time::Duration::from_secs(2);
        self.list(|file| {
            let written = file.metadata().and_then(|m| m.modified());
            written.is_ok_and(|written| written < before)
        })
    }

    /// Ids of every body file there is now. Called before this run stores anything, the
    /// snapshot needs no file times to leave this run's bodies out.
    pub fn list_all(&self) -> Result<Vec<BodyId>, StorageError> {
        self.list(|_| true)
    }

    fn list(&self, wanted: impl Fn(&fs::DirEntry) -> bool) -> Result<Vec<BodyId>, StorageError> {
        let mut ids = Vec::new();
        for shard in fs::read_dir(&self.objects)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for file in fs::read_dir(shard.path())? {
                let file = file?;
                let Some(id) = file
                    .file_name()
                    .to_str()
                    .and_then(|n| u64::from_str_radix(n, 16).ok())
                else {
                    continue;
                };
                if wanted(&file) {
                    ids.push(id);
                }
            }
        }
        Ok(ids)
    }

    /// Removes a body file the index does not know, without touching usage counters.
    /// (Packed bodies are never orphans: see `pack.rs`.)
    pub fn remove_orphan(&self, id: BodyId) -> Result<(), StorageError> {
        match fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Removes bodies not yet in the index: staged ones, and files.
    pub fn remove_all(&self, ids: &[BodyId]) -> Result<(), StorageError> {
        let mut first_error = None;
        for &id in ids {
            if let Some(len) = self.pack.unstage(id) {
                self.usage.sub(len, false);
            } else if let Err(e) = self.remove_file(id) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The index committed `written` (see `Pack::write`): staged bodies are in the table now,
    /// deleted packed bodies are gone, and the other deleted bodies' files go now.
    pub fn index_committed(&self, written: &Written) -> Result<(), StorageError> {
        self.pack.committed(&written.stored);
        for &len in &written.deleted {
            self.usage.sub(len, false);
        }
        self.remove_all(&written.not_packed)
    }

    /// Removes body file `id`; `false` when there is none.
    fn remove_file(&self, id: BodyId) -> Result<bool, StorageError> {
        let path = self.path(id);
        let len = match fs::metadata(&path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        fs::remove_file(&path)?;
        self.usage.sub(len, true);
        Ok(true)
    }

    /// Fails unless the cache directory still takes new files. Packed bodies go through a
    /// database file opened long ago, which keeps working after the directory was deleted or
    /// remounted read-only; the index checks with this before it commits new bodies, so such
    /// a directory stops storing (and says why) as it does for body files.
    pub fn probe(&self) -> Result<(), StorageError> {
        let probe = self.tmp.join("probe");
        File::create(&probe)?;
        fs::remove_file(&probe)?;
        Ok(())
    }

    fn tmp_path(&self, id: BodyId) -> PathBuf {
        self.tmp.join(format!("{id:016x}"))
    }

    /// Body `id`, looked for in the pack only if `len` (when known) is small enough to be
    /// there: a large body's read costs no database lookup.
    pub fn read_body(
        &self,
        id: BodyId,
        len: Option<u64>,
    ) -> Result<Option<StoredBody>, StorageError> {
        if len.is_none_or(|len| len <= PACK_LIMIT)
            && let Some(bytes) = self.pack.get(id)?
        {
            return Ok(Some(StoredBody::Bytes(bytes)));
        }
        match File::open(self.path(id)) {
            Ok(file) => Ok(Some(StoredBody::File(file))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Creates temporary file `path` for a body being written.
fn create_tmp(path: &Path) -> std::io::Result<BufWriter<File>> {
    let file = OpenOptions::new().write(true).create_new(true).open(path)?;
    Ok(BufWriter::with_capacity(256 * 1024, file))
}

impl Storage for DiskStorage {
    fn writer(
        &self,
        id: BodyId,
        expected_len: Option<u64>,
    ) -> Result<Option<Box<dyn BodyWriter>>, StorageError> {
        let packable = self.pack.is_attached() && expected_len.is_none_or(|len| len <= PACK_LIMIT);
        let tmp_path = self.tmp_path(id);
        let sink = if packable {
            Sink::Buffer(Vec::new())
        } else {
            Sink::File(create_tmp(&tmp_path)?)
        };
        Ok(Some(Box::new(DiskWriter {
            id,
            sink,
            tmp_path,
            final_path: self.path(id),
            written: 0,
            pack: Arc::clone(&self.pack),
            usage: Arc::clone(&self.usage),
        })))
    }

    fn read(&self, id: BodyId) -> Result<Option<StoredBody>, StorageError> {
        self.read_body(id, None)
    }

    fn remove(&self, id: BodyId) -> Result<(), StorageError> {
        self.remove_all(&[id])
    }

    fn usage(&self) -> Usage {
        Usage {
            bytes: self.usage.bytes.load(Ordering::Relaxed),
            objects: self.usage.objects.load(Ordering::Relaxed),
        }
    }
}

enum Sink {
    /// Small so far: kept in memory, to be packed.
    Buffer(Vec<u8>),
    File(BufWriter<File>),
    Done,
}

struct DiskWriter {
    id: BodyId,
    sink: Sink,
    tmp_path: PathBuf,
    final_path: PathBuf,
    written: u64,
    pack: Arc<Pack>,
    usage: Arc<Counters>,
}

impl DiskWriter {
    /// Moves a body that outgrew the pack into a temporary file.
    fn spill(&mut self, buffered: &[u8]) -> Result<(), StorageError> {
        let mut file = create_tmp(&self.tmp_path)?;
        file.write_all(buffered)?;
        self.sink = Sink::File(file);
        Ok(())
    }
}

impl BodyWriter for DiskWriter {
    fn write(&mut self, chunk: &Bytes) -> Result<bool, StorageError> {
        if let Sink::Buffer(buffer) = &mut self.sink {
            if (buffer.len() + chunk.len()) as u64 <= PACK_LIMIT {
                buffer.extend_from_slice(chunk);
                self.written += chunk.len() as u64;
                return Ok(true);
            }
            let buffered = std::mem::take(buffer);
            self.spill(&buffered)?;
        }
        if let Sink::File(file) = &mut self.sink {
            file.write_all(chunk)?;
            self.written += chunk.len() as u64;
        }
        Ok(true)
    }

    fn finish(mut self: Box<Self>) -> Result<(), StorageError> {
        match std::mem::replace(&mut self.sink, Sink::Done) {
            Sink::Buffer(buffer) => {
                if self.pack.is_attached() {
                    self.pack.stage(self.id, buffer.into());
                    self.usage.add(self.written, false);
                    return Ok(());
                }
                // The database went away (shutdown): a file will do.
                self.spill(&buffer)?;
                self.commit_file()
            }
            Sink::File(file) => {
                self.sink = Sink::File(file);
                self.commit_file()
            }
            Sink::Done => Ok(()),
        }
    }
}

impl DiskWriter {
    fn commit_file(&mut self) -> Result<(), StorageError> {
        let Sink::File(file) = std::mem::replace(&mut self.sink, Sink::Done) else {
            return Ok(());
        };
        if let Err(e) = commit(file, &self.tmp_path, &self.final_path) {
            let _ = fs::remove_file(&self.tmp_path);
            return Err(e.into());
        }
        self.usage.add(self.written, true);
        Ok(())
    }
}

/// fsync the body, rename it into place, fsync the directory so the rename survives a power
/// loss before the index points at the file.
fn commit(file: BufWriter<File>, tmp_path: &Path, final_path: &Path) -> std::io::Result<()> {
    let file = file.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let dir = final_path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    fs::rename(tmp_path, final_path)?;
    File::open(dir)?.sync_all()
}

impl Drop for DiskWriter {
    fn drop(&mut self) {
        if let Sink::File(_) = std::mem::replace(&mut self.sink, Sink::Done) {
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footprints_follow_what_the_database_and_the_file_system_allocate() {
        assert_eq!(footprint(100), 248);
        assert_eq!(footprint(2024), 4096);
        assert_eq!(footprint(8000), 8192);
        assert_eq!(footprint(12_000), 16_384);
        assert_eq!(footprint(PACK_LIMIT), 32_768);
        assert_eq!(footprint(PACK_LIMIT + 1), 5 * BLOCK);
    }

    #[test]
    fn bodies_written_after_start_up_are_never_orphan_candidates() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DirLock::acquire(dir.path()).unwrap();
        let disk = DiskStorage::open(dir.path(), &lock).unwrap();
        let mut old = disk.writer(1, None).unwrap().unwrap();
        old.write(&Bytes::from_static(b"from an earlier run"))
            .unwrap();
        old.finish().unwrap();
        let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(disk.path(1))
            .unwrap()
            .set_modified(an_hour_ago)
            .unwrap();
        let started = std::time::SystemTime::now();
        let mut new = disk.writer(2, None).unwrap().unwrap();
        new.write(&Bytes::from_static(b"stored while the orphan scan runs"))
            .unwrap();
        new.finish().unwrap();
        assert_eq!(disk.list_written_before(started).unwrap(), vec![1]);
    }

    #[test]
    fn small_bodies_are_packed_and_large_ones_spill_to_files() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DirLock::acquire(dir.path()).unwrap();
        let disk = DiskStorage::open(dir.path(), &lock).unwrap();
        let db = redb::Database::create(dir.path().join("pack.redb")).unwrap();
        disk.pack().attach(Arc::new(db)).unwrap();
        let store = |id, len: usize, expected: Option<u64>| {
            let mut writer = disk.writer(id, expected).unwrap().unwrap();
            for chunk in vec![7u8; len].chunks(1000) {
                writer.write(&Bytes::copy_from_slice(chunk)).unwrap();
            }
            writer.finish().unwrap();
        };
        store(1, 100, Some(100));
        store(2, PACK_LIMIT as usize, None);
        assert!(
            disk.list_all().unwrap().is_empty(),
            "no file for small bodies"
        );
        assert_eq!(disk.file_blocks(), 0);
        // Of unknown length, it outgrows the pack while it is written.
        store(3, PACK_LIMIT as usize + 1, None);
        store(4, 100_000, Some(100_000));
        let mut files = disk.list_all().unwrap();
        files.sort();
        assert_eq!(files, vec![3, 4]);
        assert_eq!(
            disk.file_blocks(),
            footprint(PACK_LIMIT + 1) + footprint(100_000)
        );
        assert!(matches!(disk.read(1).unwrap(), Some(StoredBody::Bytes(b)) if b.len() == 100));
        assert!(matches!(disk.read(3).unwrap(), Some(StoredBody::File(_))));
        disk.remove_all(&[1, 2, 3, 4]).unwrap();
        assert_eq!(disk.usage(), Usage::default());
        assert_eq!(disk.file_blocks(), 0);
        assert!(disk.list_all().unwrap().is_empty());
        assert!(disk.read(1).unwrap().is_none());
    }
}
