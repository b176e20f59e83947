//! Shared by the integration tests: the servers from the environment, fresh
//! key prefixes, and a raw connection for looking at what the store wrote.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use session_core::{Id, SessionStore};
use session_redis::RedisStore;
use session_redis::redis::{self, aio::ConnectionLike};

const HOW: &str = "run `scripts/test`, which starts throwaway Redis servers, \
                   or point the variable at a server the tests may write to \
                   (they only use fresh key prefixes)";

/// `REDIS_URL`, or a panic saying how to get a server.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| {
        panic!("REDIS_URL is not set: {HOW} (e.g. REDIS_URL=redis://127.0.0.1:6379)")
    })
}

/// `REDIS_CLUSTER_NODES` split at commas, or a panic saying how to get a cluster.
pub fn cluster_nodes() -> Vec<String> {
    let nodes = std::env::var("REDIS_CLUSTER_NODES").unwrap_or_else(|_| {
        panic!(
            "REDIS_CLUSTER_NODES is not set: {HOW} \
             (e.g. REDIS_CLUSTER_NODES=redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002)"
        )
    });
    nodes.split(',').map(|n| n.trim().to_owned()).collect()
}

/// A key prefix no other test uses.
pub fn fresh_prefix() -> String {
    format!("test-{}:", Id::random().unwrap().store_key().short())
}

/// Fails loudly when the store's server does not answer.
async fn ensure_reachable(store: &RedisStore, what: &str) {
    let probe = Id::random().unwrap().store_key();
    if let Err(error) = store.load(&probe).await {
        let mut chain = String::new();
        let mut source: Option<&dyn std::error::Error> = Some(&error);
        while let Some(e) = source {
            chain.push_str(&format!(": {e}"));
            source = e.source();
        }
        panic!("Redis at {what} is unreachable{chain}; {HOW}");
    }
}

/// A store on the standalone server under a fresh prefix.
pub async fn standalone_store() -> RedisStore {
    let url = redis_url();
    let store = RedisStore::from_url(url.clone())
        .expect("REDIS_URL is a Redis URL")
        .key_prefix(fresh_prefix());
    ensure_reachable(&store, &format!("REDIS_URL={url}")).await;
    store
}

/// A store on the cluster under a fresh prefix.
pub async fn cluster_store() -> RedisStore {
    let nodes = cluster_nodes();
    let store = RedisStore::cluster_builder(nodes.clone())
        .build()
        .expect("REDIS_CLUSTER_NODES are Redis URLs")
        .key_prefix(fresh_prefix());
    ensure_reachable(&store, &format!("REDIS_CLUSTER_NODES={}", nodes.join(","))).await;
    store
}

/// A plain connection to the standalone server, to inspect keys directly.
pub async fn raw_connection() -> impl ConnectionLike + Clone {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}
