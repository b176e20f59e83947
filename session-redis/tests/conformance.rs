//! The shared conformance suite (store contract and HTTP level) on
//! `RedisStore`: on a standalone server, on a Redis Cluster with a replica
//! per master (`cluster::*`, and with durable=1: `cluster_durable::*`), and
//! on the primary behind Redis Sentinel (`sentinel::*`, durable=1 by default;
//! with loads from its replicas: `sentinel_replicas::*`).
//! Each test gets a store under a fresh key prefix.

mod common;

session_core::conformance_tests!(async { crate::common::standalone_store().await });

session_core::conformance_tests!(prefix = cluster, async {
    crate::common::cluster_store().await
});

session_core::conformance_tests!(prefix = cluster_durable, async {
    crate::common::durable_cluster_store().await
});

session_core::conformance_tests!(prefix = sentinel, async {
    crate::common::sentinel_store().await
});

session_core::conformance_tests!(prefix = sentinel_replicas, async {
    crate::common::sentinel_replica_store().await
});
