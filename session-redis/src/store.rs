//! `RedisStore`: the `SessionStore` contract on Redis strings and Lua scripts.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deadpool_redis::redis::{self, AsyncCommands as _, ErrorKind, ServerErrorKind};
use futures_util::future::try_join_all;
use session_core::record::{now, to_unix_ms};
use session_core::replica::{ReadCounters, ReadCounts};
use session_core::time::OffsetDateTime;
use session_core::{
    DeleteOutcome, Record, SaveOutcome, SessionInfo, SessionStore, StoreError, StoreKey,
};

use crate::Durable;
use crate::connection::{Conn, Connections, Pool, Replicas, is_readonly};
use crate::encoding::{self, millis};
use crate::scripts;

/// Key prefix used unless [`RedisStore::key_prefix`] sets another.
pub const DEFAULT_KEY_PREFIX: &str = "session:";

/// Shared connections a store keeps unless [`RedisStore::shared_connections`]
/// sets another number.
pub const DEFAULT_SHARED_CONNECTIONS: usize = 2;

/// How long a tombstone keeps a record key taken: the cleanup of the
/// principal index leaves one under the key of every member it removes (see
/// `RedisStore::forget` for why, and why this is long enough).
const TOMBSTONE_TTL: Duration = Duration::from_secs(60);

/// A `create` (or a `save` that indexed first) whose write is answered more
/// than this long after it sent the index script indexes the key once more
/// before it returns: a tombstone may have expired before the write landed.
const SLOW_INDEXED_WRITE: Duration = Duration::from_secs(10);

/// A cleanup that got to its `SREM` more than this long after it sent the
/// scripts that buried the members' keys skips the `SREM` (the members stay
/// until the next listing).
const CLEANUP_BUDGET: Duration = Duration::from_secs(10);

// The margin `forget` relies on, `TOMBSTONE_TTL - SLOW_INDEXED_WRITE -
// CLEANUP_BUDGET` (40 s): what is left of a tombstone's life after the
// longest a write may take without indexing again and the longest a cleanup
// may take to send its `SREM`. Kept at least as long as those two together.
const _: () = assert!(
    TOMBSTONE_TTL.as_millis() >= 2 * (SLOW_INDEXED_WRITE.as_millis() + CLEANUP_BUDGET.as_millis())
);

/// Sessions in Redis (a standalone server or a Redis Cluster), on a
/// deadpool-redis pool: the stateless mode.
///
/// Cloning is cheap; clones share the connections. See the [crate
/// docs](crate) for the keys, the value layout and the scripts.
///
/// ```
/// use session_redis::RedisStore;
///
/// // Building the store does not connect: the first store call does.
/// let store = RedisStore::from_url("redis://127.0.0.1:6379")?.key_prefix("myapp:session:");
/// let layer = session_core::SessionLayer::new(store);
/// # Ok::<(), session_redis::BuildError>(())
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connections: Arc<Connections>,
    prefix: Arc<str>,
    durability: Durability,
    failover_retry: Duration,
    /// Behind Sentinel with replica reads or `durable=all`: the replicas
    /// as the sentinels list them (loads may ask them; all writes wait for
    /// as many as Sentinel may promote).
    replicas: Option<Arc<Replicas>>,
    reads: Arc<ReadCounters>,
}

/// How many replicas must confirm a write before it is acknowledged.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Durability {
    pub(crate) replicas: Durable,
    pub(crate) timeout: Duration,
}

/// One write: a plain command or a script.
#[derive(Clone, Copy)]
enum Write<'a> {
    Cmd(&'a redis::Cmd),
    Script(&'a redis::ScriptInvocation<'a>),
}

impl Write<'_> {
    async fn run<T: redis::FromRedisValue>(self, conn: &mut Conn) -> redis::RedisResult<T> {
        match self {
            Self::Cmd(cmd) => cmd.query_async(conn).await,
            Self::Script(invocation) => invocation.invoke_async(conn).await,
        }
    }
}

/// A write was applied on the primary, but fewer replicas than
/// [`durable`](crate::RedisStoreBuilder::durable) asks for confirmed it in
/// time: the store call failed (the layer answers 503 with `Retry-After`).
/// It is the source of the call's [`StoreError::Backend`].
///
/// The store then holds the write on its primary, and on `confirmed`
/// replicas: a failover to a replica that missed it goes back to the state
/// before it.
#[derive(Debug, thiserror::Error)]
#[error("{confirmed} of the {wanted} replicas asked for confirmed the write in time")]
pub struct NotReplicated {
    /// Replicas asked for.
    pub wanted: u32,
    /// Replicas that confirmed (`WAIT`'s answer).
    pub confirmed: u32,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("cluster", &self.connections.pool().is_cluster())
            .field("sentinel", &self.connections.pool().is_sentinel())
            .field("key_prefix", &self.prefix)
            .field("shared_connections", &self.connections.slots())
            .field("durable", &self.durability.replicas)
            .field("read_from_replicas", &self.reading_replicas().is_some())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on a standalone Redis server, taking its connections from
    /// `pool` (whose size and timeouts are the pool's own).
    ///
    /// ```
    /// use session_redis::{RedisStore, deadpool_redis};
    ///
    /// let pool = deadpool_redis::Config::from_url("redis://127.0.0.1:6379")
    ///     .create_pool(Some(deadpool_redis::Runtime::Tokio1))?;
    /// let store = RedisStore::new(pool);
    /// # Ok::<(), deadpool_redis::CreatePoolError>(())
    /// ```
    pub fn new(pool: deadpool_redis::Pool) -> Self {
        Self::with_pool(Pool::Single(pool))
    }

    /// A store on a Redis Cluster, taking its connections from `pool`.
    ///
    /// ```
    /// use session_redis::{RedisStore, deadpool_redis};
    ///
    /// let pool = deadpool_redis::cluster::Config::from_urls(vec![
    ///     "redis://127.0.0.1:7000".to_owned(),
    ///     "redis://127.0.0.1:7001".to_owned(),
    /// ])
    /// .create_pool(Some(deadpool_redis::Runtime::Tokio1))?;
    /// let store = RedisStore::new_cluster(pool);
    /// # Ok::<(), deadpool_redis::CreatePoolError>(())
    /// ```
    pub fn new_cluster(pool: deadpool_redis::cluster::Pool) -> Self {
        Self::with_pool(Pool::Cluster(pool))
    }

    pub(crate) fn with_pool(pool: Pool) -> Self {
        let reads = ReadCounters::for_backend(mode_name(&pool));
        Self {
            connections: Arc::new(Connections::new(pool, DEFAULT_SHARED_CONNECTIONS)),
            prefix: Arc::from(DEFAULT_KEY_PREFIX),
            durability: Durability {
                replicas: Durable::Replicas(0),
                timeout: crate::DEFAULT_DURABLE_TIMEOUT,
            },
            failover_retry: crate::DEFAULT_FAILOVER_RETRY,
            replicas: None,
            reads: Arc::new(reads),
        }
    }

    pub(crate) fn configured(
        mut self,
        durability: Durability,
        failover_retry: Duration,
        replicas: Option<Replicas>,
    ) -> Self {
        self.durability = durability;
        self.failover_retry = failover_retry;
        self.replicas = replicas.map(Arc::new);
        self
    }

    /// How this store's loads were answered so far, by a replica or by the
    /// primary (see
    /// [`RedisStoreBuilder::read_from_replicas`](crate::RedisStoreBuilder::read_from_replicas));
    /// shared by its clones. All zero without replica reads.
    pub fn replica_reads(&self) -> ReadCounts {
        self.reads.counts()
    }

    /// A load from one of the replicas, under the replica timeout; an
    /// error (so the primary is asked) when there is none, it fails, or it
    /// does not answer in time (it is then left out until the next lookup).
    async fn load_from_replica(
        &self,
        replicas: &Arc<Replicas>,
        key: &StoreKey,
    ) -> Result<Option<Record>, StoreError> {
        let Some((address, conn)) = replicas.get(self.connections.resets()) else {
            return Err(StoreError::backend("no replica to read from"));
        };
        let mut conn = Conn::Single(conn);
        match tokio::time::timeout(replicas.timeout, self.read(&mut conn, key)).await {
            Ok(Ok(record)) => Ok(record),
            Ok(Err(error)) => {
                replicas.failed(&address);
                Err(StoreError::backend(error))
            }
            Err(_) => {
                replicas.failed(&address);
                Err(StoreError::backend(format!(
                    "the replica did not answer within {:?}",
                    replicas.timeout
                )))
            }
        }
    }

    /// The replicas each write waits for, as configured (see
    /// [`RedisStoreBuilder::durable`](crate::RedisStoreBuilder::durable)).
    pub fn durable(&self) -> Durable {
        self.durability.replicas
    }

    /// How many replicas must confirm each write: `n` for
    /// [`Durable::Replicas`] (0 when writes are acknowledged without
    /// waiting); for [`Durable::All`], the replicas Sentinel may promote as
    /// the store last counted them (at least 1; 1 before the store first
    /// asked the sentinels).
    pub fn durable_replicas(&self) -> u32 {
        match self.durability.replicas {
            Durable::Replicas(n) => n,
            Durable::All => self
                .replicas
                .as_ref()
                .and_then(|r| r.last_promotable())
                .unwrap_or(1)
                .max(1),
        }
    }

    /// The replicas loads may ask, with replica reads.
    fn reading_replicas(&self) -> Option<&Arc<Replicas>> {
        self.replicas.as_ref().filter(|r| r.reads())
    }

    /// The prefix of every key this store writes (default
    /// [`DEFAULT_KEY_PREFIX`], `session:`). Give each application sharing a
    /// Redis its own prefix.
    ///
    /// In a cluster, a prefix containing a `{hash tag}` would put every
    /// session in one slot, on one node: leave braces out unless that is
    /// what you want.
    ///
    /// ```
    /// # use session_redis::RedisStore;
    /// let store = RedisStore::from_url("redis://127.0.0.1:6379")?.key_prefix("shop:sess:");
    /// # Ok::<(), session_redis::BuildError>(())
    /// ```
    #[must_use]
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Arc::from(prefix.into());
        self
    }

    /// How many pooled connections the store's calls share (default
    /// [`DEFAULT_SHARED_CONNECTIONS`], at least 1).
    ///
    /// Each is a multiplexed connection: concurrent calls pipeline on it
    /// instead of waiting for a connection of their own. One connection
    /// already serves tens of thousands of calls per second; a second one
    /// spreads the client-side work. Connections are taken from the pool on
    /// first use and after a connection failure.
    ///
    /// ```
    /// # use session_redis::RedisStore;
    /// let store = RedisStore::from_url("redis://127.0.0.1:6379")?.shared_connections(4);
    /// # Ok::<(), session_redis::BuildError>(())
    /// ```
    #[must_use]
    pub fn shared_connections(mut self, connections: usize) -> Self {
        let pool = self.connections.pool().clone();
        self.connections = Arc::new(Connections::new(pool, connections));
        self
    }

    /// The Redis key of the record under `key`: `{prefix}s:{key}`.
    pub fn record_key(&self, key: &StoreKey) -> String {
        // Once per store call: concatenated without the formatting machinery.
        let mut record_key = String::with_capacity(self.prefix.len() + 2 + key.as_str().len());
        record_key.push_str(&self.prefix);
        record_key.push_str("s:");
        record_key.push_str(key.as_str());
        record_key
    }

    /// The Redis key of the set indexing the sessions of `principal`:
    /// `{prefix}p:{principal}`.
    pub fn principal_key(&self, principal: &str) -> String {
        format!("{}p:{}", self.prefix, principal)
    }

    /// Runs one command or script on a shared connection.
    async fn run<T, F>(&self, call: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut Conn) -> redis::RedisResult<T> + Clone,
    {
        self.attempt(call).await.map(|(value, _)| value)
    }

    /// Runs one write, then, when `wrote` says it wrote something and the
    /// store is [durable](crate::RedisStoreBuilder::durable), `WAIT`s on the
    /// same connection for the replicas. `WAIT` covers every write this
    /// connection sent before it, and the replication stream is one ordered
    /// log, so on one primary it also covers the writes of the same call
    /// that went over another connection before (the principal index). On
    /// a cluster see `RedisStore::run_write_on_shard`.
    async fn run_write<T>(
        &self,
        write: Write<'_>,
        wrote: impl Fn(&T) -> bool,
    ) -> Result<T, StoreError>
    where
        T: redis::FromRedisValue,
    {
        let durable = self.durability.replicas;
        if let Durable::Replicas(wanted) = durable
            && wanted > 0
            && self.connections.pool().is_cluster()
        {
            return self.run_write_on_shard(write, wanted, wrote).await;
        }
        if durable == Durable::Replicas(0) {
            return self.run(async |conn| write.run(conn).await).await;
        }
        let (value, mut conn) = self.attempt(async |conn| write.run(conn).await).await?;
        if !wrote(&value) {
            return Ok(value);
        }
        // Counted after the write, so that a write retried on a promoted
        // primary (which dropped the connections) waits for its replicas.
        let wanted = match (durable, &self.replicas) {
            (Durable::Replicas(n), _) => n,
            (Durable::All, Some(replicas)) => {
                replicas.promotable(self.connections.resets()).await?
            }
            // The builder refuses `all` without Sentinel, which gives it
            // the replicas.
            (Durable::All, None) => {
                return Err(StoreError::backend(
                    "durable=all without the sentinels' replica list",
                ));
            }
        };
        let mut wait = redis::cmd("WAIT");
        wait.arg(wanted).arg(self.wait_timeout_ms());
        // Not retried: the write is applied, only its replication is unknown.
        let confirmed: i64 = wait
            .query_async(&mut conn)
            .await
            .map_err(|e| self.connections.failed(e))?;
        self.check_confirmed(wanted, confirmed)?;
        Ok(value)
    }

    /// A durable write on a Redis Cluster: the write and its `WAIT` go as
    /// one pipeline, which the cluster client routes by the write's key to
    /// the master of its slot and, on `MOVED` or `ASK` (a slot that moved or
    /// is moving), sends again whole to the node named. So `WAIT` runs on
    /// the connection to the very node that took the write, and counts the
    /// replicas of that shard, whichever node the slot map named first. A
    /// write that answered `MOVED` or `ASK` did not run, so resending the
    /// pipeline is safe; a `WAIT` that ran on the wrong node with it is
    /// ignored.
    async fn run_write_on_shard<T>(
        &self,
        write: Write<'_>,
        wanted: u32,
        wrote: impl Fn(&T) -> bool,
    ) -> Result<T, StoreError>
    where
        T: redis::FromRedisValue,
    {
        let mut pipe = redis::pipe();
        match write {
            Write::Cmd(cmd) => pipe.add_command(cmd.clone()),
            Write::Script(invocation) => pipe.invoke_script(invocation),
        };
        pipe.cmd("WAIT").arg(wanted).arg(self.wait_timeout_ms());
        let (value, confirmed): (T, i64) = self
            .run(async |conn| match pipe.query_async(conn).await {
                // A node that has not seen the script yet (a new or
                // restarted one): `SCRIPT LOAD` goes to every node, then
                // the pipeline once more. EVALSHA of an unknown script
                // runs nothing.
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    if let Write::Script(invocation) = write {
                        invocation.load_async(conn).await?;
                    }
                    pipe.query_async(conn).await
                }
                answer => answer,
            })
            .await?;
        if wrote(&value) {
            self.check_confirmed(wanted, confirmed)?;
        }
        Ok(value)
    }

    /// `WAIT`'s timeout argument, in milliseconds (at least 1: 0 would
    /// block for ever).
    fn wait_timeout_ms(&self) -> u64 {
        millis(self.durability.timeout).max(1)
    }

    /// [`NotReplicated`] when fewer than `wanted` replicas `confirmed`.
    fn check_confirmed(&self, wanted: u32, confirmed: i64) -> Result<(), StoreError> {
        let confirmed = u32::try_from(confirmed.max(0)).unwrap_or(u32::MAX);
        if confirmed >= wanted {
            return Ok(());
        }
        tracing::warn!(
            wanted,
            confirmed,
            "a session write was not confirmed by enough replicas; answered as a store failure"
        );
        if self.connections.pool().is_sentinel() {
            // A primary that lost its replicas may be a demoted one that
            // has not heard of the failover yet: ask the sentinels again.
            self.connections.drop_all();
        }
        Err(StoreError::backend(NotReplicated { wanted, confirmed }))
    }

    /// Runs `call` on a shared connection; gives its answer and the
    /// connection it ran on. Behind Sentinel, retries (for at most
    /// `failover_retry`, with a short backoff) while no primary can be
    /// reached or the server answers `READONLY`: in both cases the command
    /// did not run (see `connection::is_readonly`). Any other failure,
    /// after which a write may have applied, is returned at once.
    async fn attempt<T, F>(&self, call: F) -> Result<(T, Conn), StoreError>
    where
        F: AsyncFnOnce(&mut Conn) -> redis::RedisResult<T> + Clone,
    {
        let retry = self.connections.pool().is_sentinel();
        let deadline = Instant::now() + self.failover_retry;
        let mut backoff = Duration::from_millis(10);
        loop {
            let error = match self.connections.get().await {
                Ok(mut conn) => match call.clone()(&mut conn).await {
                    Ok(value) => return Ok((value, conn)),
                    Err(e) if retry && is_readonly(&e) => {
                        tracing::debug!("the server is no primary any more; asking the sentinels");
                        self.connections.failed(e)
                    }
                    Err(e) => return Err(self.connections.failed(e)),
                },
                Err(error) if retry => error,
                Err(error) => return Err(error),
            };
            if Instant::now() + backoff > deadline {
                return Err(error);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// Notes `key` in `principal`'s set before the write that gives the record
    /// that principal, so the index never misses a live record (see
    /// [`SessionStore::save`] for when a save can skip this, and
    /// `RedisStore::forget` for why the cleanup cannot undo it).
    async fn index(
        &self,
        key: &StoreKey,
        record: &Record,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let Some(principal) = &record.principal else {
            return Ok(());
        };
        // No touch or save can keep the record past its absolute deadline, so
        // a set living that long outlives this member without being touched.
        let longest = to_unix_ms(record.absolute_deadline) - to_unix_ms(now);
        if longest <= 0 {
            return Ok(());
        }
        let mut invocation = scripts::INDEX.key(self.principal_key(principal));
        invocation.arg(key.as_str()).arg(longest);
        if self.connections.pool().is_cluster() {
            // The set lives in another slot than the record, so on another
            // shard as often as not: the record's `WAIT` does not cover it.
            return self
                .run_write(Write::Script(&invocation), |_: &i64| true)
                .await
                .map(drop);
        }
        self.run(async |conn| invocation.invoke_async::<i64>(conn).await)
            .await
            .map(drop)
    }

    /// Reads the record under `key`: `None` if absent, not live, or not
    /// decodable (then logged).
    async fn read(&self, conn: &mut Conn, key: &StoreKey) -> redis::RedisResult<Option<Record>> {
        let value: Option<Vec<u8>> = match conn.get(self.record_key(key)).await {
            Ok(value) => value,
            Err(e) if e.code() == Some("WRONGTYPE") => {
                tracing::warn!(
                    key = key.short(),
                    "session key holds no string; treated as absent"
                );
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let Some(value) = value else {
            return Ok(None);
        };
        if value == scripts::TOMBSTONE.as_bytes() {
            return Ok(None);
        }
        match encoding::decode(&value) {
            Ok(record) if record.is_expired(now()) => Ok(None),
            Ok(record) => Ok(Some(record)),
            Err(error) => {
                tracing::warn!(key = key.short(), %error, "session record does not decode; treated as absent");
                Ok(None)
            }
        }
    }

    /// The members of `principal`'s set that are store keys; members that
    /// are not (never written by this crate) come back in the second list.
    async fn members(&self, principal: &str) -> Result<(Vec<StoreKey>, Vec<Vec<u8>>), StoreError> {
        let set = self.principal_key(principal);
        let members: Vec<Vec<u8>> = self.run(async |conn| conn.smembers(&set).await).await?;
        let mut keys = Vec::with_capacity(members.len());
        let mut foreign = Vec::new();
        for member in members {
            match std::str::from_utf8(&member).ok().and_then(StoreKey::parse) {
                Some(key) => keys.push(key),
                None => foreign.push(member),
            }
        }
        Ok((keys, foreign))
    }

    /// Buries the keys of `members`, members of `principal`'s set whose
    /// record looked absent, and returns those that may leave the set (see
    /// [`RedisStore::forget`]): the keys that were empty or held a tombstone,
    /// now holding a fresh one. Members whose key holds anything else (a
    /// record that landed since, a value a `create` may replace) are kept.
    async fn claim(&self, members: Vec<&StoreKey>) -> Result<Vec<Vec<u8>>, StoreError> {
        let ttl = millis(TOMBSTONE_TTL);
        let claims = members.into_iter().map(|key| async move {
            let mut invocation = scripts::CLAIM.key(self.record_key(key));
            invocation.arg(ttl);
            let claimed: i64 = self
                .run(async |conn| invocation.invoke_async(conn).await)
                .await?;
            Ok::<_, StoreError>((claimed == 1).then(|| key.as_str().as_bytes().to_vec()))
        });
        Ok(try_join_all(claims).await?.into_iter().flatten().collect())
    }

    /// Lazy cleanup: removes from `principal`'s set the members in `dead`,
    /// whose keys were buried (by the `CLAIM` or `DELETE_OWNED` script) in
    /// scripts sent at `buried` or later, and the members in `foreign` (not
    /// store keys: nothing this crate writes lives under them). A failure is
    /// logged, not returned: the caller's answer is already complete, and
    /// the next listing tries again.
    ///
    /// Why this never takes a live record out of the index. The set may hold
    /// a member whose record is not written *yet*: `create` (and a `save`
    /// answered `INDEX_FIRST`) adds the key to the set, then writes the
    /// record, in two round trips, and in a cluster on two nodes. Removing a
    /// member on the mere sight of an absent record (what this did before)
    /// loses every record written after that sight: it is live, and no
    /// listing or "log out everywhere" finds it again. So a member leaves only
    /// once its key is *buried*: a single-key script checked that the key was
    /// empty or held a tombstone and put a tombstone there, which lives
    /// `TOMBSTONE_TTL`. The only writes that can fill an empty key are a
    /// `create`'s (`SET NX` and the `CREATE` script; a save, touch or
    /// compare-and-delete writes only over a live record), and both treat a
    /// tombstone as taken: that create answers `false`, and the layer draws
    /// another id, which it indexes anew. Hence the interleavings:
    ///
    /// - The write lands before the burial: the burial finds a live record
    ///   (or, in `delete_by_principal`, deletes it and counts it), and the
    ///   member stays (or is removed with the record it indexed).
    /// - The write lands after the burial and before the tombstone expires:
    ///   it is refused, nothing is written.
    /// - The write lands after the tombstone expired, so at least
    ///   `TOMBSTONE_TTL` after the burial. If the creator's index script ran
    ///   after the burial and the write was answered within
    ///   `SLOW_INDEXED_WRITE` of sending it, that index ran at least
    ///   `TOMBSTONE_TTL - SLOW_INDEXED_WRITE` after the burial. Otherwise
    ///   (the index ran before the burial, or the write was slow) the write
    ///   was answered more than `SLOW_INDEXED_WRITE` after the index was
    ///   sent, and the creator indexes the key again before it returns,
    ///   after its write, so at least `TOMBSTONE_TTL` after the burial. The
    ///   cleanup sends its `SREM` within `CLEANUP_BUDGET` of sending the
    ///   burial, or not at all. So that `SREM` could only undo the last index
    ///   by reaching Redis more than `TOMBSTONE_TTL - SLOW_INDEXED_WRITE -
    ///   CLEANUP_BUDGET` (40 s) after it was sent. Every span here is
    ///   measured on the caller's monotonic clock from sending a command to
    ///   its reply; no clocks are compared across machines.
    /// - A key that holds a value a `create` may still replace (a dead record
    ///   of this crate, a foreign value) is not buried and keeps its member:
    ///   that create may be the one that indexed it. Such members go once
    ///   their key is empty (records carry a TTL; a record that is merely
    ///   past its deadline by the application's clock is dropped by Redis
    ///   within milliseconds).
    /// - Expired and deleted records leave an empty key, exactly like a
    ///   record not written yet: the cleanup cannot tell them apart and need
    ///   not, since a burial handles both.
    /// - "Log out everywhere" replaces each live record it deletes with a
    ///   tombstone rather than deleting it, so a second `create` of the same
    ///   key in flight (a `MigratingStore` copying a session twice) cannot
    ///   land after the member is gone either.
    ///
    /// `delete` is still a plain `DEL`, which removes a tombstone too: that
    /// only reopens the key to a `create` already in flight for the same key
    /// while someone else deletes it, a race of the caller's own. A refused
    /// `create` adds its key to the set again; the next cleanup finds the
    /// tombstone, renews it and removes the member.
    async fn forget(
        &self,
        principal: &str,
        dead: Vec<Vec<u8>>,
        buried: Instant,
        foreign: Vec<Vec<u8>>,
    ) {
        let mut members = foreign;
        if buried.elapsed() <= CLEANUP_BUDGET {
            members.extend(dead);
        } else if !dead.is_empty() {
            tracing::warn!(
                members = dead.len(),
                "cleaning a principal's session index took too long; the dead members stay until the next listing"
            );
        }
        if members.is_empty() {
            return;
        }
        let set = self.principal_key(principal);
        let removed = self
            .run(async |conn| conn.srem::<_, _, i64>(&set, &members).await)
            .await;
        if let Err(error) = removed {
            tracing::warn!(%error, "could not prune a principal's session index");
        }
    }

    /// After a write that a `create` or `save` indexed `key` for, `indexed`
    /// being when the index script was sent: indexes the key again when the
    /// write was answered more than `SLOW_INDEXED_WRITE` later (see
    /// [`RedisStore::forget`]).
    async fn index_again_if_slow(
        &self,
        key: &StoreKey,
        record: &Record,
        indexed: Instant,
    ) -> Result<(), StoreError> {
        if indexed.elapsed() <= SLOW_INDEXED_WRITE {
            return Ok(());
        }
        tracing::debug!(key = key.short(), "slow indexed write; indexing again");
        self.index(key, record, now()).await
    }
}

/// What the `save` script answered.
const GONE: i64 = 0;
const CONFLICT: i64 = 1;
const SAVED: i64 = 2;
const INDEX_FIRST: i64 = 3;

impl RedisStore {
    /// Runs the `save` script once. With `check_principal`, a record with a
    /// principal is written only if the stored one has the same principal
    /// and an absolute deadline no earlier than the new one; otherwise the
    /// script writes nothing and answers [`INDEX_FIRST`].
    async fn save_once(
        &self,
        record_key: &str,
        value: &[u8],
        record: &Record,
        expected_version: u64,
        check_principal: bool,
    ) -> Result<i64, StoreError> {
        let now = now();
        let ttl = millis(record.ttl(now));
        let mut invocation = scripts::SAVE.key(record_key);
        invocation
            .arg(to_unix_ms(now))
            .arg(expected_version)
            .arg(ttl)
            .arg(value);
        if let Some(principal) = record.principal.as_deref()
            && check_principal
            // With no time left the script deletes: nothing to index.
            && ttl > 0
        {
            invocation
                .arg(principal)
                .arg(to_unix_ms(record.absolute_deadline));
        }
        self.run_write(Write::Script(&invocation), |outcome| *outcome == SAVED)
            .await
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    /// One `SET NX PX`; the `create` script only when that finds the key
    /// taken (a dead or foreign value there is replaced) or the record is
    /// already expired. A record with a principal is first added to the
    /// principal index, one more round trip.
    ///
    /// Returns `false` when a live record is under the key, and also when a
    /// tombstone is: the principal index's cleanup took the key, or "log out
    /// everywhere" ended its session, within the last minute (see the crate
    /// docs). The layer then draws another id.
    async fn create(&self, key: &StoreKey, record: &Record) -> Result<bool, StoreError> {
        let value = encoding::encode(record)?;
        let indexed = Instant::now();
        self.index(key, record, now()).await?;
        let record_key = self.record_key(key);
        let ttl = millis(record.ttl(now()));
        if ttl > 0 {
            // Ids are 128 random bits: the key is practically always free.
            let mut set = redis::cmd("SET");
            set.arg(&record_key)
                .arg(&value)
                .arg("PX")
                .arg(ttl)
                .arg("NX");
            let reply: Option<()> = self.run_write(Write::Cmd(&set), Option::is_some).await?;
            if reply.is_some() {
                self.index_again_if_slow(key, record, indexed).await?;
                return Ok(true);
            }
        }
        let now = now();
        let mut invocation = scripts::CREATE.key(&record_key);
        invocation
            .arg(to_unix_ms(now))
            .arg(millis(record.ttl(now)))
            .arg(&value);
        let created: i64 = self
            .run_write(Write::Script(&invocation), |created| *created == 1)
            .await?;
        if created == 1 && ttl > 0 {
            self.index_again_if_slow(key, record, indexed).await?;
        }
        Ok(created == 1)
    }

    /// One `GET`, on the primary.
    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        self.run(async |conn| self.read(conn, key).await).await
    }

    /// With [replica reads](crate::RedisStoreBuilder::read_from_replicas):
    /// one `GET` on a replica (in turn), and one on the primary only when
    /// the replica's answer is below `floor`, missing while there is a
    /// floor, failed or late (session-core's
    /// [`read_your_writes`](session_core::replica::read_your_writes)).
    /// Without them, [`load`](Self::load).
    async fn load_at_least(
        &self,
        key: &StoreKey,
        floor: Option<u64>,
    ) -> Result<Option<Record>, StoreError> {
        let Some(replicas) = self.reading_replicas() else {
            return self.load(key).await;
        };
        self.reads
            .load(floor, self.load_from_replica(replicas, key), || {
                self.load(key)
            })
            .await
    }

    /// True with [replica reads](crate::RedisStoreBuilder::read_from_replicas).
    fn reads_may_lag(&self) -> bool {
        self.reading_replicas().is_some()
    }

    /// One `save` script. Only when the record gets a principal it did not
    /// have (or, with one, a later absolute deadline) does the script write
    /// nothing and ask for the principal index first: then the index script
    /// and the `save` script again, three round trips.
    async fn save(
        &self,
        key: &StoreKey,
        record: &Record,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError> {
        // Why a save that keeps the principal needs no index call. The store
        // keeps this invariant: while the key holds a live record with
        // principal `P` and absolute deadline `x`, `P`'s set holds the key
        // and lives until `x` at least.
        // - `create` with a principal runs the index script before it writes:
        //   `SADD` of the key, and the set's TTL raised (never lowered) to
        //   reach `x`.
        // - A `save` whose stored record (live, of the expected version,
        //   checked in the same atomic script) already has principal `P` and
        //   an absolute deadline `x_old >= x_new` inherits the invariant from
        //   that record: the key is in the set, and the set lives until
        //   `x_old >= x_new`. It writes at once.
        // - Every other save of a record with a principal gets `INDEX_FIRST`
        //   from the script (nothing written), runs the index script, then
        //   saves; the script checks the version again, so a parallel write
        //   in between still gives `Conflict` or `Gone`.
        // - A touch changes neither the principal nor `x`, and never keeps a
        //   record past `x`.
        // - Members leave the set only through the lazy cleanup, once their
        //   key is empty or holds a tombstone, and the cleanup leaves a
        //   tombstone there that no create writes over (see `forget`); a save
        //   never brings a dead record back (`Gone`), and a `create` indexes
        //   again. A save writes only over a live record, so the cleanup
        //   never buries a key between its index and its write: either the
        //   write lands on the record the cleanup saw live (and kept), or it
        //   finds the key dead and answers `Gone`.
        let value = encoding::encode(record)?;
        let record_key = self.record_key(key);
        let mut outcome = self
            .save_once(&record_key, &value, record, expected_version, true)
            .await?;
        if outcome == INDEX_FIRST {
            let indexed = Instant::now();
            self.index(key, record, now()).await?;
            outcome = self
                .save_once(&record_key, &value, record, expected_version, false)
                .await?;
            if outcome == SAVED {
                self.index_again_if_slow(key, record, indexed).await?;
            }
        }
        Ok(match outcome {
            SAVED => SaveOutcome::Saved,
            CONFLICT => SaveOutcome::Conflict,
            GONE => SaveOutcome::Gone,
            other => {
                return Err(StoreError::backend(format!(
                    "the save script answered {other}"
                )));
            }
        })
    }

    /// One `touch` script.
    async fn touch(
        &self,
        key: &StoreKey,
        expected_version: u64,
        idle_deadline: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut invocation = scripts::TOUCH.key(self.record_key(key));
        invocation
            .arg(to_unix_ms(now()))
            .arg(to_unix_ms(idle_deadline))
            .arg(expected_version);
        let touched: i64 = self
            .run(async |conn| invocation.invoke_async(conn).await)
            .await?;
        Ok(touched == 1)
    }

    /// One `DEL`: a single command is atomic already. The principal's set
    /// keeps the key until a listing finds it dead and buries it.
    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        let mut del = redis::cmd("DEL");
        del.arg(self.record_key(key));
        self.run_write(Write::Cmd(&del), |deleted: &i64| *deleted > 0)
            .await
            .map(drop)
    }

    /// One `delete_if_unchanged` script. Like `delete`, it leaves the key in
    /// the principal's set until a listing finds it dead.
    async fn delete_if_unchanged(
        &self,
        key: &StoreKey,
        expected_version: u64,
    ) -> Result<DeleteOutcome, StoreError> {
        let mut invocation = scripts::DELETE_IF_UNCHANGED.key(self.record_key(key));
        invocation.arg(to_unix_ms(now())).arg(expected_version);
        let outcome: i64 = self
            .run_write(Write::Script(&invocation), |outcome| *outcome == SAVED)
            .await?;
        Ok(match outcome {
            SAVED => DeleteOutcome::Deleted,
            CONFLICT => DeleteOutcome::Conflict,
            GONE => DeleteOutcome::Gone,
            other => {
                return Err(StoreError::backend(format!(
                    "the delete_if_unchanged script answered {other}"
                )));
            }
        })
    }

    /// `SMEMBERS`, then one `GET` per member, all in flight together; then,
    /// only if some look absent, one `claim` script per such member (at once)
    /// and one `SREM` of those it buried (see `RedisStore::forget` and the crate docs).
    async fn list_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let (keys, foreign) = self.members(principal).await?;
        let reads = keys.iter().map(|key| async move {
            let record = self.run(async |conn| self.read(conn, key).await).await?;
            Ok::<_, StoreError>((key, record))
        });
        let mut sessions = Vec::new();
        let mut absent = Vec::new();
        for (key, record) in try_join_all(reads).await? {
            match record {
                Some(record) if record.principal.as_deref() == Some(principal) => {
                    sessions.push(SessionInfo::new(key.clone(), &record));
                }
                // Now another principal's: kept, since a parallel save may
                // give it back (it leaves the set once it is dead).
                Some(_) => {}
                None => absent.push(key),
            }
        }
        let buried = Instant::now();
        let dead = if absent.is_empty() {
            Vec::new()
        } else {
            // Like the `SREM`, the burial is housekeeping: the listing is
            // complete without it.
            self.claim(absent).await.unwrap_or_else(|error| {
                tracing::warn!(%error, "could not prune a principal's session index");
                Vec::new()
            })
        };
        self.forget(principal, dead, buried, foreign).await;
        sessions.sort_by_key(|s| std::cmp::Reverse(s.last_access));
        Ok(sessions)
    }

    /// `SMEMBERS`, then one script per member replacing it with a tombstone
    /// if it is a live session of `principal` (or burying its key if that is
    /// empty), all in flight together; then one `SREM` of the buried
    /// members (see `RedisStore::forget` and the crate docs).
    async fn delete_by_principal(&self, principal: &str) -> Result<u64, StoreError> {
        let (keys, foreign) = self.members(principal).await?;
        let now = to_unix_ms(now());
        let ttl = millis(TOMBSTONE_TTL);
        let buried = Instant::now();
        let deletes = keys.iter().map(|key| async move {
            let mut invocation = scripts::DELETE_OWNED.key(self.record_key(key));
            invocation.arg(now).arg(principal).arg(ttl);
            let outcome: i64 = self
                .run_write(Write::Script(&invocation), |outcome| *outcome == 1)
                .await?;
            Ok::<_, StoreError>((key, outcome))
        });
        let mut deleted = 0;
        let mut dead = Vec::new();
        for (key, outcome) in try_join_all(deletes).await? {
            match outcome {
                1 => {
                    deleted += 1;
                    dead.push(key.as_str().as_bytes().to_vec());
                }
                0 => dead.push(key.as_str().as_bytes().to_vec()),
                _ => {}
            }
        }
        self.forget(principal, dead, buried, foreign).await;
        Ok(deleted)
    }

    /// Returns `0`: Redis expires each record by its own TTL, and the
    /// scripts treat a record past its deadline as absent before that.
    async fn delete_expired(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    /// `"redis"`, `"redis+cluster"` or `"redis+sentinel"`, as the store
    /// was built (the names of `StoreConfig`'s URL schemes).
    fn backend(&self) -> &'static str {
        mode_name(self.connections.pool())
    }
}

/// The backend name of a store on `pool`: it says the mode.
fn mode_name(pool: &Pool) -> &'static str {
    if pool.is_cluster() {
        "redis+cluster"
    } else if pool.is_sentinel() {
        "redis+sentinel"
    } else {
        "redis"
    }
}
