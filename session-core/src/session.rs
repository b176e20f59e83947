//! The per-request [`Session`] handle: its API, the request's working copy,
//! and its log of what it read and changed. The end-of-request commit that
//! uses the log is in `commit`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use smallvec::SmallVec;
use time::OffsetDateTime;
use tokio::sync::{Mutex, MutexGuard};

use crate::commit::{self, Outcome, Turn};
use crate::cookies::CookieId;
use crate::layer::Config;
use crate::layer::rerun::{RouteUse, Template};
use crate::record::now;
use crate::{Expiry, Id, Record, SessionError, StoreKey};

/// A request's session: cheap to clone, loaded from the store lazily on first use.
///
/// The [`SessionLayer`](crate::SessionLayer) puts one into every request's
/// extensions (with the `axum` feature it is also an extractor). Nothing is
/// read from the store until a method is called, and nothing is written until
/// the response has been produced. Then a changed session is committed with
/// compare-and-set on the version it was loaded at.
///
/// # Parallel requests: serializable, whatever the handler does
///
/// The outcome of parallel requests on one session equals some serial order
/// of them. The handle records which keys the request read and the values it
/// saw (`get`, `remove`, `update`, `principal`), and what it changed. When a
/// parallel request committed first:
///
/// - if nothing this request read has changed, its changes are applied to
///   the fresh record and committed: requests writing different keys all
///   keep their writes;
/// - if something it read has changed, nothing derived from its stale view
///   is committed. A request that is safe to run again (`GET`, `HEAD`,
///   `OPTIONS`, `TRACE`, `PUT` or `DELETE` with an empty or buffered body)
///   runs again on the fresh session and its second response is the one
///   sent; any other request is answered `409 Conflict` and changes nothing
///   (see [`ConflictPolicy`](crate::ConflictPolicy)).
///
/// So the plain idiom is safe: 300 parallel requests doing
///
/// ```
/// # async fn handler(session: session_core::Session) -> Result<String, session_core::SessionError> {
/// let n: u64 = session.get("n").await?.unwrap_or_default();
/// session.insert("n", n + 1).await?;
/// # Ok(n.to_string()) }
/// ```
///
/// end with `n` equal to the number of successful answers, each of which saw
/// its own predecessor's value.
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
    /// cookie from another path may come before the live one), each with
    /// the version floor its cookie carries.
    cookie_ids: Vec<CookieId>,
    state: Mutex<State>,
    /// The request may run again if its view turns out stale: the axum
    /// extractor then keeps a copy of its head in `template`.
    rerunnable: bool,
    remembered: std::sync::Mutex<Remembered>,
}

/// What the axum extractor kept of the request for a re-run.
#[derive(Default)]
struct Remembered {
    taken: bool,
    /// The request's head, unless its path is known to only read.
    template: Option<Arc<Template>>,
    /// The path it was served on, to learn whether requests there write.
    route: Option<RouteUse>,
}

#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Phase {
    /// Nothing read yet.
    #[default]
    Unloaded,
    /// The stored session (or its absence) is known.
    Ready,
    /// Loading failed; the request goes on without its session.
    Failed,
    /// The response went out and the session was committed (or abandoned).
    Closed,
}

/// The stored session this request started from.
pub(crate) struct Loaded {
    pub(crate) id: Id,
    pub(crate) key: StoreKey,
    pub(crate) version: u64,
    /// The version floor the client's cookie carried for this id (see
    /// [`replica`](crate::replica)).
    pub(crate) floor: Option<u64>,
}

impl Loaded {
    /// Whether `version` is above the floor the client's cookie carries:
    /// then, with a store whose reads may lag, the cookie is sent again
    /// with `version` as its floor.
    pub(crate) fn raises_floor(&self, version: u64) -> bool {
        self.floor.is_none_or(|floor| version > floor)
    }
}

/// Everything a request did to its session; `commit` works from this.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) phase: Phase,
    pub(crate) loaded: Option<Loaded>,
    /// The working copy this request sees; `None` while there is no session.
    pub(crate) record: Option<Record>,
    /// This request's changes, applied again to a fresh copy after a
    /// conflict when its reads still hold there.
    pub(crate) ops: Vec<Op>,
    /// What this request read of the stored session.
    pub(crate) reads: Reads,
    pub(crate) changed: bool,
    pub(crate) cycle: bool,
    /// The cookie's lifetime changed (set_expiry): it must be sent again.
    pub(crate) cookie_changed: bool,
    /// Destroyed sessions' keys, deleted at the end of the request, with
    /// the principal the request saw there (for the events hook).
    pub(crate) doomed: Vec<(StoreKey, Option<String>)>,
    /// `destroy` was called: the browser is told to drop the cookie.
    pub(crate) destroyed: bool,
    /// The JSON size of the working copy's data (an upper bound), once a
    /// change needed it.
    data_size: Option<usize>,
    pub(crate) store_failed: bool,
}

/// One change made by this request. Every change is a plain value: an
/// `update` closure runs once, on the value the request saw, and its result
/// is logged as an insert (the key counts as read, so the result is only
/// committed where that value still stands).
pub(crate) enum Op {
    Insert(String, Value),
    Remove(String),
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
            Self::SetExpiry(_) => true,
        }
    }

    pub(crate) fn apply(&self, record: &mut Record, now: OffsetDateTime) {
        match self {
            Self::Insert(key, value) => {
                record.data.insert(key.clone(), value.clone());
            }
            Self::Remove(key) => {
                record.data.remove(key);
            }
            Self::Clear => record.data.clear(),
            Self::SetPrincipal(principal) => record.principal.clone_from(principal),
            Self::SetExpiry(expiry) => record.set_expiry(now, expiry),
        }
    }
}

/// What a request read of its stored session: the keys whose stored value it
/// saw, and the principal if it asked for it. A read of a key this request
/// had already set (or after `clear`) sees its own write and depends on
/// nothing stored, so it is not recorded.
///
/// Reading copies nothing: the value seen stays in the working copy until
/// this request overwrites or removes it, and only then is it moved here
/// ([`Seen::Was`]). Most requests never conflict, so most never look at it.
#[derive(Default)]
pub(crate) struct Reads {
    keys: SmallVec<[(Key, Seen); 1]>,
    principal: Option<Option<String>>,
    /// Keys this request set without reading them first.
    own: SmallVec<[Key; 1]>,
    cleared: bool,
    own_principal: bool,
}

/// A session key as the handle keeps it: short keys (most) inline, without
/// an allocation.
type Key = SmallVec<[u8; 16]>;

/// Where the value a request read of a key is now.
enum Seen {
    /// Still in the working copy: this request has not changed the key since.
    Kept,
    /// This request changed the key afterwards; this is what it read.
    Was(Option<Value>),
}

impl Reads {
    fn key(&mut self, key: &str) {
        let key = key.as_bytes();
        if self.cleared
            || self.own.iter().any(|k| k.as_slice() == key)
            || self.keys.iter().any(|(k, _)| k.as_slice() == key)
        {
            return;
        }
        self.keys.push((Key::from_slice(key), Seen::Kept));
    }

    fn set_key(&mut self, key: &str) {
        let key = key.as_bytes();
        // A key read first stays recorded as read; nothing to add.
        if !self.own.iter().any(|k| k.as_slice() == key)
            && !self.keys.iter().any(|(k, _)| k.as_slice() == key)
        {
            self.own.push(Key::from_slice(key));
        }
    }

    fn principal(&mut self, record: &Record) {
        if !self.own_principal && self.principal.is_none() {
            self.principal = Some(record.principal.clone());
        }
    }

    /// Moves the values read of the keys `op` is about to change out of the
    /// working copy `record`, so that they are still known once it has.
    fn keep_before(&mut self, op: &Op, record: &mut Record) {
        let mut keep = |key: &str, seen: &mut Seen| {
            if matches!(seen, Seen::Kept) {
                *seen = Seen::Was(record.data.get_mut(key).map(std::mem::take));
            }
        };
        match op {
            Op::Insert(key, _) | Op::Remove(key) => {
                let bytes = key.as_bytes();
                if let Some((_, seen)) = self.keys.iter_mut().find(|(k, _)| k.as_slice() == bytes) {
                    keep(key, seen);
                }
            }
            Op::Clear => {
                for (k, seen) in &mut self.keys {
                    if let Ok(key) = std::str::from_utf8(k) {
                        keep(key, seen);
                    }
                }
            }
            Op::SetPrincipal(_) | Op::SetExpiry(_) => {}
        }
    }

    /// Whether every value this request read is still what `fresh` holds:
    /// then its changes may be applied to `fresh` as they are. `working` is
    /// the request's working copy (or, after a rebase, the fresh record its
    /// changes were applied to, which holds the same values of the keys it
    /// read and did not change).
    pub(crate) fn hold_in(&self, fresh: &Record, working: &Record) -> bool {
        self.keys.iter().all(|(key, seen)| {
            // Keys are copied from `&str`s: always UTF-8.
            let Ok(key) = std::str::from_utf8(key) else {
                return false;
            };
            let seen = match seen {
                Seen::Kept => working.data.get(key),
                Seen::Was(value) => value.as_ref(),
            };
            fresh.data.get(key) == seen
        }) && self
            .principal
            .as_ref()
            .is_none_or(|seen| fresh.principal == *seen)
    }
}

impl State {
    /// Notes a read of `key`'s stored value (if there is a stored session).
    fn read_key(&mut self, key: &str) {
        if let (Some(_), Some(_)) = (&self.loaded, &self.record) {
            self.reads.key(key);
        }
    }

    /// Applies a change to the working copy (creating a new session if the
    /// change needs one) and logs it.
    ///
    /// Every change is logged, even one that changes nothing here (setting
    /// a value it already has): applied to a fresh copy after a parallel
    /// write, it may. Only real changes make the session need saving.
    fn change(&mut self, config: &Config, op: Op) -> Result<(), SessionError> {
        if self.record.is_none() && !op.creates_session() {
            return Ok(());
        }
        let now = now();
        let record = self
            .record
            .get_or_insert_with(|| Record::new(now, &config.expiry));
        match &op {
            Op::Insert(key, value) => {
                let size = *self
                    .data_size
                    .get_or_insert_with(|| commit::json_len(&record.data));
                let size =
                    size - entry_len(key, record.data.get(key)) + entry_len(key, Some(value));
                if size > config.max_session_size {
                    return Err(SessionError::TooLarge {
                        size,
                        limit: config.max_session_size,
                    });
                }
                self.data_size = Some(size);
            }
            // Shrinks: measured again on the next change that grows the data.
            Op::Remove(_) | Op::Clear => self.data_size = None,
            Op::SetExpiry(_) => self.cookie_changed = true,
            Op::SetPrincipal(_) => {}
        }
        self.changed |= op.changes(record);
        self.reads.keep_before(&op, record);
        op.apply(record, now);
        self.ops.push(op);
        Ok(())
    }

    fn value(&self, key: &str) -> Option<&Value> {
        self.record.as_ref().and_then(|r| r.data.get(key))
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("has_cookie", &!self.inner.cookie_ids.is_empty())
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(config: Arc<Config>, cookie_ids: Vec<CookieId>, rerunnable: bool) -> Self {
        Self::with_state(
            config,
            cookie_ids,
            State::default(),
            rerunnable,
            Remembered::default(),
        )
    }

    fn with_state(
        config: Arc<Config>,
        cookie_ids: Vec<CookieId>,
        state: State,
        rerunnable: bool,
        remembered: Remembered,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                cookie_ids,
                state: Mutex::new(state),
                rerunnable,
                remembered: std::sync::Mutex::new(remembered),
            }),
        }
    }

    /// A session for running this request again, starting from `record`,
    /// the stored session as a parallel request left it.
    pub(crate) fn rerun(&self, loaded: Loaded, record: Record, template: Arc<Template>) -> Self {
        let state = State {
            phase: Phase::Ready,
            loaded: Some(loaded),
            record: Some(record),
            ..State::default()
        };
        let remembered = Remembered {
            taken: true,
            template: Some(template),
            route: self.remembered().route.clone(),
        };
        Self::with_state(
            self.inner.config.clone(),
            self.inner.cookie_ids.clone(),
            state,
            true,
            remembered,
        )
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, Remembered> {
        // Only ever set whole: a poisoned lock holds nothing half-written.
        self.inner
            .remembered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps what a re-run of this request needs of its head, once, if the
    /// request may run again (called by the axum extractor): nothing on a
    /// path learnt to only read its sessions (see `rerun`).
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) fn remember(&self, parts: &http::request::Parts) {
        if !self.inner.rerunnable {
            return;
        }
        let mut slot = self.remembered();
        if slot.taken {
            return;
        }
        slot.taken = true;
        let route = self.inner.config.routes.of(parts);
        if !route.as_ref().is_some_and(RouteUse::read_only) {
            slot.template = Some(Arc::new(Template::of(parts)));
        }
        slot.route = route;
    }

    /// The head of the request kept for a re-run, if any.
    pub(crate) fn template(&self) -> Option<Arc<Template>> {
        self.remembered().template.clone()
    }

    /// Tells what is learnt of this request's path whether it wrote.
    fn note_use(&self, wrote: bool) {
        if let Some(route) = &self.remembered().route {
            if wrote {
                route.note_write();
            } else {
                route.note_read();
            }
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
        let deadline = commit::deadline(config);
        for &CookieId { id, floor } in &self.inner.cookie_ids {
            let key = id.store_key();
            match commit::load(config, &key, floor, deadline).await {
                Ok(Some(record)) => {
                    state.loaded = Some(Loaded {
                        id,
                        key,
                        version: record.version,
                        floor,
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

    async fn change(&self, op: Op) -> Result<(), SessionError> {
        let mut state = self.ready().await?;
        state.change(&self.inner.config, op)
    }

    /// The value under `key`, deserialized as `T`; `None` if absent.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the store could not be read,
    /// [`SessionError::Value`] if the stored value is not a `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let mut state = self.ready().await?;
        state.read_key(key);
        match state.value(key) {
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
    /// [`SessionError::Value`] if `value` does not serialize to JSON,
    /// [`SessionError::TooLarge`] if the data would pass the layer's
    /// [`max_session_size`](crate::SessionLayer::max_session_size) (then
    /// nothing changed).
    pub async fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<(), SessionError> {
        let value = serde_json::to_value(value).map_err(|source| value_error(key, source))?;
        let mut state = self.ready().await?;
        state.change(&self.inner.config, Op::Insert(key.to_owned(), value))?;
        state.reads.set_key(key);
        Ok(())
    }

    /// Removes `key` and returns its value, deserialized as `T`. The value
    /// returned counts as read (see [`Session`]'s parallel-requests rules).
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the store could not be read,
    /// [`SessionError::Value`] if the value is not a `T` (then nothing is removed).
    pub async fn remove<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let mut state = self.ready().await?;
        state.read_key(key);
        let old = match state.value(key) {
            None => return Ok(None),
            Some(value) => T::deserialize(value).map_err(|source| value_error(key, source))?,
        };
        state.change(&self.inner.config, Op::Remove(key.to_owned()))?;
        Ok(Some(old))
    }

    /// Replaces the value under `key` with `f(old)` and returns the new value.
    ///
    /// `f` runs exactly once, here, on the value this request sees, and the
    /// value returned is the one committed. Like `get` then `insert`, it
    /// composes with parallel requests: if another request changed `key`
    /// first, this request runs again on the fresh session (or is refused),
    /// so `update(|n| n + 1)` from 100 parallel requests adds exactly the
    /// number of successful answers, and a token generated inside `f` is
    /// the token stored.
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
    /// does not serialize, [`SessionError::TooLarge`] as for
    /// [`insert`](Self::insert). On error nothing changed.
    pub async fn update<T, F>(&self, key: &str, f: F) -> Result<T, SessionError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Option<T>) -> T,
    {
        let mut state = self.ready().await?;
        state.read_key(key);
        let old = state
            .value(key)
            .map(T::deserialize)
            .transpose()
            .map_err(|source| value_error(key, source))?;
        let new = f(old);
        let value = serde_json::to_value(&new).map_err(|source| value_error(key, source))?;
        state.change(&self.inner.config, Op::Insert(key.to_owned(), value))?;
        state.reads.set_key(key);
        Ok(new)
    }

    /// Removes every key (the session itself, its id and principal stay).
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the store could not be read.
    pub async fn clear(&self) -> Result<(), SessionError> {
        let mut state = self.ready().await?;
        state.change(&self.inner.config, Op::Clear)?;
        state.reads.cleared = true;
        Ok(())
    }

    /// Gives the session a new id at the end of the request, keeping its data;
    /// the old id stops working. Call it at login (and privilege changes) so an
    /// id planted before login is useless afterwards (session fixation).
    ///
    /// The new id is created first, with this request's changes (say, the
    /// principal a login sets); the old id is then deleted only if no
    /// parallel write reached it since this request read it. A write that
    /// did is carried over to the new id; one that comes later finds the old
    /// id gone and is refused. If any step fails, the new id is deleted again
    /// and the old one stays exactly as it was, without this request's
    /// changes: a failed login never leaves its principal on the old id.
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
    /// Does not read the store. If the delete fails, the client gets `503`
    /// whatever the [`FailurePolicy`](crate::FailurePolicy): a logout that
    /// did not happen never looks like one that did.
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
            Some(loaded) => {
                let principal = state.record.as_ref().and_then(|r| r.principal.clone());
                state.doomed.push((loaded.key, principal));
            }
            // Not loaded (no need to read what is deleted) or loading failed:
            // delete whatever the cookies name.
            None if matches!(state.phase, Phase::Unloaded | Phase::Failed) => {
                let keys = self
                    .inner
                    .cookie_ids
                    .iter()
                    .map(|cookie| (cookie.id.store_key(), None));
                state.doomed.extend(keys);
            }
            None => {}
        }
        state.destroyed = true;
        state.phase = Phase::Ready;
        state.record = None;
        state.data_size = None;
        state.ops.clear();
        state.reads = Reads::default();
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
        self.set_principal_to(Some(principal.into())).await
    }

    /// Removes the principal.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the store could not be read.
    pub async fn clear_principal(&self) -> Result<(), SessionError> {
        self.set_principal_to(None).await
    }

    async fn set_principal_to(&self, principal: Option<String>) -> Result<(), SessionError> {
        let mut state = self.ready().await?;
        state.change(&self.inner.config, Op::SetPrincipal(principal))?;
        state.reads.own_principal = true;
        Ok(())
    }

    /// The principal, if one is set. It counts as read (see [`Session`]).
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the store could not be read.
    pub async fn principal(&self) -> Result<Option<String>, SessionError> {
        let mut state = self.ready().await?;
        let state = &mut *state;
        if let (Some(_), Some(record)) = (&state.loaded, &state.record) {
            state.reads.principal(record);
        }
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
                        (Some(loaded), Some(record)) => {
                            // A version above the cookie's floor: the
                            // cookie must carry it (replica reads).
                            let raises = self.inner.config.reads_may_lag
                                && loaded.raises_floor(loaded.version);
                            !raises && !commit::touch_due(&self.inner.config, record, now())
                        }
                        _ => true,
                    }
            }
            Phase::Failed | Phase::Closed => false,
        };
        if idle {
            // Nothing else of a read-only request's state is large.
            state.phase = Phase::Closed;
            state.record = None;
            self.note_use(false);
        }
        idle
    }

    /// Whether the commit deletes a session or changes its id (`destroy`,
    /// `cycle_id`): several store calls that must not be cut in half.
    pub(crate) fn identity_changes(&self) -> bool {
        self.inner.state.try_lock().map_or(true, |state| {
            state.destroyed || state.cycle || !state.doomed.is_empty()
        })
    }

    /// Closes the session without committing anything (the handler failed).
    pub(crate) async fn abandon(&self) {
        let mut state = self.inner.state.lock().await;
        *state = State {
            phase: Phase::Closed,
            ..State::default()
        };
    }

    /// Commits this request's changes (see `commit`). Called by the layer
    /// once the inner service has produced its response; `turn` is this
    /// process's turn on the session when the request is a re-run.
    pub(crate) async fn finish(&self, turn: Option<Turn>) -> Outcome {
        let mut guard = self.inner.state.lock().await;
        let state = std::mem::take(&mut *guard);
        guard.phase = Phase::Closed;
        drop(guard);
        self.note_use(state.changed || state.cycle || state.destroyed || !state.doomed.is_empty());
        commit::commit(&self.inner.config, state, turn).await
    }
}

/// The cookie's Max-Age for a record: up to its absolute deadline if persistent.
pub(crate) fn max_age(record: &Record, now: OffsetDateTime) -> Option<Duration> {
    record
        .persistent
        .then(|| Duration::try_from(record.absolute_deadline - now).unwrap_or(Duration::ZERO))
}

/// What the entry `"key":value,` adds to the data's JSON size (one byte more
/// than it can take, so the running size is an upper bound).
fn entry_len(key: &str, value: Option<&Value>) -> usize {
    value.map_or(0, |value| {
        commit::json_len(key) + commit::json_len(value) + 2
    })
}

fn value_error(key: &str, source: serde_json::Error) -> SessionError {
    SessionError::Value {
        key: key.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A state as loaded from the store with `data`.
    fn loaded(data: Value) -> (State, Record) {
        let mut record = Record::new(now(), &Expiry::default());
        record.data = serde_json::from_value(data).unwrap_or_default();
        let state = State {
            phase: Phase::Ready,
            loaded: Some(Loaded {
                id: Id::decode("AAAAAAAAAAAAAAAAAAAAAA").expect("an id"),
                key: Id::decode("AAAAAAAAAAAAAAAAAAAAAA")
                    .expect("an id")
                    .store_key(),
                version: 0,
                floor: None,
            }),
            record: Some(record.clone()),
            ..State::default()
        };
        (state, record)
    }

    fn with(record: &Record, data: Value) -> Record {
        let mut fresh = record.clone();
        fresh.data = serde_json::from_value(data).unwrap_or_default();
        fresh
    }

    /// What a request read is compared with the fresh record whether the
    /// request then changed the key (insert, remove, clear) or not.
    #[test]
    fn reads_are_known_after_the_request_changes_what_it_read() {
        let config = Config::for_tests();
        type Change<'a> = Box<dyn Fn(&mut State) + 'a>;
        let changes: [(&str, Change<'_>); 4] = [
            ("kept", Box::new(|_| {})),
            (
                "insert",
                Box::new(|s| s.change(&config, Op::Insert("a".into(), json!(9))).unwrap()),
            ),
            (
                "remove",
                Box::new(|s| s.change(&config, Op::Remove("a".into())).unwrap()),
            ),
            ("clear", Box::new(|s| s.change(&config, Op::Clear).unwrap())),
        ];
        for (case, change) in changes {
            let (mut state, stored) = loaded(json!({"a": "seen", "b": 1}));
            state.read_key("a");
            change(&mut state);
            let working = state.record.clone().unwrap();
            let reads = &state.reads;
            let same = with(&stored, json!({"a": "seen", "b": 2}));
            let changed = with(&stored, json!({"a": "other", "b": 1}));
            let removed = with(&stored, json!({"b": 1}));
            assert!(reads.hold_in(&same, &working), "{case}: a unchanged");
            assert!(!reads.hold_in(&changed, &working), "{case}: a changed");
            assert!(!reads.hold_in(&removed, &working), "{case}: a removed");
        }
    }

    /// A key read while absent must still be absent.
    #[test]
    fn absent_read_must_stay_absent() {
        let config = Config::for_tests();
        let (mut state, stored) = loaded(json!({"b": 1}));
        state.read_key("a");
        state
            .change(&config, Op::Insert("a".into(), json!(1)))
            .unwrap();
        let working = state.record.clone().unwrap();
        assert!(
            state
                .reads
                .hold_in(&with(&stored, json!({"b": 5})), &working)
        );
        assert!(
            !state
                .reads
                .hold_in(&with(&stored, json!({"a": 0})), &working)
        );
    }
}
