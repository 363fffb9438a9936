//! Keeps what the cache occupies on disk within `--cache-disk`.
//!
//! Entries are weighed by an estimate of their footprint (`StoredResponse::weight`) and the
//! map's capacity starts at the bound, so eviction alone keeps the disk near it. The estimate
//! cannot know how full the database's B-tree pages really are, so this measures what the disk
//! holds (the database file's allocated blocks plus the body files' blocks) and moves the
//! map's capacity by the difference. The database file never shrinks by itself (freed pages
//! are reused, not returned), so the capacity is lowered only when the file grew: a file that
//! is large but no longer growing is being refilled in place and needs no further correction.
//!
//! Owns that correction and nothing else; it runs on the index's writer thread.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::EntryMap;
use super::load::FILE_NAME;
use crate::cache::storage::DiskStorage;

/// How often the disk is measured (a `stat` of one file), at most.
const INTERVAL: Duration = Duration::from_millis(500);

pub(super) struct DiskBound {
    bound: u64,
    database: PathBuf,
    last_check: Option<Instant>,
    /// The database file's size at the last correction.
    database_high_water: u64,
}

impl DiskBound {
    pub(super) fn new(dir: &Path, bound: u64) -> DiskBound {
        DiskBound {
            bound,
            database: dir.join(FILE_NAME),
            last_check: None,
            database_high_water: 0,
        }
    }

    /// Below the bound by a margin: the database grows in steps, and bodies being written are
    /// not counted until they are stored.
    fn target(&self) -> u64 {
        self.bound - self.bound / 20
    }

    /// What the database file and the body files occupy now.
    fn occupied(&self, disk: &DiskStorage) -> Option<(u64, u64)> {
        let database = std::fs::metadata(&self.database).ok()?.blocks() * 512;
        Some((database, database + disk.file_blocks()))
    }

    /// Whether the cache occupies more than the bound now.
    pub(super) fn exceeded(&self, disk: &DiskStorage) -> bool {
        self.occupied(disk)
            .is_some_and(|(_, occupied)| occupied > self.bound)
    }

    /// Measures the disk, if it is time, and corrects the map's capacity.
    pub(super) fn check(&mut self, map: &EntryMap, disk: &DiskStorage) {
        if self.last_check.is_some_and(|at| at.elapsed() < INTERVAL) {
            return;
        }
        self.last_check = Some(Instant::now());
        let Some((database, occupied)) = self.occupied(disk) else {
            return;
        };
        let capacity = map.capacity();
        let target = self.target();
        let corrected = if occupied > self.bound && database > self.database_high_water {
            self.database_high_water = database;
            // Half the excess at a time: the file's growth lags the evictions that answer it
            // (pages a commit replaced are freed only by the next one).
            capacity
                .saturating_sub((occupied - target) / 2)
                .max(self.bound / 2)
        } else if occupied < target - target / 5 && map.weight() > capacity - capacity / 10 {
            // Full, yet well under the bound: the estimate is too high.
            (capacity + (target - occupied) / 2).min(self.bound * 2)
        } else {
            return;
        };
        if corrected != capacity {
            tracing::debug!(
                occupied,
                database,
                bound = self.bound,
                from = capacity,
                to = corrected,
                "cache: disk bound corrects the index capacity"
            );
            map.set_capacity(corrected);
        }
    }
}
