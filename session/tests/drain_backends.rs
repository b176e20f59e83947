//! `MemoryStore::drain_into` a real Redis and a real Postgres while
//! traffic keeps running: store calls, and HTTP requests through the layer,
//! before, during (held at the first copy, held halfway) and after the
//! drain. The harness is session-memory's (`support/traffic.rs`): every
//! acknowledged write ends in the target, no destroyed or retired session
//! does, every session created meanwhile does, and the report counts
//! exactly the sessions memory held when the drain began.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

/// Without the backends this file tests, say so instead of compiling to nothing.
#[cfg(not(all(feature = "memory", feature = "redis", feature = "postgres")))]
#[test]
fn drain_tests_need_the_memory_redis_and_postgres_features() {
    panic!(
        "these tests need `--features memory,redis,postgres` (scripts/test passes --all-features)"
    );
}

#[cfg(all(feature = "memory", feature = "redis", feature = "postgres"))]
mod common;
#[cfg(all(feature = "memory", feature = "redis", feature = "postgres"))]
#[path = "../../session-memory/tests/support/mod.rs"]
mod support;

#[cfg(all(feature = "memory", feature = "redis", feature = "postgres"))]
mod backends {
    use super::{common, support};
    use common::{connect, database_url, env, fresh};
    use session::AnyStore;

    async fn redis() -> AnyStore {
        connect(&format!("{}?prefix=drain-{}:", env("REDIS_URL"), fresh())).await
    }

    async fn postgres() -> AnyStore {
        connect(&database_url(&format!("schema=drain_{}&pool=16", fresh()))).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn store_calls_during_a_drain_into_redis_lose_nothing() {
        support::traffic::store_calls_during_a_drain(redis().await, 1_000).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_during_a_drain_into_redis_lose_nothing() {
        support::traffic::requests_during_a_drain(redis().await, 300).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn store_calls_during_a_drain_into_postgres_lose_nothing() {
        support::traffic::store_calls_during_a_drain(postgres().await, 1_000).await;
    }
}
