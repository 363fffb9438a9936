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
pub enum FillResult {
    Pending,
    Stored,
    NotStored,
    /// The leader failed or was cancelled without deciding.
    Abandoned,
}

#[derive(Default)]
pub struct Collapser {
    inflight: Mutex<HashMap<u128, watch::Receiver<FillResult>>>,
}

pub enum Role {
    Leader(FillLock),
    Follower(watch::Receiver<FillResult>),
}

/// Held by the leader until the response is stored or known not to be; dropping it without
/// `finish` tells followers the fetch was abandoned.
pub struct FillLock {
    key: u128,
    collapser: Arc<Collapser>,
    result: watch::Sender<FillResult>,
}

impl Collapser {
    pub fn join(self: &Arc<Self>, key: u128) -> Role {
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
    /// The fetch in flight for `key`, if any, without joining as a leader.
    pub fn in_flight(&self, key: u128) -> Option<watch::Receiver<FillResult>> {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
    }
}

impl FillLock {
    pub fn finish(self, result: FillResult) {
        let _ = self.result.send(result);
    }
}

impl Drop for FillLock {
    fn drop(&mut self) {
        self.collapser
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
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
pub async fn wait(mut receiver: watch::Receiver<FillResult>, limit: Duration) -> FillResult {
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
