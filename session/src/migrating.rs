//! [`MigratingStore`]: move from one backend to another without logging anyone out.

use std::collections::HashSet;
use std::sync::Arc;

use session_core::time::OffsetDateTime;
use session_core::{
    DeleteOutcome, LoadOutcome, Record, SaveOutcome, SessionInfo, SessionStore, StoreError,
    StoreKey, async_trait,
};

/// Serves sessions from two stores while they move from `old` to `new`,
/// each one the first time it is loaded, without logging anyone out.
///
/// **The old store decides while it holds a session**: every call looks
/// there first and only goes to `new` for a session `old` does not hold.
/// A move copies the session into `new` (same version, deadlines and
/// principal), then deletes it from `old` with a compare-and-delete on the
/// version it copied; the copy only counts once that delete succeeded. So a
/// write that reaches `old` during the copy wins (the move gives up, to try
/// again on a later load), a logout during the copy removes the copy too,
/// and two requests moving one session at once both keep it.
///
/// # Changing backends with a rolling deploy
///
/// Instances serving from `old` alone know nothing of moves: once a session
/// moved they would not find it (logging its user out) or would write to a
/// copy nobody reads. So while any of them runs, nothing may move. Deploy in
/// three steps, each a plain rolling deploy:
///
/// 1. `MigratingStore::new(old, new).moving(false)` everywhere. It behaves
///    like `old` alone (new sessions go to `old`, nothing moves) but also
///    finds and writes sessions in `new`, so it works next to step 2.
/// 2. `MigratingStore::new(old, new)` everywhere: sessions move on their
///    next load, new ones are created in `new`.
/// 3. Once `old` holds no live session (every one moved or expired), `new`
///    alone.
///
/// Skipping step 1 (old-store instances next to moving ones) loses sessions
/// and writes; going to step 3 early loses the sessions still in `old`.
///
/// - `load`: `old`, else `new`; a session found in `old` is moved (when moving).
///   `load_observed` likewise, an expiry met in `old` reported unless `new`
///   holds the session live; it
///   [observes expiry](SessionStore::observes_expiry) as the store it
///   creates in does (`new` when moving, `old` when not).
/// - `create`: only if neither store holds a live record under the key; in
///   `new` when moving, in `old` when not.
/// - `save`, `touch`, `delete_if_unchanged`: `old`, and `new` if `old` does
///   not hold the session (`delete_if_unchanged` also deletes any copy in
///   `new` of a session it deleted in `old`).
/// - `delete`, `delete_by_principal`, `delete_expired`: both, `old` first (a
///   session caught in the middle of its move may count twice).
/// - `list_by_principal`: both, without duplicates (`old`'s entry first).
///
/// Until step 3 each request costs one more store call for a session that
/// already moved (`old` answers "not here" first). A touch (which changes no
/// version) that reaches `old` during a copy can be lost: the session keeps
/// its earlier idle deadline until its next touch or save. A move runs in its own
/// task (when a Tokio runtime is at hand), so a request dropped halfway does
/// not leave it half done. A process that dies halfway leaves a copy in
/// `new` that `old` overrides: the session keeps working from `old` (a
/// logout or login ends it in both stores), but it is not moved again
/// (no request can tell an abandoned copy from one still being made), so
/// it stays in `old` until it ends; before step 3, wait for such sessions to
/// expire (at most the absolute lifetime).
///
/// ```
/// use session::{MigratingStore, MemoryStore, SessionLayer};
///
/// let (old, new) = (MemoryStore::new(), MemoryStore::new());
/// // Step 1 of a rolling deploy; step 2 drops `.moving(false)`.
/// let layer = SessionLayer::new(MigratingStore::new(old, new).moving(false));
/// ```
pub struct MigratingStore<Old, New> {
    stores: Arc<Stores<Old, New>>,
    moving: bool,
}

#[derive(Debug)]
struct Stores<Old, New> {
    old: Old,
    new: New,
}

impl<Old, New> Clone for MigratingStore<Old, New> {
    fn clone(&self) -> Self {
        Self {
            stores: self.stores.clone(),
            moving: self.moving,
        }
    }
}

impl<Old: std::fmt::Debug, New: std::fmt::Debug> std::fmt::Debug for MigratingStore<Old, New> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MigratingStore")
            .field("old", &self.stores.old)
            .field("new", &self.stores.new)
            .field("moving", &self.moving)
            .finish()
    }
}

impl<Old, New> MigratingStore<Old, New> {
    /// Serves from both stores and moves each session from `old` to `new`
    /// on its next load; new sessions go to `new`.
    pub fn new(old: Old, new: New) -> Self {
        Self {
            stores: Arc::new(Stores { old, new }),
            moving: true,
        }
    }

    /// Whether loads move sessions into `new` (and new sessions are created
    /// there): `true` by default. `false` is step 1 of a rolling deploy (see
    /// the type's docs): safe next to instances that use `old` alone.
    ///
    /// ```
    /// use session::{MigratingStore, MemoryStore};
    ///
    /// let store = MigratingStore::new(MemoryStore::new(), MemoryStore::new()).moving(false);
    /// assert!(!store.is_moving());
    /// ```
    #[must_use]
    pub fn moving(mut self, moving: bool) -> Self {
        self.moving = moving;
        self
    }

    /// Whether loads move sessions into `new`.
    pub fn is_moving(&self) -> bool {
        self.moving
    }

    /// The store sessions are moving out of.
    pub fn old(&self) -> &Old {
        &self.stores.old
    }

    /// The store sessions are moving into.
    pub fn new_store(&self) -> &New {
        &self.stores.new
    }
}

impl<Old: SessionStore, New: SessionStore> Stores<Old, New> {
    /// Moves `record`, just loaded from `old`, into `new`; returns the
    /// session as it stands after the attempt.
    ///
    /// Only the request whose copy `new` accepted may finish the move, and
    /// it finishes it with `old`'s compare-and-delete. Nothing else deletes
    /// a session from `old` but logouts (`delete`, `delete_by_principal`,
    /// `delete_if_unchanged`) and expiry, so when that delete finds the
    /// session gone, it ended during the copy, and the copy goes too. A
    /// request whose copy was refused (another is moving the session, or a
    /// move was cut short) leaves `old` alone and serves what `old` holds.
    /// Writes go to `old` while it holds the session, so nobody writes to a
    /// copy before its move is done.
    async fn move_to_new(
        &self,
        key: &StoreKey,
        record: Record,
    ) -> Result<Option<Record>, StoreError> {
        let version = record.version;
        if !self.new.create(key, &record).await? {
            return match self.old.load(key).await? {
                Some(current) => Ok(Some(current)),
                None => self.new.load(key).await,
            };
        }
        match self.old.delete_if_unchanged(key, version).await? {
            DeleteOutcome::Deleted => {
                tracing::debug!(key = key.short(), "session moved to the new store");
                Ok(Some(record))
            }
            DeleteOutcome::Conflict => {
                // Written during the copy: `old` still decides. Drop the copy
                // (only if still ours untouched); a later load moves it.
                self.new.delete_if_unchanged(key, version).await?;
                match self.old.load(key).await? {
                    Some(current) => Ok(Some(current)),
                    None => self.new.load(key).await,
                }
            }
            DeleteOutcome::Gone => {
                // Logged out (or expired) during the copy: the copy must not
                // outlive it, even if a write reached it meanwhile.
                self.new.delete(key).await?;
                Ok(None)
            }
        }
    }
}

impl<Old: SessionStore, New: SessionStore> MigratingStore<Old, New> {
    /// The observed load's answer, from what `old` answered and (only
    /// asked when `old` holds no live record) `in_new`, as `load` decides.
    async fn observed(
        &self,
        key: &StoreKey,
        in_old: LoadOutcome,
        in_new: impl std::future::Future<Output = Result<LoadOutcome, StoreError>>,
    ) -> Result<LoadOutcome, StoreError> {
        match in_old {
            LoadOutcome::Found(record) if self.moving => {
                self.move_to_new(key, record).await.map(LoadOutcome::from)
            }
            found @ LoadOutcome::Found(_) => Ok(found),
            LoadOutcome::Missing => in_new.await,
            // A copy in `new` (a move cut short before it deleted from
            // `old`) is still the session.
            expired @ LoadOutcome::Expired { .. } => match in_new.await? {
                found @ LoadOutcome::Found(_) => Ok(found),
                LoadOutcome::Missing | LoadOutcome::Expired { .. } => Ok(expired),
            },
        }
    }

    /// [`Stores::move_to_new`] in its own task when a runtime is at hand,
    /// so that a caller giving up cannot stop it between its steps.
    async fn move_to_new(
        &self,
        key: &StoreKey,
        record: Record,
    ) -> Result<Option<Record>, StoreError> {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let (stores, key) = (self.stores.clone(), key.clone());
                runtime
                    .spawn(async move { stores.move_to_new(&key, record).await })
                    .await
                    .map_err(StoreError::backend)?
            }
            Err(_) => self.stores.move_to_new(key, record).await,
        }
    }
}

#[async_trait]
impl<Old: SessionStore, New: SessionStore> SessionStore for MigratingStore<Old, New> {
    async fn create(&self, key: &StoreKey, record: &Record) -> Result<bool, StoreError> {
        let Stores { old, new } = &*self.stores;
        if self.moving {
            if old.load(key).await?.is_some() {
                return Ok(false);
            }
            new.create(key, record).await
        } else {
            if new.load(key).await?.is_some() {
                return Ok(false);
            }
            old.create(key, record).await
        }
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        let Stores { old, new } = &*self.stores;
        match old.load(key).await? {
            Some(record) if self.moving => self.move_to_new(key, record).await,
            Some(record) => Ok(Some(record)),
            // A move creates the copy before it deletes from `old`: a session
            // `old` no longer holds is in `new` already (or gone).
            None => new.load(key).await,
        }
    }

    async fn load_at_least(
        &self,
        key: &StoreKey,
        floor: Option<u64>,
    ) -> Result<Option<Record>, StoreError> {
        // As `load`, each store keeping the client's floor: a lagging `old`
        // answers "absent" with a floor only when its primary agrees, so the
        // session is then in `new` (or gone).
        let Stores { old, new } = &*self.stores;
        match old.load_at_least(key, floor).await? {
            Some(record) if self.moving => self.move_to_new(key, record).await,
            Some(record) => Ok(Some(record)),
            None => new.load_at_least(key, floor).await,
        }
    }

    fn reads_may_lag(&self) -> bool {
        self.stores.old.reads_may_lag() || self.stores.new.reads_may_lag()
    }

    async fn load_observed(&self, key: &StoreKey) -> Result<LoadOutcome, StoreError> {
        let Stores { old, new } = &*self.stores;
        let in_old = old.load_observed(key).await?;
        self.observed(key, in_old, new.load_observed(key)).await
    }

    async fn load_observed_at_least(
        &self,
        key: &StoreKey,
        floor: Option<u64>,
    ) -> Result<LoadOutcome, StoreError> {
        let Stores { old, new } = &*self.stores;
        let in_old = old.load_observed_at_least(key, floor).await?;
        self.observed(key, in_old, new.load_observed_at_least(key, floor))
            .await
    }

    fn observes_expiry(&self) -> bool {
        let Stores { old, new } = &*self.stores;
        if self.moving {
            new.observes_expiry()
        } else {
            old.observes_expiry()
        }
    }

    async fn save(
        &self,
        key: &StoreKey,
        record: &Record,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError> {
        let Stores { old, new } = &*self.stores;
        match old.save(key, record, expected_version).await? {
            SaveOutcome::Gone => new.save(key, record, expected_version).await,
            outcome => Ok(outcome),
        }
    }

    async fn touch(
        &self,
        key: &StoreKey,
        expected_version: u64,
        idle_deadline: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let Stores { old, new } = &*self.stores;
        if old.touch(key, expected_version, idle_deadline).await? {
            return Ok(true);
        }
        new.touch(key, expected_version, idle_deadline).await
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        // Old first: a move that copied the session meanwhile then finds it
        // gone from `old` and drops its copy (see `move_to_new`).
        let Stores { old, new } = &*self.stores;
        old.delete(key).await?;
        new.delete(key).await
    }

    async fn delete_if_unchanged(
        &self,
        key: &StoreKey,
        expected_version: u64,
    ) -> Result<DeleteOutcome, StoreError> {
        // `old` decides while it holds the session. When it deletes it, any
        // copy in `new` goes too (a move under way, or one cut short):
        // otherwise the retired id would come back from there.
        let Stores { old, new } = &*self.stores;
        match old.delete_if_unchanged(key, expected_version).await? {
            DeleteOutcome::Deleted => {
                new.delete(key).await?;
                Ok(DeleteOutcome::Deleted)
            }
            DeleteOutcome::Conflict => Ok(DeleteOutcome::Conflict),
            DeleteOutcome::Gone => new.delete_if_unchanged(key, expected_version).await,
        }
    }

    async fn list_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let Stores { old, new } = &*self.stores;
        let mut sessions = old.list_by_principal(principal).await?;
        let seen: HashSet<StoreKey> = sessions.iter().map(|s| s.key.clone()).collect();
        let moved = new.list_by_principal(principal).await?;
        sessions.extend(moved.into_iter().filter(|s| !seen.contains(&s.key)));
        sessions.sort_by_key(|s| std::cmp::Reverse(s.last_access));
        Ok(sessions)
    }

    async fn delete_by_principal(&self, principal: &str) -> Result<u64, StoreError> {
        let Stores { old, new } = &*self.stores;
        Ok(old.delete_by_principal(principal).await? + new.delete_by_principal(principal).await?)
    }

    async fn delete_expired(&self) -> Result<u64, StoreError> {
        let Stores { old, new } = &*self.stores;
        Ok(old.delete_expired().await? + new.delete_expired().await?)
    }

    /// Both stores: a request may need either one.
    async fn ping(&self) -> Result<(), StoreError> {
        let Stores { old, new } = &*self.stores;
        old.ping().await?;
        new.ping().await
    }

    /// `"migrating"`: its calls go to two stores.
    fn backend(&self) -> &'static str {
        "migrating"
    }
}
