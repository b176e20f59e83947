//! Per-session locks within one process, taken around a commit.
//!
//! Compare-and-set keeps parallel commits of one session correct across
//! processes. Within one process they can also simply wait for each other:
//! a commit that waits its turn conflicts at most once (with the writers it
//! queued behind, all finished by then) instead of racing every parallel
//! request of the same session round after round. A request whose view
//! turned out stale keeps the turn while it runs again on fresh data, so
//! its re-run cannot be overtaken by another request of this process.
//! Under many parallel requests on one session, that turns a retry storm
//! into a queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OwnedMutexGuard;

use crate::StoreKey;

type KeyLock = Arc<tokio::sync::Mutex<()>>;

/// The locks of the sessions being saved right now.
#[derive(Default)]
pub(crate) struct KeyLocks {
    map: Mutex<HashMap<StoreKey, KeyLock>>,
}

/// Holds a session's lock (its turn); the map entry goes once nobody holds
/// or awaits it.
pub(crate) struct KeyGuard {
    locks: Arc<KeyLocks>,
    key: StoreKey,
    lock: KeyLock,
    held: Option<OwnedMutexGuard<()>>,
}

impl KeyLocks {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<StoreKey, KeyLock>> {
        // Entries are inserted and removed whole; nothing is left half-done.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for `key`'s lock. Cancel-safe: dropping the future while it
    /// waits cleans up like dropping the guard.
    pub(crate) async fn lock(self: &Arc<Self>, key: &StoreKey) -> KeyGuard {
        let lock = self.map().entry(key.clone()).or_default().clone();
        let mut guard = KeyGuard {
            locks: self.clone(),
            key: key.clone(),
            lock,
            held: None,
        };
        guard.held = Some(guard.lock.clone().lock_owned().await);
        guard
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

impl KeyGuard {
    /// The session this turn belongs to.
    pub(crate) fn key(&self) -> &StoreKey {
        &self.key
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        self.held.take();
        let mut map = self.locks.map();
        // Clones are only made under the map lock, so this count is exact:
        // the map's and ours means nobody else holds or awaits the lock.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Id;

    #[tokio::test]
    async fn one_holder_at_a_time_and_no_leftovers() {
        let locks = Arc::new(KeyLocks::default());
        let key = Id::random().unwrap().store_key();
        let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (locks, key, inside) = (locks.clone(), key.clone(), inside.clone());
                tokio::spawn(async move {
                    let _guard = locks.lock(&key).await;
                    let now = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    assert_eq!(now, 0, "two holders at once");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(locks.len(), 0, "an entry outlived its last holder");

        // A waiter that gives up leaves nothing behind either.
        let held = locks.lock(&key).await;
        let gave_up = tokio::time::timeout(Duration::from_millis(10), locks.lock(&key)).await;
        assert!(gave_up.is_err());
        drop(held);
        assert_eq!(locks.len(), 0);
    }
}
