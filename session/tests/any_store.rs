//! The whole conformance suite (store contract and HTTP level) through
//! `AnyStore`, on every backend, each picked by a URL as an app would.
//!
//! Redis, Postgres and MariaDB come from REDIS_URL, REDIS_CLUSTER_NODES,
//! REDIS_SENTINEL_URL, DATABASE_URL (with DATABASE_REPLICAS) and MYSQL_URL,
//! which `scripts/test` sets after starting throwaway servers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

mod common;

// Without the backend features only `connect` is used.
#[cfg_attr(
    not(all(feature = "redis", feature = "postgres", feature = "mysql")),
    allow(unused_imports)
)]
use common::{connect, database_url, env, fresh, mysql_url};

use session::AnyStore;
#[cfg_attr(
    not(any(feature = "redis", feature = "postgres")),
    allow(unused_imports)
)]
use session_core::SessionStore as _;

/// Without a backend's feature its cases are not compiled: say so instead.
#[cfg(not(feature = "redis"))]
#[test]
fn redis_cases_need_the_redis_feature() {
    panic!("the Redis cases need `--features redis` (scripts/test passes --all-features)");
}

/// Without a backend's feature its cases are not compiled: say so instead.
#[cfg(not(feature = "postgres"))]
#[test]
fn postgres_cases_need_the_postgres_feature() {
    panic!("the Postgres cases need `--features postgres` (scripts/test passes --all-features)");
}

/// Without a backend's feature its cases are not compiled: say so instead.
#[cfg(not(feature = "mysql"))]
#[test]
fn mysql_cases_need_the_mysql_feature() {
    panic!("the MySQL cases need `--features mysql` (scripts/test passes --all-features)");
}

async fn memory() -> AnyStore {
    connect("memory://?timeout=2s").await
}

#[cfg(feature = "redis")]
async fn redis() -> AnyStore {
    connect(&format!("{}?prefix=any-{}:", env("REDIS_URL"), fresh())).await
}

#[cfg(feature = "redis")]
async fn redis_cluster() -> AnyStore {
    let nodes = env("REDIS_CLUSTER_NODES").replace("redis://", "");
    connect(&format!("redis+cluster://{nodes}?prefix=any-{}:", fresh())).await
}

#[cfg(feature = "redis")]
async fn redis_sentinel() -> AnyStore {
    // The default durable=1, said out loud so the URL reads as a deployment's.
    let url = format!(
        "{}?durable=1&durable_timeout=250ms&prefix=any-{}:",
        env("REDIS_SENTINEL_URL"),
        fresh()
    );
    let store = connect(&url).await;
    assert_eq!(store.backend(), "redis+sentinel");
    store
}

#[cfg(feature = "postgres")]
async fn postgres() -> AnyStore {
    connect(&database_url(&format!("schema=any_{}&pool=32", fresh()))).await
}

/// Postgres with its streaming replicas (`DATABASE_REPLICAS`) and replica
/// reads, all from the URL, as a deployment passes them.
#[cfg(feature = "postgres")]
async fn postgres_replicas() -> AnyStore {
    let options = format!(
        "schema=any_{}&pool=32&replicas={}&read_from=replicas",
        fresh(),
        env("DATABASE_REPLICAS")
    );
    let store = connect(&database_url(&options)).await;
    assert!(
        store.reads_may_lag(),
        "read_from=replicas did not reach the store"
    );
    store
}

/// Redis behind Sentinel with replica reads, from the URL.
#[cfg(feature = "redis")]
async fn redis_sentinel_replicas() -> AnyStore {
    let url = format!(
        "{}?durable=1&read_from=replicas&prefix=any-{}:",
        env("REDIS_SENTINEL_URL"),
        fresh()
    );
    let store = connect(&url).await;
    assert!(
        store.reads_may_lag(),
        "read_from=replicas did not reach the store"
    );
    store
}

#[cfg(feature = "mysql")]
async fn mysql() -> AnyStore {
    connect(&mysql_url(&format!("database=any_{}&pool=32", fresh()))).await
}

#[cfg(feature = "postgres")]
session_core::conformance_tests!(prefix = postgres, async { super::postgres().await });

#[cfg(feature = "postgres")]
session_core::conformance_tests!(prefix = postgres_replicas, async {
    super::postgres_replicas().await
});

#[cfg(feature = "redis")]
session_core::conformance_tests!(prefix = redis_sentinel_replicas, async {
    super::redis_sentinel_replicas().await
});

#[cfg(feature = "mysql")]
session_core::conformance_tests!(prefix = mysql, async { super::mysql().await });

session_core::conformance_tests!(prefix = memory, async { super::memory().await });

#[cfg(feature = "redis")]
session_core::conformance_tests!(prefix = redis, async { super::redis().await });

#[cfg(feature = "redis")]
session_core::conformance_tests!(prefix = redis_sentinel, async {
    super::redis_sentinel().await
});

#[cfg(feature = "redis")]
session_core::conformance_tests!(prefix = redis_cluster, async {
    super::redis_cluster().await
});
