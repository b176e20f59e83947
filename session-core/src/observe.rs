//! Metrics and lifecycle events: what the layer tells operators and the
//! application, on every backend.
//!
//! # Metrics
//!
//! The layer records metrics through the [`metrics`] facade; the
//! application installs the exporter it wants (for example
//! `metrics-exporter-prometheus`) and may call [`describe`] once after
//! installing it, to give each metric its help text. With no recorder
//! installed the metrics cost a look-up of the recorder per store call and
//! nothing else: their keys are built once, when the layer is.
//!
//! They are recorded in one place, the wrapper every store call of the
//! layer goes through, so every backend has them without doing anything.
//! Labels are few and fixed: `backend` (the store's
//! [`backend`](crate::SessionStore::backend) name), `op`, `outcome`,
//! `kind`. No label ever carries a session id, a store key or a principal.
//!
//! | name | type | labels | meaning |
//! |------|------|--------|---------|
//! | `session_loads_total` | counter | `backend`, `outcome` = `hit` \| `miss` \| `expired` | loads of the session a cookie names, and reloads after a save conflict: found live; absent (unknown, deleted, or expired where the store cannot tell: see [`observes_expiry`](crate::SessionStore::observes_expiry)); `expired`: the store met the record expired (and purged it, so the next load is a `miss`) |
//! | `session_creates_total` | counter | `backend`, `outcome` = `created` \| `taken` | new records: a new session or the new id of `cycle_id`; `taken` when the id drawn was in use (a new one is drawn) |
//! | `session_saves_total` | counter | `backend`, `outcome` = `saved` \| `conflict` \| `gone` | compare-and-set saves: written; a parallel commit came first (the request's changes are rebased, or it is stale); the session was deleted meanwhile (not written) |
//! | `session_stale_total` | counter | `backend`, `outcome` = `rerun` \| `refused` | requests whose view of the session was stale: run again on the fresh session, or refused with `409` (see [`ConflictPolicy`](crate::ConflictPolicy)) |
//! | `session_touches_total` | counter | `backend`, `outcome` = `touched` \| `missed` | idle-deadline extensions of read sessions; `missed` when the record had changed or gone (nothing written) |
//! | `session_deletes_total` | counter | `backend`, `op` = `delete`, `outcome` = `deleted` | deletes: `destroy` (logout) and the rollback of an unfinished id change |
//! | `session_deletes_total` | counter | `backend`, `op` = `delete_if_unchanged`, `outcome` = `deleted` \| `conflict` \| `gone` | the old id retired by `cycle_id`: deleted; a write reached it meanwhile (carried to the new id and tried again); already gone |
//! | `session_revoked_total` | counter | `backend` | sessions deleted through [`SessionLayer::revoke_principal`](crate::SessionLayer::revoke_principal) ("log out everywhere") |
//! | `session_store_errors_total` | counter | `backend`, `op`, `kind` = `backend` \| `timeout` \| `encode` | store calls that failed, by the call (`op` as in `session_store_call_seconds`, or `lock`: the wait for this process's turn on a session timed out) and the [`StoreError`](crate::StoreError) kind; `timeout` counts the calls cut by the operation timeout |
//! | `session_store_call_seconds` | histogram | `backend`, `op` = `create` \| `load` \| `save` \| `touch` \| `delete` \| `delete_if_unchanged` \| `delete_by_principal` | how long each store call of the layer took, whatever it answered (cut at the operation timeout) |
//! | `session_size_bytes` | histogram | `backend` | the JSON size of a session's data at each successful create or save |
//! | `session_swept_total` | counter | `backend` | expired records deleted by the shared sweeper of the SQL stores ([`sweeper`](crate::sweeper)) |
//! | `session_replica_reads_total` | counter | `backend`, `outcome` = `replica` \| `behind` \| `primary` | loads of a store with replica reads ([`reads_may_lag`](crate::SessionStore::reads_may_lag)), by who answered: a replica; the primary, because the replica's answer was below the client's version floor or missing while the client had one; the primary, because the replica failed or was late or none was there to ask. Recorded by the store's [`ReadCounters`](crate::replica::ReadCounters), once per load (`replica` is its `ReadCounts::replica`, `behind` + `primary` its `ReadCounts::primary`) |
//! | `session_memory_sessions` | gauge | none | sessions held by `session-memory`'s `MemoryStore` (approximate, like its `len`; set after each create and delete) |
//!
//! # Lifecycle events
//!
//! [`SessionLayer::with_events`](crate::SessionLayer::with_events) gives
//! the layer a [`SessionEvents`] hook. What it guarantees:
//!
//! - **After the store confirmed, never before.** Each event is called once
//!   the store call that made the change has answered that it did: created
//!   after the create, id cycled after the old id was retired, destroyed
//!   after the delete, revoked after `delete_by_principal` returned its
//!   count, swept after a sweeper batch, expired after the load that met
//!   the expired record purged it.
//! - **Never for a write that did not happen.** A save that conflicted and
//!   was found stale, a refused (`409`) or failed (`503`) request, an id
//!   change rolled back, a request whose handler answered 5xx: no event.
//! - **Once.** A request that ran again fires the events of the run that
//!   was committed only.
//! - **Store keys, never ids.** Events carry the [`StoreKey`] (a hash of
//!   the id, which cannot be turned into a cookie) and the principal where
//!   the layer knows it.
//! - **Expiry only where it is observed.** A session that expires is not an
//!   event by itself, at the moment it expires. It is one when something
//!   meets it expired:
//!   - a load: [`SessionEvents::expired`], with the store key and the
//!     principal the record had, once per load that met it (that load
//!     purges it; the next one is a plain miss), from the stores that
//!     [observe expiry](crate::SessionStore::observes_expiry);
//!   - the SQL stores' sweeper: how many expired rows it deleted
//!     ([`SessionEvents::swept`], after
//!     [`SweeperHandle::report_to`](crate::sweeper::SweeperHandle::report_to)).
//!
//!   A session that expires and is never asked for again is only in the
//!   sweeper's count (SQL) or in nothing (memory reclaims it silently,
//!   Redis drops it with its TTL).
//!
//!   | store | expired on load | swept |
//!   |-------|-----------------|-------|
//!   | memory | yes | no (reclaimed as shards fill, not reported) |
//!   | Postgres, MySQL | yes, from the primary (a replica cannot purge: it answers "missing", and with the client's version floor the primary is asked, which reports it) | yes, with a sweeper |
//!   | Redis (standalone, Cluster, Sentinel) | never: Redis drops the record with its TTL, so a load finds nothing to tell apart from an unknown id and counts a `miss` | no |
//!   | a custom store | only if it overrides [`load_observed`](crate::SessionStore::load_observed) | as it does |
//!
//!   Nothing depends on Redis keyspace notifications (which are per node on
//!   Redis Cluster and lost on a disconnect): on Redis, expired events do
//!   not come at all rather than come from there.
//! - **On the request's task.** The methods are called inline, before the
//!   response is sent: keep them short and non-blocking (push to a channel
//!   or a bounded buffer). A panic in one is the application's bug and
//!   unwinds like a panic in the handler.
//!
//! ```
//! use session_core::{SessionLayer, SessionEvents, StoreKey};
//! use session_memory::MemoryStore;
//!
//! struct Audit;
//!
//! impl SessionEvents for Audit {
//!     fn created(&self, key: &StoreKey, principal: Option<&str>) {
//!         tracing::info!(key = key.short(), ?principal, "session created");
//!     }
//! }
//!
//! let layer = SessionLayer::new(MemoryStore::new()).with_events(Audit);
//! ```

use std::sync::Arc;

use crate::StoreKey;

/// What the application hears of sessions' lives: a hook given to the layer
/// with [`SessionLayer::with_events`](crate::SessionLayer::with_events).
///
/// Every method has a no-op default; implement those you need. See the
/// [module docs](self) for when each is called and what is guaranteed.
pub trait SessionEvents: Send + Sync + 'static {
    /// A new session was stored under `key` (a visitor's first change). A
    /// new id from [`cycle_id`](crate::Session::cycle_id) is
    /// [`id_cycled`](Self::id_cycled) instead.
    fn created(&self, key: &StoreKey, principal: Option<&str>) {
        let _ = (key, principal);
    }

    /// A session moved from `old` to `new` (`cycle_id`, at login): `new` is
    /// stored with the request's changes and `old` is deleted.
    fn id_cycled(&self, old: &StoreKey, new: &StoreKey, principal: Option<&str>) {
        let _ = (old, new, principal);
    }

    /// The session under `key` was deleted by
    /// [`destroy`](crate::Session::destroy) (logout). `principal` is the one
    /// the request saw; `None` also when the request destroyed its session
    /// without loading it (then the key may have held no live session).
    fn destroyed(&self, key: &StoreKey, principal: Option<&str>) {
        let _ = (key, principal);
    }

    /// `count` live sessions of `principal` were deleted through
    /// [`SessionLayer::revoke_principal`](crate::SessionLayer::revoke_principal).
    fn revoked(&self, principal: &str, count: u64) {
        let _ = (principal, count);
    }

    /// A sweeper of the `backend` store deleted `count` expired records
    /// (one call per sweep that deleted any).
    fn swept(&self, backend: &'static str, count: u64) {
        let _ = (backend, count);
    }

    /// A load of the session under `key` met its record expired (the store
    /// answered [`LoadOutcome::Expired`](crate::LoadOutcome::Expired) and
    /// purged it): called once per such load, with the principal the record
    /// had. Only from stores that
    /// [`observe_expiry`](crate::SessionStore::observes_expiry).
    fn expired(&self, key: &StoreKey, principal: Option<&str>) {
        let _ = (key, principal);
    }
}

impl<T: SessionEvents + ?Sized> SessionEvents for Arc<T> {
    fn created(&self, key: &StoreKey, principal: Option<&str>) {
        (**self).created(key, principal);
    }

    fn id_cycled(&self, old: &StoreKey, new: &StoreKey, principal: Option<&str>) {
        (**self).id_cycled(old, new, principal);
    }

    fn destroyed(&self, key: &StoreKey, principal: Option<&str>) {
        (**self).destroyed(key, principal);
    }

    fn revoked(&self, principal: &str, count: u64) {
        (**self).revoked(principal, count);
    }

    fn swept(&self, backend: &'static str, count: u64) {
        (**self).swept(backend, count);
    }

    fn expired(&self, key: &StoreKey, principal: Option<&str>) {
        (**self).expired(key, principal);
    }
}

/// Gives every metric in the [table](self#metrics) its help text and unit,
/// in the recorder installed now. Optional: call it once after installing
/// the exporter.
///
/// ```
/// session_core::observe::describe();
/// ```
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "session_loads_total",
        "Loads of a session named by a cookie, by outcome (hit, miss, expired)."
    );
    describe_counter!(
        "session_creates_total",
        "Records created (new sessions and new ids), by outcome (created, taken)."
    );
    describe_counter!(
        "session_saves_total",
        "Compare-and-set saves, by outcome (saved, conflict, gone)."
    );
    describe_counter!(
        "session_stale_total",
        "Requests whose session view was stale, by outcome (rerun, refused)."
    );
    describe_counter!(
        "session_touches_total",
        "Idle-deadline extensions, by outcome (touched, missed)."
    );
    describe_counter!(
        "session_deletes_total",
        "Deletes by op (delete, delete_if_unchanged) and outcome."
    );
    describe_counter!(
        "session_revoked_total",
        "Sessions deleted by principal (log out everywhere)."
    );
    describe_counter!(
        "session_store_errors_total",
        "Failed store calls, by op and kind (backend, timeout, encode)."
    );
    describe_histogram!(
        "session_store_call_seconds",
        Unit::Seconds,
        "Store call latency, by op."
    );
    describe_histogram!(
        "session_size_bytes",
        Unit::Bytes,
        "JSON size of a session's data at create and save."
    );
    describe_counter!(
        "session_swept_total",
        "Expired records deleted by the SQL stores' sweeper."
    );
    describe_counter!(
        "session_replica_reads_total",
        "Loads of a store with replica reads, by who answered (replica, behind, primary)."
    );
    describe_gauge!(
        "session_memory_sessions",
        "Sessions held by the memory store (approximate)."
    );
}
