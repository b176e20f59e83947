//! Multiplexed connections shared by all concurrent store calls.
//!
//! A deadpool object held for a whole store call caps the commands in flight
//! at the pool size, and every checkout costs a `PING` (deadpool-redis
//! health-checks an object each time it leaves the pool). A redis-rs
//! multiplexed connection (and a cluster connection) instead takes any number
//! of concurrent requests and pipelines them on one socket. So the store
//! keeps a few *slots*, each holding a clone of a connection checked out of
//! the pool once; calls pick a slot round-robin and clone its handle (an
//! `Arc` bump). The pool object itself goes straight back to the pool, which
//! keeps creating, health-checking and bounding the connections.
//!
//! When a call fails below the Redis protocol (I/O error, dropped connection,
//! timeout), every slot is emptied: the next calls check connections out of
//! the pool again, whose health check replaces dead ones. That is how the
//! store serves again after a Redis restart without an application restart.
//!
//! Behind Redis Sentinel there is no pool: a checkout asks the sentinels
//! for the current primary (see `Sentinel::connect`), checks its `ROLE`,
//! and connects to it. Slots are
//! emptied on the same failures, and also when the server answers
//! `READONLY` (it has been demoted to a replica), so the next checkout finds
//! the promoted one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
use deadpool_redis::redis::cluster_async::ClusterConnection;
use deadpool_redis::redis::{self, AsyncConnectionConfig, ErrorKind, RedisError, RedisFuture};
use session_core::StoreError;

/// The pool connections come from: a standalone server, a primary found
/// through Redis Sentinel, or a cluster.
#[derive(Clone)]
pub(crate) enum Pool {
    Single(deadpool_redis::Pool),
    Sentinel(Arc<Sentinel>),
    Cluster(deadpool_redis::cluster::Pool),
}

/// The sentinels of one primary, and how to connect to it.
pub(crate) struct Sentinel {
    sentinels: Vec<redis::Client>,
    /// A connection to each sentinel, kept between lookups.
    cached: Vec<Mutex<Option<MultiplexedConnection>>>,
    master: String,
    connection: AsyncConnectionConfig,
    /// Bounds a whole lookup: sentinels asked, the primary's `ROLE` checked
    /// (a frozen primary accepts TCP connections but answers nothing), and
    /// the connection made.
    lookup_timeout: Duration,
}

/// A lookup found no primary to connect to.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LookupError {
    #[error("no sentinel named a primary for `{0}`")]
    NoPrimary(String),
    #[error("the server the sentinels name as `{0}`'s primary is not one (yet)")]
    NotPrimary(String),
    #[error("the sentinels are failing `{0}` over")]
    Failover(String),
    #[error("looking up the primary took longer than {0:?}")]
    Timeout(Duration),
}

impl Sentinel {
    pub(crate) fn new(
        sentinels: Vec<redis::Client>,
        master: String,
        connection: AsyncConnectionConfig,
        lookup_timeout: Duration,
    ) -> Self {
        Self {
            cached: sentinels.iter().map(|_| Mutex::new(None)).collect(),
            sentinels,
            master,
            connection,
            lookup_timeout,
        }
    }

    /// Asks every sentinel at once which server is the primary and trusts
    /// the answer of the highest `config-epoch`: each failover raises the
    /// epoch, so a sentinel that has not heard of the latest one yet (they
    /// learn it from each other within seconds) cannot send the store back
    /// to a demoted primary that, thawed or cut off, still takes itself for
    /// one. None while a failover is under way (see `primary_address`).
    /// Then checks `ROLE` on that server, connects, and asks the sentinels
    /// once more.
    async fn connect(&self) -> Result<MultiplexedConnection, StoreError> {
        match tokio::time::timeout(self.lookup_timeout, self.lookup()).await {
            Ok(found) => found,
            Err(_) => Err(StoreError::backend(LookupError::Timeout(
                self.lookup_timeout,
            ))),
        }
    }

    async fn lookup(&self) -> Result<MultiplexedConnection, StoreError> {
        let (ip, port) = self.primary_address().await?;
        let client =
            redis::Client::open(format!("redis://{ip}:{port}")).map_err(StoreError::backend)?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&self.connection)
            .await
            .map_err(StoreError::backend)?;
        let role: Vec<redis::Value> = redis::cmd("ROLE")
            .query_async(&mut conn)
            .await
            .map_err(StoreError::backend)?;
        if !matches!(role.first(), Some(redis::Value::BulkString(role)) if role == b"master") {
            return Err(StoreError::backend(LookupError::NotPrimary(
                self.master.clone(),
            )));
        }
        // Asked again now that the server answered: a failover may have
        // begun while it did not (a frozen primary answers its ROLE only
        // once it thaws).
        if self.primary_address().await? != (ip, port) {
            return Err(StoreError::backend(LookupError::NotPrimary(
                self.master.clone(),
            )));
        }
        Ok(conn)
    }

    /// The primary's address by the answering sentinels' highest
    /// `config-epoch`; an error while any sentinel at that epoch flags the
    /// primary objectively down (`o_down`) or a failover in progress. During a
    /// failover the old primary, if it is back (thawed, or the sentinels
    /// briefly lost it), still takes itself for one, and a replica not yet
    /// moved to the new primary still follows it and confirms its writes
    /// (`WAIT`): writes acknowledged there would vanish when the failover
    /// ends, `durable` or not. So the store connects to no primary until
    /// the sentinels agree again.
    async fn primary_address(&self) -> Result<(String, u16), StoreError> {
        let answers =
            futures_util::future::join_all((0..self.sentinels.len()).map(|i| self.ask_sentinel(i)))
                .await;
        // (config-epoch, ip, port, failing over) per answering sentinel.
        let mut views = Vec::new();
        let mut last_error = None;
        for answer in answers {
            match answer {
                Ok(info) => {
                    let field = |name: &str| info.get(name).map(String::as_str);
                    let failing_over = field("flags")
                        .unwrap_or("")
                        .split(',')
                        .any(|flag| flag == "o_down" || flag == "failover_in_progress");
                    let (Some(ip), Some(Ok(port))) =
                        (field("ip"), field("port").map(str::parse::<u16>))
                    else {
                        continue;
                    };
                    let epoch: u64 = field("config-epoch")
                        .and_then(|e| e.parse().ok())
                        .unwrap_or(0);
                    views.push((epoch, ip.to_owned(), port, failing_over));
                }
                Err(error) => last_error = Some(error),
            }
        }
        let Some(top) = views.iter().map(|v| v.0).max() else {
            return Err(match last_error {
                Some(error) => StoreError::backend(error),
                None => StoreError::backend(LookupError::NoPrimary(self.master.clone())),
            });
        };
        // A sentinel still at an older epoch has not heard of the latest
        // failover: its flags are about a primary that is gone.
        let current = views.iter().filter(|v| v.0 == top);
        if current.clone().any(|v| v.3) {
            return Err(StoreError::backend(LookupError::Failover(
                self.master.clone(),
            )));
        }
        match current.map(|v| (v.1.clone(), v.2)).next() {
            Some(address) => Ok(address),
            None => Err(StoreError::backend(LookupError::NoPrimary(
                self.master.clone(),
            ))),
        }
    }

    /// `SENTINEL MASTER <name>` on sentinel `i`, on its kept connection
    /// (made anew when there is none or it failed).
    async fn ask_sentinel(&self, i: usize) -> Result<HashMap<String, String>, RedisError> {
        self.ask(i, "MASTER").await
    }

    /// `SENTINEL <what> <name>` on sentinel `i`, on its kept connection
    /// (made anew when there is none or it failed).
    async fn ask<T: redis::FromRedisValue>(&self, i: usize, what: &str) -> Result<T, RedisError> {
        let kept = lock(&self.cached[i]).clone();
        let mut conn = match kept {
            Some(conn) => conn,
            None => {
                let conn = self.sentinels[i]
                    .get_multiplexed_async_connection_with_config(&self.connection)
                    .await?;
                *lock(&self.cached[i]) = Some(conn.clone());
                conn
            }
        };
        let answer = redis::cmd("SENTINEL")
            .arg(what)
            .arg(&self.master)
            .query_async(&mut conn)
            .await;
        if answer
            .as_ref()
            .is_err_and(|e| !matches!(e.kind(), ErrorKind::Server(_)))
        {
            lock(&self.cached[i]).take();
        }
        answer
    }

    /// The replicas the sentinels list for the primary (`SENTINEL
    /// REPLICAS`, every sentinel asked at once), skipping those flagged
    /// down or disconnected and those whose link to the primary is not up:
    /// a replica cut off from its primary may be far behind, and takes no
    /// write.
    ///
    /// `readable` is the first answering sentinel's list, for loads.
    /// `promotable` counts the replicas that any answering sentinel lists
    /// so and that have a `slave-priority` other than 0 (Sentinel never
    /// promotes those), leaving out the current primary (a sentinel that
    /// has not heard of the latest failover still lists it as a replica):
    /// whichever sentinel leads the next failover, it picks one of these.
    async fn replica_addresses(&self) -> Result<Listed, StoreError> {
        let answers = futures_util::future::join_all(
            (0..self.sentinels.len()).map(|i| self.ask::<Vec<Fields>>(i, "REPLICAS")),
        )
        .await;
        let primary = self.primary_address().await.ok();
        let mut readable = None;
        let mut promotable: Vec<(String, u16)> = Vec::new();
        let mut last_error = None;
        for answer in answers {
            let replicas = match answer {
                Ok(replicas) => replicas,
                Err(error) => {
                    last_error = Some(error);
                    continue;
                }
            };
            let healthy: Vec<(&Fields, (String, u16))> = replicas
                .iter()
                .filter(|replica| {
                    let flags = replica.get("flags").map_or("", String::as_str);
                    !flags
                        .split(',')
                        .any(|flag| matches!(flag, "s_down" | "o_down" | "disconnected"))
                        && replica.get("master-link-status").map(String::as_str) == Some("ok")
                })
                .filter_map(|replica| {
                    let address = (
                        replica.get("ip")?.clone(),
                        replica.get("port")?.parse().ok()?,
                    );
                    Some((replica, address))
                })
                .collect();
            for (replica, address) in &healthy {
                let priority = replica.get("slave-priority").map_or("", String::as_str);
                if priority != "0"
                    && primary.as_ref() != Some(address)
                    && !promotable.contains(address)
                {
                    promotable.push(address.clone());
                }
            }
            if readable.is_none() {
                readable = Some(healthy.into_iter().map(|(_, address)| address).collect());
            }
        }
        match readable {
            Some(readable) => Ok(Listed {
                readable,
                promotable: u32::try_from(promotable.len()).unwrap_or(u32::MAX),
            }),
            None => Err(match last_error {
                Some(error) => StoreError::backend(error),
                None => StoreError::backend(LookupError::NoPrimary(self.master.clone())),
            }),
        }
    }
}

/// One server as a sentinel describes it (`SENTINEL REPLICAS`).
type Fields = HashMap<String, String>;

/// What a lookup of the replicas found (see `Sentinel::replica_addresses`).
struct Listed {
    readable: Vec<(String, u16)>,
    promotable: u32,
}

/// How often the replica set behind Sentinel is looked up again: a replica
/// added, promoted, or back after a fault is used for loads, and waited for
/// by `durable=all` writes, within this long.
pub(crate) const REPLICA_REFRESH: Duration = Duration::from_secs(2);

/// The replicas of a primary behind Sentinel, as the sentinels list them:
/// for loads
/// ([`RedisStoreBuilder::read_from_replicas`](crate::RedisStoreBuilder::read_from_replicas)),
/// one multiplexed connection each, taken in turn; and for
/// [`Durable::All`](crate::Durable::All) writes, how many of them Sentinel
/// may promote.
///
/// The set is looked up through the sentinels, in a task of its own, when
/// first needed and every [`REPLICA_REFRESH`] after; loads use the set they
/// have meanwhile, or the primary. Each connection is made under the
/// replica timeout, so a frozen replica (which accepts TCP connections and
/// answers nothing) is left out rather than waited for. A replica whose
/// load fails or times out is dropped from the set until the next lookup.
/// A write that needs the promotable count when none is known, or after the
/// store dropped its connections (the signs of a failover, see
/// [`Connections::resets`]), looks it up first, one lookup at a time.
pub(crate) struct Replicas {
    sentinel: Arc<Sentinel>,
    state: Mutex<ReplicaSet>,
    next: AtomicUsize,
    /// Whether loads use the replicas (otherwise only the count is kept,
    /// and no connection is made).
    reads: bool,
    /// Held by a write's lookup, so that the writes after a failover wait
    /// for one lookup rather than each making its own.
    inline: tokio::sync::Mutex<()>,
    /// Bounds a replica's `GET` in one load, and each connection to a
    /// replica.
    pub(crate) timeout: Duration,
}

#[derive(Default)]
struct ReplicaSet {
    connections: Vec<((String, u16), MultiplexedConnection)>,
    /// Replicas Sentinel may promote, by the last lookup that got an answer.
    promotable: Option<u32>,
    /// [`Connections::resets`] when the last lookup began.
    resets: u64,
    /// Lookups done: a write that waited for another's tells by it that the
    /// count is fresh.
    lookups: u64,
    looked_up: Option<std::time::Instant>,
    looking: bool,
}

/// Clears `looking` when a lookup ends, however it ends (a load that timed
/// out drops its lookup mid-way).
struct Looking<'a>(&'a Mutex<ReplicaSet>);

impl Drop for Looking<'_> {
    fn drop(&mut self) {
        lock_set(self.0).looking = false;
    }
}

/// No replica count for a `durable=all` write: the sentinels did not answer
/// since the store started or last dropped its connections.
#[derive(Debug, thiserror::Error)]
#[error("the sentinels did not list the replicas a durable=all write waits for")]
pub(crate) struct NoReplicaCount;

impl Replicas {
    pub(crate) fn new(sentinel: Arc<Sentinel>, reads: bool, timeout: Duration) -> Self {
        Self {
            sentinel,
            state: Mutex::new(ReplicaSet::default()),
            next: AtomicUsize::new(0),
            reads,
            inline: tokio::sync::Mutex::new(()),
            timeout,
        }
    }

    /// Starts a lookup in the background when the set is due for one.
    fn refresh_if_due(self: &Arc<Self>, set: &mut ReplicaSet, resets: u64) {
        let due = !set.looking
            && set
                .looked_up
                .is_none_or(|at| at.elapsed() >= REPLICA_REFRESH);
        if due {
            set.looking = true;
            let replicas = self.clone();
            tokio::spawn(async move {
                let _looking = Looking(&replicas.state);
                replicas.look_up(resets).await;
            });
        }
    }

    /// A connection to one of the replicas (in turn); `None` when there is
    /// none to ask (yet). When the set is due for a lookup, starts one in
    /// the background: a load never waits for it (the first loads go to
    /// the primary).
    pub(crate) fn get(
        self: &Arc<Self>,
        resets: u64,
    ) -> Option<((String, u16), MultiplexedConnection)> {
        let mut set = lock_set(&self.state);
        self.refresh_if_due(&mut set, resets);
        if set.connections.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % set.connections.len();
        Some(set.connections[i].clone())
    }

    /// How many replicas a [`Durable::All`](crate::Durable::All) write
    /// waits for: those Sentinel may promote, and at least one. `resets`
    /// is the store's [`Connections::resets`] now: when it moved since the
    /// count was looked up (a failover, a lost primary, a write that fell
    /// short), or there is no count yet, the count is looked up before the
    /// write waits; otherwise the count in hand serves, and a lookup starts
    /// in the background when it is due.
    ///
    /// # Errors
    ///
    /// [`NoReplicaCount`] when no count is known and the sentinels did not
    /// answer within the lookup timeout.
    pub(crate) async fn promotable(self: &Arc<Self>, resets: u64) -> Result<u32, StoreError> {
        let (known, lookups) = {
            let mut set = lock_set(&self.state);
            let known = set.promotable.filter(|_| set.resets >= resets);
            if known.is_some() {
                self.refresh_if_due(&mut set, resets);
            }
            (known, set.lookups)
        };
        let count = match known {
            Some(count) => Some(count),
            None => {
                let _one_at_a_time = self.inline.lock().await;
                let done = lock_set(&self.state).lookups != lookups;
                if !done {
                    // A failed lookup leaves the last count, which errs on
                    // the safe side after a failover (more replicas than the
                    // new primary has: the write falls short, and is
                    // answered 503).
                    let _ =
                        tokio::time::timeout(self.sentinel.lookup_timeout, self.look_up(resets))
                            .await;
                }
                lock_set(&self.state).promotable
            }
        };
        match count {
            Some(count) => Ok(count.max(1)),
            None => Err(StoreError::backend(NoReplicaCount)),
        }
    }

    /// Asks the sentinels for the replicas; keeps the promotable count and,
    /// for loads, connects to the readable ones.
    async fn look_up(&self, resets: u64) {
        let listed = match self.sentinel.replica_addresses().await {
            Ok(listed) => Some(listed),
            Err(error) => {
                tracing::debug!(%error, "could not list the replicas; loads go to the primary");
                None
            }
        };
        let addresses = match (&listed, self.reads) {
            (Some(listed), true) => listed.readable.clone(),
            _ => Vec::new(),
        };
        let connects = addresses.into_iter().map(|(ip, port)| async move {
            let client = redis::Client::open(format!("redis://{ip}:{port}")).ok()?;
            let conn = tokio::time::timeout(
                self.timeout,
                client.get_multiplexed_async_connection_with_config(&self.sentinel.connection),
            )
            .await
            .ok()?
            .ok()?;
            Some(((ip, port), conn))
        });
        let connections: Vec<_> = futures_util::future::join_all(connects)
            .await
            .into_iter()
            .flatten()
            .collect();
        let mut set = lock_set(&self.state);
        set.connections = connections;
        set.looked_up = Some(std::time::Instant::now());
        set.lookups += 1;
        if let Some(listed) = listed {
            set.promotable = Some(listed.promotable);
            set.resets = resets;
        }
    }

    /// Whether loads use these replicas.
    pub(crate) fn reads(&self) -> bool {
        self.reads
    }

    /// The promotable count of the last lookup that got an answer.
    pub(crate) fn last_promotable(&self) -> Option<u32> {
        lock_set(&self.state).promotable
    }

    /// Drops the replica at `address` from the set until the next lookup.
    pub(crate) fn failed(&self, address: &(String, u16)) {
        lock_set(&self.state)
            .connections
            .retain(|(at, _)| at != address);
    }
}

fn lock_set(set: &Mutex<ReplicaSet>) -> std::sync::MutexGuard<'_, ReplicaSet> {
    // The set is replaced whole or filtered: never left half-written.
    set.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pool {
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    pub(crate) fn is_sentinel(&self) -> bool {
        matches!(self, Self::Sentinel(_))
    }

    async fn checkout(&self) -> Result<Conn, StoreError> {
        // The clone outlives the pool object, which returns to the pool here.
        Ok(match self {
            Self::Single(pool) => {
                let object = pool.get().await.map_err(StoreError::backend)?;
                Conn::Single(MultiplexedConnection::clone(&object))
            }
            Self::Sentinel(sentinel) => Conn::Single(sentinel.connect().await?),
            Self::Cluster(pool) => {
                let object = pool.get().await.map_err(StoreError::backend)?;
                Conn::Cluster(ClusterConnection::clone(&object))
            }
        })
    }
}

/// A cheap handle on a shared connection.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// The pool and the slots of shared connections taken from it.
pub(crate) struct Connections {
    pool: Pool,
    slots: Box<[Mutex<Option<Conn>>]>,
    next: AtomicUsize,
    /// How many times the slots were emptied (see [`Connections::resets`]).
    resets: AtomicU64,
}

impl Connections {
    pub(crate) fn new(pool: Pool, slots: usize) -> Self {
        Self {
            pool,
            slots: (0..slots.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            resets: AtomicU64::new(0),
        }
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(crate) fn slots(&self) -> usize {
        self.slots.len()
    }

    /// A handle on one of the shared connections, checking one out of the
    /// pool if its slot is empty.
    pub(crate) async fn get(&self) -> Result<Conn, StoreError> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        if let Some(conn) = lock(slot).as_ref() {
            return Ok(conn.clone());
        }
        let conn = self.pool.checkout().await?;
        *lock(slot) = Some(conn.clone());
        Ok(conn)
    }

    /// Maps a command's error to a store error, first emptying every slot if
    /// the connection itself failed (a server error reply leaves it usable)
    /// or the server is no primary any more (`READONLY`).
    pub(crate) fn failed(&self, error: RedisError) -> StoreError {
        if !matches!(error.kind(), ErrorKind::Server(_)) || is_readonly(&error) {
            self.drop_all();
        }
        StoreError::backend(error)
    }

    /// Empties every slot: the next calls check connections out anew.
    pub(crate) fn drop_all(&self) {
        for slot in &self.slots {
            lock(slot).take();
        }
        self.resets.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times the slots were emptied so far. Behind Sentinel every
    /// sign of a failover empties them (a lost connection, `READONLY`, a
    /// durable write that fell short), so a change says the replica count
    /// in hand may be out of date.
    pub(crate) fn resets(&self) -> u64 {
        self.resets.load(Ordering::Relaxed)
    }
}

/// The server refused a write because it is a replica: a primary demoted
/// by a failover. Nothing was written: on a replica every write command
/// fails, inside a script too, so a script that answered `READONLY` changed
/// nothing (our scripts write only after their reads), and retrying it on
/// the new primary is safe.
pub(crate) fn is_readonly(error: &RedisError) -> bool {
    error.code() == Some("READONLY")
}

fn lock<T>(slot: &Mutex<Option<T>>) -> std::sync::MutexGuard<'_, Option<T>> {
    // A slot only ever holds a complete value, so a panic elsewhere while it
    // was locked leaves nothing half-written.
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}
