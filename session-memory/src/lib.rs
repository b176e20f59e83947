#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use serde_json::Value;
use session_core::record::now;
use session_core::time::OffsetDateTime;
use session_core::{
    Data, DeleteOutcome, LoadOutcome, Record, SaveOutcome, SessionInfo, SessionStore, StoreError,
    StoreKey, async_trait,
};
use tokio::sync::Notify;

mod engine;

use engine::{Applied, Engine, Op};

/// Stripes of the async per-key locks a drain's hand-over holds across its
/// copy to the target (see [`MemoryStore::compute`]).
const KEY_LOCKS: usize = 4096;

/// Sessions a [`MemoryStore::new`] store holds at most.
pub const DEFAULT_CAPACITY: u64 = 1_000_000;

/// Sessions in this process's memory: the stateful mode.
///
/// Sessions live in a sharded hash map (up to 256 shards, each behind its
/// own short mutex). Each record expires at its own deadlines: an expired
/// record is never returned, and its memory is reclaimed when its shard
/// fills up, every 1024 new sessions in a shard, or on
/// [`delete_expired`](SessionStore::delete_expired). The store holds at most
/// its capacity; when full, a new session evicts the least recently used
/// sessions of its shard. Records are copied in and out: a handler never mutates a stored
/// value in place. Every change of a session (`create`, the compare-and-set
/// `save`, `touch`, deletes) is decided and made in one critical section on
/// its shard, so two changes of one key never interleave.
///
/// Cloning is cheap and clones share the sessions.
///
/// [`drain_into`](Self::drain_into) hands the sessions to another store
/// (Redis, Postgres) without logging anyone out, even while requests are
/// still running: from then on this store forwards to the other one.
///
/// ```
/// use session_memory::MemoryStore;
///
/// let store = MemoryStore::with_capacity(10_000);
/// let layer = session_core::SessionLayer::new(store.clone());
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    engine: Arc<Engine>,
    /// Per-key locks, striped: see [`MemoryStore::compute`].
    locks: Arc<[tokio::sync::Mutex<()>]>,
    index: Arc<Mutex<PrincipalIndex>>,
    drain: Arc<Drain>,
}

/// A drain's state, shared by clones. Before a drain starts, `draining` is
/// false and nothing here is used but the count of creates under way.
///
/// Once a drain starts the store *forwards*: every key leaves memory only
/// by being handed over ([`MemoryStore::hand_over`]: copied into the target
/// and removed here in one step under the key's lock), every call for a key
/// hands it over first and then goes to the target, and a load that does
/// not find its key here asks the target. Nothing is ever put in memory
/// again. So a write racing a copy is either before it (and copied) or
/// after it (and made in the target), and a key is in memory, in the
/// target, or (while being copied) in both: never in neither.
#[derive(Default)]
struct Drain {
    /// Set once, when the first drain starts, after `target`.
    draining: AtomicBool,
    target: OnceLock<Arc<dyn SessionStore>>,
    /// Creates running in the normal mode (they insert into memory). A
    /// drain waits for them after setting `draining` and before listing the
    /// sessions, so that none of them inserts a key after the list is made.
    creating: AtomicUsize,
    created: Notify,
    /// Sessions handed over so far: created in the target, or found there
    /// already as this very record (a copy whose removal here was cut short).
    moved: AtomicU64,
    /// Sessions whose key the target already held with another record.
    skipped: AtomicU64,
}

/// What one hand-over of a key did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HandOver {
    /// The session is in the target now, and no longer here.
    Moved,
    /// The target held the key with another record: kept there, dropped here.
    Skipped,
    /// The target answered `create` with `false` but holds no live record
    /// under the key (a store may block a key for a while, as the Redis
    /// store does after a principal cleanup): the session stays here.
    Refused,
    /// No live session here.
    Absent,
}

impl Drain {
    /// The target, once a drain has started.
    fn target(&self) -> Option<&Arc<dyn SessionStore>> {
        if self.draining.load(Ordering::SeqCst) {
            self.target.get()
        } else {
            None
        }
    }

    /// Waits until no create that started in the normal mode is still running.
    async fn creates_settled(&self) {
        loop {
            let mut settled = std::pin::pin!(self.created.notified());
            settled.as_mut().enable();
            if self.creating.load(Ordering::SeqCst) == 0 {
                return;
            }
            settled.await;
        }
    }

    fn report(&self, kept: u64) -> DrainReport {
        DrainReport {
            moved: self.moved.load(Ordering::SeqCst),
            skipped: self.skipped.load(Ordering::SeqCst),
            kept,
        }
    }
}

/// A create in the normal mode, counted while it runs (see [`Drain::creating`]).
///
/// The count goes up before the create checks `draining` and the drain sets
/// `draining` before it reads the count (all `SeqCst`): either the create
/// sees the drain and forwards, or the drain sees the create and waits.
struct Creating<'a>(&'a Drain);

impl<'a> Creating<'a> {
    fn enter(drain: &'a Drain) -> Self {
        drain.creating.fetch_add(1, Ordering::SeqCst);
        Self(drain)
    }
}

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        if self.0.creating.fetch_sub(1, Ordering::SeqCst) == 1
            && self.0.draining.load(Ordering::SeqCst)
        {
            self.0.created.notify_waiters();
        }
    }
}

/// A record as the store holds it: its fields in `meta`, whose own data map
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
/// principal here. Keys are only ever added or removed under the record's
/// key lock ([`MemoryStore::compute`]), so the index cannot miss a
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
            .field("sessions", &self.engine.len())
            .field("draining", &self.is_draining())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`MemoryStore::drain_into`] did: counts since the drain started,
/// including the sessions requests handed over while it ran.
///
/// Every live session this store held when the drain started is counted
/// once, in `moved` or `skipped`, unless it expired first or is still
/// `kept` here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DrainReport {
    /// Live sessions removed from this store and created in the other one
    /// (a logout after that deletes them there, as it should).
    pub moved: u64,
    /// Live sessions whose key the other store already held with another
    /// record: the other store's record was kept as it was, this store's
    /// copy was dropped.
    pub skipped: u64,
    /// Live sessions of this call's pass that the other store refused
    /// although it holds no live record under their key (a store may block
    /// a key for a while, as the Redis store does after a principal
    /// cleanup). They are still here and served from here; the next write
    /// to one, or another `drain_into`, tries again. They are lost if the
    /// process exits.
    pub kept: u64,
}

impl MemoryStore {
    /// A store holding at most [`DEFAULT_CAPACITY`] sessions.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// A store holding at most `max_sessions` sessions (give or take the
    /// few creates racing each other). A new session arriving when the
    /// store is full makes room in its own shard: the shard's expired
    /// sessions go first, then its least recently used thirty-second (at
    /// least one session). A shard also makes room once it holds twice its
    /// share of `max_sessions`. A new session is always admitted: however
    /// busy the others are, a login is never refused for lack of room.
    pub fn with_capacity(max_sessions: u64) -> Self {
        Self {
            engine: Arc::new(Engine::with_capacity(max_sessions)),
            locks: (0..KEY_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            index: Arc::default(),
            drain: Arc::default(),
        }
    }

    /// The number of sessions held (approximate: expired sessions count
    /// until their memory is reclaimed, see [`MemoryStore`]).
    pub fn len(&self) -> u64 {
        self.engine.len()
    }

    /// Sets the `session_memory_sessions` gauge to [`len`](Self::len).
    /// Without a metrics recorder installed this costs a look-up of the
    /// recorder (the gauge's key is a constant).
    fn gauge_held(&self) {
        // Far below 2^52 sessions: exact as an f64.
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!("session_memory_sessions").set(self.len() as f64);
    }

    /// Whether the store holds no sessions (approximate, like [`len`](Self::len)).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hands every live session to `other` and removes it from this store: a
    /// stateful app calls this at shutdown to move its users to Redis or
    /// Postgres without logging anyone out.
    ///
    /// Records keep their version, deadlines and principal. It is safe with
    /// requests still running: from the moment it starts, this store
    /// *forwards* to `other`, for good:
    ///
    /// - every new session is created in `other`;
    /// - a write (`save`, `touch`, `delete`, `delete_if_unchanged`, `create`)
    ///   to a session still here first moves that session to `other` (copy,
    ///   then removal here, under the key's lock, so a write racing the drain's
    ///   own copy is either copied with it or made in `other` after it), then
    ///   goes to `other`;
    /// - a load of a key not here asks `other`; principal listings and
    ///   deletions cover both.
    ///
    /// So no acknowledged write is lost, no logout is undone and no session
    /// created meanwhile is left behind. A key `other` already holds with
    /// another record keeps `other`'s record (counted as
    /// [`skipped`](DrainReport::skipped)): that is the store every later
    /// request reads, and its record may hold writes made there; this
    /// store's copy is dropped. Calling it again (say, after an error)
    /// resumes the same drain, into the store the first call named; the
    /// report counts since the first call.
    ///
    /// `other` must not be this store (that is refused) nor a store that
    /// forwards back to it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), session_core::StoreError> {
    /// use session_core::SessionStore;
    /// use session_core::conformance::store::{new_key, new_record};
    /// use session_memory::MemoryStore;
    ///
    /// let (local, next) = (MemoryStore::new(), MemoryStore::new());
    /// let key = new_key();
    /// local.create(&key, &new_record()).await?;
    ///
    /// let report = local.drain_into(&next).await?;
    /// assert_eq!((report.moved, report.skipped), (1, 0));
    /// assert!(next.load(&key).await?.is_some());
    /// // Late requests still find their session, and new ones land in `next`.
    /// assert!(local.load(&key).await?.is_some());
    /// let late = new_key();
    /// local.create(&late, &new_record()).await?;
    /// assert!(next.load(&late).await?.is_some());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The first error of `other`; sessions not moved by then stay here, and
    /// the store keeps forwarding (a request for one of them moves it). A
    /// session `other` refuses without holding one is not an error: it is
    /// counted in [`kept`](DrainReport::kept), and a write to it fails (to
    /// be retried) rather than go to a store that does not hold it.
    pub async fn drain_into<S: SessionStore + Clone>(
        &self,
        other: &S,
    ) -> Result<DrainReport, StoreError> {
        if let Some(other) = (other as &dyn Any).downcast_ref::<Self>()
            && Arc::ptr_eq(&other.drain, &self.drain)
        {
            return Err(StoreError::backend(
                "a memory store cannot drain into itself",
            ));
        }
        // A drain already started keeps its target.
        let _ = self.drain.target.set(Arc::new(other.clone()));
        self.drain.draining.store(true, Ordering::SeqCst);
        // No create still inserting into memory: the list below is complete,
        // and nothing is put into memory after it.
        self.drain.creates_settled().await;
        let keys = self.engine.keys();
        let mut kept = 0;
        for key in keys {
            if self.hand_over(&key).await? == HandOver::Refused {
                kept += 1;
            }
        }
        Ok(self.drain.report(kept))
    }

    /// Whether a [`drain_into`](Self::drain_into) has started: this store
    /// then forwards to the drain's target.
    pub fn is_draining(&self) -> bool {
        self.drain.target().is_some()
    }

    /// While draining: moves `key`'s session to the target (if this store
    /// holds it), then gives the target for the call itself, and what the
    /// hand-over did. After [`HandOver::Refused`] the session is still here
    /// and the target does not hold it: the call must not go there as is.
    async fn forward(
        &self,
        key: &StoreKey,
    ) -> Result<(&Arc<dyn SessionStore>, HandOver), StoreError> {
        let handed = self.hand_over(key).await?;
        let target = self
            .drain
            .target()
            .ok_or_else(|| StoreError::backend("memory store forwarding without a drain"))?;
        Ok((target, handed))
    }

    /// Moves the live record under `key`, if any, to the drain's target and
    /// removes it here. It runs in its own task when a runtime is at hand,
    /// so a caller that gives up (a timeout, a client gone) cannot cut it
    /// between the copy and the removal.
    async fn hand_over(&self, key: &StoreKey) -> Result<HandOver, StoreError> {
        // Nothing is put into memory while draining: absent stays absent.
        if !self.engine.contains(key) {
            return Ok(HandOver::Absent);
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let (store, key) = (self.clone(), key.clone());
                runtime
                    .spawn(async move { store.hand_over_now(&key).await })
                    .await
                    .map_err(StoreError::backend)?
            }
            Err(_) => self.hand_over_now(key).await,
        }
    }

    async fn hand_over_now(&self, key: &StoreKey) -> Result<HandOver, StoreError> {
        let Some(target) = self.drain.target() else {
            return Ok(HandOver::Absent);
        };
        // Under the key's lock: no call on this key runs until the copy is
        // made and the record removed here.
        let _turn = self.lock(key).await;
        let current = self.engine.get(key);
        let Some(stored) = live(current.as_ref(), now()) else {
            return Ok(HandOver::Absent);
        };
        let record = stored.record();
        let outcome = if target.create(key, &record).await? {
            HandOver::Moved
        } else {
            match target.load(key).await? {
                // An earlier copy of ours whose removal here never
                // happened: moved all the same.
                Some(there) if there == record => HandOver::Moved,
                Some(_) => HandOver::Skipped,
                // Refused without a live record there (a store may
                // block a key for a while): ours stays.
                None => HandOver::Refused,
            }
        };
        let mut removed = false;
        if outcome != HandOver::Refused {
            if let Some(p) = &stored.principal {
                self.index().remove(p, key);
            }
            self.engine.remove(key);
            removed = true;
        }
        match outcome {
            HandOver::Moved if removed => {
                self.drain.moved.fetch_add(1, Ordering::SeqCst);
            }
            HandOver::Skipped if removed => {
                self.drain.skipped.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
        Ok(outcome)
    }

    /// The lock every change of `key` is made under (one of
    /// [`KEY_LOCKS`] stripes; store keys are uniformly random, so their
    /// first characters spread them evenly).
    async fn lock(&self, key: &StoreKey) -> tokio::sync::MutexGuard<'_, ()> {
        let mut bytes = [0u8; 8];
        for (to, from) in bytes.iter_mut().zip(key.as_str().bytes()) {
            *to = from;
        }
        // Mixed by a multiplication; the top bits pick the stripe.
        let hash = u64::from_le_bytes(bytes).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let stripe = usize::try_from(hash >> 52).unwrap_or(0) % self.locks.len();
        self.locks[stripe].lock().await
    }

    /// Decides what to do with `key`'s current entry (`None` when absent;
    /// an expired entry is given as it is) under the key's lock, and does
    /// it: the one way this store changes a key, so that a decision and its
    /// write are atomic.
    ///
    /// The key's lock is its shard's mutex ([`Engine::compute`]). While a
    /// drain runs, the key's stripe lock is taken first too: a hand-over
    /// holds it across its copy to the target, so no change of the key
    /// runs between the copy and the removal here. (A change that started
    /// before the drain and skipped the stripe lock still decides under the
    /// shard mutex, after `draining` was set, so it sees the drain and
    /// forwards instead of writing here.)
    async fn compute(
        &self,
        key: &StoreKey,
        decide: impl FnOnce(Option<&Arc<Stored>>) -> Op,
    ) -> Applied {
        if self.drain.draining.load(Ordering::SeqCst) {
            let _turn = self.lock(key).await;
            return self.engine.compute(key, decide);
        }
        self.engine.compute(key, decide)
    }

    fn index(&self) -> MutexGuard<'_, PrincipalIndex> {
        // The index is only changed in short critical sections that cannot
        // panic halfway; a poisoned lock carries no broken invariant.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes the record under `key` if it is live and `pred` holds, under
    /// the key's lock, keeping the index in step. Returns whether it did.
    /// While draining it never removes (records only leave by being handed over).
    async fn remove_if(&self, key: &StoreKey, pred: impl FnOnce(&Record) -> bool) -> bool {
        let result = self
            .compute(key, |entry| match entry.map(|e| &**e) {
                _ if self.drain.target().is_some() => Op::Nop,
                Some(record) if !record.is_expired(now()) && pred(record) => {
                    if let Some(p) = &record.principal {
                        self.index().remove(p, key);
                    }
                    Op::Remove
                }
                _ => Op::Nop,
            })
            .await;
        result == Applied::Removed
    }

    /// Removes the record under `key` if it is expired, under the key's
    /// lock, keeping the index in step: `Some` (with its principal) when
    /// this call removed it. While draining it never removes (the drain
    /// skips expired records; the target decides).
    async fn purge_expired_key(&self, key: &StoreKey) -> Option<Option<String>> {
        let mut purged = None;
        self.compute(key, |entry| match entry.map(|e| &**e) {
            _ if self.drain.target().is_some() => Op::Nop,
            Some(record) if record.is_expired(now()) => {
                if let Some(p) = &record.principal {
                    self.index().remove(p, key);
                }
                purged = Some(record.principal.clone());
                Op::Remove
            }
            _ => Op::Nop,
        })
        .await;
        if purged.is_some() {
            self.gauge_held();
        }
        purged
    }

    /// Removes the live record under `key` from memory if `pred` holds,
    /// whatever the mode (for a session the drain's target refused), under
    /// the key's lock, keeping the index in step.
    async fn remove_here(
        &self,
        key: &StoreKey,
        pred: impl FnOnce(&Record) -> bool,
    ) -> DeleteOutcome {
        let mut outcome = DeleteOutcome::Gone;
        self.compute(key, |entry| match live(entry, now()) {
            None => Op::Nop,
            Some(record) if !pred(record) => {
                outcome = DeleteOutcome::Conflict;
                Op::Nop
            }
            Some(record) => {
                outcome = DeleteOutcome::Deleted;
                if let Some(p) = &record.principal {
                    self.index().remove(p, key);
                }
                Op::Remove
            }
        })
        .await;
        outcome
    }

    /// Drops `key` from `principal`'s set unless its record is live and
    /// still belongs to `principal`; decided under the key's lock.
    async fn prune_key(&self, principal: &str, key: &StoreKey) {
        self.compute(key, |entry| {
            let keep =
                live(entry, now()).is_some_and(|r| r.principal.as_deref() == Some(principal));
            if !keep {
                self.index().remove(principal, key);
            }
            Op::Nop
        })
        .await;
    }

    /// Prunes the whole index once it has grown past twice the live sessions.
    async fn prune_if_grown(&self) {
        let live = usize::try_from(self.engine.len()).unwrap_or(usize::MAX);
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
            if !self.engine.contains(&key) {
                self.prune_key(&principal, &key).await;
            }
        }
    }
}

/// The error of a write to a session the drain's target refused for now
/// (see `HandOver::Refused`): the caller tries again later.
fn refused() -> StoreError {
    StoreError::backend("the drain's target refused this session for now; try again")
}

fn live(entry: Option<&Arc<Stored>>, now: OffsetDateTime) -> Option<&Stored> {
    entry.map(|e| &**e).filter(|r| !r.is_expired(now))
}

impl MemoryStore {
    /// `create` while draining: a key still held here (its hand-over was
    /// refused) is taken; any other goes to the target.
    async fn create_forwarded(&self, key: &StoreKey, record: &Record) -> Result<bool, StoreError> {
        match self.forward(key).await? {
            (_, HandOver::Refused) => Ok(false),
            (target, _) => target.create(key, record).await,
        }
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(&self, key: &StoreKey, record: &Record) -> Result<bool, StoreError> {
        if self.drain.target().is_some() {
            return self.create_forwarded(key, record).await;
        }
        let creating = Creating::enter(&self.drain);
        if self.drain.target().is_some() {
            drop(creating);
            return self.create_forwarded(key, record).await;
        }
        let new = Arc::new(Stored::new(record));
        let result = self
            .compute(key, |entry| match live(entry, now()) {
                Some(_) => Op::Nop,
                None => {
                    let old = entry.and_then(|e| e.principal.clone());
                    self.index()
                        .update(key, old.as_deref(), new.principal.as_deref());
                    Op::Put(new)
                }
            })
            .await;
        drop(creating);
        let created = result == Applied::Put;
        if created {
            self.prune_if_grown().await;
            self.gauge_held();
        }
        Ok(created)
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        let now = now();
        if let Some(record) = self.engine.get(key).filter(|r| !r.is_expired(now)) {
            return Ok(Some(record.record()));
        }
        // Only after memory said no: a key handed over is removed here after
        // `draining` is set, so a miss caused by a hand-over sees the target.
        match self.drain.target() {
            Some(target) => target.load(key).await,
            None => Ok(None),
        }
    }

    /// As [`load`](Self::load); an expired record met under `key` is purged
    /// under the key's lock, and the load that purged it answers
    /// [`LoadOutcome::Expired`] (one load per expiry: the next finds none).
    async fn load_observed(&self, key: &StoreKey) -> Result<LoadOutcome, StoreError> {
        let now = now();
        match self.engine.get(key) {
            Some(record) if !record.is_expired(now) => {
                return Ok(LoadOutcome::Found(record.record()));
            }
            Some(_) => {
                if let Some(principal) = self.purge_expired_key(key).await {
                    return Ok(LoadOutcome::Expired { principal });
                }
            }
            None => {}
        }
        match self.drain.target() {
            Some(target) => target.load_observed(key).await,
            None => Ok(LoadOutcome::Missing),
        }
    }

    /// True: the memory store holds an expired record until it purges it,
    /// so a load can tell it apart from a missing one.
    fn observes_expiry(&self) -> bool {
        true
    }

    async fn save(
        &self,
        key: &StoreKey,
        record: &Record,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError> {
        let new = Arc::new(Stored::new(record));
        let mut outcome = SaveOutcome::Gone;
        let mut forward = false;
        self.compute(key, |entry| {
            // Decided under the key's lock, so a save cannot reach
            // memory after the key was handed over.
            match live(entry, now()) {
                _ if self.drain.target().is_some() => {
                    forward = true;
                    Op::Nop
                }
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
            }
        })
        .await;
        if forward {
            return match self.forward(key).await? {
                (_, HandOver::Refused) => Err(refused()),
                (target, _) => target.save(key, record, expected_version).await,
            };
        }
        Ok(outcome)
    }

    async fn touch(
        &self,
        key: &StoreKey,
        expected_version: u64,
        idle_deadline: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut touched = false;
        let mut forward = false;
        self.compute(key, |entry| {
            let now = now();
            match live(entry, now) {
                _ if self.drain.target().is_some() => {
                    forward = true;
                    Op::Nop
                }
                None => Op::Nop,
                Some(current) if current.version != expected_version => Op::Nop,
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
            }
        })
        .await;
        if forward {
            return match self.forward(key).await? {
                (_, HandOver::Refused) => Err(refused()),
                (target, _) => target.touch(key, expected_version, idle_deadline).await,
            };
        }
        Ok(touched)
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        // Through the key's lock like every write, so a save or touch that
        // already read the record cannot put it back after this.
        let mut forward = false;
        self.compute(key, |entry| match entry.map(|e| &**e) {
            _ if self.drain.target().is_some() => {
                forward = true;
                Op::Nop
            }
            Some(record) => {
                if let Some(p) = &record.principal {
                    self.index().remove(p, key);
                }
                Op::Remove
            }
            None => Op::Nop,
        })
        .await;
        if forward {
            // Handed over first, then deleted there: a copy the drain is
            // making right now cannot outlive this logout.
            let (target, handed) = self.forward(key).await?;
            if handed == HandOver::Refused {
                self.remove_here(key, |_| true).await;
            }
            return target.delete(key).await;
        }
        self.gauge_held();
        Ok(())
    }

    async fn delete_if_unchanged(
        &self,
        key: &StoreKey,
        expected_version: u64,
    ) -> Result<DeleteOutcome, StoreError> {
        let mut outcome = DeleteOutcome::Gone;
        let mut forward = false;
        self.compute(key, |entry| match live(entry, now()) {
            _ if self.drain.target().is_some() => {
                forward = true;
                Op::Nop
            }
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
        })
        .await;
        if forward {
            let (target, handed) = self.forward(key).await?;
            if handed == HandOver::Refused {
                let here = self
                    .remove_here(key, |r| r.version == expected_version)
                    .await;
                if here != DeleteOutcome::Gone {
                    return Ok(here);
                }
            }
            return target.delete_if_unchanged(key, expected_version).await;
        }
        if outcome == DeleteOutcome::Deleted {
            self.gauge_held();
        }
        Ok(outcome)
    }

    async fn list_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let now = now();
        let mut sessions = Vec::new();
        let keys = self.index().snapshot(principal);
        for key in keys {
            match self.engine.get(&key) {
                Some(record)
                    if !record.is_expired(now)
                        && record.principal.as_deref() == Some(principal) =>
                {
                    sessions.push(SessionInfo::new(key, &record.record()));
                }
                _ => self.prune_key(principal, &key).await,
            }
        }
        // After memory, as in `load`: a session handed over meanwhile is there.
        if let Some(target) = self.drain.target() {
            let here: HashSet<StoreKey> = sessions.iter().map(|s| s.key.clone()).collect();
            let there = target.list_by_principal(principal).await?;
            sessions.extend(there.into_iter().filter(|s| !here.contains(&s.key)));
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
        // While draining nothing was removed above: hand the principal's
        // sessions over, then delete them all in the target.
        if let Some(target) = self.drain.target() {
            let keys = self.index().snapshot(principal);
            for key in keys {
                if self.hand_over(&key).await? == HandOver::Refused
                    && self
                        .remove_here(&key, |r| r.principal.as_deref() == Some(principal))
                        .await
                        == DeleteOutcome::Deleted
                {
                    deleted += 1;
                }
            }
            deleted += target.delete_by_principal(principal).await?;
        }
        self.gauge_held();
        Ok(deleted)
    }

    /// Drops every expired record from memory and prunes the principal
    /// index; returns how many records it dropped. (Expired records are
    /// invisible at once anyway; this reclaims their memory, which the
    /// store also does by itself as shards fill up and every 1024 new
    /// sessions per shard.) While draining, the target's `delete_expired`
    /// runs too and its count is added.
    async fn delete_expired(&self) -> Result<u64, StoreError> {
        let dropped = self.engine.purge_expired(now());
        self.prune().await;
        self.gauge_held();
        match self.drain.target() {
            Some(target) => Ok(dropped + target.delete_expired().await?),
            None => Ok(dropped),
        }
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}
