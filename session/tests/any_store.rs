//! The whole conformance suite (store contract and HTTP level) through
//! `AnyStore`, on every backend, each picked by a URL as an app would.
//!
//! Redis and Postgres come from REDIS_URL, REDIS_CLUSTER_NODES and
//! DATABASE_URL, which `scripts/test` sets after starting throwaway servers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

use session::{AnyStore, StoreConfig};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test, which starts a throwaway server, or set {name}")
    })
}

/// A name no other test uses, so a shared server is never disturbed.
fn fresh() -> String {
    session_core::conformance::store::new_key()
        .short()
        .to_ascii_lowercase()
        .replace('-', "_")
}

async fn connect(url: String) -> AnyStore {
    StoreConfig::from_url(&url)
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

async fn memory() -> AnyStore {
    connect("memory://?timeout=2s".to_owned()).await
}

#[cfg(feature = "redis")]
async fn redis() -> AnyStore {
    connect(format!("{}?prefix=any-{}:", env("REDIS_URL"), fresh())).await
}

#[cfg(feature = "redis")]
async fn redis_cluster() -> AnyStore {
    let nodes = env("REDIS_CLUSTER_NODES").replace("redis://", "");
    connect(format!("redis+cluster://{nodes}?prefix=any-{}:", fresh())).await
}

#[cfg(feature = "postgres")]
async fn postgres() -> AnyStore {
    let url = env("DATABASE_URL");
    let sep = if url.contains('?') { '&' } else { '?' };
    connect(format!("{url}{sep}schema=any_{}&pool=32", fresh())).await
}

#[cfg(feature = "postgres")]
session_core::conformance_tests!(prefix = postgres, async { super::postgres().await });

session_core::conformance_tests!(prefix = memory, async { super::memory().await });

#[cfg(feature = "redis")]
session_core::conformance_tests!(prefix = redis, async { super::redis().await });

#[cfg(feature = "redis")]
session_core::conformance_tests!(prefix = redis_cluster, async {
    super::redis_cluster().await
});
