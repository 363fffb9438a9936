//! Start-up: opening the index database, reading every row, and what happens when the file
//! cannot be read.
//!
//! A damaged `index.redb` (garbage, truncated, overwritten) must not keep hoard down: it is
//! moved aside as `index.redb.damaged-<UTC time>` (kept for a post-mortem, never overwritten),
//! hoard starts with an empty index and says so loudly, and the body files the lost rows named
//! are deleted. They cannot be adopted again: a body file holds only the bytes, while the
//! status, headers and freshness were in the rows. A file that cannot be read for another
//! reason (held by another process, permissions, I/O errors) is not damage and still stops
//! start-up: moving it aside would throw away a good cache.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
};

use super::slots::{GROUPS, PARTS, SLOTS, Slot, UrlHasher};
use super::{ENTRIES, IndexError};
use crate::cache::entry::StoredResponse;
use crate::cache::storage::{BodyId, DiskStorage};

/// The index's file in the cache directory.
pub(super) const FILE_NAME: &str = "index.redb";

/// The layout of the cache directory, recorded in the database's `meta` table:
/// 1. rows in `entries`, every body a file under `objects/` (no `meta` table);
/// 2. as 1, and bodies up to `PACK_LIMIT` packed in the `bodies` table;
/// 3. as 2, and a `slots` row beside each `entries` row (and a `parts` row for parts of
///    bodies, `slots.rs`), with the keys of the URL hash those rows hold in `meta`;
/// 4. as 3, and a `groups` row for each cache group a response is in.
///
/// An older directory is read as it is (a version-1 directory's small bodies stay files until
/// evicted), given the rows it lacks once (reading every head, as hoard did at every start-up
/// before), and stamped 4; a version this hoard does not know stops start-up instead of being
/// rewritten.
pub(super) const FORMAT_VERSION: u64 = 4;

const META: TableDefinition<'static, &'static str, u64> = TableDefinition::new("meta");
const FORMAT_KEY: &str = "format";
const HASH_KEYS: [&str; 2] = ["url-hash-key-0", "url-hash-key-1"];

/// What start-up found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadReport {
    /// Stored entries (most of them are loaded into the map in the background).
    pub entries: u64,
    /// Rows that did not decode when an older format was upgraded, deleted with their bodies
    /// (later, a row that does not decode is found, and deleted, when a lookup reads it).
    pub dropped: u64,
    /// Set when the index file could not be read and an empty one replaced it.
    pub rebuilt: Option<IndexRebuilt>,
    /// The format the directory had when it was written by an older hoard.
    pub upgraded_from: Option<u64>,
}

/// Why an index file could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexDamage {
    /// Not a redb database at all (garbage, or some other kind of file).
    NotADatabase,
    /// A redb database whose structure is broken (truncated, pages overwritten).
    Corrupted,
    /// A redb file format this build cannot read.
    UnreadableFormat,
    /// A redb database, but its table is not hoard's index.
    NotAnIndex,
    /// redb panicked reading it: it does on some broken pages instead of returning an error.
    ReaderPanicked,
}

impl fmt::Display for IndexDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IndexDamage::NotADatabase => "not a redb database",
            IndexDamage::Corrupted => "corrupted",
            IndexDamage::UnreadableFormat => "a file format this hoard cannot read",
            IndexDamage::NotAnIndex => "not hoard's index",
            IndexDamage::ReaderPanicked => "unreadable (the database library panicked)",
        })
    }
}

/// An index file replaced by an empty one: why, and where the old file went. `Copy` (a time
/// rather than a path) so the report stays a plain value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexRebuilt {
    pub damage: IndexDamage,
    /// When the damaged file was moved aside; its new name says so, to the second.
    pub moved_at: SystemTime,
    /// 1 for the first file moved aside within that second, 2 for the second (named with a
    /// `-2`), and so on: an earlier damaged file is never overwritten.
    pub copy: u32,
}

impl IndexRebuilt {
    /// Where the damaged file is now, in cache directory `dir`.
    pub fn moved_to(&self, dir: &Path) -> PathBuf {
        aside_path(dir, self.moved_at, self.copy)
    }
}

/// The database and what start-up reads of it before serving.
pub(super) struct Loaded {
    pub db: Arc<Database>,
    /// How the `slots` rows hash URLs.
    pub hasher: UrlHasher,
    /// The entries that are parts of bodies (`slice.rs`): URL hash, slot, body length. The
    /// rest is streamed by `stream_slots`.
    pub parts: Vec<(u128, Slot, u64)>,
    /// Rows that did not decode when an older format was upgraded; they and their bodies
    /// are to be deleted.
    pub undecodable: Vec<BodyId>,
    pub report: LoadReport,
}

/// Opens the index in `dir` (upgrading an older format) and reads what is needed before
/// serving, replacing a damaged file by an empty one (see the module comment). Touches
/// nothing else: what the rows say is applied by the caller.
pub(super) fn load(dir: &Path) -> Result<Loaded, IndexError> {
    let path = dir.join(FILE_NAME);
    let (damage, reason) = match read_guarded(&path) {
        Ok(loaded) => return Ok(loaded),
        Err(Failure::Other(e)) => return Err(e),
        Err(Failure::Damaged(damage, reason)) => (damage, reason),
    };
    let rebuilt =
        move_aside(dir, damage, SystemTime::now()).map_err(|source| IndexError::MoveAside {
            path: path.clone(),
            reason: reason.clone(),
            source,
        })?;
    tracing::error!(
        "cache: the index {} is damaged ({damage}: {reason}); moved it to {} and starting with \
         an empty index; the cached bodies it named are deleted",
        path.display(),
        rebuilt.moved_to(dir).display(),
    );
    let mut loaded = read(&path)?;
    loaded.report.rebuilt = Some(rebuilt);
    Ok(loaded)
}

enum Failure {
    Damaged(IndexDamage, String),
    Other(IndexError),
}

/// `read`, with a panic inside redb taken for what it is, a file redb cannot make sense of.
fn read_guarded(path: &Path) -> Result<Loaded, Failure> {
    // AssertUnwindSafe: `read` shares nothing with the caller; whatever it built (the
    // database handle, rows read so far) is dropped by the unwinding.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(path))) {
        Ok(Ok(loaded)) => Ok(loaded),
        Ok(Err(e)) => match damage_of(&e) {
            Some(damage) => Err(Failure::Damaged(damage, e.to_string())),
            None => Err(Failure::Other(e)),
        },
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            Err(Failure::Damaged(IndexDamage::ReaderPanicked, message))
        }
    }
}

/// Whether `e` says the file's contents are unreadable (rather than the file being held by
/// another process, or the disk failing).
fn damage_of(e: &IndexError) -> Option<IndexDamage> {
    let IndexError::Database(e) = e else {
        return None;
    };
    match e {
        // What redb says of a file without its magic number.
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            Some(IndexDamage::NotADatabase)
        }
        redb::Error::Corrupted(_) => Some(IndexDamage::Corrupted),
        redb::Error::UpgradeRequired(_) => Some(IndexDamage::UnreadableFormat),
        redb::Error::TableTypeMismatch { .. }
        | redb::Error::TypeDefinitionChanged { .. }
        | redb::Error::TableIsMultimap(_) => Some(IndexDamage::NotAnIndex),
        _ => None,
    }
}

fn read(path: &Path) -> Result<Loaded, IndexError> {
    // redb caches up to 1 GiB of pages by default; the map and the recent heads are the
    // caches that serve lookups, so redb needs only enough for the writer's batches and the
    // rows a lookup reads (a million entries make a 300 MB file, which would otherwise stay
    // resident after loading).
    let db = Database::builder().set_cache_size(16 << 20).create(path)?;
    let prepared = prepare(&db)?;
    let mut report = LoadReport {
        upgraded_from: prepared.upgraded_from,
        dropped: prepared.undecodable.len() as u64,
        ..LoadReport::default()
    };
    let mut parts = Vec::new();
    {
        let txn = db.begin_read()?;
        let slots = txn.open_table(SLOTS)?;
        report.entries = slots.len()?;
        for row in txn.open_table(PARTS)?.iter()? {
            let (body, hash) = row?;
            let (body, hash) = (body.value(), hash.value());
            if let Some(value) = slots.get((hash, body))? {
                let (body_len, weight, _) = value.value();
                parts.push((hash, Slot { body, weight }, body_len));
            }
        }
    }
    Ok(Loaded {
        db: Arc::new(db),
        hasher: prepared.hasher,
        parts,
        undecodable: prepared.undecodable,
        report,
    })
}

/// Calls `each` with every URL's list of slots (and body lengths) in the `slots` rows but
/// those of parts of bodies (read by `load`), until the end or until `cancelled`. Reads
/// fixed-width rows only, never a head.
pub(super) fn stream_slots(
    db: &Database,
    cancelled: &AtomicBool,
    mut each: impl FnMut(u128, &[(Slot, u64)]),
) -> Result<(), redb::Error> {
    let txn = db.begin_read()?;
    let table = txn.open_table(SLOTS)?;
    let mut group = Vec::new();
    let mut current = None;
    for (n, row) in table.iter()?.enumerate() {
        if n % 4096 == 0 && cancelled.load(Ordering::Acquire) {
            return Ok(());
        }
        let (key, value) = row?;
        let ((hash, body), (body_len, weight, part)) = (key.value(), value.value());
        if part {
            continue;
        }
        if current != Some(hash) {
            if let Some(previous) = current {
                each(previous, &group);
            }
            group.clear();
            current = Some(hash);
        }
        group.push((Slot { body, weight }, body_len));
    }
    if let Some(last) = current {
        each(last, &group);
    }
    Ok(())
}

/// What `prepare` did to the database.
struct Prepared {
    upgraded_from: Option<u64>,
    hasher: UrlHasher,
    undecodable: Vec<BodyId>,
}

/// Creates the tables of a new database, upgrades an older format to this one, records the
/// format, and returns the URL hash the `slots` rows use.
fn prepare(db: &Database) -> Result<Prepared, IndexError> {
    let txn = db.begin_write()?;
    let prepared = {
        let existed = txn
            .list_tables()?
            .any(|table| table.name() == ENTRIES.name());
        let entries = txn.open_table(ENTRIES)?;
        let mut slots = txn.open_table(SLOTS)?;
        let mut parts = txn.open_table(PARTS)?;
        let mut groups = txn.open_table(GROUPS)?;
        let mut meta = txn.open_table(META)?;
        let found = match meta.get(FORMAT_KEY)? {
            Some(version) => version.value(),
            // Entries but no meta table: written before formats were recorded.
            None if existed => 1,
            None => FORMAT_VERSION,
        };
        if found > FORMAT_VERSION {
            return Err(IndexError::NewerFormat {
                found,
                known: FORMAT_VERSION,
            });
        }
        let hasher = UrlHasher::with_keys(hash_keys(&mut meta)?);
        let mut undecodable = Vec::new();
        if found < FORMAT_VERSION {
            for row in entries.iter()? {
                let (id, bytes) = row?;
                match StoredResponse::decode(bytes.value()) {
                    Ok(entry) if entry.body == id.value() => {
                        if found < 3 {
                            let (key, value) = hasher.row(&entry);
                            slots.insert(key, value)?;
                            if entry.key.is_part() {
                                parts.insert(entry.body, key.0)?;
                            }
                        }
                        for group in hasher.group_rows(&entry) {
                            groups.insert(group, ())?;
                        }
                    }
                    _ => undecodable.push(id.value()),
                }
            }
        }
        meta.insert(FORMAT_KEY, FORMAT_VERSION)?;
        Prepared {
            upgraded_from: (found < FORMAT_VERSION).then_some(found),
            hasher,
            undecodable,
        }
    };
    txn.commit()?;
    Ok(prepared)
}

/// The URL hash's keys recorded in `meta`, made (at random) when there are none yet.
fn hash_keys(meta: &mut redb::Table<'_, &str, u64>) -> Result<(u64, u64), IndexError> {
    let [first, second] = HASH_KEYS;
    if let (Some(k0), Some(k1)) = (meta.get(first)?, meta.get(second)?) {
        return Ok((k0.value(), k1.value()));
    }
    let mut random = [0u8; 16];
    getrandom::getrandom(&mut random)
        .map_err(|e| IndexError::Storage(std::io::Error::other(e.to_string()).into()))?;
    let k0 = u64::from_le_bytes(random[..8].try_into().unwrap_or_default());
    let k1 = u64::from_le_bytes(random[8..].try_into().unwrap_or_default());
    meta.insert(first, k0)?;
    meta.insert(second, k1)?;
    Ok((k0, k1))
}

/// Renames the index file in `dir` to a name no earlier damaged file has.
fn move_aside(dir: &Path, damage: IndexDamage, now: SystemTime) -> std::io::Result<IndexRebuilt> {
    let from = dir.join(FILE_NAME);
    for copy in 1..=1000 {
        let to = aside_path(dir, now, copy);
        // Checked, then renamed: the directory lock keeps every other hoard out in between.
        if !std::fs::exists(&to)? {
            std::fs::rename(&from, &to)?;
            return Ok(IndexRebuilt {
                damage,
                moved_at: now,
                copy,
            });
        }
    }
    Err(std::io::Error::other(
        "a thousand damaged index files were moved aside this second already",
    ))
}

fn aside_path(dir: &Path, at: SystemTime, copy: u32) -> PathBuf {
    let suffix = if copy > 1 {
        format!("-{copy}")
    } else {
        String::new()
    };
    dir.join(format!("{FILE_NAME}.damaged-{}{suffix}", utc_stamp(at)))
}

/// `20261201T214300Z`: ISO 8601 basic format, UTC, sortable and free of `:` (which some file
/// systems and tools dislike in names).
fn utc_stamp(at: SystemTime) -> String {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Which body files start-up removes as orphans.
pub(super) enum Sweep {
    /// Files from earlier runs that no row names (a crash between rename and commit). The
    /// sweep runs while hoard already serves, so it only looks at files written before.
    WrittenBefore(SystemTime),
    /// These files, listed before anything was stored: with a rebuilt index, all of them.
    Listed(Vec<BodyId>),
}

/// Deletes the body files `sweep` picks that no row in `known` (sorted) names, until
/// `cancelled`. (Packed bodies are written and deleted with their rows, so they are never
/// orphans.)
pub(super) fn remove_orphans(
    disk: &DiskStorage,
    known: &[BodyId],
    sweep: Sweep,
    cancelled: &dyn Fn() -> bool,
) {
    let ids = match sweep {
        Sweep::Listed(ids) => ids,
        Sweep::WrittenBefore(opened_at) => {
            disk.list_written_before(opened_at).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cache: cannot list body files");
                Vec::new()
            })
        }
    };
    let orphans: Vec<_> = ids
        .into_iter()
        .filter(|id| known.binary_search(id).is_err())
        .collect();
    if !orphans.is_empty() {
        tracing::info!(
            files = orphans.len(),
            "cache: removing body files the index does not know"
        );
    }
    for id in orphans {
        if cancelled() {
            return;
        }
        if let Err(e) = disk.remove_orphan(id) {
            tracing::warn!(body = %format_args!("{id:016x}"), error = %e, "cache: cannot remove an orphan body");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn stamps_are_utc_in_iso_basic_format() {
        assert_eq!(utc_stamp(at(0)), "19700101T000000Z");
        assert_eq!(utc_stamp(at(951_868_799)), "20000229T235959Z");
        assert_eq!(utc_stamp(at(1_796_161_380)), "20261201T214300Z");
    }

    #[test]
    fn garbage_and_truncated_files_are_damage_and_are_moved_aside_without_overwriting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let loaded = read(&path).unwrap();
        drop(loaded);
        let good = std::fs::read(&path).unwrap();
        let now = at(1_796_161_380);
        // Garbage, a truncated file, and a good header before overwritten pages (on which
        // redb 4.6 panics rather than returning an error).
        let mut overwritten = good.clone();
        overwritten[4096..].fill(0xab);
        let cases = [
            b"not a database at all".repeat(50),
            good[..good.len() / 2].to_vec(),
            overwritten,
        ];
        for (n, bytes) in cases.into_iter().enumerate() {
            std::fs::write(&path, &bytes).unwrap();
            let Err(Failure::Damaged(damage, _)) = read_guarded(&path) else {
                panic!("case {n}: damage expected");
            };
            let rebuilt = move_aside(dir.path(), damage, now).unwrap();
            assert_eq!(rebuilt.copy as usize, n + 1);
            let aside = rebuilt.moved_to(dir.path());
            assert_eq!(
                std::fs::read(&aside).unwrap(),
                bytes,
                "case {n}: kept as it was"
            );
            assert!(!path.exists());
        }
        let names: std::collections::HashSet<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            names.contains("index.redb.damaged-20261201T214300Z"),
            "{names:?}"
        );
        assert!(
            names.contains("index.redb.damaged-20261201T214300Z-2"),
            "{names:?}"
        );
        assert!(
            names.contains("index.redb.damaged-20261201T214300Z-3"),
            "{names:?}"
        );
    }

    #[test]
    fn a_file_that_cannot_be_opened_for_another_reason_is_not_damage() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: an I/O error, not a damaged index.
        std::fs::create_dir(dir.path().join(FILE_NAME)).unwrap();
        assert!(matches!(
            read_guarded(&dir.path().join(FILE_NAME)),
            Err(Failure::Other(_))
        ));
        assert!(load(dir.path()).is_err());
        assert!(dir.path().join(FILE_NAME).is_dir(), "left where it was");
    }
}
