//! The disk tier: one file per body under `objects/XX/`, named by its random id.
//!
//! Write protocol (crash safety): the body goes to `tmp/ID`, is fsynced, renamed to
//! `objects/XX/ID`, and the directory is fsynced; only then does the index learn of it. A crash
//! at any point leaves either no file, a temporary file (deleted at the next start), or a
//! complete file the index may not know (an orphan, deleted at the next start).

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::{BodyId, BodyWriter, DirLock, Storage, StorageError, StoredBody, Usage};

pub struct DiskStorage {
    objects: PathBuf,
    tmp: PathBuf,
    usage: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    bytes: AtomicU64,
    objects: AtomicU64,
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
            usage: Arc::default(),
        })
    }

    fn path(&self, id: BodyId) -> PathBuf {
        self.objects
            .join(format!("{:02x}", id & 0xff))
            .join(format!("{id:016x}"))
    }

    /// Counts a body that is already on disk (found at start-up) toward usage.
    pub fn adopt(&self, len: u64) {
        self.usage.bytes.fetch_add(len, Ordering::Relaxed);
        self.usage.objects.fetch_add(1, Ordering::Relaxed);
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

    /// Removes a file the index does not know, without touching usage counters.
    pub fn remove_orphan(&self, id: BodyId) -> Result<(), StorageError> {
        match fs::remove_file(self.path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl Storage for DiskStorage {
    fn writer(
        &self,
        id: BodyId,
        _expected_len: Option<u64>,
    ) -> Result<Option<Box<dyn BodyWriter>>, StorageError> {
        let tmp_path = self.tmp.join(format!("{id:016x}"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp_path)?;
        Ok(Some(Box::new(DiskWriter {
            file: Some(BufWriter::with_capacity(256 * 1024, file)),
            tmp_path,
            final_path: self.path(id),
            written: 0,
            usage: self.usage.clone(),
        })))
    }

    fn read(&self, id: BodyId) -> Result<Option<StoredBody>, StorageError> {
        match File::open(self.path(id)) {
            Ok(file) => Ok(Some(StoredBody::File(file))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn remove(&self, id: BodyId) -> Result<(), StorageError> {
        let path = self.path(id);
        let len = match fs::metadata(&path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        fs::remove_file(&path)?;
        self.usage.bytes.fetch_sub(len, Ordering::Relaxed);
        self.usage.objects.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    fn usage(&self) -> Usage {
        Usage {
            bytes: self.usage.bytes.load(Ordering::Relaxed),
            objects: self.usage.objects.load(Ordering::Relaxed),
        }
    }
}

struct DiskWriter {
    file: Option<BufWriter<File>>,
    tmp_path: PathBuf,
    final_path: PathBuf,
    written: u64,
    usage: Arc<Counters>,
}

impl BodyWriter for DiskWriter {
    fn write(&mut self, chunk: &Bytes) -> Result<bool, StorageError> {
        if let Some(file) = &mut self.file {
            file.write_all(chunk)?;
            self.written += chunk.len() as u64;
        }
        Ok(true)
    }

    fn finish(mut self: Box<Self>) -> Result<(), StorageError> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        if let Err(e) = commit(file, &self.tmp_path, &self.final_path) {
            let _ = fs::remove_file(&self.tmp_path);
            return Err(e.into());
        }
        self.usage.bytes.fetch_add(self.written, Ordering::Relaxed);
        self.usage.objects.fetch_add(1, Ordering::Relaxed);
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
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
