#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use moka::Expiry as CacheExpiry;
use moka::future::Cache;
use moka::ops::compute::{CompResult, Op};
use moka::policy::EvictionPolicy;
use serde_json::Value;
use session_core::record::now;
use session_core::time::OffsetDateTime;
use session_core::{
    Data, DeleteOutcome, Record, SaveOutcome, SessionInfo, SessionStore, StoreError, StoreKey,
    async_trait,
};

pub use moka;

/// Sessions a [`MemoryStore::new`] store holds at most.
pub const DEFAULT_CAPACITY: u64 = 1_000_000;

/// Sessions in this process's memory, on a [moka] cache: the stateful mode.
///
/// Each record expires by itself at its own deadline (moka's per-entry
/// expiry); the cache holds at most its capacity, evicting the least useful
/// sessions first when full. Records are copied in and out: a handler never
/// mutates a stored value in place. `create` and the compare-and-set `save`
/// are atomic through moka's per-key `and_compute_with`.
///
/// Cloning is cheap and clones share the sessions.
///
/// ```
/// use session_memory::MemoryStore;
///
/// let store = MemoryStore::with_capacity(10_000);
/// let layer = session_core::SessionLayer::new(store.clone());
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<StoreKey, Arc<Stored>>,
    index: Arc<Mutex<PrincipalIndex>>,
}

/// A record as the cache holds it: its fields in `meta`, whose own data map
/// stays empty (an empty map allocates nothing), and the data as one
/// exact-size slice in key order. A `serde_json::Map` is a B-tree whose
/// smallest node has room for 11 entries, over 600 bytes for a session
/// holding one value; the slice holds just what is there. Touches share the
/// slice instead of copying it.
struct Stored {
    meta: Record,
    data: Arc<[(Box<str>, Value)]>,
}

impl Stored {
    fn new(record: &Record) -> Self {
        // Cloned whole (the fields are not all ours to name: `Record` may
        // grow), then the copied map is dropped for the slice.
        let mut meta = record.clone();
        meta.data = Data::new();
        let data = record
            .data
            .iter()
            .map(|(k, v)| (Box::from(k.as_str()), v.clone()))
            .collect();
        Self { meta, data }
    }

    /// The stored record, data included.
    fn record(&self) -> Record {
        let mut record = self.meta.clone();
        record.data = self
            .data
            .iter()
            .map(|(k, v)| (String::from(&**k), v.clone()))
            .collect();
        record
    }
}

impl std::ops::Deref for Stored {
    type Target = Record;

    /// The record's fields, except the data (see [`Stored::record`]).
    fn deref(&self) -> &Record {
        &self.meta
    }
}

/// Keys per principal.
///
/// Invariant: every live record with a principal has its key under that
/// principal here. Keys are only ever added or removed inside the record's
/// own `and_compute_with` (moka's per-key lock), so the index cannot miss a
/// write racing with a removal. Keys of records that expired or were evicted
/// stay until pruned (when listed, and whenever the index has grown past
/// twice the live sessions), again under the record's lock.
#[derive(Default)]
struct PrincipalIndex {
    keys: HashMap<String, HashSet<StoreKey>>,
    entries: usize,
}

impl PrincipalIndex {
    fn add(&mut self, principal: &str, key: &StoreKey) {
        if self
            .keys
            .entry(principal.to_owned())
            .or_default()
            .insert(key.clone())
        {
            self.entries += 1;
        }
    }

    fn remove(&mut self, principal: &str, key: &StoreKey) {
        if let Some(keys) = self.keys.get_mut(principal) {
            if keys.remove(key) {
                self.entries -= 1;
            }
            if keys.is_empty() {
                self.keys.remove(principal);
            }
        }
    }

    /// Moves `key` from `old`'s set to `new`'s, as a write changes the principal.
    fn update(&mut self, key: &StoreKey, old: Option<&str>, new: Option<&str>) {
        if old == new {
            return;
        }
        if let Some(old) = old {
            self.remove(old, key);
        }
        if let Some(new) = new {
            self.add(new, key);
        }
    }

    fn snapshot(&self, principal: &str) -> Vec<StoreKey> {
        self.keys
            .get(principal)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("sessions", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`MemoryStore::drain_into`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DrainReport {
    /// Live sessions written to the other store (and removed from this one).
    pub moved: u64,
    /// Live sessions the other store already had under the same key (kept there, and here).
    pub skipped: u64,
}

/// Per-entry expiry: an entry lives until its record's deadline.
struct RecordDeadline;

impl CacheExpiry<StoreKey, Arc<Stored>> for RecordDeadline {
    fn expire_after_create(
        &self,
        _key: &StoreKey,
        record: &Arc<Stored>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(record.ttl(now()))
    }

    fn expire_after_update(
        &self,
        _key: &StoreKey,
        record: &Arc<Stored>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(record.ttl(now()))
    }
}

impl MemoryStore {
    /// A store holding at most [`DEFAULT_CAPACITY`] sessions.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// A store holding at most `max_sessions` sessions. When it is full, a
    /// new session evicts the least recently used one.
    ///
    /// (Least recently used, not moka's default TinyLFU: TinyLFU may refuse
    /// to admit a new entry when the cache is full of frequently read ones,
    /// which for sessions would silently drop every new login.)
    pub fn with_capacity(max_sessions: u64) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(max_sessions)
                .eviction_policy(EvictionPolicy::lru())
                .expire_after(RecordDeadline)
                .build(),
            index: Arc::default(),
        }
    }

    /// The number of sessions held (approximate: expired entries may still
    /// count until the cache's housekeeping runs).
    pub fn len(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Whether the store holds no sessions (approximate, like [`len`](Self::len)).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hands every live session to `other` and removes it from this store: a
    /// stateful app calls this at shutdown to move its users to Redis or
    /// Postgres without logging anyone out.
    ///
    /// Records keep their version, deadlines and principal. A key `other`
    /// already holds is skipped and left in both. Call it once the server has
    /// stopped taking requests: a session changed here while it is being
    /// copied stays here (it is only removed if unchanged since the copy).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), session_core::StoreError> {
    /// use session_memory::MemoryStore;
    ///
    /// let (local, next) = (MemoryStore::new(), MemoryStore::new());
    /// let report = local.drain_into(&next).await?;
    /// assert_eq!(report.moved, 0);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The first error of `other`; sessions not moved by then stay here.
    pub async fn drain_into(&self, other: &dyn SessionStore) -> Result<DrainReport, StoreError> {
        let mut report = DrainReport::default();
        let now = now();
        let entries: Vec<_> = self.cache.iter().collect();
        for (key, record) in entries {
            if record.is_expired(now) {
                continue;
            }
            if other.create(&key, &record.record()).await? {
                let version = record.version;
                self.remove_if(&key, |r| r.version == version).await;
                report.moved += 1;
            } else {
                report.skipped += 1;
            }
        }
        Ok(report)
    }

    fn index(&self) -> MutexGuard<'_, PrincipalIndex> {
        // The index is only changed in short critical sections that cannot
        // panic halfway; a poisoned lock carries no broken invariant.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes the record under `key` if it is live and `pred` holds, under
    /// the key's lock, keeping the index in step. Returns whether it did.
    async fn remove_if(&self, key: &StoreKey, pred: impl FnOnce(&Record) -> bool) -> bool {
        let result = self
            .cache
            .entry_by_ref(key)
            .and_compute_with(|entry| {
                let op = match entry.as_ref().map(|e| &**e.value()) {
                    Some(record) if !record.is_expired(now()) && pred(record) => {
                        if let Some(p) = &record.principal {
                            self.index().remove(p, key);
                        }
                        Op::Remove
                    }
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
        matches!(result, CompResult::Removed(_))
    }

    /// Drops `key` from `principal`'s set unless its record is live and
    /// still belongs to `principal`; decided under the key's lock.
    async fn prune_key(&self, principal: &str, key: &StoreKey) {
        self.cache
            .entry_by_ref(key)
            .and_compute_with(|entry| {
                let keep = live(entry.as_ref(), now())
                    .is_some_and(|r| r.principal.as_deref() == Some(principal));
                if !keep {
                    self.index().remove(principal, key);
                }
                std::future::ready(Op::Nop)
            })
            .await;
    }

    /// Prunes the whole index once it has grown past twice the live sessions.
    async fn prune_if_grown(&self) {
        let live = usize::try_from(self.cache.entry_count()).unwrap_or(usize::MAX);
        let entries = self.index().entries;
        if entries > 2 * live.max(1024) {
            self.prune().await;
        }
    }

    async fn prune(&self) {
        let all: Vec<(String, StoreKey)> = {
            let index = self.index();
            index
                .keys
                .iter()
                .flat_map(|(p, keys)| keys.iter().map(move |k| (p.clone(), k.clone())))
                .collect()
        };
        for (principal, key) in all {
            if !self.cache.contains_key(&key) {
                self.prune_key(&principal, &key).await;
            }
        }
    }
}

fn live(
    entry: Option<&moka::Entry<StoreKey, Arc<Stored>>>,
    now: OffsetDateTime,
) -> Option<&Stored> {
    entry.map(|e| &**e.value()).filter(|r| !r.is_expired(now))
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(&self, key: &StoreKey, record: &Record) -> Result<bool, StoreError> {
        let new = Arc::new(Stored::new(record));
        let result = self
            .cache
            .entry_by_ref(key)
            .and_compute_with(|entry| {
                let op = match live(entry.as_ref(), now()) {
                    Some(_) => Op::Nop,
                    None => {
                        let old = entry.as_ref().and_then(|e| e.value().principal.clone());
                        self.index()
                            .update(key, old.as_deref(), new.principal.as_deref());
                        Op::Put(new)
                    }
                };
                std::future::ready(op)
            })
            .await;
        let created = matches!(
            result,
            CompResult::Inserted(_) | CompResult::ReplacedWith(_)
        );
        if created {
            self.prune_if_grown().await;
        }
        Ok(created)
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        let now = now();
        Ok(self
            .cache
            .get(key)
            .await
            .filter(|r| !r.is_expired(now))
            .map(|r| r.record()))
    }

    async fn save(
        &self,
        key: &StoreKey,
        record: &Record,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError> {
        let new = Arc::new(Stored::new(record));
        let mut outcome = SaveOutcome::Gone;
        self.cache
            .entry_by_ref(key)
            .and_compute_with(|entry| {
                let op = match live(entry.as_ref(), now()) {
                    None => Op::Nop,
                    Some(current) if current.version != expected_version => {
                        outcome = SaveOutcome::Conflict;
                        Op::Nop
                    }
                    Some(current) => {
                        outcome = SaveOutcome::Saved;
                        self.index().update(
                            key,
                            current.principal.as_deref(),
                            new.principal.as_deref(),
                        );
                        Op::Put(new)
                    }
                };
                std::future::ready(op)
            })
            .await;
        Ok(outcome)
    }

    async fn touch(
        &self,
        key: &StoreKey,
        idle_deadline: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut touched = false;
        self.cache
            .entry_by_ref(key)
            .and_compute_with(|entry| {
                let now = now();
                let op = match live(entry.as_ref(), now) {
                    None => Op::Nop,
                    Some(current) => {
                        touched = true;
                        let mut meta = current.meta.clone();
                        meta.last_access = now;
                        // Only ever later (a parallel save may have set a
                        // longer idle timeout), never past the absolute deadline.
                        meta.idle_deadline = idle_deadline
                            .max(current.idle_deadline)
                            .min(meta.absolute_deadline);
                        Op::Put(Arc::new(Stored {
                            meta,
                            data: current.data.clone(),
                        }))
                    }
                };
                std::future::ready(op)
            })
            .await;
        Ok(touched)
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        // Through the key's lock like every write, so a save or touch that
        // already read the record cannot put it back after this.
        self.cache
            .entry_by_ref(key)
            .and_compute_with(|entry| {
                let op = match entry.as_ref().map(|e| &**e.value()) {
                    Some(record) => {
                        if let Some(p) = &record.principal {
                            self.index().remove(p, key);
                        }
                        Op::Remove
                    }
                    None => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
        Ok(())
    }

    async fn delete_if_unchanged(
        &self,
        key: &StoreKey,
        expected_version: u64,
    ) -> Result<DeleteOutcome, StoreError> {
        let mut outcome = DeleteOutcome::Gone;
        self.cache
            .entry_by_ref(key)
            .and_compute_with(|entry| {
                let op = match live(entry.as_ref(), now()) {
                    None => Op::Nop,
                    Some(current) if current.version != expected_version => {
                        outcome = DeleteOutcome::Conflict;
                        Op::Nop
                    }
                    Some(current) => {
                        outcome = DeleteOutcome::Deleted;
                        if let Some(p) = &current.principal {
                            self.index().remove(p, key);
                        }
                        Op::Remove
                    }
                };
                std::future::ready(op)
            })
            .await;
        Ok(outcome)
    }

    async fn list_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let now = now();
        let mut sessions = Vec::new();
        let keys = self.index().snapshot(principal);
        for key in keys {
            match self.cache.get(&key).await {
                Some(record)
                    if !record.is_expired(now)
                        && record.principal.as_deref() == Some(principal) =>
                {
                    sessions.push(SessionInfo::new(key, &record.record()));
                }
                _ => self.prune_key(principal, &key).await,
            }
        }
        sessions.sort_by_key(|s| std::cmp::Reverse(s.last_access));
        Ok(sessions)
    }

    async fn delete_by_principal(&self, principal: &str) -> Result<u64, StoreError> {
        let mut deleted = 0;
        let keys = self.index().snapshot(principal);
        for key in keys {
            if self
                .remove_if(&key, |r| r.principal.as_deref() == Some(principal))
                .await
            {
                deleted += 1;
            } else {
                self.prune_key(principal, &key).await;
            }
        }
        Ok(deleted)
    }

    /// Runs the cache's housekeeping and prunes the principal index. Returns
    /// `0`: expired records are invisible at once and their memory is
    /// reclaimed by the cache itself.
    async fn delete_expired(&self) -> Result<u64, StoreError> {
        self.cache.run_pending_tasks().await;
        self.prune().await;
        Ok(0)
    }
}
