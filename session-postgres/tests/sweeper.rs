//! The sweeper: deletes only expired rows, in batches, while requests go on;
//! survives a database that goes away; stops with its handle.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{OwnPostgres, eventually, fresh_store, pool_on, row_count, store_in_fresh_schema};
use session_core::conformance::store::{new_key, new_record};
use session_core::record::now;
use session_core::{Record, SessionStore, StoreKey};
use session_postgres::PostgresStore;

/// A record whose deadline passed before it was written.
fn expired_record() -> Record {
    let mut record = new_record();
    record.idle_deadline = now() - session_core::time::Duration::seconds(1);
    record
}

/// Creates `n` records in parallel (8 tasks), returning their keys.
async fn create_many(store: &PostgresStore, n: usize, make: fn() -> Record) -> Vec<StoreKey> {
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut keys = Vec::new();
                for _ in (t..n).step_by(8) {
                    let key = new_key();
                    assert!(store.create(&key, &make()).await.expect("create"));
                    keys.push(key);
                }
                keys
            })
        })
        .collect();
    let mut keys = Vec::with_capacity(n);
    for task in tasks {
        keys.extend(task.await.expect("task"));
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeper_deletes_only_expired_rows_while_loads_keep_answering() {
    const EXPIRED: usize = 10_000;
    const LIVE: usize = 200;
    let store = fresh_store().await;
    create_many(&store, EXPIRED, expired_record).await;
    let live = create_many(&store, LIVE, new_record).await;
    assert_eq!(
        row_count(&store).await.expect("count"),
        (EXPIRED + LIVE) as i64
    );

    // Loads of live sessions run during the whole sweep.
    let stop_loads = Arc::new(AtomicBool::new(false));
    let loads = {
        let (store, live, stop) = (store.clone(), live.clone(), stop_loads.clone());
        tokio::spawn(async move {
            let (mut answered, mut missing) = (0u64, 0u64);
            while !stop.load(Ordering::SeqCst) {
                for key in live.iter().take(20) {
                    match store.load(key).await.expect("load during the sweep") {
                        Some(_) => answered += 1,
                        None => missing += 1,
                    }
                }
            }
            (answered, missing)
        })
    };

    let sweeper = store.spawn_sweeper(Duration::from_millis(20), 500);
    let swept = eventually(Duration::from_secs(60), || async {
        row_count(&store).await.expect("count") == LIVE as i64
    })
    .await;
    stop_loads.store(true, Ordering::SeqCst);
    let (answered, missing) = loads.await.expect("load task");
    assert!(swept, "expired rows left after 60 s");
    assert_eq!(
        sweeper.deleted(),
        EXPIRED as u64,
        "the sweeper deleted them all"
    );
    assert_eq!(sweeper.failures(), 0);
    sweeper.stop().await;

    assert!(answered > 0, "no load ran during the sweep");
    assert_eq!(missing, 0, "a live session was missing during the sweep");
    for key in &live {
        assert!(
            store.load(key).await.expect("load").is_some(),
            "a live session was swept"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeper_survives_a_stopped_database_and_resumes() {
    let server = OwnPostgres::start();
    let pool = pool_on(&server.url(), Duration::from_millis(500)).await;
    let store = store_in_fresh_schema(pool).await;
    create_many(&store, 100, expired_record).await;
    let live = create_many(&store, 5, new_record).await;

    server.stop();
    let sweeper = store.spawn_sweeper(Duration::from_millis(100), 40);
    assert!(
        eventually(Duration::from_secs(30), || async {
            sweeper.failures() >= 2
        })
        .await,
        "the sweeper did not report failing sweeps"
    );
    assert!(!sweeper.is_finished(), "the sweeper ended on an error");
    assert_eq!(sweeper.deleted(), 0);

    server.start_again();
    let resumed = eventually(Duration::from_secs(30), || async {
        matches!(row_count(&store).await, Ok(5))
    })
    .await;
    assert!(
        resumed,
        "the sweeper did not resume after the database returned"
    );
    assert_eq!(sweeper.deleted(), 100);
    assert!(!sweeper.is_finished(), "the sweeper keeps running");
    sweeper.stop().await;
    for key in &live {
        assert!(store.load(key).await.expect("load").is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_stops_the_sweeper() {
    let store = fresh_store().await;
    let sweeper = store.spawn_sweeper(Duration::from_millis(10), 100);
    create_many(&store, 3, expired_record).await;
    assert!(
        eventually(Duration::from_secs(10), || async { sweeper.deleted() == 3 }).await,
        "the running sweeper deletes expired rows"
    );
    drop(sweeper);

    create_many(&store, 3, expired_record).await;
    // Thirty sweeper periods pass; a stopped sweeper deletes nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(row_count(&store).await.expect("count"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_waits_for_the_task_to_end() {
    let store = fresh_store().await;
    let sweeper = store.spawn_sweeper(Duration::from_secs(3600), 100);
    tokio::time::timeout(Duration::from_secs(10), sweeper.stop())
        .await
        .expect("stop() returns once the task ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_expired_counts_what_it_deletes_in_batches() {
    let store = fresh_store().await;
    // More than one default batch.
    create_many(&store, 2_500, expired_record).await;
    let live = create_many(&store, 3, new_record).await;
    assert_eq!(store.delete_expired().await.expect("delete_expired"), 2_500);
    assert_eq!(store.delete_expired().await.expect("delete_expired"), 0);
    assert_eq!(row_count(&store).await.expect("count"), 3);
    for key in &live {
        assert!(store.load(key).await.expect("load").is_some());
    }
}

/// The shared driver: the sweeper's hook and `session_swept_total` hear of
/// every expired record it deleted.
#[test]
fn sweeper_reports_what_it_deleted() {
    session_core::conformance::observe::run(|capture| async move {
        let store = fresh_store().await;
        session_core::conformance::observe::sweeper_reports_what_it_deleted(
            store,
            |store| store.spawn_sweeper(Duration::from_millis(20), 2),
            capture,
        )
        .await;
    });
}
