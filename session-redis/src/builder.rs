//! Building a store from URLs, with the pool size and timeouts.

use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::Runtime;
use deadpool_redis::redis::{self, AsyncConnectionConfig, RedisError};

use crate::RedisStore;
use crate::connection::{Pool, Replicas, Sentinel};
use crate::store::Durability;

/// Default for [`RedisStoreBuilder::pool_size`].
pub const DEFAULT_POOL_SIZE: usize = 8;

/// Default for [`RedisStoreBuilder::connect_timeout`], the pool's create timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Default for [`RedisStoreBuilder::response_timeout`] and the pool's
/// health-check (recycle) timeout.
///
/// Shorter than the layer's default store timeout (2 s), so that a
/// connection that stopped answering is noticed, and replaced, by the store
/// rather than only abandoned by the layer.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Default for [`RedisStoreBuilder::wait_timeout`].
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(1);

/// How many replicas must hold a write before it is acknowledged: see
/// [`RedisStoreBuilder::durable`]. Parsed from `all` or a number
/// (`durable=all`, `durable=1` in a `session::StoreConfig` URL).
///
/// ```
/// use session_redis::Durable;
///
/// assert_eq!("all".parse::<Durable>()?, Durable::All);
/// assert_eq!("2".parse::<Durable>()?, Durable::Replicas(2));
/// assert_eq!(Durable::from(1), Durable::Replicas(1));
/// assert!("al".parse::<Durable>().is_err());
/// # Ok::<(), session_redis::ParseDurableError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Durable {
    /// `WAIT n`: `n` replicas, whichever they are, confirm each write; 0
    /// acknowledges without waiting. With fewer than all the replicas
    /// Sentinel may promote, this is no promise across a failover: Sentinel
    /// may promote one that did not confirm (see [`DEFAULT_SENTINEL_DURABLE`]).
    Replicas(u32),
    /// Behind Sentinel: every replica the sentinels may promote confirms
    /// each write, and at least one. The store counts them from `SENTINEL
    /// REPLICAS` (not flagged down or disconnected, linked to the primary,
    /// `replica-priority` not 0), again every 2 s and after every sign of a
    /// failover, and `WAIT`s for that many: a replica that is down is not
    /// waited for, and whichever replica Sentinel promotes holds every
    /// acknowledged write. Only behind Sentinel
    /// ([`BuildError::DurableAllNeedsSentinel`]).
    All,
}

impl From<u32> for Durable {
    fn from(replicas: u32) -> Self {
        Self::Replicas(replicas)
    }
}

impl std::fmt::Display for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Replicas(n) => write!(f, "{n}"),
            Self::All => f.write_str("all"),
        }
    }
}

/// A [`Durable`] that is neither `all` nor a number of replicas.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`durable` takes `all` or a number of replicas")]
pub struct ParseDurableError;

impl std::str::FromStr for Durable {
    type Err = ParseDurableError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "all" => Ok(Self::All),
            n => n.parse().map(Self::Replicas).map_err(|_| ParseDurableError),
        }
    }
}

/// Default for [`RedisStoreBuilder::durable`] on a store behind Redis
/// Sentinel: every write is acknowledged only once every replica Sentinel
/// may promote holds it ([`Durable::All`]).
///
/// Why not 0: a deployment picks Sentinel to survive the loss of its
/// primary, and Redis replicates asynchronously, so without `WAIT` a
/// failover drops whatever the promoted replica had not received yet: for
/// sessions, logins and carts acknowledged to users (measured in
/// `BENCHMARKS.md`).
///
/// Why not 1 (the default before): `WAIT 1` says that one replica holds
/// the write, not that Sentinel will promote that one. Sentinel ranks the
/// candidates by `replica-priority` first, so a preferred replica that
/// lagged is promoted whatever it missed; only among equal priorities does
/// it take the largest replication offset, as it read it in its last
/// `INFO` of each replica (polled every 10 s, every second once the
/// primary is down; an `INFO` up to 5 s old still counts), then the
/// smallest run id. The replica that did not confirm the last writes may
/// then be promoted, the other resynced from it, and those writes are gone.
/// Measured (`BENCHMARKS.md`, "Redis Sentinel"): with equal priorities on
/// loopback the two replicas almost always hold the same offset at the
/// kill and `durable=1` lost nothing in 43 failovers; with the preferred
/// replica lagging, `durable=1` loses what the other one confirmed, and
/// `all` loses nothing.
///
/// Why all rather than a fixed 2: a replica that is down (an upgrade, a
/// restart) is not promotable, so it is not waited for once the sentinels
/// flag it (`down-after-milliseconds`); until then writes fall short and
/// are answered 503. The cost is a `WAIT` round trip per write that waits
/// for the slowest live replica, measured in `BENCHMARKS.md`.
///
/// What it does not cover: a replica that becomes promotable (back from a
/// fault, or newly added) is waited for only from the store's next lookup,
/// up to 2 s later; a failover in between may promote it without the
/// writes acknowledged meanwhile. Sentinel may also promote a replica whose
/// link to the primary went down recently (it accepts one down for up to
/// ten times `down-after-milliseconds`), which the store, seeing the link
/// down, does not wait for. And `WAIT` counts whichever replicas confirm:
/// with replicas of `replica-priority 0` (never promoted) attached to the
/// primary too, one of them may stand in for a promotable one. A
/// standalone server (`redis://`) and a cluster default to 0.
pub const DEFAULT_SENTINEL_DURABLE: Durable = Durable::All;

/// Default for [`RedisStoreBuilder::durable_timeout`]: how long a write
/// waits for its replicas before it fails.
///
/// Replicas on a healthy network confirm within a millisecond or two; a
/// quarter second leaves room for a busy replica and keeps a write with
/// its `WAIT` well inside the layer's default operation timeout (2 s) and
/// the connection's response timeout (1 s).
pub const DEFAULT_DURABLE_TIMEOUT: Duration = Duration::from_millis(250);

/// Default for [`RedisStoreBuilder::replica_timeout`]: how long a load
/// waits for a replica before it asks the primary.
///
/// A replica on a healthy network answers a `GET` within a millisecond or
/// two; a tenth of a second leaves room for a busy one and keeps a frozen
/// replica's cost (this, then the primary's answer) well inside the
/// layer's operation timeout.
pub const DEFAULT_REPLICA_TIMEOUT: Duration = Duration::from_millis(100);

/// Default for [`RedisStoreBuilder::failover_retry`].
///
/// Sentinel with `down-after-milliseconds 1000` promotes a replica about
/// 2 s after the primary dies; the layer's operation timeout (2 s by
/// default) usually ends a call first and answers 503.
pub const DEFAULT_FAILOVER_RETRY: Duration = Duration::from_secs(2);

/// The store could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A URL is not a valid Redis URL.
    #[error("invalid Redis URL")]
    Url(#[source] RedisError),
    /// The connection pool could not be built.
    #[error("could not build the Redis connection pool")]
    Pool(#[source] deadpool_redis::BuildError),
    /// A `redis+sentinel://` URL that does not have the form
    /// `redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER_NAME`.
    #[error("invalid Redis Sentinel URL: {0}")]
    SentinelUrl(&'static str),
    /// [`RedisStoreBuilder::read_from_replicas`] on a store not behind
    /// Redis Sentinel: the store finds the replicas through the sentinels.
    #[error("reads from replicas need a store behind Redis Sentinel")]
    ReplicaReadsNeedSentinel,
    /// [`Durable::All`] on a store not behind Redis Sentinel: the store
    /// counts the replicas to wait for through the sentinels.
    #[error("durable=all needs a store behind Redis Sentinel")]
    DurableAllNeedsSentinel,
}

#[derive(Clone, Debug)]
enum Target {
    Single(String),
    Sentinel {
        sentinels: Vec<String>,
        master: String,
    },
    Cluster(Vec<String>),
}

/// Parses `redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER_NAME`; `None`
/// for a URL of another scheme.
fn parse_sentinel_url(url: &str) -> Option<Result<(Vec<String>, String), BuildError>> {
    let (scheme, rest) = url.trim().split_once("://")?;
    if !scheme.eq_ignore_ascii_case("redis+sentinel") {
        return None;
    }
    Some((|| {
        if rest.contains('?') {
            return Err(BuildError::SentinelUrl(
                "options go through the builder's methods (or session::StoreConfig::from_url)",
            ));
        }
        let (hosts, master) = rest.split_once('/').ok_or(BuildError::SentinelUrl(
            "no /MASTER_NAME after the sentinels",
        ))?;
        if master.is_empty() || master.contains('/') {
            return Err(BuildError::SentinelUrl(
                "the path must be one MASTER_NAME, as in the sentinels' `sentinel monitor`",
            ));
        }
        let sentinels = hosts
            .split(',')
            .map(|host| match host.trim() {
                "" => Err(BuildError::SentinelUrl("an empty sentinel address")),
                host if host.contains('@') => Err(BuildError::SentinelUrl(
                    "credentials in the sentinel list are not supported",
                )),
                host => Ok(format!("redis://{host}")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((sentinels, master.to_owned()))
    })())
}

/// Builds a [`RedisStore`] with its own connection pool; from
/// [`RedisStore::builder`] or [`RedisStore::cluster_builder`].
///
/// Building does not connect: connections are made on first use, so an
/// application can start before Redis does.
///
/// ```
/// use std::time::Duration;
/// use session_redis::RedisStore;
///
/// let store = RedisStore::builder("redis://127.0.0.1:6379/0")
///     .pool_size(16)
///     .connect_timeout(Duration::from_millis(500))
///     .build()?
///     .key_prefix("myapp:session:");
/// # Ok::<(), session_redis::BuildError>(())
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct RedisStoreBuilder {
    target: Target,
    pool_size: usize,
    connect_timeout: Duration,
    response_timeout: Duration,
    wait_timeout: Duration,
    durable: Option<Durable>,
    durable_timeout: Duration,
    failover_retry: Duration,
    read_from_replicas: bool,
    replica_timeout: Duration,
}

impl RedisStore {
    /// A store on the standalone server at `url`, with default settings.
    /// Same as `RedisStore::builder(url).build()`.
    ///
    /// ```
    /// let store = session_redis::RedisStore::from_url("redis://127.0.0.1:6379")?;
    /// # Ok::<(), session_redis::BuildError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`BuildError::Url`] when `url` is not a Redis URL.
    pub fn from_url(url: impl Into<String>) -> Result<Self, BuildError> {
        Self::builder(url).build()
    }

    /// A builder for a store on the standalone server at `url`
    /// (`redis://[user:password@]host[:port][/db]`), or on the primary that
    /// the sentinels of a `redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER_NAME`
    /// URL name (as [`RedisStore::sentinel_builder`]; a malformed one fails
    /// in [`RedisStoreBuilder::build`]).
    ///
    /// ```
    /// use session_redis::RedisStore;
    ///
    /// let store = RedisStore::builder("redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/sessions")
    ///     .durable(1)
    ///     .build()?;
    /// # Ok::<(), session_redis::BuildError>(())
    /// ```
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder::new(Target::Single(url.into()))
    }

    /// A builder for a store on the primary named `master` (as in the
    /// sentinels' `sentinel monitor MASTER_NAME ...`), found through any of
    /// the `sentinels` (each `redis://host:port`).
    ///
    /// The store asks the sentinels for the primary when it connects, and
    /// again whenever a connection fails or the server answers `READONLY`
    /// (it was demoted): so after a failover it finds the promoted replica
    /// by itself, and retries a write the demoted primary refused (see
    /// [`RedisStoreBuilder::failover_retry`]). Writes are acknowledged only
    /// once every replica Sentinel may promote holds them
    /// ([`DEFAULT_SENTINEL_DURABLE`]), unless [`RedisStoreBuilder::durable`]
    /// says otherwise.
    ///
    /// ```
    /// use session_redis::RedisStore;
    ///
    /// let store = RedisStore::sentinel_builder(
    ///     ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379", "redis://10.0.0.3:26379"],
    ///     "sessions",
    /// )
    /// .build()?;
    /// # Ok::<(), session_redis::BuildError>(())
    /// ```
    pub fn sentinel_builder<I>(sentinels: I, master: impl Into<String>) -> RedisStoreBuilder
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        RedisStoreBuilder::new(Target::Sentinel {
            sentinels: sentinels.into_iter().map(Into::into).collect(),
            master: master.into(),
        })
    }

    /// A builder for a store on a Redis Cluster reached through any of the
    /// `urls` (the client discovers the others).
    ///
    /// ```
    /// use session_redis::RedisStore;
    ///
    /// let store = RedisStore::cluster_builder(["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"])
    ///     .pool_size(4)
    ///     .build()?;
    /// # Ok::<(), session_redis::BuildError>(())
    /// ```
    pub fn cluster_builder<I>(urls: I) -> RedisStoreBuilder
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        RedisStoreBuilder::new(Target::Cluster(urls.into_iter().map(Into::into).collect()))
    }
}

impl RedisStoreBuilder {
    fn new(target: Target) -> Self {
        Self {
            target,
            pool_size: DEFAULT_POOL_SIZE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
            durable: None,
            durable_timeout: DEFAULT_DURABLE_TIMEOUT,
            failover_retry: DEFAULT_FAILOVER_RETRY,
            read_from_replicas: false,
            replica_timeout: DEFAULT_REPLICA_TIMEOUT,
        }
    }

    /// The most connections the pool holds (default [`DEFAULT_POOL_SIZE`]).
    ///
    /// The store's calls share [`RedisStore::shared_connections`] of them;
    /// the rest serve whoever else uses the pool. Behind Sentinel there is
    /// no pool (the store connects its shared connections itself), and this
    /// has no effect.
    ///
    /// ```
    /// # use session_redis::RedisStore;
    /// let builder = RedisStore::builder("redis://127.0.0.1").pool_size(4);
    /// ```
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How long connecting to a server may take (default
    /// [`DEFAULT_CONNECT_TIMEOUT`]).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use session_redis::RedisStore;
    /// let builder = RedisStore::builder("redis://127.0.0.1").connect_timeout(Duration::from_millis(250));
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a command may wait for its answer before the connection is
    /// considered broken and replaced (default [`DEFAULT_RESPONSE_TIMEOUT`]).
    /// Also bounds the pool's health check. A cluster connection uses the
    /// redis client's own response timeout instead: deadpool-redis does not
    /// pass one through.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use session_redis::RedisStore;
    /// let builder = RedisStore::builder("redis://127.0.0.1").response_timeout(Duration::from_millis(500));
    /// ```
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long a call may wait for a free pooled connection (default
    /// [`DEFAULT_WAIT_TIMEOUT`]); rarely matters, since the store holds a
    /// pooled connection only while taking a shared handle from it.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use session_redis::RedisStore;
    /// let builder = RedisStore::builder("redis://127.0.0.1").wait_timeout(Duration::from_millis(100));
    /// ```
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// Acknowledge a create, save, delete (and so a `cycle_id`, which is a
    /// create and a delete) only once `replicas` replicas hold it: after
    /// each such write the store sends `WAIT n durable_timeout` on the same
    /// connection, and fails the call (so the layer answers 503 with
    /// `Retry-After`) when fewer confirm in time. Takes a number
    /// ([`Durable::Replicas`]; 0 turns it off) or [`Durable::All`] (behind
    /// Sentinel: every replica Sentinel may promote, at least one). Default:
    /// [`DEFAULT_SENTINEL_DURABLE`] (all) behind Sentinel, 0 otherwise.
    ///
    /// What a number promises behind Sentinel: `n` replicas held the write
    /// when it was acknowledged, not that the replica Sentinel promotes is
    /// one of them. With `n` below the replicas Sentinel may promote, a
    /// failover may lose acknowledged writes (measured with 2 replicas and
    /// `durable=1`: `BENCHMARKS.md`, "Redis Sentinel"); `all` is the setting
    /// that keeps them (see [`DEFAULT_SENTINEL_DURABLE`] for its window).
    ///
    /// On a Redis Cluster a number holds per shard: each write and its
    /// `WAIT` go together to the master that takes the write (following
    /// `MOVED` and `ASK` as one), so `WAIT` counts that master's replicas;
    /// the principal index, kept in another slot, is waited for on its own
    /// shard too. A shard whose master has fewer live replicas than
    /// `replicas` (after a failover, until the old master is back as a
    /// replica) refuses the writes of its sessions, and only those.
    ///
    /// A write whose `WAIT` fell short was applied on the primary and on
    /// some replicas, perhaps none: the store then holds it or, after a
    /// failover to a replica that missed it, the state before it; a later
    /// request sees one or the other, never a mix. Touches (which only move
    /// the idle deadline) are not waited for.
    ///
    /// ```
    /// # use session_redis::{Durable, RedisStore};
    /// let builder = RedisStore::builder("redis://127.0.0.1").durable(1);
    /// let builder = RedisStore::builder("redis+sentinel://127.0.0.1:26379/sessions")
    ///     .durable(Durable::All);
    /// ```
    pub fn durable(mut self, replicas: impl Into<Durable>) -> Self {
        self.durable = Some(replicas.into());
        self
    }

    /// How long a write waits for its [`durable`](Self::durable) replicas
    /// (default [`DEFAULT_DURABLE_TIMEOUT`], at least 1 ms). Keep it below
    /// the [response timeout](Self::response_timeout) and the layer's
    /// operation timeout.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use session_redis::RedisStore;
    /// let builder = RedisStore::builder("redis://127.0.0.1")
    ///     .durable(1)
    ///     .durable_timeout(Duration::from_millis(100));
    /// ```
    pub fn durable_timeout(mut self, timeout: Duration) -> Self {
        self.durable_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Behind Sentinel: for how long a call retries, with a short backoff,
    /// when it cannot reach a primary (the sentinels name a dead one, or
    /// none yet) or its write was refused with `READONLY` (default
    /// [`DEFAULT_FAILOVER_RETRY`]). In both cases nothing was written, so
    /// the retry is safe; any other failure (a connection lost while a
    /// write was in flight, which may have applied) is returned at once.
    /// The layer's operation timeout ends the call earlier if it is
    /// shorter. Ignored for a standalone server and a cluster.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use session_redis::RedisStore;
    /// let builder = RedisStore::sentinel_builder(["redis://127.0.0.1:26379"], "sessions")
    ///     .failover_retry(Duration::from_secs(5));
    /// ```
    pub fn failover_retry(mut self, retry: Duration) -> Self {
        self.failover_retry = retry;
        self
    }

    /// Behind Sentinel: let loads be answered by the primary's replicas (the
    /// sentinels' `SENTINEL REPLICAS`, skipping those flagged down or
    /// disconnected, or not linked to the primary), taken in turn. Only
    /// loads: creates, saves, touches, deletes and the principal index stay
    /// on the primary, and saves stay compare-and-set there, so a stale read
    /// can never become a lost write. Default off.
    ///
    /// A client never sees a record older than one it has seen or written:
    /// the layer keeps a version floor per client in its cookie (see
    /// [`session_core::replica`]), and a replica's answer below it (or
    /// "absent" while the client has a floor) is replaced by the primary's.
    /// A replica that fails or does not answer within
    /// [`replica_timeout`](Self::replica_timeout) is skipped, and the
    /// primary answers. [`RedisStore::replica_reads`] counts who answered.
    ///
    /// ```
    /// # use session_redis::RedisStore;
    /// let builder = RedisStore::builder("redis+sentinel://127.0.0.1:26379/sessions")
    ///     .read_from_replicas(true);
    /// ```
    pub fn read_from_replicas(mut self, on: bool) -> Self {
        self.read_from_replicas = on;
        self
    }

    /// How long a load waits for a replica before it asks the primary
    /// (default [`DEFAULT_REPLICA_TIMEOUT`]); also bounds each connection to
    /// a replica. Keep it well below the layer's operation timeout, which
    /// must hold the replica's wait and the primary's answer.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use session_redis::RedisStore;
    /// let builder = RedisStore::builder("redis+sentinel://127.0.0.1:26379/sessions")
    ///     .read_from_replicas(true)
    ///     .replica_timeout(Duration::from_millis(50));
    /// ```
    pub fn replica_timeout(mut self, timeout: Duration) -> Self {
        self.replica_timeout = timeout;
        self
    }

    /// Builds the pool and the store (without connecting).
    ///
    /// # Errors
    ///
    /// [`BuildError::Url`] when a URL is not a Redis URL;
    /// [`BuildError::SentinelUrl`] for a malformed `redis+sentinel://` URL;
    /// [`BuildError::Pool`] when the pool cannot be built;
    /// [`BuildError::ReplicaReadsNeedSentinel`] for replica reads, and
    /// [`BuildError::DurableAllNeedsSentinel`] for [`Durable::All`], on a
    /// store not behind Sentinel.
    pub fn build(mut self) -> Result<RedisStore, BuildError> {
        if let Target::Single(url) = &self.target
            && let Some(parsed) = parse_sentinel_url(url)
        {
            let (sentinels, master) = parsed?;
            self.target = Target::Sentinel { sentinels, master };
        }
        let sentinel = matches!(self.target, Target::Sentinel { .. });
        let durable = match (sentinel, self.durable) {
            (true, None) => DEFAULT_SENTINEL_DURABLE,
            (false, Some(Durable::All)) => return Err(BuildError::DurableAllNeedsSentinel),
            (_, durable) => durable.unwrap_or(Durable::Replicas(0)),
        };
        let durability = Durability {
            replicas: durable,
            timeout: self.durable_timeout,
        };
        if self.read_from_replicas && !sentinel {
            return Err(BuildError::ReplicaReadsNeedSentinel);
        }
        let mut replicas = None;
        let pool = match self.target {
            Target::Sentinel {
                ref sentinels,
                ref master,
            } => {
                let connection = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(Some(self.response_timeout));
                let clients = sentinels
                    .iter()
                    .map(|url| redis::Client::open(url.as_str()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(BuildError::Url)?;
                // Asking the sentinels, checking the primary's ROLE, connecting.
                let lookup = self.connect_timeout + self.response_timeout;
                let sentinel = Arc::new(Sentinel::new(clients, master.clone(), connection, lookup));
                // One view of the replicas, for loads and for `durable=all`.
                if self.read_from_replicas || durable == Durable::All {
                    replicas = Some(Replicas::new(
                        sentinel.clone(),
                        self.read_from_replicas,
                        self.replica_timeout,
                    ));
                }
                Pool::Sentinel(sentinel)
            }
            Target::Single(ref url) => {
                let connection = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(Some(self.response_timeout));
                let manager = deadpool_redis::Manager::new_with_config(url.as_str(), connection)
                    .map_err(BuildError::Url)?;
                let pool = deadpool_redis::Pool::builder(manager)
                    .max_size(self.pool_size)
                    .create_timeout(Some(self.connect_timeout))
                    .recycle_timeout(Some(self.response_timeout))
                    .wait_timeout(Some(self.wait_timeout))
                    .runtime(Runtime::Tokio1)
                    .build()
                    .map_err(BuildError::Pool)?;
                Pool::Single(pool)
            }
            Target::Cluster(ref urls) => {
                let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
                let manager =
                    deadpool_redis::cluster::Manager::new(urls, false).map_err(BuildError::Url)?;
                let pool = deadpool_redis::cluster::Pool::builder(manager)
                    .max_size(self.pool_size)
                    .create_timeout(Some(self.connect_timeout))
                    .recycle_timeout(Some(self.response_timeout))
                    .wait_timeout(Some(self.wait_timeout))
                    .runtime(Runtime::Tokio1)
                    .build()
                    .map_err(BuildError::Pool)?;
                Pool::Cluster(pool)
            }
        };
        Ok(RedisStore::with_pool(pool).configured(durability, self.failover_retry, replicas))
    }
}
