//! Store wrappers for tests: one that counts calls, one that always fails,
//! one that never answers, and one whose chosen calls fail, wait for the
//! test (before they reach the store or after it answered) or answer late,
//! to force one interleaving instead of hoping for a race.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::{
    DeleteOutcome, LoadOutcome, Record, SaveOutcome, SessionInfo, SessionStore, StoreError,
    StoreKey,
};

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

    async fn load_at_least(
        &self,
        key: &StoreKey,
        floor: Option<u64>,
    ) -> Result<Option<Record>, StoreError> {
        bump(&self.load);
        self.inner.load_at_least(key, floor).await
    }

    async fn load_observed(&self, key: &StoreKey) -> Result<LoadOutcome, StoreError> {
        bump(&self.load);
        self.inner.load_observed(key).await
    }

    async fn load_observed_at_least(
        &self,
        key: &StoreKey,
        floor: Option<u64>,
    ) -> Result<LoadOutcome, StoreError> {
        bump(&self.load);
        self.inner.load_observed_at_least(key, floor).await
    }

    fn observes_expiry(&self) -> bool {
        self.inner.observes_expiry()
    }

    fn reads_may_lag(&self) -> bool {
        self.inner.reads_may_lag()
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
        expected_version: u64,
        idle_deadline: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        bump(&self.touch);
        self.inner.touch(key, expected_version, idle_deadline).await
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

    fn backend(&self) -> &'static str {
        self.inner.backend()
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
    async fn touch(&self, _: &StoreKey, _: u64, _: OffsetDateTime) -> Result<bool, StoreError> {
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
    async fn touch(&self, _: &StoreKey, _: u64, _: OffsetDateTime) -> Result<bool, StoreError> {
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

/// A store call, as [`FaultStore`] names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Call {
    /// [`SessionStore::create`].
    Create,
    /// [`SessionStore::load`].
    Load,
    /// [`SessionStore::save`].
    Save,
    /// [`SessionStore::touch`].
    Touch,
    /// [`SessionStore::delete`].
    Delete,
    /// [`SessionStore::delete_if_unchanged`].
    DeleteIfUnchanged,
}

/// Where a [`Pause`] holds its call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// Before the call reaches the wrapped store: it has not happened yet.
    Before,
    /// After the wrapped store answered: it happened, its caller does not
    /// know yet.
    After,
}

/// How long [`Pause::reached`] waits for a call before failing the test.
const REACH_TIMEOUT: Duration = Duration::from_secs(20);

/// Where a paused call waits: the test learns that it got there, and lets
/// it go on. Cloning gives another handle on the same pause.
#[derive(Clone, Debug)]
pub struct Pause {
    call: Call,
    at: At,
    reached: watch::Sender<bool>,
    released: watch::Sender<bool>,
}

impl Pause {
    fn new(call: Call, at: At) -> Self {
        Self {
            call,
            at,
            reached: watch::channel(false).0,
            released: watch::channel(false).0,
        }
    }

    /// Waits until a call got to this pause (at [`At::Before`], it has not
    /// reached the wrapped store yet). Returns at once if one already did,
    /// so it may be awaited more than once.
    ///
    /// # Panics
    ///
    /// If no call gets there within 20 seconds.
    pub async fn reached(&self) {
        let mut reached = self.reached.subscribe();
        let waited = tokio::time::timeout(REACH_TIMEOUT, reached.wait_for(|r| *r)).await;
        assert!(
            matches!(waited, Ok(Ok(_))),
            "no {:?} call got to its pause ({:?} the wrapped store) within 20 s",
            self.call,
            self.at
        );
    }

    /// Lets the paused call go on (if none got here yet, the next one to
    /// get here passes straight through).
    pub fn release(&self) {
        self.released.send_replace(true);
    }

    async fn hold(&self) {
        self.reached.send_replace(true);
        let mut released = self.released.subscribe();
        // The sender lives in `self`: this only ends on release.
        let _ = released.wait_for(|r| *r).await;
    }
}

#[derive(Debug)]
enum Fault {
    /// Calls of this kind fail once `ok` more of them have succeeded.
    Fail { call: Call, ok: u32 },
    /// The next call of this kind at `pause.at` (on `key`, if any, once
    /// `skip` such calls went by) waits at the pause.
    Pause {
        key: Option<StoreKey>,
        skip: u64,
        pause: Pause,
    },
    /// Calls of this kind reach the store at once, but answer only after
    /// the delay (a write that lands, then times out on its way back).
    Late { call: Call, delay: Duration },
}

/// Wraps a store and makes chosen calls fail, wait for the test, or answer
/// late: the partial failures behind half-done logins and logouts, and the
/// forced interleavings of parallel requests (hold one call where it is,
/// run another, then let the first go on).
///
/// A call that fails (see [`fail`](Self::fail)) fails at once, without
/// reaching any pause. Pauses catch calls in the order they were armed;
/// each catches one call.
///
/// ```
/// use session_core::conformance::support::{At, Call, FaultStore};
/// use session_memory::MemoryStore;
///
/// let store = FaultStore::new(MemoryStore::new());
/// store.fail(Call::Create, 1); // the first create works, every later one fails
/// // The next save waits, once the store has it, until `saved.release()`;
/// // `saved.reached().await` waits for it to get there.
/// let saved = store.pause_at(Call::Save, At::After);
/// # saved.release();
/// ```
#[derive(Debug)]
pub struct FaultStore<S> {
    inner: S,
    faults: std::sync::Mutex<Vec<Fault>>,
}

impl<S> FaultStore<S> {
    /// `inner`, with no faults yet.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            faults: std::sync::Mutex::default(),
        }
    }

    /// Calls of `call` fail (like a refused connection) once `ok` more of
    /// them have succeeded.
    pub fn fail(&self, call: Call, ok: u32) {
        self.faults().push(Fault::Fail { call, ok });
    }

    /// The next call of `call` waits, before it reaches the wrapped store,
    /// for the returned pause's release (`pause_at(call, At::Before)`).
    pub fn pause(&self, call: Call) -> Pause {
        self.pause_at(call, At::Before)
    }

    /// The next call of `call` to get to `at` waits there for the returned
    /// pause's release.
    pub fn pause_at(&self, call: Call, at: At) -> Pause {
        self.arm(call, at, None, 0)
    }

    /// As [`pause_at`](Self::pause_at), for the next call of `call` on `key` only.
    pub fn pause_key(&self, call: Call, at: At, key: &StoreKey) -> Pause {
        self.arm(call, at, Some(key.clone()), 0)
    }

    /// As [`pause_at`](Self::pause_at), but lets `skip` calls of `call` go
    /// by `at` first, then holds the next one.
    pub fn pause_skipping(&self, call: Call, at: At, skip: u64) -> Pause {
        self.arm(call, at, None, skip)
    }

    /// Calls of `call` are made at once but answer only after `delay`.
    pub fn answer_late(&self, call: Call, delay: Duration) {
        self.faults().push(Fault::Late { call, delay });
    }

    /// Removes every fault (a held call stays held until its release).
    pub fn heal(&self) {
        self.faults().clear();
    }

    /// The wrapped store, to look at it without going through the faults.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Vec<Fault>> {
        self.faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn arm(&self, call: Call, at: At, key: Option<StoreKey>, skip: u64) -> Pause {
        let pause = Pause::new(call, at);
        self.faults().push(Fault::Pause {
            key,
            skip,
            pause: pause.clone(),
        });
        pause
    }

    /// A call of `call` on `key` got to `at`: it waits at the first pause
    /// armed for it, if any.
    async fn checkpoint(&self, call: Call, at: At, key: &StoreKey) {
        if let Some(pause) = self.catch(call, at, key) {
            pause.hold().await;
        }
    }

    /// The first pause armed for a call of `call` on `key` at `at`, taken
    /// off the list, unless it still lets this call go by.
    fn catch(&self, call: Call, at: At, key: &StoreKey) -> Option<Pause> {
        let mut faults = self.faults();
        let i = faults.iter().position(|fault| match fault {
            Fault::Pause { key: k, pause, .. } => {
                pause.call == call && pause.at == at && k.as_ref().is_none_or(|k| k == key)
            }
            _ => false,
        })?;
        if let Fault::Pause { skip, .. } = &mut faults[i]
            && *skip > 0
        {
            *skip -= 1;
            return None;
        }
        match faults.remove(i) {
            Fault::Pause { pause, .. } => Some(pause),
            _ => None,
        }
    }

    /// Runs `fut` (the wrapped store's call of `call` on `key`) with the
    /// faults for it.
    async fn around<T>(
        &self,
        call: Call,
        key: &StoreKey,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let mut late = None;
        for fault in self.faults().iter_mut() {
            match fault {
                Fault::Fail { call: c, ok } if *c == call => {
                    if *ok == 0 {
                        return Err(refused());
                    }
                    *ok -= 1;
                }
                Fault::Late { call: c, delay } if *c == call => late = Some(*delay),
                _ => {}
            }
        }
        self.checkpoint(call, At::Before, key).await;
        let result = fut.await;
        self.checkpoint(call, At::After, key).await;
        if let Some(delay) = late {
            tokio::time::sleep(delay).await;
        }
        result
    }
}

#[async_trait]
impl<S: SessionStore> SessionStore for FaultStore<S> {
    async fn create(&self, key: &StoreKey, record: &Record) -> Result<bool, StoreError> {
        self.around(Call::Create, key, self.inner.create(key, record))
            .await
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        self.around(Call::Load, key, self.inner.load(key)).await
    }

    async fn load_at_least(
        &self,
        key: &StoreKey,
        floor: Option<u64>,
    ) -> Result<Option<Record>, StoreError> {
        let load = self.inner.load_at_least(key, floor);
        self.around(Call::Load, key, load).await
    }

    async fn load_observed(&self, key: &StoreKey) -> Result<LoadOutcome, StoreError> {
        self.around(Call::Load, key, self.inner.load_observed(key))
            .await
    }

    async fn load_observed_at_least(
        &self,
        key: &StoreKey,
        floor: Option<u64>,
    ) -> Result<LoadOutcome, StoreError> {
        let load = self.inner.load_observed_at_least(key, floor);
        self.around(Call::Load, key, load).await
    }

    fn observes_expiry(&self) -> bool {
        self.inner.observes_expiry()
    }

    fn reads_may_lag(&self) -> bool {
        self.inner.reads_may_lag()
    }

    async fn save(
        &self,
        key: &StoreKey,
        record: &Record,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError> {
        let save = self.inner.save(key, record, expected_version);
        self.around(Call::Save, key, save).await
    }

    async fn touch(
        &self,
        key: &StoreKey,
        expected_version: u64,
        idle_deadline: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.around(
            Call::Touch,
            key,
            self.inner.touch(key, expected_version, idle_deadline),
        )
        .await
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        self.around(Call::Delete, key, self.inner.delete(key)).await
    }

    async fn delete_if_unchanged(
        &self,
        key: &StoreKey,
        expected_version: u64,
    ) -> Result<DeleteOutcome, StoreError> {
        let delete = self.inner.delete_if_unchanged(key, expected_version);
        self.around(Call::DeleteIfUnchanged, key, delete).await
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

    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
}

/// A store with a simulated replica, to test the layer's replica reads
/// (see [`replica`](crate::replica)) without a replicated server: writes
/// and plain loads go to the wrapped store (the primary);
/// [`load_at_least`](SessionStore::load_at_least) asks the replica first,
/// through [`replica::read_your_writes`](crate::replica::read_your_writes).
///
/// The replica replays each write `lag` after it was made (at the next
/// replica load that comes that late), and not at all while
/// [`pause`](Self::pause)d, like a streaming replica whose replay is paused.
/// Expired records are hidden on the replica as on the primary.
///
/// ```
/// use std::time::Duration;
/// use session_core::conformance::support::LaggingStore;
/// use session_memory::MemoryStore;
///
/// let store = LaggingStore::new(MemoryStore::new(), Duration::from_millis(20));
/// store.pause(); // the replica replays nothing until `resume`
/// # store.resume();
/// ```
#[derive(Debug)]
pub struct LaggingStore<S> {
    primary: S,
    lag: Duration,
    replica: std::sync::Mutex<Replica>,
    reads: crate::replica::ReadCounters,
}

#[derive(Debug, Default)]
struct Replica {
    records: std::collections::HashMap<StoreKey, Record>,
    /// Keys written on the primary, when, not yet replayed.
    pending: Vec<(std::time::Instant, StoreKey)>,
    paused: bool,
}

impl<S: SessionStore> LaggingStore<S> {
    /// `primary` with a replica that replays its writes `lag` late.
    pub fn new(primary: S, lag: Duration) -> Self {
        Self {
            primary,
            lag,
            replica: std::sync::Mutex::default(),
            reads: crate::replica::ReadCounters::new(),
        }
    }

    /// Stops the replica's replay (as `pg_wal_replay_pause()` does).
    pub fn pause(&self) {
        self.replica().paused = true;
    }

    /// Lets the replica replay again.
    pub fn resume(&self) {
        self.replica().paused = false;
    }

    /// How loads with a floor were answered so far.
    pub fn reads(&self) -> crate::replica::ReadCounts {
        self.reads.counts()
    }

    /// The wrapped store (the primary).
    pub fn inner(&self) -> &S {
        &self.primary
    }

    fn replica(&self) -> std::sync::MutexGuard<'_, Replica> {
        self.replica
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wrote(&self, key: &StoreKey) {
        self.replica()
            .pending
            .push((std::time::Instant::now(), key.clone()));
    }

    /// The replica's answer: first it replays the writes that are `lag` old.
    async fn replica_load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        let due: Vec<StoreKey> = {
            let mut replica = self.replica();
            if replica.paused {
                Vec::new()
            } else {
                let now = std::time::Instant::now();
                let split = replica
                    .pending
                    .iter()
                    .position(|(at, _)| now.duration_since(*at) < self.lag)
                    .unwrap_or(replica.pending.len());
                replica.pending.drain(..split).map(|(_, k)| k).collect()
            }
        };
        for key in due {
            // The primary's state now: at least as new as the write replayed.
            let record = self.primary.load(&key).await?;
            let mut replica = self.replica();
            match record {
                Some(record) => replica.records.insert(key, record),
                None => replica.records.remove(&key),
            };
        }
        let record = self.replica().records.get(key).cloned();
        Ok(record.filter(|r| crate::record::now() < r.expires_at()))
    }
}

#[async_trait]
impl<S: SessionStore> SessionStore for LaggingStore<S> {
    async fn create(&self, key: &StoreKey, record: &Record) -> Result<bool, StoreError> {
        let created = self.primary.create(key, record).await?;
        self.wrote(key);
        Ok(created)
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        self.primary.load(key).await
    }

    async fn load_at_least(
        &self,
        key: &StoreKey,
        floor: Option<u64>,
    ) -> Result<Option<Record>, StoreError> {
        self.reads
            .load(floor, self.replica_load(key), || self.primary.load(key))
            .await
    }

    async fn load_observed(&self, key: &StoreKey) -> Result<LoadOutcome, StoreError> {
        self.primary.load_observed(key).await
    }

    /// The replica cannot purge what it finds expired: it answers
    /// `Missing`, and the primary (asked when the client has a floor) may
    /// answer `Expired`.
    async fn load_observed_at_least(
        &self,
        key: &StoreKey,
        floor: Option<u64>,
    ) -> Result<LoadOutcome, StoreError> {
        let replica = async { self.replica_load(key).await.map(LoadOutcome::from) };
        self.reads
            .load(floor, replica, || self.primary.load_observed(key))
            .await
    }

    fn observes_expiry(&self) -> bool {
        self.primary.observes_expiry()
    }

    fn reads_may_lag(&self) -> bool {
        true
    }

    async fn save(
        &self,
        key: &StoreKey,
        record: &Record,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError> {
        let saved = self.primary.save(key, record, expected_version).await?;
        self.wrote(key);
        Ok(saved)
    }

    async fn touch(
        &self,
        key: &StoreKey,
        expected_version: u64,
        idle_deadline: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let touched = self
            .primary
            .touch(key, expected_version, idle_deadline)
            .await?;
        self.wrote(key);
        Ok(touched)
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        self.primary.delete(key).await?;
        self.wrote(key);
        Ok(())
    }

    async fn delete_if_unchanged(
        &self,
        key: &StoreKey,
        expected_version: u64,
    ) -> Result<DeleteOutcome, StoreError> {
        let deleted = self
            .primary
            .delete_if_unchanged(key, expected_version)
            .await?;
        self.wrote(key);
        Ok(deleted)
    }

    async fn list_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>, StoreError> {
        self.primary.list_by_principal(principal).await
    }

    async fn delete_by_principal(&self, principal: &str) -> Result<u64, StoreError> {
        let listed = self.primary.list_by_principal(principal).await?;
        let deleted = self.primary.delete_by_principal(principal).await?;
        for session in listed {
            self.wrote(&session.key);
        }
        Ok(deleted)
    }

    async fn delete_expired(&self) -> Result<u64, StoreError> {
        self.primary.delete_expired().await
    }
}
