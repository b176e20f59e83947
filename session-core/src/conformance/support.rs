//! Store wrappers for tests: one that counts calls, one that always fails,
//! one that never answers.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::{DeleteOutcome, Record, SaveOutcome, SessionInfo, SessionStore, StoreError, StoreKey};

/// Calls made to a [`CountingStore`], per method.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counts {
    /// `create` calls.
    pub create: u64,
    /// `load` calls.
    pub load: u64,
    /// `save` calls.
    pub save: u64,
    /// `touch` calls.
    pub touch: u64,
    /// `delete` and `delete_if_unchanged` calls.
    pub delete: u64,
    /// Principal and expiry calls together.
    pub other: u64,
}

impl Counts {
    /// All calls together.
    pub fn total(&self) -> u64 {
        self.create + self.load + self.save + self.touch + self.delete + self.other
    }

    /// Calls that write (create, save, touch, delete).
    pub fn writes(&self) -> u64 {
        self.create + self.save + self.touch + self.delete
    }
}

/// Wraps a store and counts the calls made to it.
#[derive(Debug, Default)]
pub struct CountingStore<S> {
    inner: S,
    create: AtomicU64,
    load: AtomicU64,
    save: AtomicU64,
    touch: AtomicU64,
    delete: AtomicU64,
    other: AtomicU64,
}

impl<S> CountingStore<S> {
    /// Counts the calls made to `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            create: AtomicU64::new(0),
            load: AtomicU64::new(0),
            save: AtomicU64::new(0),
            touch: AtomicU64::new(0),
            delete: AtomicU64::new(0),
            other: AtomicU64::new(0),
        }
    }

    /// The calls so far.
    pub fn counts(&self) -> Counts {
        let get = |c: &AtomicU64| c.load(Ordering::SeqCst);
        Counts {
            create: get(&self.create),
            load: get(&self.load),
            save: get(&self.save),
            touch: get(&self.touch),
            delete: get(&self.delete),
            other: get(&self.other),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::SeqCst);
}

#[async_trait]
impl<S: SessionStore> SessionStore for CountingStore<S> {
    async fn create(&self, key: &StoreKey, record: &Record) -> Result<bool, StoreError> {
        bump(&self.create);
        self.inner.create(key, record).await
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        bump(&self.load);
        self.inner.load(key).await
    }

    async fn save(
        &self,
        key: &StoreKey,
        record: &Record,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError> {
        bump(&self.save);
        self.inner.save(key, record, expected_version).await
    }

    async fn touch(
        &self,
        key: &StoreKey,
        idle_deadline: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        bump(&self.touch);
        self.inner.touch(key, idle_deadline).await
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        bump(&self.delete);
        self.inner.delete(key).await
    }

    async fn delete_if_unchanged(
        &self,
        key: &StoreKey,
        expected_version: u64,
    ) -> Result<DeleteOutcome, StoreError> {
        bump(&self.delete);
        self.inner.delete_if_unchanged(key, expected_version).await
    }

    async fn list_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>, StoreError> {
        bump(&self.other);
        self.inner.list_by_principal(principal).await
    }

    async fn delete_by_principal(&self, principal: &str) -> Result<u64, StoreError> {
        bump(&self.other);
        self.inner.delete_by_principal(principal).await
    }

    async fn delete_expired(&self) -> Result<u64, StoreError> {
        bump(&self.other);
        self.inner.delete_expired().await
    }
}

/// A store whose every call fails at once, like a backend that refuses connections.
#[derive(Clone, Copy, Debug, Default)]
pub struct FailingStore;

fn refused() -> StoreError {
    StoreError::backend(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "store refuses connections (FailingStore)",
    ))
}

#[async_trait]
impl SessionStore for FailingStore {
    async fn create(&self, _: &StoreKey, _: &Record) -> Result<bool, StoreError> {
        Err(refused())
    }
    async fn load(&self, _: &StoreKey) -> Result<Option<Record>, StoreError> {
        Err(refused())
    }
    async fn save(&self, _: &StoreKey, _: &Record, _: u64) -> Result<SaveOutcome, StoreError> {
        Err(refused())
    }
    async fn touch(&self, _: &StoreKey, _: OffsetDateTime) -> Result<bool, StoreError> {
        Err(refused())
    }
    async fn delete(&self, _: &StoreKey) -> Result<(), StoreError> {
        Err(refused())
    }
    async fn delete_if_unchanged(&self, _: &StoreKey, _: u64) -> Result<DeleteOutcome, StoreError> {
        Err(refused())
    }
    async fn list_by_principal(&self, _: &str) -> Result<Vec<SessionInfo>, StoreError> {
        Err(refused())
    }
    async fn delete_by_principal(&self, _: &str) -> Result<u64, StoreError> {
        Err(refused())
    }
    async fn delete_expired(&self) -> Result<u64, StoreError> {
        Err(refused())
    }
}

/// A store whose every call never completes, like a frozen server.
#[derive(Clone, Copy, Debug, Default)]
pub struct HangingStore;

async fn hang<T>() -> T {
    std::future::pending().await
}

#[async_trait]
impl SessionStore for HangingStore {
    async fn create(&self, _: &StoreKey, _: &Record) -> Result<bool, StoreError> {
        hang().await
    }
    async fn load(&self, _: &StoreKey) -> Result<Option<Record>, StoreError> {
        hang().await
    }
    async fn save(&self, _: &StoreKey, _: &Record, _: u64) -> Result<SaveOutcome, StoreError> {
        hang().await
    }
    async fn touch(&self, _: &StoreKey, _: OffsetDateTime) -> Result<bool, StoreError> {
        hang().await
    }
    async fn delete(&self, _: &StoreKey) -> Result<(), StoreError> {
        hang().await
    }
    async fn delete_if_unchanged(&self, _: &StoreKey, _: u64) -> Result<DeleteOutcome, StoreError> {
        hang().await
    }
    async fn list_by_principal(&self, _: &str) -> Result<Vec<SessionInfo>, StoreError> {
        hang().await
    }
    async fn delete_by_principal(&self, _: &str) -> Result<u64, StoreError> {
        hang().await
    }
    async fn delete_expired(&self) -> Result<u64, StoreError> {
        hang().await
    }
}
