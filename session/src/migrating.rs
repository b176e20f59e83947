//! [`MigratingStore`]: move from one backend to another without logging anyone out.

use std::collections::HashSet;

use session_core::time::OffsetDateTime;
use session_core::{
    DeleteOutcome, Record, SaveOutcome, SessionInfo, SessionStore, StoreError, StoreKey,
    async_trait,
};

/// Serves sessions from `new` while they still live in `old`, moving each one
/// across the first time it is loaded.
///
/// Put it in place of the store when changing backends (for example from the
/// memory store to Redis, or from one Redis to another): every session that
/// exists in the old store keeps working, is copied into the new one on its
/// next request and deleted from the old one. Writes only ever go to `new`.
/// Once the old store is empty (or its sessions have expired), replace the
/// `MigratingStore` with the new store alone.
///
/// - `load`: `new`, else `old`; a session found in `old` is created in `new`
///   (keeping its version, deadlines and principal), then deleted from `old`.
/// - `create`: in `new`, only if neither store holds a live record under the key.
/// - `save`, `touch`: `new` (a touch falls back to `old` for a session not yet moved).
/// - `delete`, `delete_by_principal`, `delete_expired`: both.
/// - `list_by_principal`: both, without duplicates.
///
/// ```
/// use session::{MigratingStore, MemoryStore, SessionLayer};
///
/// let (old, new) = (MemoryStore::new(), MemoryStore::new());
/// let layer = SessionLayer::new(MigratingStore::new(old, new));
/// ```
#[derive(Clone, Debug)]
pub struct MigratingStore<Old, New> {
    old: Old,
    new: New,
}

impl<Old, New> MigratingStore<Old, New> {
    /// Reads fall back to `old` and move sessions into `new`; writes go to `new`.
    pub fn new(old: Old, new: New) -> Self {
        Self { old, new }
    }

    /// The store sessions are moving out of.
    pub fn old(&self) -> &Old {
        &self.old
    }

    /// The store sessions are moving into.
    pub fn new_store(&self) -> &New {
        &self.new
    }
}

#[async_trait]
impl<Old: SessionStore, New: SessionStore> SessionStore for MigratingStore<Old, New> {
    async fn create(&self, key: &StoreKey, record: &Record) -> Result<bool, StoreError> {
        if self.old.load(key).await?.is_some() {
            return Ok(false);
        }
        self.new.create(key, record).await
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        if let Some(record) = self.new.load(key).await? {
            return Ok(Some(record));
        }
        let Some(record) = self.old.load(key).await? else {
            // A parallel load may have moved it between our two reads: it
            // creates in `new` before deleting from `old`, so look again.
            return self.new.load(key).await;
        };
        if self.new.create(key, &record).await? {
            // A logout deletes from `old`, then from `new`. If it got to
            // `old` while we were copying, our copy must not outlive it.
            if self.old.load(key).await?.is_none() {
                self.new.delete(key).await?;
                return Ok(None);
            }
            self.old.delete(key).await?;
            tracing::debug!(key = key.short(), "session moved to the new store");
            Ok(Some(record))
        } else {
            // Someone moved (and maybe already changed) it first: theirs is current.
            self.old.delete(key).await?;
            self.new.load(key).await
        }
    }

    async fn save(
        &self,
        key: &StoreKey,
        record: &Record,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError> {
        self.new.save(key, record, expected_version).await
    }

    async fn touch(
        &self,
        key: &StoreKey,
        idle_deadline: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        if self.new.touch(key, idle_deadline).await? {
            return Ok(true);
        }
        self.old.touch(key, idle_deadline).await
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        // Old first: a parallel load that copied the session into `new`
        // checks `old` again afterwards and drops its copy (see `load`).
        self.old.delete(key).await?;
        self.new.delete(key).await
    }

    async fn delete_if_unchanged(
        &self,
        key: &StoreKey,
        expected_version: u64,
    ) -> Result<DeleteOutcome, StoreError> {
        // A session a load has seen lives in `new` (the load moved it); one
        // only `old` still holds was never moved, so `old` decides for it.
        match self.new.delete_if_unchanged(key, expected_version).await? {
            DeleteOutcome::Gone => self.old.delete_if_unchanged(key, expected_version).await,
            outcome => Ok(outcome),
        }
    }

    async fn list_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let mut sessions = self.new.list_by_principal(principal).await?;
        let seen: HashSet<StoreKey> = sessions.iter().map(|s| s.key.clone()).collect();
        let old = self.old.list_by_principal(principal).await?;
        sessions.extend(old.into_iter().filter(|s| !seen.contains(&s.key)));
        Ok(sessions)
    }

    async fn delete_by_principal(&self, principal: &str) -> Result<u64, StoreError> {
        Ok(self.old.delete_by_principal(principal).await?
            + self.new.delete_by_principal(principal).await?)
    }

    async fn delete_expired(&self) -> Result<u64, StoreError> {
        Ok(self.old.delete_expired().await? + self.new.delete_expired().await?)
    }
}
