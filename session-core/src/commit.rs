//! The end-of-request commit: create, compare-and-set save, conflict
//! handling, touch, delete and id rotation.
//!
//! # The guarantee
//!
//! Parallel requests on one session are serializable: what the store ends up
//! with, and what every answered request saw, equals some serial order of
//! those requests. No write is acknowledged (a 2xx or other non-error answer
//! with the request's changes) unless it is in the store.
//!
//! # How
//!
//! A request works on a copy of the record at version `v` and logs what it
//! read (keys and the values it saw) and what it changed (plain values:
//! inserts, removes, clear, principal, expiry). At the end:
//!
//! 1. It takes this process's turn on the session (`locks`), so requests of
//!    one process commit one after another, and saves with compare-and-set
//!    on `v`. Saved: done, with no call beyond the save itself.
//! 2. On `Conflict` (a request of another process, or one this request
//!    queued behind, committed first) it loads the fresh record. If every
//!    value it read is unchanged there, its changes are applied to the fresh
//!    record (the serial order: the other request, then this one) and saved
//!    again; the result is checked against the size limit first.
//! 3. If something it read has changed, its view was stale: nothing derived
//!    from it is committed. The outcome is [`Outcome::Stale`], carrying the
//!    fresh record and the turn, and the layer runs the request again on it
//!    or answers `409` (see [`ConflictPolicy`](crate::ConflictPolicy)).
//! 4. On `Gone` (a parallel logout or id change, or expiry) the write is
//!    not made and the request is stale too, with nothing to run again on:
//!    it is refused. Running it again without a session could hand the
//!    browser a new anonymous cookie racing the one a parallel login set.
//!
//! `cycle_id` creates the new key first (with this request's changes),
//! then deletes the old key with compare-and-delete on `v`. A parallel write
//! that reached the old key in between makes the delete conflict: the fresh
//! old record, if this request's reads still hold in it, is carried to the
//! new key and the delete is tried again on its version; otherwise the new
//! key is rolled back and the request is stale. Any failure rolls the new
//! key back, so the old id never carries the changes of a login that failed
//! (no principal on an id the client had before it).
//!
//! A response with a 5xx status commits nothing: the handler failed, and
//! half of what it did is not saved (the layer checks this before calling
//! here).

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::layer::Config;
use crate::locks::KeyGuard;
use crate::meter::Observed;
use crate::record::now;
use crate::session::{Loaded, Op, Reads, State, max_age};
use crate::{DeleteOutcome, Id, LoadOutcome, Record, SaveOutcome, StoreError, StoreKey};

/// How many times a new session is created under a fresh id before giving up
/// (a collision of 128-bit random ids does not happen; this bounds the loop).
const CREATE_ATTEMPTS: u32 = 3;

/// What the layer does to the response once the session is committed.
#[derive(Debug)]
pub(crate) enum CookieChange {
    Keep,
    Set {
        id: Id,
        max_age: Option<Duration>,
        /// The version floor the cookie carries (see [`replica`](crate::replica)):
        /// `None` unless the store's reads may lag.
        floor: Option<u64>,
    },
    Remove,
}

/// The floor a cookie set for a record at `version` carries: the version,
/// when the store's reads may lag, else none (the cookie stays `ID`).
fn floor(config: &Config, version: u64) -> Option<u64> {
    config.reads_may_lag.then_some(version)
}

/// How a commit ended.
pub(crate) enum Outcome {
    /// Committed, or nothing to commit.
    Done {
        cookie: CookieChange,
        /// A store call failed earlier in the request (a load): the failure
        /// policy decides what the client gets.
        store_failed: bool,
    },
    /// A store call failed or timed out; nothing half-done is left behind.
    Failed {
        /// A logout or an id change did not happen: the client must not get
        /// the handler's answer, whatever the failure policy.
        identity: bool,
    },
    /// Nothing was committed: something the request read had changed, or
    /// its session was gone.
    Stale(Box<Stale>),
}

/// A request whose view was stale.
pub(crate) struct Stale {
    /// The session as a parallel request left it, to run again on; `None`
    /// when it is gone.
    pub(crate) fresh: Option<(Loaded, Record)>,
    /// This process's turn on the session, kept while the request runs again.
    pub(crate) turn: Turn,
}

/// This process's turn on a session, and when the store calls made in it
/// must be done. Waiting for the turn and the calls made in it each get the
/// operation timeout, so a request that queued behind others of its session
/// still has the whole timeout for its save; the re-runs of a stale request
/// share the budget of the turn they hold.
pub(crate) struct Turn {
    guard: KeyGuard,
    deadline: Instant,
}

/// When the store calls starting now must be done.
pub(crate) fn deadline(config: &Config) -> Instant {
    let now = Instant::now();
    now.checked_add(config.op_timeout)
        // An absurdly large timeout means "no timeout": a year will do.
        .unwrap_or_else(|| now + Duration::from_secs(365 * 86_400))
}

/// Commits what a request did to its session.
///
/// The cookie is only ever removed after an explicit `destroy`. A session
/// found gone leaves the cookie alone: this response may reach the browser
/// after the parallel one that set a new cookie, and a removal would then
/// delete the new cookie.
pub(crate) async fn commit(config: &Config, state: State, turn: Option<Turn>) -> Outcome {
    use crate::session::Phase;
    if state.phase != Phase::Ready {
        // Never used, or its load failed: no store call, no cookie change.
        return done(CookieChange::Keep, state.store_failed);
    }
    let deadline = turn
        .as_ref()
        .map_or_else(|| deadline(config), |turn| turn.deadline);
    let mut cookie = CookieChange::Keep;
    for (key, principal) in &state.doomed {
        let deleted = call(config, "delete", key, deadline, config.store.delete(key)).await;
        if deleted.is_err() {
            return Outcome::Failed { identity: true };
        }
        if let Some(events) = &config.events {
            events.destroyed(key, principal.as_deref());
        }
    }
    if state.destroyed {
        cookie = CookieChange::Remove;
    }
    let now = now();
    let failed_before = state.store_failed;
    // A request that only read a version above the cookie's floor sends
    // the cookie again, with that version (replica reads).
    let seen = match (&state.loaded, &state.record) {
        (Some(loaded), Some(record))
            if config.reads_may_lag && !state.destroyed && loaded.raises_floor(loaded.version) =>
        {
            CookieChange::Set {
                id: loaded.id,
                max_age: max_age(record, now),
                floor: Some(loaded.version),
            }
        }
        _ => CookieChange::Keep,
    };
    if matches!(cookie, CookieChange::Keep) {
        cookie = seen;
    }
    match (state.loaded, state.record) {
        (Some(loaded), Some(record)) if state.cycle || state.changed => {
            let turn = match turn {
                // A re-run's turn is on the session it runs on.
                Some(turn) if turn.guard.key() == &loaded.key => turn,
                _ => {
                    let locked =
                        tokio::time::timeout_at(deadline, config.key_locks.lock(&loaded.key));
                    match locked.await {
                        Ok(guard) => Turn {
                            guard,
                            deadline: self::deadline(config),
                        },
                        Err(_) => {
                            timed_out(config, "lock", &loaded.key);
                            return Outcome::Failed {
                                identity: state.cycle,
                            };
                        }
                    }
                }
            };
            let write = Write {
                config,
                loaded,
                ops: &state.ops,
                reads: &state.reads,
                deadline: turn.deadline,
                turn,
            };
            let outcome = if state.cycle {
                write.cycle(record).await
            } else {
                write.save(record, state.cookie_changed).await
            };
            match outcome {
                Outcome::Done { cookie, .. } => done(cookie, failed_before),
                other => other,
            }
        }
        (Some(loaded), Some(record)) if touch_due(config, &record, now) => {
            let mut touched = record;
            touched.mark_used(now);
            let key = &loaded.key;
            // Only on the version this request read: a save since has
            // restarted the idle deadline with the session's current timeout.
            let touch = config
                .store
                .touch(key, loaded.version, touched.idle_deadline);
            // A missed touch only leaves the idle deadline where it was;
            // the read this request made succeeded, so it is not a failure.
            if let Err(error) = call(config, "touch", key, deadline, touch).await {
                tracing::debug!(
                    key = key.short(),
                    error = &error as &dyn std::error::Error,
                    "session touch failed"
                );
            }
            done(cookie, failed_before)
        }
        (None, Some(mut record)) if state.changed => {
            let max_age = max_age(&record, now);
            match create(config, &mut record, deadline).await {
                Ok((id, key)) => {
                    if let Some(events) = &config.events {
                        events.created(&key, record.principal.as_deref());
                    }
                    done(
                        CookieChange::Set {
                            id,
                            max_age,
                            floor: floor(config, 0),
                        },
                        failed_before,
                    )
                }
                Err(_) => Outcome::Failed { identity: false },
            }
        }
        _ => done(cookie, failed_before),
    }
}

fn done(cookie: CookieChange, store_failed: bool) -> Outcome {
    Outcome::Done {
        cookie,
        store_failed,
    }
}

/// A fresh record with a request's changes on it, or the fresh record alone
/// when the request's view was stale.
enum Rebased {
    Apply(Record),
    Stale(Record),
}

/// The write of a session that exists in the store, made in this process's turn.
struct Write<'a> {
    config: &'a Config,
    loaded: Loaded,
    ops: &'a [Op],
    reads: &'a Reads,
    deadline: Instant,
    turn: Turn,
}

impl Write<'_> {
    /// Compare-and-set save; after a conflict, the changes on the fresh
    /// record if the request's reads hold there, else stale.
    async fn save(self, mut record: Record, cookie_changed: bool) -> Outcome {
        let config = self.config;
        let key = &self.loaded.key;
        let mut expected = self.loaded.version;
        for attempt in 0..config.save_attempts {
            record.version = expected + 1;
            record.mark_used(now());
            let saved = call(
                config,
                "save",
                key,
                self.deadline,
                config.store.save(key, &record, expected),
            );
            match saved.await {
                Err(_) => return Outcome::Failed { identity: false },
                Ok(SaveOutcome::Saved) => {
                    config.meter.size(json_len(&record.data));
                    let raises = config.reads_may_lag && self.loaded.raises_floor(record.version);
                    let cookie = if cookie_changed || raises {
                        CookieChange::Set {
                            id: self.loaded.id,
                            max_age: max_age(&record, now()),
                            floor: floor(config, record.version),
                        }
                    } else {
                        CookieChange::Keep
                    };
                    return done(cookie, false);
                }
                Ok(SaveOutcome::Gone) => {
                    tracing::debug!(key = key.short(), "session gone before save; not written");
                    return self.stale(None);
                }
                Ok(SaveOutcome::Conflict) => {
                    tracing::debug!(key = key.short(), attempt, "session save conflict");
                    self.pause(attempt).await;
                    match self.fresh(expected).await {
                        Err(_) => return Outcome::Failed { identity: false },
                        Ok(None) => return self.stale(None),
                        Ok(Some(fresh)) => match self.rebase(fresh, &record) {
                            Rebased::Apply(rebased) => {
                                expected = rebased.version;
                                record = rebased;
                            }
                            Rebased::Stale(fresh) => return self.stale(Some(fresh)),
                        },
                    }
                }
            }
        }
        too_many_conflicts(config, key);
        Outcome::Failed { identity: false }
    }

    /// The new id first, with this request's changes; then the old one
    /// retired with compare-and-delete, carrying over any write that reached
    /// it meanwhile. All or nothing.
    async fn cycle(self, mut record: Record) -> Outcome {
        let config = self.config;
        let old = &self.loaded.key;
        let mut max_age = max_age(&record, now());
        let Ok((id, new)) = create(config, &mut record, self.deadline).await else {
            return Outcome::Failed { identity: true };
        };
        let mut expected = self.loaded.version;
        let mut new_version = 0;
        // The principal now under the new key, once a carried write set it.
        let mut carried_principal = None;
        for attempt in 0..config.save_attempts {
            let retire = config.store.delete_if_unchanged(old, expected);
            let retired = call(config, "delete_if_unchanged", old, self.deadline, retire);
            let outcome = match retired.await {
                Err(_) => None,
                Ok(DeleteOutcome::Deleted) => {
                    if let Some(events) = &config.events {
                        let principal = carried_principal.unwrap_or(record.principal);
                        events.id_cycled(old, &new, principal.as_deref());
                    }
                    let floor = floor(config, new_version);
                    return done(CookieChange::Set { id, max_age, floor }, false);
                }
                Ok(DeleteOutcome::Gone) => Some(self.stale(None)),
                Ok(DeleteOutcome::Conflict) => {
                    tracing::debug!(
                        key = old.short(),
                        attempt,
                        "write to the old id during cycle"
                    );
                    self.pause(attempt).await;
                    match self.fresh(expected).await {
                        Err(_) => None,
                        Ok(None) => Some(self.stale(None)),
                        Ok(Some(fresh)) => match self.rebase(fresh, &record) {
                            Rebased::Stale(fresh) => Some(self.stale(Some(fresh))),
                            Rebased::Apply(mut carried) => {
                                expected = carried.version;
                                carried.version = new_version + 1;
                                carried.mark_used(now());
                                let save = config.store.save(&new, &carried, new_version);
                                match call(config, "save", &new, self.deadline, save).await {
                                    Ok(SaveOutcome::Saved) => {
                                        config.meter.size(json_len(&carried.data));
                                        if config.events.is_some() {
                                            carried_principal = Some(carried.principal.clone());
                                        }
                                        new_version += 1;
                                        max_age = crate::session::max_age(&carried, now());
                                        continue;
                                    }
                                    // Nobody else knows the new key; if it is
                                    // not as created, something is wrong.
                                    Ok(_) | Err(_) => None,
                                }
                            }
                        },
                    }
                }
            };
            rollback(config, &new).await;
            return outcome.unwrap_or(Outcome::Failed { identity: true });
        }
        too_many_conflicts(config, old);
        rollback(config, &new).await;
        Outcome::Failed { identity: true }
    }

    /// The record after a save or delete on version `conflicted`
    /// conflicted. Its version has moved past `conflicted` by then, so with
    /// a store whose reads may lag it is loaded with a floor one above:
    /// a replica still at `conflicted` (or before) cannot answer, the
    /// primary does, and a re-run never gets the same stale record again.
    async fn fresh(&self, conflicted: u64) -> Result<Option<Record>, StoreError> {
        let floor = Some(conflicted.saturating_add(1));
        load(self.config, &self.loaded.key, floor, self.deadline).await
    }

    /// `fresh` with this request's changes applied, if nothing the request
    /// read has changed there and the result fits the size limit;
    /// otherwise `fresh` itself, for running the request again. `working`
    /// is the record the request's changes were last applied to.
    fn rebase(&self, fresh: Record, working: &Record) -> Rebased {
        if !self.reads.hold_in(&fresh, working) {
            tracing::debug!(
                key = self.loaded.key.short(),
                "a value the request read has changed; not committed"
            );
            return Rebased::Stale(fresh);
        }
        let mut record = fresh.clone();
        let now = now();
        for op in self.ops {
            op.apply(&mut record, now);
        }
        let size = json_len(&record.data);
        if size > self.config.max_session_size {
            tracing::debug!(
                key = self.loaded.key.short(),
                size,
                "the changes on the fresh record pass the size limit; not committed"
            );
            return Rebased::Stale(fresh);
        }
        Rebased::Apply(record)
    }

    fn stale(self, fresh: Option<Record>) -> Outcome {
        let Self { loaded, turn, .. } = self;
        Outcome::Stale(Box::new(Stale {
            fresh: fresh.map(|record| {
                let loaded = Loaded {
                    version: record.version,
                    ..loaded
                };
                (loaded, record)
            }),
            turn,
        }))
    }

    /// Full jitter before reading the fresh record: a random wait up to 1 ms
    /// doubled per attempt, at most 8 ms. Short, because only writers in
    /// other processes are racing by then (this process's wait its turn).
    async fn pause(&self, attempt: u32) {
        let cap_us = 1_000u64 << attempt.min(3);
        let mut bytes = [0u8; 8];
        // Jitter only spreads retries; if the RNG fails, waiting the cap is fine.
        let random = match getrandom::getrandom(&mut bytes) {
            Ok(()) => u64::from_le_bytes(bytes),
            Err(_) => u64::MAX,
        };
        let pause = Duration::from_micros(random % (cap_us + 1));
        tokio::time::sleep_until(self.deadline.min(Instant::now() + pause)).await;
    }
}

/// Stores `record` as a brand-new session under a fresh id.
async fn create(
    config: &Config,
    record: &mut Record,
    deadline: Instant,
) -> Result<(Id, StoreKey), StoreError> {
    record.version = 0;
    record.mark_used(now());
    for _ in 0..CREATE_ATTEMPTS {
        let id = Id::random().map_err(StoreError::backend)?;
        let key = id.store_key();
        let created = call(
            config,
            "create",
            &key,
            deadline,
            config.store.create(&key, record),
        );
        if created.await? {
            config.meter.size(json_len(&record.data));
            return Ok((id, key));
        }
    }
    Err(StoreError::backend(
        "no free session id after repeated collisions",
    ))
}

/// Deletes a new key that an id change made but could not finish. Its id
/// never reached the client; if this delete fails too, the record is
/// unreachable and expires, and it is logged.
async fn rollback(config: &Config, key: &StoreKey) {
    let deadline = deadline(config);
    let delete = config.store.delete(key);
    if call(config, "delete", key, deadline, delete).await.is_err() {
        tracing::warn!(
            key = key.short(),
            "an unfinished id change left an unreachable session behind"
        );
    }
}

fn too_many_conflicts(config: &Config, key: &StoreKey) {
    tracing::warn!(
        key = key.short(),
        attempts = config.save_attempts,
        "session commit still conflicting after its attempts"
    );
}

fn timed_out(config: &Config, op: &'static str, key: &StoreKey) {
    config
        .meter
        .error(op, &StoreError::Timeout(config.op_timeout));
    tracing::warn!(
        op,
        key = key.short(),
        timeout = ?config.op_timeout,
        "session store call did not finish in time"
    );
}

/// Whether a request that only read `record` should push its idle deadline
/// back: once per touch interval (by default a tenth of the idle timeout,
/// at most a minute).
pub(crate) fn touch_due(config: &Config, record: &Record, now: OffsetDateTime) -> bool {
    let interval = config
        .touch_interval
        .unwrap_or_else(|| (record.idle_timeout / 10).min(Duration::from_secs(60)));
    now - record.last_access >= interval
}

/// Loads the record under `key` for the layer through [`call`]:
/// [`load_observed`](crate::SessionStore::load_observed), or
/// [`load_observed_at_least`](crate::SessionStore::load_observed_at_least)
/// with the client's `floor` when the store's reads may lag. An expired
/// record the store met is `None`, and the application hears of it
/// ([`SessionEvents::expired`](crate::SessionEvents::expired)).
pub(crate) async fn load(
    config: &Config,
    key: &StoreKey,
    floor: Option<u64>,
    deadline: Instant,
) -> Result<Option<Record>, StoreError> {
    let load = if config.reads_may_lag {
        config.store.load_observed_at_least(key, floor)
    } else {
        config.store.load_observed(key)
    };
    match call(config, "load", key, deadline, load).await? {
        LoadOutcome::Found(record) => Ok(Some(record)),
        LoadOutcome::Missing => Ok(None),
        LoadOutcome::Expired { principal } => {
            if let Some(events) = &config.events {
                events.expired(key, principal.as_deref());
            }
            Ok(None)
        }
    }
}

/// Runs one store call under the deadline, in a span that names the call and
/// the store key's short prefix (never the id), and records its metrics.
/// Every store call of the layer goes through here (or [`call_unkeyed`]).
pub(crate) async fn call<T: Observed>(
    config: &Config,
    op: &'static str,
    key: &StoreKey,
    deadline: Instant,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let span = tracing::debug_span!("session_store", op, key = key.short());
    let result = timed(config, op, deadline, fut.instrument(span)).await;
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

/// [`call`] for a store call that names no session (by principal).
pub(crate) async fn call_unkeyed<T: Observed>(
    config: &Config,
    op: &'static str,
    deadline: Instant,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let span = tracing::debug_span!("session_store", op);
    let result = timed(config, op, deadline, fut.instrument(span)).await;
    if let Err(error) = &result {
        tracing::warn!(
            op,
            error = error as &dyn std::error::Error,
            "session store call failed"
        );
    }
    result
}

/// `fut` under the deadline, its latency and answer counted.
async fn timed<T: Observed>(
    config: &Config,
    op: &'static str,
    deadline: Instant,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let start = std::time::Instant::now();
    let result = match tokio::time::timeout_at(deadline, fut).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Timeout(config.op_timeout)),
    };
    let meter = &config.meter;
    meter.latency(op, start.elapsed());
    match &result {
        Ok(answer) => {
            if let Some(count) = answer.count(op) {
                meter.count(count);
            }
        }
        Err(error) => meter.error(op, error),
    }
    result
}

/// The length of `value` as JSON.
pub(crate) fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    /// Counts the bytes written to it, keeping none.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serializing session data (string keys, JSON values) cannot fail.
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => 0,
    }
}
