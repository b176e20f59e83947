//! The shared conformance suite (store contract and HTTP level) on
//! `RedisStore`: on a standalone server, and on a Redis Cluster (`cluster::*`).
//! Each test gets a store under a fresh key prefix.

mod common;

session_core::conformance_tests!(async { crate::common::standalone_store().await });

session_core::conformance_tests!(prefix = cluster, async {
    crate::common::cluster_store().await
});
