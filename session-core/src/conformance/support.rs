//! Store wrappers for tests: one that counts calls, one that always fails,
//! one that never answers, and one whose chosen calls fail, wait for the
//! test or answer late.

use std::sync::Arc;
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

/// Where a paused call waits: the test learns that it got there, and lets it go on.
#[derive(Clone, Debug, Default)]
pub struct Pause {
    reached: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
}

impl Pause {
    /// Waits until the paused call has been made (it has not reached the
    /// wrapped store yet).
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    /// Lets the paused call go on to the wrapped store.
    pub fn release(&self) {
        self.release.notify_one();
    }
}

#[derive(Debug)]
enum Fault {
    /// Calls of this kind fail once `ok` more of them have succeeded.
    Fail { call: Call, ok: u32 },
    /// The next call of this kind waits at the pause first.
    Pause { call: Call, pause: Pause },
    /// Calls of this kind reach the store at once, but answer only after
    /// the delay (a write that lands, then times out on its way back).
    Late {
        call: Call,
        delay: std::time::Duration,
    },
}

/// Wraps a store and makes chosen calls fail, wait for the test, or answer
/// late: the partial failures behind half-done logins and logouts.
///
/// ```
/// use session_core::conformance::support::{Call, FaultStore};
/// use session_memory::MemoryStore;
///
/// let store = FaultStore::new(MemoryStore::new());
/// store.fail(Call::Create, 1); // the first create works, every later one fails
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

    /// The next call of `call` waits for the returned pause's release.
    pub fn pause(&self, call: Call) -> Pause {
        let pause = Pause::default();
        self.faults().push(Fault::Pause {
            call,
            pause: pause.clone(),
        });
        pause
    }

    /// Calls of `call` are made at once but answer only after `delay`.
    pub fn answer_late(&self, call: Call, delay: std::time::Duration) {
        self.faults().push(Fault::Late { call, delay });
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.faults().clear();
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Vec<Fault>> {
        self.faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `fut` (the wrapped store's call) with the faults for `call`.
    async fn around<T>(
        &self,
        call: Call,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let mut pause = None;
        let mut late = None;
        {
            let mut faults = self.faults();
            let mut i = 0;
            while i < faults.len() {
                match &mut faults[i] {
                    Fault::Fail { call: c, ok } if *c == call => {
                        if *ok == 0 {
                            return Err(refused());
                        }
                        *ok -= 1;
                    }
                    Fault::Pause { call: c, .. } if *c == call => {
                        if let Fault::Pause { pause: p, .. } = faults.remove(i) {
                            pause = Some(p);
                        }
                        continue;
                    }
                    Fault::Late { call: c, delay } if *c == call => late = Some(*delay),
                    _ => {}
                }
                i += 1;
            }
        }
        if let Some(pause) = pause {
            pause.reached.notify_one();
            pause.release.notified().await;
        }
        let result = fut.await;
        if let Some(delay) = late {
            tokio::time::sleep(delay).await;
        }
        result
    }
}

#[async_trait]
impl<S: SessionStore> SessionStore for FaultStore<S> {
    async fn create(&self, key: &StoreKey, record: &Record) -> Result<bool, StoreError> {
        self.around(Call::Create, self.inner.create(key, record))
            .await
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        self.around(Call::Load, self.inner.load(key)).await
    }

    async fn save(
        &self,
        key: &StoreKey,
        record: &Record,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError> {
        let save = self.inner.save(key, record, expected_version);
        self.around(Call::Save, save).await
    }

    async fn touch(
        &self,
        key: &StoreKey,
        expected_version: u64,
        idle_deadline: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.around(
            Call::Touch,
            self.inner.touch(key, expected_version, idle_deadline),
        )
        .await
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        self.around(Call::Delete, self.inner.delete(key)).await
    }

    async fn delete_if_unchanged(
        &self,
        key: &StoreKey,
        expected_version: u64,
    ) -> Result<DeleteOutcome, StoreError> {
        let delete = self.inner.delete_if_unchanged(key, expected_version);
        self.around(Call::DeleteIfUnchanged, delete).await
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
