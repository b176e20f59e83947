//! [`Gate`]: a store wrapper that stops chosen calls until the test lets
//! them go, to force one interleaving instead of hoping for a race.
//!
//! A [`Stop`] is armed for one kind of call ([`Call`]) at one point ([`At`]:
//! before the call reaches the wrapped store, or after it returned). The
//! next call that reaches that point (optionally: for one key, after letting
//! `skip` such calls pass) waits there until [`Stop::release`]; the test
//! learns that it got there with [`Stop::arrived`]. Stops catch calls in the
//! order they were armed.

use std::sync::Mutex;
use std::time::Duration;

use session_core::time::OffsetDateTime;
use session_core::{
    DeleteOutcome, Record, SaveOutcome, SessionInfo, SessionStore, StoreError, StoreKey,
    async_trait,
};
use tokio::sync::watch;

/// How long a test waits for a call to reach a stop before failing.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(20);

/// The store calls a stop can catch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Create,
    Load,
    Save,
    Touch,
    Delete,
    DeleteIfUnchanged,
}

/// Where a stop holds its call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// Before the call reaches the wrapped store: it has not happened yet.
    Before,
    /// After the wrapped store answered: it happened, its caller does not know yet.
    After,
}

/// One armed stop. Cloning gives another handle on the same stop.
#[derive(Clone, Debug)]
pub struct Stop {
    call: Call,
    at: At,
    key: Option<StoreKey>,
    skip: u64,
    arrived: watch::Sender<bool>,
    released: watch::Sender<bool>,
}

impl Stop {
    /// Waits until a call reached this stop (panics after 20 s).
    pub async fn arrived(&self) {
        let mut arrived = self.arrived.subscribe();
        let waited = tokio::time::timeout(ARRIVAL_TIMEOUT, arrived.wait_for(|a| *a)).await;
        assert!(
            matches!(waited, Ok(Ok(_))),
            "no {:?} call reached the stop {:?} it",
            self.call,
            self.at
        );
    }

    /// Whether a call reached this stop.
    pub fn has_arrived(&self) -> bool {
        *self.arrived.borrow()
    }

    /// Lets the held call (or the next one to arrive) go on.
    pub fn release(&self) {
        self.released.send_replace(true);
    }

    async fn hold(&self) {
        self.arrived.send_replace(true);
        let mut released = self.released.subscribe();
        // The sender lives in `self`: this only ends on release.
        let _ = released.wait_for(|r| *r).await;
    }
}

/// Wraps a store; calls pass straight through unless a stop catches them.
#[derive(Debug)]
pub struct Gate<S> {
    inner: S,
    stops: Mutex<Vec<Stop>>,
}

impl<S: SessionStore> Gate<S> {
    /// A gate with no stops armed.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            stops: Mutex::new(Vec::new()),
        }
    }

    /// The wrapped store, to look at it without going through the stops.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Arms a stop for the next `call` at `at`.
    pub fn stop(&self, call: Call, at: At) -> Stop {
        self.arm(call, at, None, 0)
    }

    /// Arms a stop for the next `call` at `at` on `key`.
    pub fn stop_key(&self, call: Call, at: At, key: &StoreKey) -> Stop {
        self.arm(call, at, Some(key.clone()), 0)
    }

    /// Arms a stop that lets `skip` calls pass, then holds the next one.
    pub fn stop_after(&self, call: Call, at: At, skip: u64) -> Stop {
        self.arm(call, at, None, skip)
    }

    fn arm(&self, call: Call, at: At, key: Option<StoreKey>, skip: u64) -> Stop {
        let stop = Stop {
            call,
            at,
            key,
            skip,
            arrived: watch::channel(false).0,
            released: watch::channel(false).0,
        };
        self.stops.lock().unwrap().push(stop.clone());
        stop
    }

    async fn checkpoint(&self, call: Call, at: At, key: &StoreKey) {
        let caught = {
            let mut stops = self.stops.lock().unwrap();
            let found = stops.iter().position(|s| {
                s.call == call && s.at == at && s.key.as_ref().is_none_or(|k| k == key)
            });
            match found {
                Some(i) if stops[i].skip > 0 => {
                    stops[i].skip -= 1;
                    None
                }
                Some(i) => Some(stops.remove(i)),
                None => None,
            }
        };
        if let Some(stop) = caught {
            stop.hold().await;
        }
    }
}

#[async_trait]
impl<S: SessionStore> SessionStore for Gate<S> {
    async fn create(&self, key: &StoreKey, record: &Record) -> Result<bool, StoreError> {
        self.checkpoint(Call::Create, At::Before, key).await;
        let result = self.inner.create(key, record).await;
        self.checkpoint(Call::Create, At::After, key).await;
        result
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        self.checkpoint(Call::Load, At::Before, key).await;
        let result = self.inner.load(key).await;
        self.checkpoint(Call::Load, At::After, key).await;
        result
    }

    async fn save(
        &self,
        key: &StoreKey,
        record: &Record,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError> {
        self.checkpoint(Call::Save, At::Before, key).await;
        let result = self.inner.save(key, record, expected_version).await;
        self.checkpoint(Call::Save, At::After, key).await;
        result
    }

    async fn touch(
        &self,
        key: &StoreKey,
        expected_version: u64,
        idle_deadline: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.checkpoint(Call::Touch, At::Before, key).await;
        let result = self.inner.touch(key, expected_version, idle_deadline).await;
        self.checkpoint(Call::Touch, At::After, key).await;
        result
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        self.checkpoint(Call::Delete, At::Before, key).await;
        let result = self.inner.delete(key).await;
        self.checkpoint(Call::Delete, At::After, key).await;
        result
    }

    async fn delete_if_unchanged(
        &self,
        key: &StoreKey,
        expected_version: u64,
    ) -> Result<DeleteOutcome, StoreError> {
        self.checkpoint(Call::DeleteIfUnchanged, At::Before, key)
            .await;
        let result = self.inner.delete_if_unchanged(key, expected_version).await;
        self.checkpoint(Call::DeleteIfUnchanged, At::After, key)
            .await;
        result
    }

    async fn list_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>, StoreError> {
        self.inner.list_by_principal(principal).await
    }

    async fn delete_by_principal(&self, principal: &str) -> Result<u64, StoreError> {
        self.inner.delete_by_principal(principal).await
    }

    async fn delete_expired(&self) -> Result<u64, StoreError> {
        self.inner.delete_expired().await
    }
}
