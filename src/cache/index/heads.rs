//! The heads of stored responses (URL, status, headers, freshness, checksum), which the map
//! does not hold: read from their rows in `entries` when a lookup needs one, and kept for the
//! most recently used (`recent`, bounded by bytes), so hot objects never touch the database.
//!
//! A head is readable from the moment its entry is published. One whose row is not committed
//! yet is staged here, as `storage::Pack` stages bodies, until the writer's transaction holding
//! it commits.
//!
//! Owns the recent and staged heads and reading rows; which entries exist is the map's, and
//! only the writer thread writes rows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use quick_cache::Weighter;
use quick_cache::sync::Cache;
use redb::{Database, ReadableDatabase, ReadableTable};

use super::ENTRIES;
use super::slots::GROUPS;
use crate::cache::entry::StoredResponse;
use crate::cache::storage::BodyId;

/// Staged heads are spread over this many locks.
const STAGE_SHARDS: usize = 16;

#[derive(Clone)]
struct HeadWeight;

impl Weighter<BodyId, Arc<StoredResponse>> for HeadWeight {
    fn weight(&self, _body: &BodyId, head: &Arc<StoredResponse>) -> u64 {
        head.memory_size()
    }
}

pub(super) struct Heads {
    /// Lent by the index once it is open; taken back before it closes.
    db: ArcSwapOption<Database>,
    recent: Cache<BodyId, Arc<StoredResponse>, HeadWeight>,
    /// Published heads whose rows are not committed yet.
    staged: [Mutex<HashMap<BodyId, Arc<StoredResponse>>>; STAGE_SHARDS],
}

impl Heads {
    /// Keeps recently used heads up to `capacity` bytes.
    pub(super) fn new(capacity: u64) -> Heads {
        let capacity = capacity.max(1 << 20);
        Heads {
            db: ArcSwapOption::empty(),
            recent: Cache::with_weighter((capacity / 1024) as usize, capacity, HeadWeight),
            staged: Default::default(),
        }
    }

    pub(super) fn attach(&self, db: Arc<Database>) {
        self.db.store(Some(db));
    }

    pub(super) fn detach(&self) {
        self.db.store(None);
    }

    fn staged(
        &self,
        body: BodyId,
    ) -> std::sync::MutexGuard<'_, HashMap<BodyId, Arc<StoredResponse>>> {
        self.staged[(body % STAGE_SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Holds the head of an entry about to be published, until its row is committed.
    pub(super) fn stage(&self, head: &Arc<StoredResponse>) {
        self.staged(head.body).insert(head.body, Arc::clone(head));
        self.remember(head);
    }

    /// Keeps a head whose row is committed among the recent ones.
    pub(super) fn remember(&self, head: &Arc<StoredResponse>) {
        self.recent.insert(head.body, Arc::clone(head));
    }

    /// The transaction holding the rows of `heads` committed: they are read from there now.
    /// Each is remembered again, so a lookup that read the row it replaced meanwhile cannot
    /// leave that older head behind among the recent ones.
    pub(super) fn committed(&self, heads: &[Arc<StoredResponse>]) {
        for head in heads {
            let mut staged = self.staged(head.body);
            if staged
                .get(&head.body)
                .is_some_and(|current| Arc::ptr_eq(current, head))
            {
                staged.remove(&head.body);
                self.remember(head);
            }
        }
    }

    /// The row of `body` is gone.
    pub(super) fn forget(&self, body: BodyId) {
        self.staged(body).remove(&body);
        self.recent.remove(&body);
    }

    /// The head of the entry whose body is `body`; `None` when its row is missing or does not
    /// decode (the caller forgets such an entry).
    pub(super) fn get(&self, body: BodyId) -> Option<Arc<StoredResponse>> {
        if let Some(head) = self.recent.get(&body) {
            return Some(head);
        }
        if let Some(head) = self.staged(body).get(&body) {
            return Some(Arc::clone(head));
        }
        let head = Arc::new(self.read(body)?);
        self.remember(&head);
        Some(head)
    }

    fn read(&self, body: BodyId) -> Option<StoredResponse> {
        let db = self.db.load_full()?;
        let row = (|| -> Result<Option<StoredResponse>, redb::Error> {
            let txn = db.begin_read()?;
            let table = txn.open_table(ENTRIES)?;
            let Some(row) = table.get(body)? else {
                return Ok(None);
            };
            Ok(StoredResponse::decode(row.value())
                .inspect_err(
                    |e| tracing::warn!(body, error = %e, "cache: a stored head does not decode"),
                )
                .ok()
                .filter(|head| head.body == body))
        })();
        row.unwrap_or_else(|e| {
            tracing::warn!(body, error = %e, "cache: cannot read a stored head");
            None
        })
    }

    /// The staged heads (not committed yet) that `keep` accepts, by body.
    fn staged_matching(
        &self,
        keep: &dyn Fn(&StoredResponse) -> bool,
    ) -> HashMap<BodyId, Arc<StoredResponse>> {
        let mut found = HashMap::new();
        for shard in &self.staged {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            found.extend(
                shard
                    .iter()
                    .filter(|(_, head)| keep(head))
                    .map(|(&body, head)| (body, Arc::clone(head))),
            );
        }
        found
    }

    /// The heads of the cache group whose `groups` rows hash to `group`, committed or
    /// staged (a staged one has no row yet), that `keep` accepts: reads that group's rows,
    /// not every row.
    pub(super) fn in_group(
        &self,
        group: u128,
        keep: &dyn Fn(&StoredResponse) -> bool,
    ) -> Vec<Arc<StoredResponse>> {
        let mut found = self.staged_matching(keep);
        let bodies = self.db.load_full().map(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(GROUPS)?;
            let rows = table.range((group, 0)..=(group, u64::MAX))?;
            rows.map(|row| row.map(|(key, _)| key.value().1))
                .collect::<Result<Vec<BodyId>, _>>()
                .map_err(redb::Error::from)
        });
        match bodies {
            Some(Ok(bodies)) => {
                for body in bodies {
                    if let Some(head) = self.get(body).filter(|head| keep(head)) {
                        found.entry(body).or_insert(head);
                    }
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "cache: cannot read a cache group"),
            None => {}
        }
        found.into_values().collect()
    }

    /// Every head, committed or staged, whose URL `keep` accepts (the newest of each body).
    /// Reads every row: for admin operations and the offline tool, not for requests.
    pub(super) fn scan(&self, keep: &dyn Fn(&str) -> bool) -> Vec<Arc<StoredResponse>> {
        let mut found = self.staged_matching(&|head| keep(head.key.url()));
        let scanned = self.db.load_full().map(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(ENTRIES)?;
            for row in table.iter()? {
                let (body, bytes) = row?;
                let bytes = bytes.value();
                if StoredResponse::url_in(bytes).is_some_and(keep)
                    && let Ok(head) = StoredResponse::decode(bytes)
                {
                    found.entry(body.value()).or_insert_with(|| Arc::new(head));
                }
            }
            Ok::<_, redb::Error>(())
        });
        if let Some(Err(e)) = scanned {
            tracing::warn!(error = %e, "cache: cannot read the stored heads");
        }
        found.into_values().collect()
    }
}
