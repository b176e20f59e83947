//! The contract every session backend implements.

use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::{Data, Record, StoreError, StoreKey};

/// What a compare-and-set [`SessionStore::save`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveOutcome {
    /// The record was written: the stored version equalled `expected_version`.
    Saved,
    /// Nothing was written: another writer saved a different version first.
    /// The caller reloads, reapplies its changes and tries again.
    Conflict,
    /// Nothing was written: the record no longer exists (deleted, for
    /// example by a logout in a parallel request, or expired). The caller must
    /// not bring it back.
    Gone,
}

/// What a compare-and-delete [`SessionStore::delete_if_unchanged`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The record was deleted: it was live with the expected version.
    Deleted,
    /// Nothing was deleted: a live record with another version is there
    /// (a parallel request saved it after the caller read it).
    Conflict,
    /// Nothing was deleted: no live record was there.
    Gone,
}

/// What a [`SessionStore::load_observed`] met under a key.
///
/// [`load`](SessionStore::load) answers `Option<Record>`: a live record or
/// none. This tells the "none" apart when the store can: no record at all,
/// or one that had expired and that this load was the first to find (and
/// purge). The layer counts the two apart (`session_loads_total`) and tells
/// the application of the expired one
/// ([`SessionEvents::expired`](crate::SessionEvents::expired)).
#[derive(Clone, Debug, PartialEq)]
pub enum LoadOutcome {
    /// The live record.
    Found(Record),
    /// No live record: none was there, or the store cannot say that it
    /// had expired (Redis drops a record with its TTL), or another load
    /// already reported its expiry.
    Missing,
    /// No live record: an expired one was there, and this load is the one
    /// that met it (it is purged, so the next load answers
    /// [`Missing`](Self::Missing)).
    Expired {
        /// The principal the expired record had, if any.
        principal: Option<String>,
    },
}

impl LoadOutcome {
    /// The live record, if one was found.
    pub fn into_record(self) -> Option<Record> {
        match self {
            Self::Found(record) => Some(record),
            Self::Missing | Self::Expired { .. } => None,
        }
    }

    /// The live record, if one was found.
    pub fn record(&self) -> Option<&Record> {
        match self {
            Self::Found(record) => Some(record),
            Self::Missing | Self::Expired { .. } => None,
        }
    }
}

impl From<Option<Record>> for LoadOutcome {
    fn from(record: Option<Record>) -> Self {
        match record {
            Some(record) => Self::Found(record),
            None => Self::Missing,
        }
    }
}

/// One session of a principal, as listed by [`SessionStore::list_by_principal`]
/// for "your active sessions" pages.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The session's store key (not a secret: it cannot be turned into a cookie).
    pub key: StoreKey,
    /// When the session was created.
    pub created_at: OffsetDateTime,
    /// When it was last used.
    pub last_access: OffsetDateTime,
    /// When it expires unless used again.
    pub expires_at: OffsetDateTime,
    /// Its data (for example a device name the app stored at login).
    pub data: Data,
}

impl SessionInfo {
    /// The listing entry for a record.
    pub fn new(key: StoreKey, record: &Record) -> Self {
        Self {
            key,
            created_at: record.created_at,
            last_access: record.last_access,
            expires_at: record.expires_at(),
            data: record.data.clone(),
        }
    }
}

/// A session backend.
///
/// Object safe (the layer holds an `Arc<dyn SessionStore>`), `Send + Sync +
/// 'static`. Records are keyed by [`StoreKey`], never by the raw session id.
/// Every backend passes the conformance suite in
/// `session_core::conformance` (feature `conformance`).
///
/// All methods copy: a record passed in or returned is the caller's own, and a
/// later change to it changes nothing in the store.
///
/// A record is *live* while `now < record.expires_at()` by the store's clock;
/// a store treats a record that is not live exactly like an absent one, even
/// before it purges it.
///
/// # Errors
///
/// Every method fails with [`StoreError`] when the backend does (connection,
/// I/O, server error). Outcomes such as "absent", "conflict" and "gone" are
/// not errors: they are part of each method's answer.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Inserts `record` under `key` only if no live record is there.
    ///
    /// Returns `true` if it was inserted, `false` if a live record already
    /// exists (then nothing changed and the caller draws a new id). The check
    /// and the insert are one atomic step.
    async fn create(&self, key: &StoreKey, record: &Record) -> Result<bool, StoreError>;

    /// Loads the live record under `key`. Never returns an expired record;
    /// a stored value that does not decode is returned as `None` and logged.
    /// It never answers from a lagging copy (a store with replicas reads its
    /// primary here; see [`load_at_least`](Self::load_at_least)).
    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError>;

    /// Loads the live record under `key`, like [`load`](Self::load), for a
    /// client that has already seen version `floor` of it (`None`: the
    /// client has seen no version, or it is not known). This is the load
    /// the layer makes for a request when the store's
    /// [`reads_may_lag`](Self::reads_may_lag).
    ///
    /// A store with replicas may answer it from a replica, which may lag
    /// behind the primary, but never with a record older than `floor`, nor
    /// with `None` when `floor` is `Some` unless the primary has no live
    /// record either: it asks its primary instead (see
    /// [`replica::read_your_writes`](crate::replica::read_your_writes),
    /// the decision every such store shares). With `floor` `None` a
    /// replica's answer is taken as it is. Plain [`load`](Self::load) stays
    /// current (the primary's answer) in every store.
    ///
    /// The default, right for every store whose reads never lag, ignores
    /// the floor and calls [`load`](Self::load).
    async fn load_at_least(
        &self,
        key: &StoreKey,
        floor: Option<u64>,
    ) -> Result<Option<Record>, StoreError> {
        let _ = floor;
        self.load(key).await
    }

    /// [`load`](Self::load), telling an expired record apart from a
    /// missing one where the store can: the load the layer makes (for a
    /// store whose reads do not lag).
    ///
    /// A store that [`observes_expiry`](Self::observes_expiry) answers
    /// [`LoadOutcome::Expired`] when the record under `key` has expired and
    /// this call is the first to meet it, and purges it in the same step, so
    /// that two loads never both report one expiry. The default, right for
    /// every store that cannot tell (its backend drops records by TTL),
    /// maps [`load`](Self::load): `Some` is
    /// [`Found`](LoadOutcome::Found), `None` is
    /// [`Missing`](LoadOutcome::Missing).
    async fn load_observed(&self, key: &StoreKey) -> Result<LoadOutcome, StoreError> {
        self.load(key).await.map(LoadOutcome::from)
    }

    /// [`load_at_least`](Self::load_at_least), telling an expired record
    /// apart from a missing one where the store can, like
    /// [`load_observed`](Self::load_observed): the load the layer makes for
    /// a store whose [`reads_may_lag`](Self::reads_may_lag).
    ///
    /// A replica cannot purge what it finds expired, so a replicated store
    /// answers [`Missing`](LoadOutcome::Missing) from a replica; with a
    /// floor, a missing answer is asked of the primary (see
    /// [`replica::read_your_writes`](crate::replica::read_your_writes)),
    /// which may answer [`Expired`](LoadOutcome::Expired).
    ///
    /// The default maps [`load_at_least`](Self::load_at_least) for a store
    /// whose reads may lag, and calls
    /// [`load_observed`](Self::load_observed) for one whose reads do not.
    async fn load_observed_at_least(
        &self,
        key: &StoreKey,
        floor: Option<u64>,
    ) -> Result<LoadOutcome, StoreError> {
        if self.reads_may_lag() {
            self.load_at_least(key, floor).await.map(LoadOutcome::from)
        } else {
            self.load_observed(key).await
        }
    }

    /// Whether [`load_observed`](Self::load_observed) answers
    /// [`LoadOutcome::Expired`] for a record it finds expired (a capability
    /// the store declares; the conformance suite holds it to it). Default
    /// `false`: expired records are [`Missing`](LoadOutcome::Missing).
    fn observes_expiry(&self) -> bool {
        false
    }

    /// Whether [`load_at_least`](Self::load_at_least) may answer from a
    /// copy that lags behind the writes (a replica). Then the layer keeps a
    /// version floor per
    /// client in its cookie and loads with
    /// [`load_at_least`](Self::load_at_least), so that a client never sees
    /// a record older than one it has seen or written. Default `false`:
    /// cookies carry no floor and loads are plain [`load`](Self::load)s.
    fn reads_may_lag(&self) -> bool {
        false
    }

    /// Compare-and-set: writes `record` (whose `version` is
    /// `expected_version + 1`) only if the live record under `key` has version
    /// `expected_version`.
    ///
    /// Returns [`SaveOutcome::Saved`] when written, [`SaveOutcome::Conflict`]
    /// when a live record with another version is there, and
    /// [`SaveOutcome::Gone`] when no live record is there. A save never
    /// creates a record.
    async fn save(
        &self,
        key: &StoreKey,
        record: &Record,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError>;

    /// Extends a live record's idle deadline to `idle_deadline` and sets its
    /// last access to now, without rewriting data or changing its version,
    /// if the record still has version `expected_version` (the one the
    /// caller read). A touch never moves the idle deadline earlier, and the
    /// record still expires at its absolute deadline at the latest.
    ///
    /// Returns `false`, changing nothing, if no live record is under `key`
    /// or it has another version. A save since the caller read it restarted
    /// the idle deadline already, with the idle timeout the session has now:
    /// a touch computed from the older version must not undo a shorter one
    /// (`set_expiry` racing a reader's touch).
    async fn touch(
        &self,
        key: &StoreKey,
        expected_version: u64,
        idle_deadline: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Deletes the record under `key`, if any. Deleting an absent key is not an error.
    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError>;

    /// Compare-and-delete: deletes the record under `key` only if it is live
    /// with version `expected_version`, in one atomic step.
    ///
    /// Returns [`DeleteOutcome::Deleted`] when deleted,
    /// [`DeleteOutcome::Conflict`] when a live record with another version is
    /// there (nothing deleted) and [`DeleteOutcome::Gone`] when no live
    /// record is there. The layer retires a session's old id with it when the
    /// id is cycled, so a write that reached the old id after the request
    /// read it is noticed and carried to the new id, never deleted unseen.
    async fn delete_if_unchanged(
        &self,
        key: &StoreKey,
        expected_version: u64,
    ) -> Result<DeleteOutcome, StoreError>;

    /// Lists the live sessions whose record has `principal` set to `principal`.
    async fn list_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>, StoreError>;

    /// Deletes every session of `principal` ("log out everywhere") and returns
    /// how many live sessions were deleted.
    async fn delete_by_principal(&self, principal: &str) -> Result<u64, StoreError>;

    /// Deletes expired records and returns how many went. Stores whose backend
    /// expires records natively may return `0`: their records are gone (or
    /// invisible) already.
    async fn delete_expired(&self) -> Result<u64, StoreError>;

    /// One cheap round trip to the backend, for a readiness probe: `Ok`
    /// when the store answered, whatever it answered.
    ///
    /// The default loads a key no session has (a store key is a SHA-256
    /// digest in base64url; this one is 43 dashes), so every backend gets one
    /// real read with no write and nothing new to implement. A store whose
    /// backend has a cheaper no-op may override it. The caller bounds it
    /// with its own timeout (the example server uses the layer's operation
    /// timeout): a store that hangs never answers.
    ///
    /// # Errors
    ///
    /// The backend's error when it could not be reached or failed the read.
    async fn ping(&self) -> Result<(), StoreError> {
        self.load(&StoreKey::probe()).await.map(|_| ())
    }

    /// A short, fixed name of the backend (`"memory"`, `"redis"`,
    /// `"postgres"`, ...), the `backend` label of the layer's metrics (see
    /// [`observe`](crate::observe)). A wrapper returns the name of the
    /// store it wraps, or its own. The default is `"custom"`.
    ///
    /// Keep it a constant: it labels every store call's metrics, and a
    /// label of many values makes many time series.
    fn backend(&self) -> &'static str {
        "custom"
    }
}

#[async_trait]
impl<S: SessionStore + ?Sized> SessionStore for Arc<S> {
    async fn create(&self, key: &StoreKey, record: &Record) -> Result<bool, StoreError> {
        (**self).create(key, record).await
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        (**self).load(key).await
    }

    async fn load_at_least(
        &self,
        key: &StoreKey,
        floor: Option<u64>,
    ) -> Result<Option<Record>, StoreError> {
        (**self).load_at_least(key, floor).await
    }

    fn reads_may_lag(&self) -> bool {
        (**self).reads_may_lag()
    }

    async fn load_observed(&self, key: &StoreKey) -> Result<LoadOutcome, StoreError> {
        (**self).load_observed(key).await
    }

    async fn load_observed_at_least(
        &self,
        key: &StoreKey,
        floor: Option<u64>,
    ) -> Result<LoadOutcome, StoreError> {
        (**self).load_observed_at_least(key, floor).await
    }

    fn observes_expiry(&self) -> bool {
        (**self).observes_expiry()
    }

    async fn save(
        &self,
        key: &StoreKey,
        record: &Record,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError> {
        (**self).save(key, record, expected_version).await
    }

    async fn touch(
        &self,
        key: &StoreKey,
        expected_version: u64,
        idle_deadline: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        (**self).touch(key, expected_version, idle_deadline).await
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        (**self).delete(key).await
    }

    async fn delete_if_unchanged(
        &self,
        key: &StoreKey,
        expected_version: u64,
    ) -> Result<DeleteOutcome, StoreError> {
        (**self).delete_if_unchanged(key, expected_version).await
    }

    async fn list_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>, StoreError> {
        (**self).list_by_principal(principal).await
    }

    async fn delete_by_principal(&self, principal: &str) -> Result<u64, StoreError> {
        (**self).delete_by_principal(principal).await
    }

    async fn delete_expired(&self) -> Result<u64, StoreError> {
        (**self).delete_expired().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        (**self).ping().await
    }

    fn backend(&self) -> &'static str {
        (**self).backend()
    }
}
