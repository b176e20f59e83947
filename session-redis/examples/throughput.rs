//! Throughput of the connection strategies, against a running Redis.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release -p session-redis --example throughput [-- SECONDS CLIENTS]
//! ```
//!
//! `CLIENTS` concurrent tasks (default 32) each run requests back to back for
//! `SECONDS` (default 5) per mode:
//!
//! - `get-set, pooled object per request`: each request checks an object out
//!   of an 8-connection deadpool pool, holds it for a `GET` then a `SET`, and
//!   returns it (the usual deadpool pattern);
//! - `get-set, shared multiplexed`: each request clones one multiplexed
//!   connection handle and sends the same `GET` and `SET`;
//! - `RedisStore load+save, N shared`: each request is a session request as
//!   the layer makes it, a `load` then a compare-and-set `save`, through
//!   `RedisStore` with `shared_connections(N)`.
//!
//! Writes only keys under a random `bench-…:` prefix and deletes them at the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use session_core::record::now;
use session_core::{Expiry, Id, Record, SaveOutcome, SessionStore, StoreKey};
use session_redis::deadpool_redis::{self, Runtime};
use session_redis::redis::{self, AsyncCommands as _};
use session_redis::{RedisStore, RedisStoreBuilder};

#[tokio::main]
async fn main() {
    let url = std::env::var("REDIS_URL").expect("set REDIS_URL, e.g. redis://127.0.0.1:6379");
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(5, |s| s.parse().expect("SECONDS"));
    let clients: usize = args.next().map_or(32, |s| s.parse().expect("CLIENTS"));
    let prefix = format!("bench-{}:", Id::random().unwrap().store_key().short());
    let run_for = Duration::from_secs(seconds);
    println!(
        "{clients} clients, {seconds} s per mode, {} worker threads",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    // GET then SET with an 8-connection pool, one object held per request.
    let pool = deadpool_redis::Config::from_url(url.clone())
        .builder()
        .unwrap()
        .max_size(8)
        .runtime(Runtime::Tokio1)
        .build()
        .unwrap();
    let keys: Arc<Vec<String>> = Arc::new((0..clients).map(|i| format!("{prefix}k{i}")).collect());
    report(
        "get-set, pooled object per request (pool of 8)",
        measure(clients, run_for, {
            let (pool, keys) = (pool.clone(), keys.clone());
            move |client| {
                let (pool, keys) = (pool.clone(), keys.clone());
                async move {
                    let mut conn = pool.get().await.unwrap();
                    let _: Option<String> = conn.get(&keys[client]).await.unwrap();
                    let _: () = conn.set(&keys[client], "v").await.unwrap();
                }
            }
        })
        .await,
        run_for,
    );

    // The same commands on one shared multiplexed connection.
    let shared = redis::Client::open(url.clone())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    report(
        "get-set, one shared multiplexed connection",
        measure(clients, run_for, {
            let (shared, keys) = (shared.clone(), keys.clone());
            move |client| {
                let (mut conn, keys) = (shared.clone(), keys.clone());
                async move {
                    let _: Option<String> = conn.get(&keys[client]).await.unwrap();
                    let _: () = conn.set(&keys[client], "v").await.unwrap();
                }
            }
        })
        .await,
        run_for,
    );
    let _: () = pool
        .get()
        .await
        .unwrap()
        .del(keys.as_slice())
        .await
        .unwrap();

    // Session requests through the store: load, then compare-and-set save.
    for slots in [1, 2, 4, 8] {
        let store = builder(&url)
            .build()
            .unwrap()
            .key_prefix(prefix.clone())
            .shared_connections(slots);
        let sessions: Arc<Vec<StoreKey>> = Arc::new(
            (0..clients)
                .map(|_| Id::random().unwrap().store_key())
                .collect(),
        );
        for key in sessions.iter() {
            assert!(
                store
                    .create(key, &Record::new(now(), &Expiry::default()))
                    .await
                    .unwrap()
            );
        }
        report(
            &format!("RedisStore load+save, shared_connections({slots})"),
            measure(clients, run_for, {
                let (store, sessions) = (store.clone(), sessions.clone());
                move |client| {
                    let (store, sessions) = (store.clone(), sessions.clone());
                    async move {
                        let key = &sessions[client];
                        let mut record = store.load(key).await.unwrap().expect("live");
                        let expected = record.version;
                        record.version += 1;
                        record.data.insert("n".into(), expected.into());
                        assert_eq!(
                            store.save(key, &record, expected).await.unwrap(),
                            SaveOutcome::Saved
                        );
                    }
                }
            })
            .await,
            run_for,
        );
        for key in sessions.iter() {
            store.delete(key).await.unwrap();
        }
    }
}

fn builder(url: &str) -> RedisStoreBuilder {
    RedisStore::builder(url).pool_size(8)
}

/// Runs `clients` tasks, each making requests back to back for `run_for`;
/// returns the number of requests completed.
async fn measure<F, Fut>(clients: usize, run_for: Duration, request: F) -> u64
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (done, stop, request) = (done.clone(), stop.clone(), request.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    request(client).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let start = Instant::now();
    tokio::time::sleep(run_for).await;
    stop.store(true, Ordering::Relaxed);
    let count = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    for task in tasks {
        task.await.unwrap();
    }
    (count as f64 * run_for.as_secs_f64() / elapsed.as_secs_f64()) as u64
}

fn report(what: &str, requests: u64, run_for: Duration) {
    println!(
        "{what:<55} {:>8.0} requests/s",
        requests as f64 / run_for.as_secs_f64()
    );
}
