//! The cache directory's lock: one hoard (or `hoard cache`) per directory.
//!
//! Two processes on one directory would destroy each other's work: start-up empties `tmp/`
//! (the other's fills in flight) and sweeps body files its index does not name (the other's
//! new bodies). redb's own lock on `index.redb` is taken too late to prevent that, so the
//! first thing done with a directory is taking an exclusive advisory lock (flock) on
//! `DIR/lock`. The kernel drops it when the process ends, however it ends, so a crash never
//! leaves a stale lock behind. The file also names the holder's pid, for the error message.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Held while the directory is in use; dropping it releases the lock.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "cache directory {dir} is in use by another hoard or `hoard cache`{holder} (it holds the lock on {lock})",
        dir = .dir.display(),
        lock = .lock.display(),
        holder = .pid.map(|pid| format!(", pid {pid}")).unwrap_or_default()
    )]
    InUse {
        dir: PathBuf,
        lock: PathBuf,
        /// The pid the holder wrote into the lock file, when it could be read.
        pid: Option<u32>,
    },
    #[error("cannot lock the cache directory with {}: {source}", .lock.display())]
    Io {
        lock: PathBuf,
        source: std::io::Error,
    },
}

impl DirLock {
    /// Takes the lock on `dir/lock` without waiting: `LockError::InUse` when another process
    /// (or another open cache in this one) holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        let lock = dir.join("lock");
        let io = |source| LockError::Io {
            lock: lock.clone(),
            source,
        };
        // Not truncated on open: until we hold the lock, the pid in it is the holder's.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(LockError::InUse {
                    dir: dir.to_path_buf(),
                    lock,
                    pid,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // Best effort: the pid only makes the message of a refused second opener better.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_opener_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        match DirLock::acquire(dir.path()) {
            Err(LockError::InUse { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("a second lock while the first is held: {other:?}"),
        }
        drop(first);
        DirLock::acquire(dir.path()).unwrap();
    }
}
