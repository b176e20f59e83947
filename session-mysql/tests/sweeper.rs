//! The sweeper against a real server: a million expired rows swept under
//! live load with no deadlock and no failed request, and the sweeper
//! outliving a server that goes away.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{OwnMariaDb, fresh_store, pool_on, row_count, store_in_fresh_database, table};
use session_core::conformance::store::{new_key, new_record, record_expiring_in};
use session_core::record::{now, to_unix_ms};
use session_core::{SaveOutcome, SessionStore, StoreKey};
use session_mysql::MySqlStore;
use session_mysql::sqlx::{self, AssertSqlSafe};

const EXPIRED: u64 = 1_000_000;
const LIVE: usize = 200;
const TASKS: usize = 8;
const BATCH: u32 = 1_000;

/// `0..10` as a derived table, for multiplying rows without a sequence
/// engine (MySQL 8 has none; recursive CTEs stop at 1000 levels there).
const DIGITS: &str = "(SELECT 0 AS n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
     UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 \
     UNION ALL SELECT 8 UNION ALL SELECT 9)";

/// Inserts `EXPIRED` expired rows, 100 000 per `INSERT .. SELECT`.
async fn insert_expired(store: &MySqlStore) {
    let past = to_unix_ms(now()) - 3_600_000;
    let digits: Vec<String> = (0..5).map(|i| format!("{DIGITS} d{i}")).collect();
    let statement = format!(
        "INSERT INTO {} (store_key, format, version, data, principal, principal_hash, \
            created_at_ms, last_access_ms, idle_deadline_ms, absolute_deadline_ms, \
            idle_timeout_ms, persistent, expires_at_ms) \
         SELECT CONCAT('sweep-', LPAD(? + d0.n + 10 * d1.n + 100 * d2.n + 1000 * d3.n \
                + 10000 * d4.n, 37, '0')), \
            1, 0, '{{}}', NULL, NULL, ?, ?, ?, ?, 1000, FALSE, ? - d0.n \
         FROM {}",
        table(store),
        digits.join(" CROSS JOIN ")
    );
    for chunk in 0..EXPIRED / 100_000 {
        sqlx::query(AssertSqlSafe(statement.as_str()))
            .bind(chunk * 100_000)
            .bind(past)
            .bind(past)
            .bind(past)
            .bind(past)
            .bind(past)
            .execute(store.pool())
            .await
            .unwrap();
    }
}

/// What the load saw in one phase.
#[derive(Default)]
struct Phase {
    loads_us: Vec<u64>,
    errors: Vec<String>,
    saves: u64,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at]
}

/// `TASKS` tasks call the store directly in a loop: a `load` of a live
/// session, and in one call of four a compare-and-set `save` after it,
/// until `stop`.
async fn run_load(store: &MySqlStore, keys: &Arc<Vec<StoreKey>>, stop: Arc<AtomicBool>) -> Phase {
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (store, keys, stop) = (store.clone(), keys.clone(), stop.clone());
            tokio::spawn(async move {
                let mut phase = Phase::default();
                let mut i = task;
                while !stop.load(Ordering::Relaxed) {
                    let key = &keys[i % keys.len()];
                    i += TASKS + 1;
                    let started = Instant::now();
                    match store.load(key).await {
                        Ok(Some(record)) => {
                            phase.loads_us.push(started.elapsed().as_micros() as u64);
                            if i % 4 == 0 {
                                let version = record.version;
                                let mut next = record;
                                next.version += 1;
                                match store.save(key, &next, version).await {
                                    Ok(SaveOutcome::Saved | SaveOutcome::Conflict) => {
                                        phase.saves += 1;
                                    }
                                    Ok(SaveOutcome::Gone) => {
                                        phase.errors.push("a live session was gone".into());
                                    }
                                    Err(e) => phase.errors.push(format!("save: {e:?}")),
                                }
                            }
                        }
                        Ok(None) => phase.errors.push("a live session did not load".into()),
                        Err(e) => phase.errors.push(format!("load: {e:?}")),
                    }
                }
                phase
            })
        })
        .collect();
    let mut all = Phase::default();
    for task in tasks {
        let phase = task.await.unwrap();
        all.loads_us.extend(phase.loads_us);
        all.errors.extend(phase.errors);
        all.saves += phase.saves;
    }
    all.loads_us.sort_unstable();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_a_million_expired_rows_under_live_load() {
    let store = fresh_store().await;
    let started = Instant::now();
    insert_expired(&store).await;
    let inserted_in = started.elapsed();
    let mut keys = Vec::new();
    for _ in 0..LIVE {
        let key = new_key();
        assert!(store.create(&key, &new_record()).await.unwrap());
        keys.push(key);
    }
    let keys = Arc::new(keys);
    assert_eq!(row_count(&store).await, EXPIRED as i64 + LIVE as i64);

    // Baseline: the load alone.
    let stop = Arc::new(AtomicBool::new(false));
    let baseline = {
        let (store, keys, stop) = (store.clone(), keys.clone(), stop.clone());
        tokio::spawn(async move { run_load(&store, &keys, stop).await })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let before = baseline.await.unwrap();

    // The same load while the sweeper deletes the million rows.
    let stop = Arc::new(AtomicBool::new(false));
    let during = {
        let (store, keys, stop) = (store.clone(), keys.clone(), stop.clone());
        tokio::spawn(async move { run_load(&store, &keys, stop).await })
    };
    let sweep_started = Instant::now();
    let sweeper = store.spawn_sweeper(Duration::from_secs(3600), BATCH);
    let deadline = Instant::now() + Duration::from_secs(150);
    while sweeper.deleted() < EXPIRED {
        assert!(
            Instant::now() < deadline,
            "the sweep took over 150 s: {} of {EXPIRED} deleted, {} failures",
            sweeper.deleted(),
            sweeper.failures()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let swept_in = sweep_started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let during = during.await.unwrap();

    println!(
        "{EXPIRED} expired rows inserted in {:.1} s; swept in {:.1} s ({BATCH} per batch) \
         beside {TASKS} tasks loading {LIVE} live sessions (1 save per 4 loads)",
        inserted_in.as_secs_f64(),
        swept_in.as_secs_f64()
    );
    for (name, phase) in [("before", &before), ("during", &during)] {
        println!(
            "loads {name} the sweep: {} loads, {} saves, p50 {} us, p99 {} us, errors {}",
            phase.loads_us.len(),
            phase.saves,
            percentile(&phase.loads_us, 0.50),
            percentile(&phase.loads_us, 0.99),
            phase.errors.len()
        );
    }
    // No deadlock (error 1213), lock wait timeout or other failure, on
    // either side: the sweeper counts its failed batches, the load its
    // failed calls.
    assert_eq!(sweeper.failures(), 0, "the sweeper had failed batches");
    assert!(
        before.errors.is_empty(),
        "{:?}",
        &before.errors[..before.errors.len().min(5)]
    );
    assert!(
        during.errors.is_empty(),
        "{:?}",
        &during.errors[..during.errors.len().min(5)]
    );
    assert!(!during.loads_us.is_empty(), "no load ran during the sweep");
    assert_eq!(sweeper.deleted(), EXPIRED);
    assert_eq!(row_count(&store).await, LIVE as i64, "every live row stays");
    sweeper.stop().await;
}

/// Expired rows go, live ones stay, and `delete_expired` counts what went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_expired_batches_delete_only_expired_rows() {
    let store = fresh_store().await;
    for _ in 0..25 {
        let mut dead = new_record();
        dead.idle_deadline = now() - session_core::time::Duration::seconds(1);
        assert!(store.create(&new_key(), &dead).await.unwrap());
    }
    let live = new_key();
    assert!(
        store
            .create(&live, &record_expiring_in(Duration::from_secs(60)))
            .await
            .unwrap()
    );
    assert_eq!(store.delete_expired_batch(10).await.unwrap(), 10);
    assert_eq!(store.delete_expired().await.unwrap(), 15);
    assert_eq!(row_count(&store).await, 1);
    assert!(store.load(&live).await.unwrap().is_some());
}

/// The sweeper keeps going while the server is down (failures counted,
/// retried with backoff) and sweeps again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeper_survives_the_server_going_away() {
    let server = Arc::new(OwnMariaDb::start(&[], &[]));
    let pool = pool_on(&server.url(), Duration::from_secs(1)).await;
    let store = store_in_fresh_database(pool).await;
    let sweeper = store.spawn_sweeper(Duration::from_millis(50), 100);
    tokio::task::spawn_blocking({
        let server = server.clone();
        move || server.stop()
    })
    .await
    .unwrap();
    let failed_at = Instant::now();
    while sweeper.failures() < 2 {
        assert!(
            failed_at.elapsed() < Duration::from_secs(20),
            "no failure seen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!sweeper.is_finished(), "the sweeper ended on an error");
    tokio::task::spawn_blocking({
        let server = server.clone();
        move || server.start_again()
    })
    .await
    .unwrap();
    let mut dead = new_record();
    dead.idle_deadline = now() - session_core::time::Duration::seconds(1);
    let deleted = Arc::new(AtomicU64::new(0));
    let back = Instant::now();
    loop {
        // The first calls after the restart may meet closed connections.
        if store.create(&new_key(), &dead).await.is_ok() {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "the store did not recover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while sweeper.deleted() == 0 {
        assert!(
            back.elapsed() < Duration::from_secs(90),
            "nothing swept after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    deleted.store(sweeper.deleted(), Ordering::Relaxed);
    assert!(deleted.load(Ordering::Relaxed) >= 1);
    assert!(!sweeper.is_finished());
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
