//! Request collapsing: concurrent misses for one URL make one origin request. The first
//! becomes the leader; the others wait until the leader has stored the response (then they
//! are hits), found it unstorable (then each fetches on its own, so nothing private is
//! shared), or gone away (then they try again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// How a leader's fetch ended, as its followers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FillResult {
    Pending,
    Stored,
    NotStored,
    /// The leader failed or was cancelled without deciding.
    Abandoned,
}

#[derive(Default)]
pub(super) struct Collapser {
    inflight: Mutex<HashMap<u128, watch::Receiver<FillResult>>>,
}

pub(super) enum Role {
    Leader(FillLock),
    Follower(watch::Receiver<FillResult>),
}

/// Held by the leader until the response is stored or known not to be; dropping it without
/// `finish` tells followers the fetch was abandoned.
pub(super) struct FillLock {
    key: u128,
    collapser: Arc<Collapser>,
    result: watch::Sender<FillResult>,
}

impl Collapser {
    pub(super) fn join(self: &Arc<Self>, key: u128) -> Role {
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(receiver) = inflight.get(&key) {
            return Role::Follower(receiver.clone());
        }
        let (result, receiver) = watch::channel(FillResult::Pending);
        inflight.insert(key, receiver);
        Role::Leader(FillLock {
            key,
            collapser: Arc::clone(self),
            result,
        })
    }
}

impl Collapser {
    /// Leads `key`'s fill if nobody does yet (a fill that starts anyway, which requests
    /// arriving meanwhile should wait for).
    pub(super) fn lead_if_free(self: &Arc<Self>, key: u128) -> Option<FillLock> {
        match self.join(key) {
            Role::Leader(lock) => Some(lock),
            Role::Follower(_) => None,
        }
    }

    /// The fetch in flight for `key`, if any, without joining as a leader.
    pub(super) fn in_flight(&self, key: u128) -> Option<watch::Receiver<FillResult>> {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
    }
}

impl FillLock {
    pub(super) fn finish(self, result: FillResult) {
        // Free the key first, so a woken follower that needs the origin again (e.g. to
        // refresh in the background) can lead instead of following a finished fetch.
        self.release();
        let _ = self.result.send(result);
    }

    /// Frees the key if it is still this lock's: by the time a finished lock is dropped, a
    /// new leader may hold the same key.
    fn release(&self) {
        let mut inflight = self
            .collapser
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if inflight
            .get(&self.key)
            .is_some_and(|receiver| receiver.same_channel(&self.result.subscribe()))
        {
            inflight.remove(&self.key);
        }
    }
}

impl Drop for FillLock {
    fn drop(&mut self) {
        self.release();
        self.result.send_if_modified(|result| {
            if *result == FillResult::Pending {
                *result = FillResult::Abandoned;
                true
            } else {
                false
            }
        });
    }
}

/// Waits for the leader's decision, at most `limit`.
pub(super) async fn wait(mut receiver: watch::Receiver<FillResult>, limit: Duration) -> FillResult {
    let decided =
        tokio::time::timeout(limit, receiver.wait_for(|r| *r != FillResult::Pending)).await;
    match decided {
        Ok(Ok(result)) => *result,
        _ => FillResult::Abandoned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_learn_the_leaders_result() {
        let collapser = Arc::new(Collapser::default());
        let Role::Leader(lock) = collapser.join(7) else {
            panic!("first is leader")
        };
        let Role::Follower(waiting) = collapser.join(7) else {
            panic!("second follows")
        };
        lock.finish(FillResult::NotStored);
        assert_eq!(
            wait(waiting, Duration::from_secs(1)).await,
            FillResult::NotStored
        );
        assert!(
            matches!(collapser.join(7), Role::Leader(_)),
            "the key is free again"
        );
    }

    #[tokio::test]
    async fn a_finished_leader_does_not_free_its_successors_key() {
        let collapser = Arc::new(Collapser::default());
        let Role::Leader(first) = collapser.join(3) else {
            panic!()
        };
        first.finish(FillResult::Stored);
        let Role::Leader(_second) = collapser.join(3) else {
            panic!("the key was free")
        };
        assert!(
            matches!(collapser.join(3), Role::Follower(_)),
            "the second leader still holds the key"
        );
    }

    #[tokio::test]
    async fn a_dropped_leader_is_abandoned_not_hanging() {
        let collapser = Arc::new(Collapser::default());
        let Role::Leader(lock) = collapser.join(1) else {
            panic!()
        };
        let Role::Follower(waiting) = collapser.join(1) else {
            panic!()
        };
        drop(lock);
        assert_eq!(
            wait(waiting, Duration::from_secs(1)).await,
            FillResult::Abandoned
        );
    }
}
