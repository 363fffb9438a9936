//! Keeps what the cache occupies on disk within `--cache-disk`, at every moment.
//!
//! Entries are weighed by an estimate of their footprint (`StoredResponse::weight`): body
//! files their whole blocks, the rest (rows, packed bodies) an estimate of what they take in
//! the database. The body files are measured exactly; the database is the hard part. redb
//! never shrinks its file while open, grows it by doubling (up to a 4 GiB region, then a
//! region or two at a time) when its live pages no longer fit, and copy-on-write churn soon
//! writes every page of the file, so its whole length ends up occupied. Measuring and
//! evicting after the file grew therefore comes too late: a 4 MiB bound became 5.8 MB on
//! disk during a storm of small fills.
//!
//! So this looks ahead: the database may grow only while its next size still fits beside
//! the body files (`database_room`), and the map's capacity holds the estimated live
//! database data under a fraction of that length, so redb never needs the step that would
//! not fit. If the file grows anyway (the estimate was low), the fraction is lowered from
//! what was seen. What is left over when the bound is not a size redb can grow to is not
//! used for rows; it is the price of not controlling the database's growth.
//!
//! Owns that correction and nothing else; it runs on the index's writer thread.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::EntryMap;
use super::load::FILE_NAME;
use crate::cache::storage::DiskStorage;

/// How often the disk is measured (a `stat` of one file), at most.
const INTERVAL: Duration = Duration::from_millis(100);

/// redb's region: its file doubles up to this size, then grows a region at a time.
const REGION: u64 = 4 << 30;

/// The share of the database file's length the estimated live data may fill. redb grew its
/// file at estimates of 0.93–1.17 of the length while filling, but at 0.8 under steady churn
/// (every commit copies the pages it changes, and freed pages are reused one commit later);
/// this leaves room for that and for fragmentation.
const FILL: f64 = 0.6;

/// The lowest the fill share is lowered to by growth the estimate did not foresee.
const MIN_FILL: f64 = 0.25;

/// At most what redb's file is after its next growth from `len` bytes (redb 4: the usable
/// space doubles while there is no full region; after that the trailing region is filled
/// and at most one more added). Checked against redb itself in the tests below.
fn next_length(len: u64) -> u64 {
    if len < REGION {
        2 * len
    } else {
        len + 2 * REGION
    }
}

/// The size the database file may have: the largest it can grow to from `len` bytes without
/// passing `budget`; or, when it is already past `budget` (the body files took the room
/// since), the size below `budget` its live data must shrink back into.
fn database_room(len: u64, budget: u64) -> u64 {
    let mut room = len.max(1);
    while room > budget && room > 1 {
        room = if room <= 2 * REGION {
            room / 2
        } else {
            room - 2 * REGION
        };
    }
    while next_length(room) <= budget {
        room = next_length(room);
    }
    room
}

/// One look at the cache directory.
#[derive(Debug, Clone, Copy)]
struct Measured {
    /// The database file's length: what it will occupy once churn has written every page.
    database_length: u64,
    /// The database file's allocated blocks now.
    database_blocks: u64,
    /// The body files' blocks.
    files: u64,
}

pub(super) struct DiskBound {
    bound: u64,
    database: PathBuf,
    last_check: Option<Instant>,
    /// What the last check measured.
    last: Option<Measured>,
    fill: f64,
}

impl DiskBound {
    pub(super) fn new(dir: &Path, bound: u64) -> DiskBound {
        DiskBound {
            bound,
            database: dir.join(FILE_NAME),
            last_check: None,
            last: None,
            fill: FILL,
        }
    }

    /// What the directory is planned to: below the bound by a margin, for bodies being
    /// written (counted once stored) and for growth between two checks.
    fn target(&self) -> u64 {
        self.bound - self.bound / 20
    }

    fn measure(&self, disk: &DiskStorage) -> Option<Measured> {
        let meta = std::fs::metadata(&self.database).ok()?;
        Some(Measured {
            database_length: meta.len(),
            database_blocks: meta.blocks() * 512,
            files: disk.file_blocks(),
        })
    }

    /// Whether the cache occupies more than the bound now (what `du` would count).
    pub(super) fn exceeded(&self, disk: &DiskStorage) -> bool {
        self.measure(disk)
            .is_some_and(|m| m.database_blocks + m.files > self.bound)
    }

    /// Measures the disk, if it is time, and sets the map's capacity.
    pub(super) fn check(&mut self, map: &EntryMap, disk: &DiskStorage) {
        if self.last_check.is_some_and(|at| at.elapsed() < INTERVAL) {
            return;
        }
        self.last_check = Some(Instant::now());
        let Some(measured) = self.measure(disk) else {
            return;
        };
        // The map weighs the body files' blocks plus its estimate of the database's data.
        let database_estimate = map.weight().saturating_sub(measured.files);
        self.learn(measured, database_estimate);
        let corrected = self.capacity(measured, database_estimate);
        // A dead band: at the bound, a capacity set to the weight itself would creep down
        // by an entry's worth at each check (evictions free whole entries).
        if corrected.abs_diff(map.capacity()) > self.bound / 100 {
            tracing::debug!(
                ?measured,
                database_estimate,
                bound = self.bound,
                from = map.capacity(),
                to = corrected,
                "cache: disk bound sets the index capacity"
            );
            map.set_capacity(corrected);
        }
    }

    /// The database took more room than the estimate left it: its file grew past what fits,
    /// or its blocks kept growing with the cache at the bound. Its live data may fill less
    /// of the file from now on.
    fn learn(&mut self, measured: Measured, database_estimate: u64) {
        if let Some(last) = self.last {
            let near = measured.database_blocks + measured.files > self.target();
            let grown_past = measured.database_length > last.database_length
                && measured.database_length + measured.files > self.bound;
            let still_growing = near && measured.database_blocks > last.database_blocks;
            if grown_past || still_growing {
                let seen = database_estimate.max(1) as f64 / last.database_length.max(1) as f64;
                self.fill = (self.fill.min(seen) * 0.9).max(MIN_FILL);
                tracing::warn!(
                    ?measured,
                    bound = self.bound,
                    fill = self.fill,
                    "cache: the index database outgrew its room in the disk bound; holding less in it"
                );
            }
        }
        self.last = Some(measured);
    }

    /// What the map may weigh. Two limits: the database's estimated data within its share
    /// of the room it may grow to; and the body files within what is left beside the
    /// database, counting the database at its next size once it is half way to needing it.
    fn capacity(&self, measured: Measured, database_estimate: u64) -> u64 {
        let Measured {
            database_length,
            database_blocks,
            files,
        } = measured;
        let target = self.target();
        let room = database_room(database_length, target.saturating_sub(files));
        let database_share = (room as f64 * self.fill) as u64;
        let half_way = database_estimate as f64 > self.fill * database_length as f64 / 2.0;
        let database_takes = if half_way {
            room.min(next_length(database_length))
        } else {
            database_length
        }
        .max(database_blocks);
        let within_room = files + database_share;
        let beside_the_database = target.saturating_sub(database_takes) + database_estimate;
        within_room
            .min(beside_the_database)
            .clamp(self.bound / 16, self.bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_may_grow_only_to_a_size_that_fits() {
        assert_eq!(database_room(1 << 20, 4 << 20), 4 << 20);
        assert_eq!(database_room(1 << 20, (4 << 20) - 1), 2 << 20);
        // A file already past the budget: its data goes back under it.
        assert_eq!(database_room(8 << 20, (3 << 20) + 5), 2 << 20);
        assert_eq!(database_room(REGION, 3 * REGION), 3 * REGION);
    }

    /// The growth `next_length` assumes is redb's own: fill a database and watch its file.
    #[test]
    fn redb_grows_its_file_no_more_than_next_length_says() {
        const TABLE: redb::TableDefinition<'static, u64, &'static [u8]> =
            redb::TableDefinition::new("t");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let db = redb::Database::create(&path).unwrap();
        let mut length = std::fs::metadata(&path).unwrap().len();
        let mut growths = 0;
        let value = vec![7u8; 100];
        for batch in 0..400u64 {
            let txn = db.begin_write().unwrap();
            {
                let mut table = txn.open_table(TABLE).unwrap();
                for n in 0..100 {
                    table.insert(batch * 100 + n, value.as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
            let now = std::fs::metadata(&path).unwrap().len();
            if now != length {
                assert!(now <= next_length(length), "{length} grew to {now}");
                growths += 1;
                length = now;
            }
        }
        assert!(growths >= 4, "the file grew {growths} times");
    }

    #[test]
    fn capacity_keeps_the_database_within_its_room_and_the_files_beside_it() {
        let mut bound = DiskBound::new(Path::new("/nonexistent"), 4 << 20);
        let share = |room: u64| (room as f64 * FILL) as u64;
        // 2 MiB is the largest size reachable from 1 MiB beside 1 MiB of files (and the margin).
        let with_files = Measured {
            database_length: 1 << 20,
            database_blocks: 1 << 20,
            files: 1 << 20,
        };
        assert_eq!(
            bound.capacity(with_files, 1 << 19),
            (1 << 20) + share(2 << 20)
        );
        // A database with little in it: the files may have all but its length.
        let mostly_files = Measured {
            files: (5 << 20) / 2,
            ..with_files
        };
        let target = bound.target();
        assert_eq!(
            bound.capacity(mostly_files, 1 << 10),
            target - (1 << 20) + (1 << 10)
        );
        // Files that grew after the database did: the database goes back into 1 MiB, and
        // the files may keep only what is left beside its blocks.
        let crowded = Measured {
            database_length: 2 << 20,
            database_blocks: 2 << 20,
            files: 3 << 20,
        };
        assert_eq!(bound.capacity(crowded, 1 << 20), target - (1 << 20));
        assert_eq!(
            bound.capacity(crowded, 1 << 18),
            target - (2 << 20) + (1 << 18)
        );
        // A database that grew past the bound holds less from then on.
        bound.learn(with_files, 1 << 19);
        let grown = Measured {
            database_length: 4 << 20,
            ..with_files
        };
        bound.learn(grown, 1 << 19);
        assert!(bound.fill < FILL, "{}", bound.fill);
    }
}
