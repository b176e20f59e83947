//! Builds the app of one variant on one backend, connected and with empty tables.

use std::fmt;
use std::str::FromStr;

use axum::Router;
use tower_sessions_redis_store::fred::prelude::{ClientLike as _, Config as FredConfig, Pool};

use crate::{BoxError, app, raw};

/// Where sessions live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// In-process (moka).
    Memory,
    /// Redis at `$REDIS_URL`.
    Redis,
    /// Postgres at `$DATABASE_URL`.
    Postgres,
    /// MySQL or MariaDB at `$MYSQL_URL`.
    MySql,
}

/// Which implementation serves the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// `session_core::SessionLayer` over our store for the backend.
    Ours,
    /// tower-sessions 0.14 over its store for the backend (on memory, its
    /// moka store, `tower-sessions-moka-store`).
    TowerSessions,
    /// tower-sessions 0.14 over its own `MemoryStore` (memory only).
    TowerSessionsMemory,
    /// Hand-written store commands, no session library ([`raw`]).
    Raw,
    /// No session layer at all.
    Bare,
}

/// Connections each variant may open to Postgres (sqlx's default), the same for all.
pub const PG_POOL_SIZE: u32 = 10;

/// Multiplexed Redis connections tower-sessions' fred pool keeps: as many as
/// our store shares by default.
pub const FRED_POOL_SIZE: usize = session_redis::DEFAULT_SHARED_CONNECTIONS;

/// Our Postgres table in the bench runs (emptied when a server starts).
pub const OURS_PG_TABLE: &str = "bench_sessions";

/// tower-sessions' Postgres schema in the bench runs (its table is `session`).
pub const TS_PG_SCHEMA: &str = "bench_ts";

/// Our Redis key prefix in the bench runs.
pub const OURS_REDIS_PREFIX: &str = "bench:ours:";

impl Backend {
    /// Every backend, in report order.
    pub const ALL: [Backend; 4] = [
        Backend::Memory,
        Backend::Redis,
        Backend::Postgres,
        Backend::MySql,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis => "redis",
            Self::Postgres => "postgres",
            Self::MySql => "mysql",
        }
    }
}

impl Variant {
    /// Every variant, in report order.
    pub const ALL: [Variant; 5] = [
        Variant::Ours,
        Variant::TowerSessions,
        Variant::TowerSessionsMemory,
        Variant::Raw,
        Variant::Bare,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::TowerSessions => "tower-sessions",
            Self::TowerSessionsMemory => "tower-sessions-memory",
            Self::Raw => "raw",
            Self::Bare => "bare",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| format!("unknown backend {s:?} (memory, redis, postgres, mysql)"))
    }
}

impl FromStr for Variant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown variant {s:?} (ours, tower-sessions, tower-sessions-memory, raw, bare)"
                )
            })
    }
}

/// `$REDIS_URL`.
///
/// # Errors
///
/// When it is not set.
pub fn redis_url() -> Result<String, BoxError> {
    std::env::var("REDIS_URL").map_err(|_| "REDIS_URL is not set".into())
}

/// `$DATABASE_URL`.
///
/// # Errors
///
/// When it is not set.
pub fn database_url() -> Result<String, BoxError> {
    std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL is not set".into())
}

/// `$MYSQL_URL`.
///
/// # Errors
///
/// When it is not set.
pub fn mysql_url() -> Result<String, BoxError> {
    std::env::var("MYSQL_URL").map_err(|_| "MYSQL_URL is not set".into())
}

/// Our MySQL store on the bench table (in the URL's database), migrated and
/// emptied, with a pool of [`PG_POOL_SIZE`] connections.
///
/// # Errors
///
/// Connection or migration failures.
pub async fn ours_mysql(url: &str) -> Result<session_mysql::MySqlStore, BoxError> {
    let pool = session_mysql::MySqlStore::pool_options()
        .max_connections(PG_POOL_SIZE)
        .connect(url)
        .await?;
    let store = session_mysql::MySqlStore::builder(pool)
        .table(OURS_PG_TABLE)
        .build()?;
    store.migrate().await?;
    let truncate = format!("TRUNCATE TABLE `{OURS_PG_TABLE}`");
    sqlx::raw_sql(sqlx::AssertSqlSafe(truncate))
        .execute(store.pool())
        .await?;
    Ok(store)
}

/// Our Postgres store on the bench table, migrated, with a pool of
/// [`PG_POOL_SIZE`] connections.
///
/// # Errors
///
/// Connection or migration failures.
pub async fn ours_postgres(url: &str) -> Result<session_postgres::PostgresStore, BoxError> {
    let pool = session_postgres::PostgresStore::pool_options()
        .max_connections(PG_POOL_SIZE)
        .connect(url)
        .await?;
    let store = session_postgres::PostgresStore::builder(pool)
        .table(OURS_PG_TABLE)
        .build()?;
    store.migrate().await?;
    Ok(store)
}

/// The app of `variant` on `backend`, connected, its tables emptied.
///
/// # Errors
///
/// A missing URL, connection or migration failures.
pub async fn build(backend: Backend, variant: Variant) -> Result<Router, BoxError> {
    Ok(match (backend, variant) {
        (_, Variant::Bare) => app::bare(),
        (Backend::Memory, Variant::Ours) => app::ours(session_memory::MemoryStore::default()),
        (Backend::Memory, Variant::TowerSessions) => app::tower_sessions(
            tower_sessions_moka_store::MokaStore::new(Some(session_memory::DEFAULT_CAPACITY)),
        ),
        (Backend::Memory, Variant::TowerSessionsMemory) => {
            app::tower_sessions(tower_sessions::MemoryStore::default())
        }
        (_, Variant::TowerSessionsMemory) => {
            return Err("tower-sessions-memory is a variant of the memory backend only".into());
        }
        (Backend::Memory, Variant::Raw) => {
            raw::app(raw::Raw::memory(session_memory::DEFAULT_CAPACITY))
        }
        (Backend::Redis, Variant::Ours) => app::ours(
            session_redis::RedisStore::from_url(redis_url()?)?.key_prefix(OURS_REDIS_PREFIX),
        ),
        (Backend::Redis, Variant::TowerSessions) => {
            let config = FredConfig::from_url(&redis_url()?)?;
            let pool = Pool::new(config, None, None, None, FRED_POOL_SIZE)?;
            pool.init().await?;
            app::tower_sessions(tower_sessions_redis_store::RedisStore::new(pool))
        }
        (Backend::Redis, Variant::Raw) => {
            let client = redis::Client::open(redis_url()?)?;
            let conn = client.get_multiplexed_async_connection().await?;
            raw::app(raw::Raw::Redis(conn))
        }
        (Backend::Postgres, Variant::Ours) => {
            let store = ours_postgres(&database_url()?).await?;
            let truncate = format!("TRUNCATE {OURS_PG_TABLE}");
            sqlx::raw_sql(sqlx::AssertSqlSafe(truncate))
                .execute(store.pool())
                .await?;
            app::ours(store)
        }
        (Backend::Postgres, Variant::TowerSessions) => {
            use tower_sessions_sqlx_store::sqlx as sqlx08;
            let pool = sqlx08::postgres::PgPoolOptions::new()
                .test_before_acquire(false)
                .max_connections(PG_POOL_SIZE)
                .connect(&database_url()?)
                .await?;
            let store = tower_sessions_sqlx_store::PostgresStore::new(pool.clone())
                .with_schema_name(TS_PG_SCHEMA)?;
            store.migrate().await?;
            sqlx08::query(&format!("TRUNCATE \"{TS_PG_SCHEMA}\".\"session\""))
                .execute(&pool)
                .await?;
            app::tower_sessions(store)
        }
        (Backend::MySql, Variant::Ours) => app::ours(ours_mysql(&mysql_url()?).await?),
        (Backend::MySql, Variant::TowerSessions) => {
            use tower_sessions_sqlx_store::sqlx as sqlx08;
            let pool = sqlx08::mysql::MySqlPoolOptions::new()
                .test_before_acquire(false)
                .max_connections(PG_POOL_SIZE)
                .connect(&mysql_url()?)
                .await?;
            // Its default schema, `tower_sessions`: a database of its own.
            let store = tower_sessions_sqlx_store::MySqlStore::new(pool.clone());
            store.migrate().await?;
            sqlx08::query("TRUNCATE TABLE `tower_sessions`.`session`")
                .execute(&pool)
                .await?;
            app::tower_sessions(store)
        }
        (Backend::MySql, Variant::Raw) => {
            let pool = sqlx::mysql::MySqlPoolOptions::new()
                .test_before_acquire(false)
                .max_connections(PG_POOL_SIZE)
                .connect(&mysql_url()?)
                .await?;
            let raw = raw::Raw::MySql(pool);
            raw.prepare().await?;
            raw::app(raw)
        }
        (Backend::Postgres, Variant::Raw) => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .test_before_acquire(false)
                .max_connections(PG_POOL_SIZE)
                .connect(&database_url()?)
                .await?;
            let raw = raw::Raw::Postgres(pool);
            raw.prepare().await?;
            raw::app(raw)
        }
    })
}
