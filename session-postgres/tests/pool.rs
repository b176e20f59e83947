//! The store on an exhausted pool: store calls hand connections to each
//! other (skipping the pool's ping of every returned connection), lose no
//! write, and still let other users of the same pool have connections.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{database_url, store_in_fresh_schema};
use serde_json::json;
use session_core::conformance::store::{new_key, new_record};
use session_core::{SaveOutcome, SessionStore};
use session_postgres::PostgresStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_is_shared_fairly_and_loses_no_write() {
    const SESSIONS: usize = 24;
    const TRAFFIC: Duration = Duration::from_secs(4);
    let pool = PostgresStore::pool_options()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(30))
        .connect(&database_url())
        .await
        .expect("pool");
    let store = store_in_fresh_schema(pool.clone()).await;

    // Each task: its own session, loaded and saved with compare-and-set
    // over and over; as the only writer of it, every save must succeed.
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..SESSIONS {
        let (store, stop) = (store.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let key = new_key();
            assert!(store.create(&key, &new_record()).await.expect("create"));
            let mut saves = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut record = store.load(&key).await.expect("load").expect("live");
                let n = record.data["n"].as_u64().expect("n");
                let expected = record.version;
                record.version += 1;
                record.data.insert("n".into(), json!(n + 1));
                assert_eq!(
                    store.save(&key, &record, expected).await.expect("save"),
                    SaveOutcome::Saved
                );
                saves += 1;
            }
            let last = store.load(&key).await.expect("load").expect("live");
            (saves, last.data["n"].as_u64().expect("n"))
        }));
    }

    // Another user of the same pool gets a connection promptly all along.
    let other = {
        let (pool, stop) = (pool.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut worst, mut queries) = (Duration::ZERO, 0);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                session_postgres::sqlx::query("SELECT 1")
                    .execute(&pool)
                    .await
                    .expect("the other user's query");
                worst = worst.max(started.elapsed());
                queries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (worst, queries)
        })
    };

    tokio::time::sleep(TRAFFIC).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for task in tasks {
        let (saves, n) = task.await.expect("session task");
        assert_eq!(n, saves, "every save kept");
        total += saves;
    }
    let (worst, queries) = other.await.expect("other user");
    assert!(total > 0 && queries > 0);
    assert!(
        worst < Duration::from_secs(2),
        "the other user of the pool waited {worst:?} for a connection \
         while {total} saves ran"
    );
}
