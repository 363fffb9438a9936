//! Loading the map in the background. hoard serves once the parts of bodies are loaded and
//! the rest has loaded or `WAIT` has passed, whichever comes first; the remaining `slots`
//! rows are streamed into the map while requests are answered, as Squid rebuilds its store.
//!
//! A request for an entry not loaded yet is a miss. What requests change while loading wins
//! over what the loader brings: every change to a URL's list (a publish, a removal) first
//! marks the URL touched, and the loader deletes, rows and bodies, the stored list of a touched
//! URL instead of loading it. A purge is therefore never undone and a newer response never
//! replaced by older rows. The loader then removes the body files no row names
//! (`load::remove_orphans`).
//!
//! Owns the loading state and the loader; the map's rules are the index's.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use redb::Database;

use super::load::{self, Sweep};
use super::slots::{Slot, Slots};
use super::{Change, EntryMap, Op};
use crate::cache::storage::{BodyId, Tiers};

/// How long start-up waits for the whole index before serving with the rest still loading:
/// a small index is complete before the first request, a large one does not keep hoard down.
pub(super) const WAIT: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(super) struct Loading {
    /// Set while rows are still being loaded into the map.
    active: AtomicBool,
    cancelled: AtomicBool,
    /// URLs whose lists requests changed while loading.
    touched: Mutex<HashSet<u128>>,
    /// Set once the loader is finished, orphan sweep included.
    done: Mutex<bool>,
    finished: Condvar,
}

impl Loading {
    pub(super) fn new() -> Arc<Loading> {
        let loading = Loading::default();
        loading.active.store(true, Ordering::Release);
        Arc::new(loading)
    }

    pub(super) fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Marks the URL hashed `hash` as changed by a request; call it before changing its list.
    pub(super) fn touch(&self, hash: u128) {
        if self.is_active() {
            self.lock_touched().insert(hash);
        }
    }

    fn lock_touched(&self) -> std::sync::MutexGuard<'_, HashSet<u128>> {
        self.touched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the loader is finished, at most `timeout` (`None`: for as long as it
    /// takes); whether it is.
    pub(super) fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        while !*done {
            let wait = match deadline {
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) => left,
                    None => return false,
                },
                None => Duration::from_secs(3600),
            };
            done = self
                .finished
                .wait_timeout(done, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Stops the loader (shutdown) and waits for it; what it did not load stays in the
    /// database for the next start.
    pub(super) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.wait(None);
    }

    pub(super) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    fn finish(&self) {
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.finished.notify_all();
    }
}

/// Streams the `slots` rows not loaded at start-up into the map.
pub(super) struct Loader {
    pub db: Arc<Database>,
    pub map: Arc<EntryMap>,
    pub loading: Arc<Loading>,
    pub ops: mpsc::Sender<Op>,
    pub tiers: Arc<Tiers>,
    pub sweep: Sweep,
    /// The bodies of the entries loaded before serving.
    pub known: Vec<BodyId>,
}

impl Loader {
    pub(super) fn run(self) {
        let Loader {
            db,
            map,
            loading,
            ops,
            tiers,
            sweep,
            mut known,
        } = self;
        let started = Instant::now();
        let (mut entries, mut bytes, mut dropped) = (0u64, 0u64, 0u64);
        let streamed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            load::stream_slots(&db, &loading.cancelled, |hash, group| {
                known.extend(group.iter().map(|(slot, _)| slot.body));
                for &(_, body_len) in group {
                    tiers.disk().adopt(body_len);
                }
                let touched = loading.lock_touched();
                if touched.contains(&hash) {
                    // Changed by a request meanwhile: these rows are older than that.
                    drop(touched);
                    dropped += group.len() as u64;
                    for (slot, _) in group {
                        let _ = ops.send(Op::Change(Change::Delete {
                            hash: Some(hash),
                            body: slot.body,
                        }));
                    }
                    return;
                }
                entries += group.len() as u64;
                bytes += group.iter().map(|(_, len)| len).sum::<u64>();
                let slots: Vec<Slot> = group.iter().map(|(slot, _)| *slot).collect();
                if let Some(slots) = Slots::from_vec(slots) {
                    map.insert(hash, slots);
                }
            })
        }));
        drop(db);
        loading.active.store(false, Ordering::Release);
        loading.lock_touched().clear();
        let complete = matches!(streamed, Ok(Ok(()))) && !loading.is_cancelled();
        match streamed {
            Ok(Ok(())) if loading.is_cancelled() => {
                tracing::info!(entries, "cache: stopped loading the index (shutting down)");
            }
            Ok(Ok(())) => tracing::info!(
                entries,
                bytes,
                superseded = dropped,
                millis = started.elapsed().as_millis() as u64,
                "cache: index loaded"
            ),
            // Start-up read the database's header and tables; a page that breaks only now
            // leaves the rest unloaded (a miss each), never a wrong answer.
            Ok(Err(e)) => {
                tracing::error!(entries, error = %e, "cache: cannot load the rest of the index")
            }
            Err(_) => tracing::error!(
                entries,
                "cache: cannot load the rest of the index (the database library panicked)"
            ),
        }
        if complete {
            known.sort_unstable();
            load::remove_orphans(tiers.disk(), &known, sweep, &|| loading.is_cancelled());
        }
        loading.finish();
    }
}
