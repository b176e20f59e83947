#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod any;
mod config;
mod migrating;

pub use any::{AnyStore, ConnectError};
pub use config::{Backend, ConfigError, Durable, ReadFrom, StoreConfig};
pub use migrating::MigratingStore;
pub use session_core::*;

/// The in-process store (feature `memory`).
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub use session_memory::{self as memory, MemoryStore};

/// The Redis store: standalone, behind Sentinel, and Cluster (feature `redis`).
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use session_redis::{self as redis, RedisStore};

/// The Postgres store (feature `postgres`).
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use session_postgres::{self as postgres, PostgresStore};

/// The MySQL 8 / MariaDB store (feature `mysql`).
#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
pub use session_mysql::{self as mysql, MySqlStore};
