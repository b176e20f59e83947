//! Building a store from URLs, with the pool size and timeouts.

use std::time::Duration;

use deadpool_redis::Runtime;
use deadpool_redis::redis::{AsyncConnectionConfig, RedisError};

use crate::RedisStore;
use crate::connection::Pool;

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
}

#[derive(Clone, Debug)]
enum Target {
    Single(String),
    Cluster(Vec<String>),
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
    /// (`redis://[user:password@]host[:port][/db]`).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder::new(Target::Single(url.into()))
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
        }
    }

    /// The most connections the pool holds (default [`DEFAULT_POOL_SIZE`]).
    ///
    /// The store's calls share [`RedisStore::shared_connections`] of them;
    /// the rest serve whoever else uses the pool.
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

    /// Builds the pool and the store (without connecting).
    ///
    /// # Errors
    ///
    /// [`BuildError::Url`] when a URL is not a Redis URL; [`BuildError::Pool`]
    /// when the pool cannot be built.
    pub fn build(self) -> Result<RedisStore, BuildError> {
        let pool = match self.target {
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
        Ok(RedisStore::with_pool(pool))
    }
}
