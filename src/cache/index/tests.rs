//! The index's tests: replacement, persistence, damage, formats and orphans.

use super::*;
use crate::cache::policy::Freshness;
use crate::cache::storage::Storage;
use http::{HeaderMap, HeaderValue, StatusCode};
use redb::ReadableDatabase;

pub(super) fn entry(i: u64) -> Arc<StoredResponse> {
    let mut headers = HeaderMap::new();
    headers.insert("cache-control", HeaderValue::from_static("max-age=600"));
    headers.insert("content-type", HeaderValue::from_static("text/html"));
    Arc::new(StoredResponse {
        spelling: None,
        key: CacheKey::from_url(format!("http://example.com/item/{i}")),
        vary: Vec::new(),
        status: StatusCode::OK,
        reason: None,
        headers,
        freshness: Freshness {
            response_time: 1,
            initial_age: 0,
            lifetime: 600,
            must_revalidate: false,
            no_cache: false,
            stale_while_revalidate: None,
            stale_if_error: None,
        },
        body: i + 1,
        body_len: 1024,
        checksum: [0; 32],
    })
}

/// Inserts `entry` at its key's current generation.
pub(super) fn insert_now(index: &Index, entry: Arc<StoredResponse>) {
    let generation = index.generation(&entry.key);
    assert_eq!(index.insert(entry, generation), Published::Yes);
}

pub(super) fn open(dir: &Path) -> (Index, LoadReport) {
    open_with_disk(dir).0
}

fn open_with_disk(dir: &Path) -> ((Index, LoadReport), Arc<Tiers>) {
    let lock = DirLock::acquire(dir).unwrap();
    let disk = Arc::new(Tiers::open(dir, &lock, 1 << 20).unwrap());
    let (index, opened) = Index::open(dir, lock, 1 << 40, 1 << 20, 1 << 20, disk.clone()).unwrap();
    ((index, opened.report), disk)
}

fn store_body(tiers: &Tiers, id: BodyId) {
    let mut writer = tiers.disk().writer(id, None).unwrap().unwrap();
    writer.write(&bytes::Bytes::from_static(b"body")).unwrap();
    writer.finish().unwrap();
}

#[test]
fn replacing_a_list_deletes_only_the_bodies_it_no_longer_names() {
    let dir = tempfile::tempdir().unwrap();
    let ((index, _), disk) = open_with_disk(dir.path());
    let exists = |id| disk.disk().read(id).unwrap().is_some();
    let first = entry(0);
    store_body(&disk, first.body);
    insert_now(&index, first.clone());
    // A 304 refresh keeps the body.
    let mut refreshed = (*first).clone();
    refreshed
        .headers
        .insert("x-refreshed", HeaderValue::from_static("1"));
    insert_now(&index, Arc::new(refreshed));
    // A second variant keeps the first.
    let mut second = (*first).clone();
    second.vary = vec![("accept".into(), Some("text/plain".into()))];
    second.body = 77;
    store_body(&disk, 77);
    insert_now(&index, Arc::new(second));
    index.flush();
    assert!(exists(first.body), "the refreshed entry's body survived");
    assert!(exists(77));
    // A new response for the first variant replaces its body.
    let mut replacement = (*first).clone();
    replacement.body = 78;
    store_body(&disk, 78);
    insert_now(&index, Arc::new(replacement));
    index.flush();
    assert!(!exists(first.body), "the replaced body is deleted");
    assert!(exists(77) && exists(78));
}

#[test]
fn entries_persist_across_reopen_and_removals_stick() {
    let dir = tempfile::tempdir().unwrap();
    let (index, _) = open(dir.path());
    for i in 0..10 {
        insert_now(&index, entry(i));
    }
    assert_eq!(index.remove(&entry(3).key), 1);
    index.close();
    drop(index);
    let (index, report) = open(dir.path());
    assert_eq!(report.entries, 9);
    assert!(index.get(&entry(0).key).is_some());
    assert!(index.get(&entry(3).key).is_none());
}

#[tokio::test]
async fn a_damaged_database_is_moved_aside_and_its_bodies_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let ((index, _), disk) = open_with_disk(dir.path());
    let stored = entry(0);
    store_body(&disk, stored.body);
    let generation = index.generation(&stored.key);
    assert_eq!(
        index.insert_durable(stored.clone(), generation).await,
        Published::Yes
    );
    index.close();
    drop((index, disk));
    std::fs::write(dir.path().join("index.redb"), b"garbage".repeat(100)).unwrap();

    let ((index, report), disk) = open_with_disk(dir.path());
    let rebuilt = report.rebuilt.expect("the index was rebuilt");
    assert_eq!(rebuilt.damage, IndexDamage::NotADatabase);
    let aside = rebuilt.moved_to(dir.path());
    assert_eq!(std::fs::read(&aside).unwrap(), b"garbage".repeat(100));
    assert_eq!((report.entries, index.len()), (0, 0));
    // The loader sweeps once it is done.
    index.wait_loaded();
    assert!(
        disk.disk().list_all().unwrap().is_empty(),
        "the orphaned body is gone"
    );
    // The fresh database works, and a reopen finds it healthy.
    insert_now(&index, entry(1));
    index.close();
    drop((index, disk));
    let (index, report) = open(dir.path());
    assert!(report.rebuilt.is_none());
    assert!(index.get(&entry(1).key).is_some());
}

/// `entry(i)` with a real body of `len` bytes, stored as a file the way hoard did before
/// packing (format 1).
fn entry_with_body(dir: &Path, i: u64, len: usize) -> Arc<StoredResponse> {
    let body: Vec<u8> = (0..len).map(|n| (n % 199) as u8).collect();
    let mut stored = (*entry(i)).clone();
    stored.body_len = len as u64;
    stored.checksum = *blake3::hash(&body).as_bytes();
    let shard = dir
        .join("objects")
        .join(format!("{:02x}", stored.body & 0xff));
    std::fs::create_dir_all(&shard).unwrap();
    std::fs::write(shard.join(format!("{:016x}", stored.body)), &body).unwrap();
    Arc::new(stored)
}

#[test]
fn a_format_1_directory_is_read_as_it_is_and_stamped_with_the_current_format() {
    let dir = tempfile::tempdir().unwrap();
    // What a hoard before packing left: an `entries` table, no `meta`, small bodies as files.
    let old = entry_with_body(dir.path(), 5, 100);
    {
        let db = redb::Database::create(dir.path().join(load::FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(ENTRIES)
            .unwrap()
            .insert(old.body, old.encode().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let ((index, report), tiers) = open_with_disk(dir.path());
    assert_eq!(report.upgraded_from, Some(1));
    assert_eq!(report.entries, 1);
    assert!(index.get(&old.key).is_some());
    tiers
        .verify(old.body_ref())
        .expect("the old body file still serves");
    // A new small body is packed beside it; both survive a restart.
    let mut new = (*entry(6)).clone();
    store_body(&tiers, new.body);
    new.body_len = 4;
    new.checksum = *blake3::hash(b"body").as_bytes();
    insert_now(&index, Arc::new(new.clone()));
    index.close();
    drop((index, tiers));
    let ((index, report), tiers) = open_with_disk(dir.path());
    assert_eq!(report.upgraded_from, None, "stamped once");
    index.wait_loaded();
    tiers.verify(old.body_ref()).unwrap();
    tiers.verify(new.body_ref()).unwrap();
}

#[test]
fn a_directory_from_a_newer_hoard_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(load::FILE_NAME);
    open(dir.path()).0.close();
    let meta: redb::TableDefinition<'_, &str, u64> = redb::TableDefinition::new("meta");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(meta).unwrap().insert("format", 99).unwrap();
        txn.commit().unwrap();
    }
    let lock = DirLock::acquire(dir.path()).unwrap();
    let tiers = Arc::new(Tiers::open(dir.path(), &lock, 1 << 20).unwrap());
    let Err(error) = Index::open(dir.path(), lock, 1 << 40, 1 << 20, 1 << 20, tiers) else {
        panic!("a newer format must stop start-up");
    };
    assert!(error.to_string().contains("format 99"), "{error}");
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let format = txn
        .open_table(meta)
        .unwrap()
        .get("format")
        .unwrap()
        .unwrap()
        .value();
    assert_eq!(format, 99, "not rewritten");
}

#[test]
fn packed_bodies_reach_the_disk_only_with_their_rows() {
    let dir = tempfile::tempdir().unwrap();
    let ((index, _), tiers) = open_with_disk(dir.path());
    let kept = entry(1);
    store_body(&tiers, kept.body);
    insert_now(&index, kept.clone());
    // Stored, but its row never committed (the process stopped first).
    store_body(&tiers, 999);
    index.close();
    drop((index, tiers));
    let ((index, _), tiers) = open_with_disk(dir.path());
    index.wait_loaded();
    assert!(tiers.disk().read(kept.body).unwrap().is_some());
    assert!(
        tiers.disk().read(999).unwrap().is_none(),
        "no body without its row"
    );
    assert!(
        tiers.disk().list_all().unwrap().is_empty(),
        "both were packed"
    );
}

#[test]
fn a_format_2_directory_gets_its_slots_rows_once() {
    let dir = tempfile::tempdir().unwrap();
    // What hoard wrote before `slots`: `entries`, `meta` saying 2, one row that no longer
    // decodes.
    let old = entry(5);
    {
        let db = redb::Database::create(dir.path().join(load::FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        let mut entries = txn.open_table(ENTRIES).unwrap();
        entries.insert(old.body, old.encode().as_slice()).unwrap();
        entries.insert(999, &b"\x07garbage"[..]).unwrap();
        drop(entries);
        let meta: redb::TableDefinition<'_, &str, u64> = redb::TableDefinition::new("meta");
        txn.open_table(meta).unwrap().insert("format", 2).unwrap();
        txn.commit().unwrap();
    }
    let (index, report) = open(dir.path());
    assert_eq!(report.upgraded_from, Some(2));
    assert_eq!((report.entries, report.dropped), (1, 1));
    let found = index.get(&old.key).expect("the old entry is found");
    assert_eq!(found[0].headers, old.headers);
    index.close();
    drop(index);
    let (index, report) = open(dir.path());
    assert_eq!(report.upgraded_from, None, "upgraded once");
    assert_eq!((report.entries, report.dropped), (1, 0));
    assert!(index.get(&old.key).is_some());
}

#[test]
fn a_head_that_no_longer_decodes_is_a_miss_and_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let (index, _) = open(dir.path());
    insert_now(&index, entry(1));
    insert_now(&index, entry(2));
    index.close();
    drop(index);
    {
        let db = redb::Database::open(dir.path().join(load::FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(ENTRIES)
            .unwrap()
            .insert(entry(1).body, &b"\x01\xffdamaged"[..])
            .unwrap();
        txn.commit().unwrap();
    }
    let (index, report) = open(dir.path());
    assert_eq!(report.entries, 2, "start-up reads no head");
    assert!(index.get(&entry(1).key).is_none());
    assert!(index.get(&entry(2).key).is_some());
    assert!(index.flush());
    assert_eq!(index.len(), 1);
    index.close();
    drop(index);
    let (_, report) = open(dir.path());
    assert_eq!(report.entries, 1, "its rows are gone");
}

#[test]
fn heads_are_read_from_their_rows_once_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (index, _) = open(dir.path());
    // More heads than the recent ones can hold (1 MiB of them in these tests).
    for i in 0..5_000 {
        insert_now(&index, entry(i));
    }
    assert!(index.flush());
    for i in (0..5_000).step_by(7) {
        let found = index.get(&entry(i).key).expect("every entry is found");
        assert_eq!(found[0].key, entry(i).key);
        assert_eq!(found[0].freshness, entry(i).freshness);
    }
    // A URL never stored is a miss.
    assert!(
        index
            .get(&CacheKey::from_url("http://example.com/other".into()))
            .is_none()
    );
}

fn open_unloaded(dir: &Path) -> (Index, Loader) {
    let lock = DirLock::acquire(dir).unwrap();
    let tiers = Arc::new(Tiers::open(dir, &lock, 1 << 20).unwrap());
    let (index, _, loader) =
        Index::open_unloaded(dir, lock, 1 << 40, 1 << 20, 1 << 20, tiers).unwrap();
    (index, loader)
}

#[test]
fn what_requests_change_while_loading_wins_over_the_stored_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (index, _) = open(dir.path());
    for i in 0..10 {
        insert_now(&index, entry(i));
    }
    index.close();
    drop(index);

    let (index, loader) = open_unloaded(dir.path());
    assert!(index.get(&entry(1).key).is_none(), "not loaded yet: a miss");
    // While loading: one URL purged, one stored anew, and a listing sees every row.
    assert_eq!(index.urls_with_prefix("http://example.com/item/").len(), 10);
    index.remove(&entry(2).key);
    let mut newer = (*entry(3)).clone();
    newer.body = 1003;
    insert_now(&index, Arc::new(newer));
    loader.run();
    assert!(index.get(&entry(1).key).is_some(), "loaded");
    assert!(
        index.get(&entry(2).key).is_none(),
        "the purge is not undone"
    );
    let third = index.get(&entry(3).key).unwrap();
    assert_eq!(
        third.iter().map(|v| v.body).collect::<Vec<_>>(),
        [1003],
        "the newer response, alone"
    );
    index.close();
    drop(index);

    let (index, report) = open(dir.path());
    assert_eq!(
        report.entries, 9,
        "the purged and the replaced rows are gone"
    );
    assert!(index.get(&entry(2).key).is_none());
    assert_eq!(index.get(&entry(3).key).unwrap()[0].body, 1003);
}

#[test]
fn a_cancelled_load_leaves_the_rest_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let (index, _) = open(dir.path());
    for i in 0..100 {
        insert_now(&index, entry(i));
    }
    index.close();
    drop(index);
    let (index, loader) = open_unloaded(dir.path());
    let loading = Arc::clone(&index.loading);
    let closing = std::thread::spawn(move || index.close());
    // The close waits for the loader, which stops at once.
    while !loading.is_cancelled() {
        std::thread::yield_now();
    }
    loader.run();
    assert!(closing.join().unwrap());
    let (index, report) = open(dir.path());
    assert_eq!(report.entries, 100);
    assert!(index.get(&entry(99).key).is_some());
}

fn grouped(i: u64, groups: &'static str) -> Arc<StoredResponse> {
    let mut stored = (*entry(i)).clone();
    stored
        .headers
        .insert("cache-groups", HeaderValue::from_static(groups));
    Arc::new(stored)
}

fn in_group(index: &Index, group: &str) -> Vec<u64> {
    let mut bodies: Vec<u64> = index
        .entries_in_group("http://example.com", group)
        .iter()
        .map(|entry| entry.body)
        .collect();
    bodies.sort_unstable();
    bodies
}

#[test]
fn a_group_s_rows_come_and_go_with_its_entries_and_a_format_3_directory_gets_them_once() {
    let dir = tempfile::tempdir().unwrap();
    let (index, _) = open(dir.path());
    insert_now(&index, grouped(1, "\"a\", \"b\""));
    insert_now(&index, grouped(2, "\"b\""));
    insert_now(&index, entry(3));
    assert_eq!(in_group(&index, "b"), [2, 3], "staged ones too");
    assert!(index.flush());
    assert_eq!(in_group(&index, "b"), [2, 3]);
    assert_eq!(in_group(&index, "a"), [2]);
    assert!(
        index
            .entries_in_group("http://other.example", "b")
            .is_empty()
    );
    index.remove_variant(&grouped(1, "\"a\", \"b\""));
    assert!(index.flush());
    assert_eq!(in_group(&index, "b"), [3]);
    index.close();
    drop(index);
    let groups = redb::TableDefinition::<(u128, u64), ()>::new("groups");
    let rows = |path: &Path| {
        let db = redb::Database::open(path).unwrap();
        let txn = db.begin_read().unwrap();
        redb::ReadableTableMetadata::len(&txn.open_table(groups).unwrap()).unwrap()
    };
    let path = dir.path().join(load::FILE_NAME);
    assert_eq!(rows(&path), 1, "the removed entry's rows went with it");
    // What format 3 left: no `groups` table.
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(groups).unwrap();
        let meta: redb::TableDefinition<'_, &str, u64> = redb::TableDefinition::new("meta");
        txn.open_table(meta).unwrap().insert("format", 3).unwrap();
        txn.commit().unwrap();
    }
    let (index, report) = open(dir.path());
    assert_eq!(report.upgraded_from, Some(3));
    assert!(index.flush());
    assert_eq!(in_group(&index, "b"), [3]);
}
