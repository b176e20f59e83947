//! [`AnyStore`]: whichever backend the config picked, behind one type.

use std::sync::Arc;
use std::time::Duration;

use session_core::time::OffsetDateTime;
use session_core::{
    BoxError, DeleteOutcome, LoadOutcome, Record, SaveOutcome, SessionInfo, SessionLayer,
    SessionStore, StoreError, StoreKey, async_trait,
};

use crate::{Backend, ConfigError, StoreConfig};

/// A connected store of any backend: cheap to clone (clones share it).
///
/// Made by [`StoreConfig::connect`]; [`AnyStore::layer`] gives the session
/// layer with the config's operation timeout applied. Keep a clone for the
/// app's own store calls (for example an "active sessions" page).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use session::StoreConfig;
///
/// let url = std::env::var("SESSION_STORE").unwrap_or_else(|_| "memory://".into());
/// # let url = "memory://?timeout=1s";
/// let store = StoreConfig::from_url(&url)?.connect().await?;
/// let layer = store.layer();
/// assert_eq!(store.backend(), "memory");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AnyStore {
    inner: Arc<dyn SessionStore>,
    backend: &'static str,
    op_timeout: Option<Duration>,
    #[cfg(feature = "memory")]
    memory: Option<session_memory::MemoryStore>,
    /// Keeps the SQL store's sweeper running while any clone of the store lives.
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    _sweeper: Option<Arc<session_core::sweeper::SweeperHandle>>,
}

impl std::fmt::Debug for AnyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnyStore")
            .field("backend", &self.backend)
            .field("op_timeout", &self.op_timeout)
            .finish_non_exhaustive()
    }
}

/// Connecting a [`StoreConfig`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The config cannot be used (for example a backend not compiled in).
    #[error("invalid session store config")]
    Config(#[from] ConfigError),
    /// The backend could not be reached or set up (its client's error is the source).
    #[error("could not connect the {backend} session store")]
    Backend {
        /// The backend.
        backend: &'static str,
        /// What its client said.
        #[source]
        source: BoxError,
    },
}

impl AnyStore {
    /// Wraps any store; `backend` names it in logs and [`AnyStore::backend`].
    pub fn new(backend: &'static str, store: impl SessionStore) -> Self {
        Self {
            inner: Arc::new(store),
            backend,
            op_timeout: None,
            #[cfg(feature = "memory")]
            memory: None,
            #[cfg(any(feature = "postgres", feature = "mysql"))]
            _sweeper: None,
        }
    }

    /// The memory store, when that is the backend: for
    /// [`MemoryStore::drain_into`](session_memory::MemoryStore::drain_into) at shutdown.
    #[cfg(feature = "memory")]
    #[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
    pub fn memory(&self) -> Option<&session_memory::MemoryStore> {
        self.memory.as_ref()
    }

    /// The backend's name: `memory`, `redis`, `redis+cluster`, `redis+sentinel`,
    /// `postgres` or `mysql`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The store operation timeout the config set, else the layer's
    /// default ([`DEFAULT_OP_TIMEOUT`](session_core::layer::DEFAULT_OP_TIMEOUT)):
    /// what [`AnyStore::layer`] uses, and the bound for a readiness
    /// [`ping`](SessionStore::ping).
    pub fn op_timeout(&self) -> Duration {
        self.op_timeout
            .unwrap_or(session_core::layer::DEFAULT_OP_TIMEOUT)
    }

    /// Reports each sweep of the SQL store's sweeper (started by
    /// [`StoreConfig::connect`]) that deleted expired sessions to `events`
    /// ([`SessionEvents::swept`](session_core::SessionEvents::swept)).
    /// Returns `false`, doing nothing, for a backend without a sweeper
    /// (memory and Redis expire sessions themselves, unobserved).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use session::{SessionEvents, StoreConfig};
    ///
    /// struct Expiries;
    /// impl SessionEvents for Expiries {}
    ///
    /// let store = StoreConfig::from_url("memory://")?.connect().await?;
    /// assert!(!store.report_sweeps_to(Expiries));
    /// # Ok(()) }
    /// ```
    pub fn report_sweeps_to(&self, events: impl session_core::SessionEvents) -> bool {
        #[cfg(any(feature = "postgres", feature = "mysql"))]
        if let Some(sweeper) = &self._sweeper {
            sweeper.report_to(events);
            return true;
        }
        let _ = events;
        false
    }

    /// The store as a shared trait object.
    pub fn as_arc(&self) -> Arc<dyn SessionStore> {
        self.inner.clone()
    }

    /// A [`SessionLayer`] over this store, with the config's operation
    /// timeout if it set one. Chain further builder calls as usual.
    pub fn layer(&self) -> SessionLayer {
        let layer = SessionLayer::from_arc(self.inner.clone());
        match self.op_timeout {
            Some(timeout) => layer.op_timeout(timeout),
            None => layer,
        }
    }
}

impl StoreConfig {
    /// Connects the configured backend. For Postgres and MySQL it also runs
    /// the migrations and starts a sweeper that deletes expired rows every
    /// minute (stopped when the last clone of the store is dropped). Redis
    /// connects on first use, so an app can start before its Redis does.
    ///
    /// # Errors
    ///
    /// [`ConnectError::Config`] for a backend not compiled in,
    /// [`ConnectError::Backend`] when the backend cannot be reached or set up.
    pub async fn connect(&self) -> Result<AnyStore, ConnectError> {
        let mut store = connect_backend(&self.backend).await?;
        store.op_timeout = self.op_timeout();
        Ok(store)
    }
}

async fn connect_backend(backend: &Backend) -> Result<AnyStore, ConnectError> {
    match backend {
        #[cfg(feature = "memory")]
        Backend::Memory { capacity } => {
            let store = session_memory::MemoryStore::with_capacity(
                capacity.unwrap_or(session_memory::DEFAULT_CAPACITY),
            );
            let mut any = AnyStore::new("memory", store.clone());
            any.memory = Some(store);
            Ok(any)
        }
        #[cfg(not(feature = "memory"))]
        Backend::Memory { .. } => Err(ConfigError::NotCompiledIn("memory").into()),
        #[cfg(feature = "redis")]
        Backend::Redis { url, pool, prefix } => {
            let builder = session_redis::RedisStore::builder(url.clone());
            redis_store("redis", builder, *pool, prefix.as_deref())
        }
        #[cfg(feature = "redis")]
        Backend::RedisCluster {
            nodes,
            pool,
            prefix,
            durable,
            durable_timeout_ms,
        } => {
            let mut builder = session_redis::RedisStore::cluster_builder(nodes.iter().cloned());
            if let Some(replicas) = durable {
                builder = builder.durable(*replicas);
            }
            if let Some(ms) = durable_timeout_ms {
                builder = builder.durable_timeout(Duration::from_millis(*ms));
            }
            redis_store("redis+cluster", builder, *pool, prefix.as_deref())
        }
        #[cfg(feature = "redis")]
        Backend::RedisSentinel {
            sentinels,
            master,
            prefix,
            durable,
            durable_timeout_ms,
            read_from_replicas,
        } => {
            let mut builder =
                session_redis::RedisStore::sentinel_builder(sentinels.iter().cloned(), master)
                    .read_from_replicas(*read_from_replicas);
            match durable {
                Some(crate::Durable::Replicas(n)) => builder = builder.durable(*n),
                Some(crate::Durable::All) => builder = builder.durable(session_redis::Durable::All),
                None => {}
            }
            if let Some(ms) = durable_timeout_ms {
                builder = builder.durable_timeout(Duration::from_millis(*ms));
            }
            redis_store("redis+sentinel", builder, None, prefix.as_deref())
        }
        #[cfg(not(feature = "redis"))]
        Backend::Redis { .. } | Backend::RedisCluster { .. } | Backend::RedisSentinel { .. } => {
            Err(ConfigError::NotCompiledIn("redis").into())
        }
        #[cfg(feature = "postgres")]
        Backend::Postgres {
            url,
            schema,
            table,
            pool,
            replicas,
            hosts,
            read_from,
            synchronous_commit,
        } => {
            let topology = PostgresTopology {
                replicas,
                hosts,
                read_from: read_from.unwrap_or_default(),
                synchronous_commit: synchronous_commit.as_deref(),
            };
            postgres_store(url, schema.as_deref(), table.as_deref(), *pool, &topology).await
        }
        #[cfg(not(feature = "postgres"))]
        Backend::Postgres { .. } => Err(ConfigError::NotCompiledIn("postgres").into()),
        #[cfg(feature = "mysql")]
        Backend::MySql {
            url,
            database,
            table,
            pool,
        } => mysql_store(url, database.as_deref(), table.as_deref(), *pool).await,
        #[cfg(not(feature = "mysql"))]
        Backend::MySql { .. } => Err(ConfigError::NotCompiledIn("mysql").into()),
    }
}

#[cfg(feature = "redis")]
fn redis_store(
    backend: &'static str,
    mut builder: session_redis::RedisStoreBuilder,
    pool: Option<usize>,
    prefix: Option<&str>,
) -> Result<AnyStore, ConnectError> {
    if let Some(size) = pool {
        builder = builder.pool_size(size);
    }
    // Building makes the pool; connections are opened by the first calls,
    // so an app can start before its Redis does.
    let mut store = builder.build().map_err(|e| ConnectError::Backend {
        backend,
        source: Box::new(e),
    })?;
    if let Some(prefix) = prefix {
        store = store.key_prefix(prefix);
    }
    Ok(AnyStore::new(backend, store))
}

/// How often the SQL stores' sweeper deletes expired rows, and how many at a time.
#[cfg(any(feature = "postgres", feature = "mysql"))]
const SWEEP_PERIOD: Duration = Duration::from_secs(60);
#[cfg(any(feature = "postgres", feature = "mysql"))]
const SWEEP_BATCH: u32 = 1000;

/// The replication settings of a Postgres URL.
#[cfg(feature = "postgres")]
struct PostgresTopology<'a> {
    replicas: &'a [String],
    hosts: &'a [String],
    read_from: crate::ReadFrom,
    synchronous_commit: Option<&'a str>,
}

#[cfg(feature = "postgres")]
async fn postgres_store(
    url: &str,
    schema: Option<&str>,
    table: Option<&str>,
    pool: Option<u32>,
    topology: &PostgresTopology<'_>,
) -> Result<AnyStore, ConnectError> {
    use session_postgres::sqlx::postgres::PgConnectOptions;
    use session_postgres::{PostgresStore, ReadFrom};

    let failed = |source: BoxError| ConnectError::Backend {
        backend: "postgres",
        source,
    };
    let mut options = PostgresStore::pool_options();
    if let Some(size) = pool {
        options = options.max_connections(size);
    }
    let mut connect: PgConnectOptions = url.parse().map_err(|e| failed(Box::new(e)))?;
    if let Some(level) = topology.synchronous_commit {
        connect = connect.options([("synchronous_commit", level)]);
    }
    // `host:port` (checked when the URL was parsed) on the URL's other settings.
    let on = |host: &str| {
        let (name, port) = host.rsplit_once(':').unwrap_or((host, "5432"));
        connect
            .clone()
            .host(name.trim_start_matches('[').trim_end_matches(']'))
            .port(port.parse().unwrap_or(5432))
    };
    let replicated = !topology.replicas.is_empty() || !topology.hosts.is_empty();
    let pool = if replicated {
        // The URL's server may be down while another is the primary: the
        // store finds the primary at its first call, migrate included.
        options.clone().connect_lazy_with(connect.clone())
    } else {
        options
            .clone()
            .connect_with(connect.clone())
            .await
            .map_err(|e| failed(Box::new(e)))?
    };
    let candidates = topology
        .hosts
        .iter()
        .chain(topology.replicas)
        .map(|host| options.clone().connect_lazy_with(on(host)));
    let replicas = topology
        .replicas
        .iter()
        .map(|host| options.clone().connect_lazy_with(on(host)));
    let read_from = match topology.read_from {
        crate::ReadFrom::Replicas => ReadFrom::Replicas,
        _ => ReadFrom::Primary,
    };
    let mut builder = PostgresStore::builder(pool)
        .candidates(candidates.collect::<Vec<_>>())
        .replicas(replicas.collect::<Vec<_>>())
        .read_from(read_from);
    if let Some(schema) = schema {
        builder = builder.schema(schema);
    }
    if let Some(table) = table {
        builder = builder.table(table);
    }
    let store = builder.build().map_err(|e| failed(Box::new(e)))?;
    store.migrate().await.map_err(|e| failed(Box::new(e)))?;
    let sweeper = store.spawn_sweeper(SWEEP_PERIOD, SWEEP_BATCH);
    let mut any = AnyStore::new("postgres", store);
    any._sweeper = Some(Arc::new(sweeper));
    Ok(any)
}

/// A MySQL or MariaDB store: pool, migrations, sweeper.
#[cfg(feature = "mysql")]
async fn mysql_store(
    url: &str,
    database: Option<&str>,
    table: Option<&str>,
    pool: Option<u32>,
) -> Result<AnyStore, ConnectError> {
    use session_mysql::MySqlStore;

    let backend = |e: BoxError| ConnectError::Backend {
        backend: "mysql",
        source: e,
    };
    let options = match pool {
        Some(size) => MySqlStore::pool_options().max_connections(size),
        None => MySqlStore::pool_options(),
    };
    let connected = options.connect(url).await;
    let mut builder = MySqlStore::builder(connected.map_err(|e| backend(e.into()))?);
    builder = match (database, table) {
        (Some(d), Some(t)) => builder.database(d).table(t),
        (Some(d), None) => builder.database(d),
        (None, Some(t)) => builder.table(t),
        (None, None) => builder,
    };
    let store = builder.build().map_err(|e| backend(e.into()))?;
    store.migrate().await.map_err(|e| backend(e.into()))?;
    let mut any = AnyStore::new("mysql", store.clone());
    any._sweeper = Some(Arc::new(store.spawn_sweeper(SWEEP_PERIOD, SWEEP_BATCH)));
    Ok(any)
}

#[async_trait]
impl SessionStore for AnyStore {
    async fn create(&self, key: &StoreKey, record: &Record) -> Result<bool, StoreError> {
        self.inner.create(key, record).await
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        self.inner.load(key).await
    }

    async fn load_at_least(
        &self,
        key: &StoreKey,
        floor: Option<u64>,
    ) -> Result<Option<Record>, StoreError> {
        self.inner.load_at_least(key, floor).await
    }

    async fn load_observed(&self, key: &StoreKey) -> Result<LoadOutcome, StoreError> {
        self.inner.load_observed(key).await
    }

    async fn load_observed_at_least(
        &self,
        key: &StoreKey,
        floor: Option<u64>,
    ) -> Result<LoadOutcome, StoreError> {
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
        self.inner.save(key, record, expected_version).await
    }

    async fn touch(
        &self,
        key: &StoreKey,
        expected_version: u64,
        idle_deadline: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.inner.touch(key, expected_version, idle_deadline).await
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }

    async fn delete_if_unchanged(
        &self,
        key: &StoreKey,
        expected_version: u64,
    ) -> Result<DeleteOutcome, StoreError> {
        self.inner.delete_if_unchanged(key, expected_version).await
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

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    fn backend(&self) -> &'static str {
        self.backend
    }
}
