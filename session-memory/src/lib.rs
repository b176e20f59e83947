#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use moka::Expiry as CacheExpiry;
use moka::future::Cache;
use moka::ops::compute::{CompResult, Op};
use session_core::record::now;
use session_core::time::OffsetDateTime;
use session_core::{
    Record, SaveOutcome, SessionInfo, SessionStore, StoreError, StoreKey, async_trait,
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
    cache: Cache<StoreKey, Arc<Record>>,
    index: Arc<Mutex<PrincipalIndex>>,
}

/// Keys per principal. A superset: every live record with a principal has its
/// key here, and dead or moved keys are pruned lazily (when listed, and
/// whenever the index has grown to twice the live sessions).
#[derive(Default)]
struct PrincipalIndex {
    keys: HashMap<String, HashSet<StoreKey>>,
    entries: usize,
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

impl CacheExpiry<StoreKey, Arc<Record>> for RecordDeadline {
    fn expire_after_create(
        &self,
        _key: &StoreKey,
        record: &Arc<Record>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(record.ttl(now()))
    }

    fn expire_after_update(
        &self,
        _key: &StoreKey,
        record: &Arc<Record>,
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

    /// A store holding at most `max_sessions` sessions. When it is full, new
    /// sessions evict others (moka's TinyLFU policy: rarely used ones first).
    pub fn with_capacity(max_sessions: u64) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(max_sessions)
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
    /// already holds is skipped and left in both.
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
            if other.create(&key, &record).await? {
                self.cache.invalidate(&*key).await;
                report.moved += 1;
            } else {
                report.skipped += 1;
            }
        }
        Ok(report)
    }

    fn index(&self) -> MutexGuard<'_, PrincipalIndex> {
        // The index is a hint verified on use, so a panic elsewhere while it
        // was held leaves nothing inconsistent enough to refuse service over.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes `key` under the record's principal, before the write that makes
    /// it so, so the index is never missing a live record.
    fn index_add(&self, key: &StoreKey, record: &Record) {
        let Some(principal) = &record.principal else {
            return;
        };
        let mut index = self.index();
        if index
            .keys
            .entry(principal.clone())
            .or_default()
            .insert(key.clone())
        {
            index.entries += 1;
        }
        let live = usize::try_from(self.cache.entry_count()).unwrap_or(usize::MAX);
        if index.entries > 2 * live.max(1024) {
            self.prune(&mut index);
        }
    }

    /// Drops keys whose session is gone from the index.
    fn prune(&self, index: &mut PrincipalIndex) {
        let cache = &self.cache;
        index.keys.retain(|_, keys| {
            keys.retain(|key| cache.contains_key(key));
            !keys.is_empty()
        });
        index.entries = index.keys.values().map(HashSet::len).sum();
    }

    fn index_take(&self, principal: &str) -> HashSet<StoreKey> {
        let mut index = self.index();
        let keys = index.keys.remove(principal).unwrap_or_default();
        index.entries -= keys.len();
        keys
    }

    fn index_restore(&self, principal: &str, keys: HashSet<StoreKey>) {
        if keys.is_empty() {
            return;
        }
        let mut index = self.index();
        let set = index.keys.entry(principal.to_owned()).or_default();
        let before = set.len();
        set.extend(keys);
        let added = set.len() - before;
        index.entries += added;
    }
}

fn live(
    entry: Option<&moka::Entry<StoreKey, Arc<Record>>>,
    now: OffsetDateTime,
) -> Option<&Record> {
    entry.map(|e| &**e.value()).filter(|r| !r.is_expired(now))
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(&self, key: &StoreKey, record: &Record) -> Result<bool, StoreError> {
        self.index_add(key, record);
        let new = Arc::new(record.clone());
        let result = self
            .cache
            .entry_by_ref(key)
            .and_compute_with(|entry| {
                let op = match live(entry.as_ref(), now()) {
                    Some(_) => Op::Nop,
                    None => Op::Put(new),
                };
                std::future::ready(op)
            })
            .await;
        Ok(matches!(
            result,
            CompResult::Inserted(_) | CompResult::ReplacedWith(_)
        ))
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        let now = now();
        Ok(self
            .cache
            .get(key)
            .await
            .filter(|r| !r.is_expired(now))
            .map(|r| (*r).clone()))
    }

    async fn save(
        &self,
        key: &StoreKey,
        record: &Record,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError> {
        self.index_add(key, record);
        let new = Arc::new(record.clone());
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
                    Some(_) => {
                        outcome = SaveOutcome::Saved;
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
                        let mut record = current.clone();
                        record.last_access = now;
                        record.idle_deadline = idle_deadline.min(record.absolute_deadline);
                        Op::Put(Arc::new(record))
                    }
                };
                std::future::ready(op)
            })
            .await;
        Ok(touched)
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        self.cache.invalidate(key).await;
        Ok(())
    }

    async fn list_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let keys = self.index_take(principal);
        let now = now();
        let mut sessions = Vec::new();
        let mut still = HashSet::new();
        for key in keys {
            if let Some(record) = self.cache.get(&key).await
                && !record.is_expired(now)
                && record.principal.as_deref() == Some(principal)
            {
                sessions.push(SessionInfo::new(key.clone(), &record));
                still.insert(key);
            }
        }
        self.index_restore(principal, still);
        sessions.sort_by_key(|s| std::cmp::Reverse(s.last_access));
        Ok(sessions)
    }

    async fn delete_by_principal(&self, principal: &str) -> Result<u64, StoreError> {
        let keys = self.index_take(principal);
        let mut deleted = 0;
        for key in keys {
            let result = self
                .cache
                .entry_by_ref(&key)
                .and_compute_with(|entry| {
                    let op = match live(entry.as_ref(), now()) {
                        Some(r) if r.principal.as_deref() == Some(principal) => Op::Remove,
                        _ => Op::Nop,
                    };
                    std::future::ready(op)
                })
                .await;
            if matches!(result, CompResult::Removed(_)) {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Runs the cache's housekeeping and prunes the principal index. Returns
    /// `0`: expired records are invisible at once and their memory is
    /// reclaimed by the cache itself.
    async fn delete_expired(&self) -> Result<u64, StoreError> {
        self.cache.run_pending_tasks().await;
        let mut index = self.index();
        self.prune(&mut index);
        Ok(0)
    }
}
