//! The per-request [`Session`] handle and the end-of-request save.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::{Mutex, MutexGuard};
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::layer::Config;
use crate::record::now;
use crate::{Expiry, Id, Record, SaveOutcome, SessionError, StoreError, StoreKey};

/// How many times a new session is created under a fresh id before giving up
/// (a collision of 128-bit random ids does not happen; this bounds the loop).
const CREATE_ATTEMPTS: u32 = 3;

/// A request's session: cheap to clone, loaded from the store lazily on first use.
///
/// The [`SessionLayer`](crate::SessionLayer) puts one into every request's
/// extensions (with the `axum` feature it is also an extractor). Nothing is
/// read from the store until a method is called, and nothing is written until
/// the response has been produced: then a changed session is saved with
/// compare-and-set, replaying this request's changes on a fresh copy if a
/// parallel request saved first, so no update is lost.
///
/// ```
/// # async fn handler(session: session_core::Session) -> Result<String, session_core::SessionError> {
/// let visits: u64 = session.update("visits", |n: Option<u64>| n.unwrap_or(0) + 1).await?;
/// session.insert("last_page", "/home").await?;
/// let theme: Option<String> = session.get("theme").await?;
/// Ok(format!("visit {visits}, theme {theme:?}"))
/// # }
/// ```
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    /// The well-formed ids the request's cookies carried, in order (a stale
    /// cookie from another path may come before the live one).
    cookie_ids: Vec<Id>,
    state: Mutex<State>,
}

#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Nothing read yet.
    #[default]
    Unloaded,
    /// The stored session (or its absence) is known.
    Ready,
    /// Loading failed; the request goes on without its session.
    Failed,
    /// The response went out and the session was saved.
    Closed,
}

/// The stored session this request started from.
struct Loaded {
    id: Id,
    key: StoreKey,
    version: u64,
}

#[derive(Default)]
struct State {
    phase: Phase,
    loaded: Option<Loaded>,
    /// The working copy this request sees; `None` while there is no session.
    record: Option<Record>,
    /// This request's changes, replayed on a fresh copy after a conflict.
    ops: Vec<Op>,
    changed: bool,
    cycle: bool,
    /// The cookie's lifetime changed (set_expiry): it must be sent again.
    cookie_changed: bool,
    /// Destroyed sessions' keys, deleted at the end of the request.
    doomed: Vec<StoreKey>,
    /// `destroy` was called: the browser is told to drop the cookie.
    destroyed: bool,
    /// The JSON size of the working copy's data, once a change needed it.
    data_size: Option<usize>,
    store_failed: bool,
}

type UpdateFn = Arc<dyn Fn(Option<&Value>) -> Result<Value, serde_json::Error> + Send + Sync>;

/// One change made by this request, kept so it can be replayed.
enum Op {
    Insert(String, Value),
    Remove(String),
    Update(String, UpdateFn),
    Clear,
    SetPrincipal(Option<String>),
    SetExpiry(Expiry),
}

impl Op {
    /// Whether this change makes a session for a visitor who has none
    /// (clearing nothing does not).
    fn creates_session(&self) -> bool {
        !matches!(
            self,
            Self::Clear | Self::Remove(_) | Self::SetPrincipal(None)
        )
    }

    /// Whether applying this to `record` changes it.
    fn changes(&self, record: &Record) -> bool {
        match self {
            Self::Insert(key, value) => record.data.get(key) != Some(value),
            Self::Remove(key) => record.data.contains_key(key),
            Self::Clear => !record.data.is_empty(),
            Self::SetPrincipal(principal) => record.principal != *principal,
            Self::Update(..) | Self::SetExpiry(_) => true,
        }
    }

    /// Replays this change after a conflict. A user's `update` closure that
    /// panics on the fresh value is treated like one that fails: the change
    /// is skipped, and the layer does not panic.
    fn replay(&self, record: &mut Record, now: OffsetDateTime) -> Result<(), String> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.apply(record, now))) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("the update closure panicked".to_owned()),
        }
    }

    fn apply(&self, record: &mut Record, now: OffsetDateTime) -> Result<(), serde_json::Error> {
        match self {
            Self::Insert(key, value) => {
                record.data.insert(key.clone(), value.clone());
            }
            Self::Remove(key) => {
                record.data.remove(key);
            }
            Self::Update(key, f) => {
                let new = f(record.data.get(key))?;
                record.data.insert(key.clone(), new);
            }
            Self::Clear => record.data.clear(),
            Self::SetPrincipal(principal) => record.principal.clone_from(principal),
            Self::SetExpiry(expiry) => record.set_expiry(now, expiry),
        }
        Ok(())
    }
}

/// What the layer does to the response once the session is saved.
#[derive(Debug)]
pub(crate) enum CookieChange {
    Keep,
    Set { id: Id, max_age: Option<Duration> },
    Remove,
}

#[derive(Debug)]
pub(crate) struct Finish {
    pub(crate) cookie: CookieChange,
    /// A store call failed during the request (load or save): the failure
    /// policy decides what the client gets.
    pub(crate) store_failed: bool,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("has_cookie", &!self.inner.cookie_ids.is_empty())
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(config: Arc<Config>, cookie_ids: Vec<Id>) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                cookie_ids,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Locks the state, loading the stored session first if that has not happened yet.
    async fn ready(&self) -> Result<MutexGuard<'_, State>, SessionError> {
        let mut state = self.inner.state.lock().await;
        match state.phase {
            Phase::Ready => return Ok(state),
            Phase::Closed => return Err(SessionError::Closed),
            Phase::Failed => return Err(SessionError::StoreFailedEarlier),
            Phase::Unloaded => {}
        }
        let config = &self.inner.config;
        let deadline = deadline(config);
        for &id in &self.inner.cookie_ids {
            let key = id.store_key();
            match call(config, "load", &key, deadline, config.store.load(&key)).await {
                Ok(Some(record)) => {
                    state.loaded = Some(Loaded {
                        id,
                        key,
                        version: record.version,
                    });
                    state.record = Some(record);
                    break;
                }
                // Unknown or expired: try the next cookie, else no session.
                // The client's id is never adopted for a new session.
                Ok(None) => {}
                Err(error) => {
                    state.store_failed = true;
                    state.phase = Phase::Failed;
                    return Err(error.into());
                }
            }
        }
        state.phase = Phase::Ready;
        Ok(state)
    }

    /// Applies a change to the working copy (creating a new session if the
    /// change needs one) and logs it for replay.
    ///
    /// Every change is logged, even one that changes nothing here (setting
    /// a value it already has): replayed after a parallel write, it may.
    /// Only real changes make the session need saving.
    async fn change(&self, op: Op) -> Result<(), SessionError> {
        let mut state = self.ready().await?;
        if state.record.is_none() && !op.creates_session() {
            return Ok(());
        }
        let config = &self.inner.config;
        let now = now();
        let state = &mut *state;
        let record = state
            .record
            .get_or_insert_with(|| Record::new(now, &config.expiry));
        let changes = op.changes(record);
        // The size check needs the data's size before the change and the old
        // value of the key it sets, to undo a change that makes it too big.
        let sets = match &op {
            Op::Insert(key, _) | Op::Update(key, _) => Some(key.clone()),
            _ => None,
        };
        let before = sets.as_ref().map(|key| {
            let size = *state
                .data_size
                .get_or_insert_with(|| json_len(&record.data));
            (size, record.data.get(key).cloned())
        });
        op.apply(record, now)
            .map_err(|source| SessionError::Value {
                key: op_key(&op),
                source,
            })?;
        if let (Some(key), Some((size, old))) = (sets, before) {
            let new_len = entry_len(&key, record.data.get(&key));
            let size = size - entry_len(&key, old.as_ref()) + new_len;
            if size > config.max_session_size {
                match old {
                    Some(old) => record.data.insert(key, old),
                    None => record.data.remove(&key),
                };
                return Err(SessionError::TooLarge {
                    size,
                    limit: config.max_session_size,
                });
            }
            state.data_size = Some(size);
        } else if matches!(op, Op::Remove(_) | Op::Clear) {
            // Shrinks: recomputed on the next change that grows the data.
            state.data_size = None;
        }
        if matches!(op, Op::SetExpiry(_)) {
            state.cookie_changed = true;
        }
        state.ops.push(op);
        state.changed |= changes;
        Ok(())
    }

    /// The value under `key`, deserialized as `T`; `None` if absent.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the store could not be read,
    /// [`SessionError::Value`] if the stored value is not a `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let state = self.ready().await?;
        match state.record.as_ref().and_then(|r| r.data.get(key)) {
            None => Ok(None),
            Some(value) => T::deserialize(value)
                .map(Some)
                .map_err(|source| value_error(key, source)),
        }
    }

    /// Sets `key` to `value`. Setting a key to the value it already has is not a change.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the store could not be read,
    /// [`SessionError::Value`] if `value` does not serialize to JSON.
    pub async fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<(), SessionError> {
        let value = serde_json::to_value(value).map_err(|source| value_error(key, source))?;
        self.change(Op::Insert(key.to_owned(), value)).await
    }

    /// Removes `key` and returns its value, deserialized as `T`.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the store could not be read,
    /// [`SessionError::Value`] if the value is not a `T` (then nothing is removed).
    pub async fn remove<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let old = {
            let state = self.ready().await?;
            match state.record.as_ref().and_then(|r| r.data.get(key)) {
                None => return Ok(None),
                Some(value) => T::deserialize(value).map_err(|source| value_error(key, source))?,
            }
        };
        self.change(Op::Remove(key.to_owned())).await?;
        Ok(Some(old))
    }

    /// Replaces the value under `key` with `f(old)` and returns the new value.
    ///
    /// Unlike `get` then `insert`, an update composes with parallel requests:
    /// if another request saved this session first, `f` runs again on the value
    /// that request left, so `update(|n| n + 1)` from 100 parallel requests
    /// adds exactly 100. `f` may therefore run more than once, and the value
    /// returned here is the one computed from what this request saw.
    ///
    /// ```
    /// # async fn handler(session: session_core::Session) -> Result<(), session_core::SessionError> {
    /// let cart_items = session.update("cart_items", |n: Option<u32>| n.unwrap_or(0) + 1).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the store could not be read,
    /// [`SessionError::Value`] if the old value is not a `T` or the new one
    /// does not serialize.
    pub async fn update<T, F>(&self, key: &str, f: F) -> Result<T, SessionError>
    where
        T: Serialize + DeserializeOwned,
        F: Fn(Option<T>) -> T + Send + Sync + 'static,
    {
        let f: UpdateFn = Arc::new(move |old: Option<&Value>| {
            let old = old.map(T::deserialize).transpose()?;
            serde_json::to_value(f(old))
        });
        self.change(Op::Update(key.to_owned(), f)).await?;
        self.get(key)
            .await?
            .ok_or_else(|| value_error(key, serde::de::Error::custom("value vanished")))
    }

    /// Removes every key (the session itself, its id and principal stay).
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the store could not be read.
    pub async fn clear(&self) -> Result<(), SessionError> {
        self.change(Op::Clear).await
    }

    /// Gives the session a new id at the end of the request, keeping its data;
    /// the old id stops working. Call it at login (and privilege changes) so an
    /// id planted before login is useless afterwards (session fixation).
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the store could not be read.
    pub async fn cycle_id(&self) -> Result<(), SessionError> {
        let mut state = self.ready().await?;
        state.cycle = true;
        Ok(())
    }

    /// Ends the session: its record is deleted and the browser told to drop
    /// the cookie. A parallel request still holding this session cannot bring
    /// it back (its save finds the record gone). Changes made after `destroy`
    /// in the same request start a brand-new session with a new id.
    ///
    /// Does not read the store.
    ///
    /// # Errors
    ///
    /// [`SessionError::Closed`] after the end of the request.
    pub async fn destroy(&self) -> Result<(), SessionError> {
        let mut state = self.inner.state.lock().await;
        if state.phase == Phase::Closed {
            return Err(SessionError::Closed);
        }
        match state.loaded.take() {
            Some(loaded) => state.doomed.push(loaded.key),
            // Not loaded (no need to read what is deleted) or loading failed:
            // delete whatever the cookies name.
            None if matches!(state.phase, Phase::Unloaded | Phase::Failed) => {
                let keys = self.inner.cookie_ids.iter().map(Id::store_key);
                state.doomed.extend(keys);
            }
            None => {}
        }
        state.destroyed = true;
        state.phase = Phase::Ready;
        state.record = None;
        state.data_size = None;
        state.ops.clear();
        state.changed = false;
        state.cycle = false;
        state.cookie_changed = false;
        Ok(())
    }

    /// Sets the principal (the user the session belongs to), which puts the
    /// session in the store's principal index: see
    /// [`SessionStore::list_by_principal`](crate::SessionStore::list_by_principal).
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the store could not be read.
    pub async fn set_principal(&self, principal: impl Into<String>) -> Result<(), SessionError> {
        self.change(Op::SetPrincipal(Some(principal.into()))).await
    }

    /// Removes the principal.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the store could not be read.
    pub async fn clear_principal(&self) -> Result<(), SessionError> {
        self.change(Op::SetPrincipal(None)).await
    }

    /// The principal, if one is set.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the store could not be read.
    pub async fn principal(&self) -> Result<Option<String>, SessionError> {
        let state = self.ready().await?;
        Ok(state.record.as_ref().and_then(|r| r.principal.clone()))
    }

    /// Gives this session its own expiry, for example a long, persistent
    /// "remember me" session. The idle deadline restarts now; the absolute
    /// one counts from the session's creation.
    ///
    /// ```
    /// # async fn login(session: session_core::Session) -> Result<(), session_core::SessionError> {
    /// use std::time::Duration;
    /// use session_core::Expiry;
    ///
    /// let days = |n: u64| Duration::from_secs(n * 86_400);
    /// session.set_expiry(Expiry::new(days(30), days(90)).persistent(true)).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the store could not be read.
    pub async fn set_expiry(&self, expiry: Expiry) -> Result<(), SessionError> {
        self.change(Op::SetExpiry(expiry)).await
    }

    /// The store key of the stored session this request loaded (for marking
    /// "this device" on an active-sessions page); `None` if the request has no
    /// stored session yet.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the store could not be read.
    pub async fn store_key(&self) -> Result<Option<StoreKey>, SessionError> {
        let state = self.ready().await?;
        Ok(state.loaded.as_ref().map(|l| l.key.clone()))
    }

    /// Closes a session that has nothing to write, without waiting: `true`
    /// if the request never used it, or only read it and no touch is due
    /// (then there is no store call to make and no cookie to change),
    /// `false` if it needs [`finish`](Self::finish).
    pub(crate) fn close_if_idle(&self) -> bool {
        let Ok(mut state) = self.inner.state.try_lock() else {
            // A handle kept by a task is in use right now: finish normally.
            return false;
        };
        if state.store_failed {
            return false;
        }
        let idle = match state.phase {
            Phase::Unloaded => true,
            // Read but not changed, and no touch due: nothing to write.
            Phase::Ready => {
                !state.changed
                    && !state.cycle
                    && !state.destroyed
                    && state.doomed.is_empty()
                    && match (&state.loaded, &state.record) {
                        (Some(_), Some(record)) => !touch_due(&self.inner.config, record, now()),
                        _ => true,
                    }
            }
            Phase::Failed | Phase::Closed => false,
        };
        if idle {
            *state = State {
                phase: Phase::Closed,
                ..State::default()
            };
        }
        idle
    }

    /// Saves, touches or deletes as this request's changes require. Called by
    /// the layer once the inner service has produced its response.
    pub(crate) async fn finish(&self) -> Finish {
        let mut guard = self.inner.state.lock().await;
        let state = std::mem::take(&mut *guard);
        guard.phase = Phase::Closed;
        drop(guard);

        if state.phase != Phase::Ready {
            // Never used, or its load failed: no store call, no cookie change.
            return Finish {
                cookie: CookieChange::Keep,
                store_failed: state.store_failed,
            };
        }
        let config = &self.inner.config;
        let failed_before = state.store_failed;
        match finish_ready(config, state, deadline(config)).await {
            Ok(cookie) => Finish {
                cookie,
                store_failed: failed_before,
            },
            Err(error) => {
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    "session not saved"
                );
                Finish {
                    cookie: CookieChange::Keep,
                    store_failed: true,
                }
            }
        }
    }
}

/// When the store calls starting now must be done.
fn deadline(config: &Config) -> Instant {
    let now = Instant::now();
    now.checked_add(config.op_timeout)
        // An absurdly large timeout means "no timeout": a year will do.
        .unwrap_or_else(|| now + Duration::from_secs(365 * 86_400))
}

/// The end-of-request work for a session that was used.
///
/// The cookie is only ever removed after an explicit `destroy`. A session
/// found gone (deleted by a parallel logout, or cycled by a parallel login)
/// leaves the cookie alone: this response may reach the browser after the
/// parallel one that set a new cookie, and a removal would then delete the
/// new cookie. A cookie naming no session costs one load per request until
/// the next write replaces it.
async fn finish_ready(
    config: &Config,
    state: State,
    deadline: Instant,
) -> Result<CookieChange, SessionError> {
    let mut cookie = CookieChange::Keep;
    for key in &state.doomed {
        call(config, "delete", key, deadline, config.store.delete(key)).await?;
    }
    if state.destroyed {
        cookie = CookieChange::Remove;
    }
    let now = now();
    match (state.loaded, state.record) {
        (Some(loaded), Some(record)) if state.cycle => {
            // Save first, with compare-and-set and replay, so the new id
            // starts from the latest data and a parallel logout is noticed
            // (Gone) instead of copied into a new session.
            if let Saved::Written(record) =
                save(config, &loaded, record, &state.ops, deadline).await?
            {
                let max_age = max_age(&record, now);
                let id = create(config, record, deadline).await?;
                call(
                    config,
                    "delete",
                    &loaded.key,
                    deadline,
                    config.store.delete(&loaded.key),
                )
                .await?;
                cookie = CookieChange::Set { id, max_age };
            }
        }
        (Some(loaded), Some(record)) if state.changed => {
            if let Saved::Written(record) =
                save(config, &loaded, record, &state.ops, deadline).await?
                && state.cookie_changed
            {
                cookie = CookieChange::Set {
                    id: loaded.id,
                    max_age: max_age(&record, now),
                };
            }
        }
        (Some(loaded), Some(record)) if touch_due(config, &record, now) => {
            let mut touched = record;
            touched.mark_used(now);
            let key = &loaded.key;
            let touch = config.store.touch(key, touched.idle_deadline);
            // A missed touch only leaves the idle deadline where it was;
            // the read this request made succeeded, so it is not a failure.
            if let Err(error) = call(config, "touch", key, deadline, touch).await {
                tracing::debug!(
                    key = key.short(),
                    error = &error as &dyn std::error::Error,
                    "session touch failed"
                );
            }
        }
        (None, Some(record)) if state.changed => {
            let max_age = max_age(&record, now);
            let id = create(config, record, deadline).await?;
            cookie = CookieChange::Set { id, max_age };
        }
        _ => {}
    }
    Ok(cookie)
}

/// Whether a request that only read `record` should push its idle deadline
/// back: once per touch interval (by default a tenth of the idle timeout,
/// at most a minute).
fn touch_due(config: &Config, record: &Record, now: OffsetDateTime) -> bool {
    let interval = config
        .touch_interval
        .unwrap_or_else(|| (record.idle_timeout / 10).min(Duration::from_secs(60)));
    now - record.last_access >= interval
}

/// The cookie's Max-Age for a record: up to its absolute deadline if persistent.
fn max_age(record: &Record, now: OffsetDateTime) -> Option<Duration> {
    record
        .persistent
        .then(|| Duration::try_from(record.absolute_deadline - now).unwrap_or(Duration::ZERO))
}

/// Stores `record` as a brand-new session under a fresh id; returns the id.
async fn create(
    config: &Config,
    mut record: Record,
    deadline: Instant,
) -> Result<Id, SessionError> {
    record.version = 0;
    record.mark_used(now());
    for _ in 0..CREATE_ATTEMPTS {
        let id = Id::random()?;
        let key = id.store_key();
        if call(
            config,
            "create",
            &key,
            deadline,
            config.store.create(&key, &record),
        )
        .await?
        {
            return Ok(id);
        }
    }
    Err(StoreError::backend("no free session id after repeated collisions").into())
}

enum Saved {
    Written(Record),
    Gone,
}

/// Compare-and-set save; on conflict reload, replay `ops` and retry, bounded, with jitter.
async fn save(
    config: &Config,
    loaded: &Loaded,
    mut record: Record,
    ops: &[Op],
    deadline: Instant,
) -> Result<Saved, SessionError> {
    let key = &loaded.key;
    // Parallel saves of this session in this process wait their turn; the
    // compare-and-set below still settles races with other processes.
    let Ok(_turn) = tokio::time::timeout_at(deadline, config.key_locks.lock(key)).await else {
        return Err(StoreError::Timeout(config.op_timeout).into());
    };
    let mut expected = loaded.version;
    for attempt in 0..config.save_attempts {
        record.version = expected + 1;
        record.mark_used(now());
        let outcome = call(
            config,
            "save",
            key,
            deadline,
            config.store.save(key, &record, expected),
        )
        .await?;
        match outcome {
            SaveOutcome::Saved => return Ok(Saved::Written(record)),
            SaveOutcome::Gone => {
                tracing::debug!(key = key.short(), "session gone before save; write dropped");
                return Ok(Saved::Gone);
            }
            SaveOutcome::Conflict => {
                tracing::debug!(
                    key = key.short(),
                    attempt,
                    "session save conflict; replaying"
                );
                tokio::time::sleep_until(deadline.min(Instant::now() + backoff(attempt))).await;
                let Some(fresh) =
                    call(config, "load", key, deadline, config.store.load(key)).await?
                else {
                    return Ok(Saved::Gone);
                };
                expected = fresh.version;
                record = fresh;
                let now = now();
                for op in ops {
                    if let Err(error) = op.replay(&mut record, now) {
                        // The parallel writer left a value this request's
                        // closure cannot read: its value stands.
                        tracing::warn!(key = key.short(), op = op_key(op), %error, "session change not replayable; skipped");
                    }
                }
            }
        }
    }
    Err(StoreError::backend(format!(
        "session save still conflicting after {} attempts",
        config.save_attempts
    ))
    .into())
}

/// Full jitter: a random wait up to 1 ms doubled per attempt, at most 8 ms.
/// Short, because only writers in other processes are racing by then
/// (this process's wait on the session's lock).
fn backoff(attempt: u32) -> Duration {
    let cap_us = 1_000u64 << attempt.min(3);
    let mut bytes = [0u8; 8];
    // Jitter only spreads retries; if the RNG fails, waiting the cap is fine.
    let random = match getrandom::getrandom(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => u64::MAX,
    };
    Duration::from_micros(random % (cap_us + 1))
}

/// Runs one store call under the deadline, in a span that names the call and
/// the store key's short prefix (never the id).
pub(crate) async fn call<T>(
    config: &Config,
    op: &'static str,
    key: &StoreKey,
    deadline: Instant,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let span = tracing::debug_span!("session_store", op, key = key.short());
    let result = match tokio::time::timeout_at(deadline, fut)
        .instrument(span)
        .await
    {
        Ok(result) => result,
        Err(_) => Err(StoreError::Timeout(config.op_timeout)),
    };
    if let Err(error) = &result {
        tracing::warn!(
            op,
            key = key.short(),
            error = error as &dyn std::error::Error,
            "session store call failed"
        );
    }
    result
}

/// The length of `value` as JSON.
fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    // Serializing session data (string keys, JSON values) cannot fail.
    serde_json::to_vec(value).map_or(0, |bytes| bytes.len())
}

/// What the entry `"key":value,` adds to the data's JSON size.
fn entry_len(key: &str, value: Option<&Value>) -> usize {
    value.map_or(0, |value| json_len(key) + json_len(value) + 2)
}

fn value_error(key: &str, source: serde_json::Error) -> SessionError {
    SessionError::Value {
        key: key.to_owned(),
        source,
    }
}

fn op_key(op: &Op) -> String {
    match op {
        Op::Insert(key, _) | Op::Remove(key) | Op::Update(key, _) => key.clone(),
        Op::Clear => "(clear)".to_owned(),
        Op::SetPrincipal(_) => "(principal)".to_owned(),
        Op::SetExpiry(_) => "(expiry)".to_owned(),
    }
}
