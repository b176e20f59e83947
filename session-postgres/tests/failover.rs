//! Failover under load: 20 users count in their sessions while the primary
//! gets SIGKILL and a test step promotes its streaming replica
//! (`pg_ctl promote`). The store was given the replica as a candidate for
//! primary; it finds the promoted server by itself (`pg_is_in_recovery()`).
//!
//! Asserts what the shared driver ([`session_core::conformance::faults`])
//! checks: no task panics; no request waits past 2 x the op timeout + 1 s;
//! every failure is a `503` with `Retry-After`, in flight during the fault
//! window (from the kill until recovery is observed); a request succeeds
//! within 2 s of the promotion. With synchronous commit (the replica a
//! synchronous standby, `synchronous_commit=on` on the store's
//! connections) every acknowledged write is still there afterwards; with
//! asynchronous replication the acknowledged writes lost are counted and
//! reported. The expired-row sweeper keeps running, on the new primary.
//!
//! Each test starts its own servers and never touches another.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{OwnPostgres, eventually, schema_name};
use session_core::conformance::faults::{self, Durability, Plan};
use session_core::conformance::store::record_expiring_in;
use session_core::{Id, SessionStore};
use session_postgres::PostgresStore;
use session_postgres::sqlx::postgres::PgConnectOptions;
use session_postgres::sqlx::{self, AssertSqlSafe, PgPool};

/// A pool as an application has it, on `options`.
async fn pool(options: PgConnectOptions, lazy: bool) -> PgPool {
    let pool = PostgresStore::pool_options()
        .max_connections(32)
        .acquire_timeout(Duration::from_secs(1));
    if lazy {
        pool.connect_lazy_with(options)
    } else {
        pool.connect_with(options).await.unwrap()
    }
}

async fn wait_for_sync_standby(primary: &PgPool) {
    let synced = eventually(Duration::from_secs(10), || async {
        let state: Option<String> =
            sqlx::query_scalar("SELECT sync_state FROM pg_stat_replication LIMIT 1")
                .fetch_optional(primary)
                .await
                .unwrap();
        state.as_deref() == Some("sync")
    })
    .await;
    assert!(synced, "the replica did not become a synchronous standby");
}

/// Rows left of `keys` in the store's table, on the current primary.
async fn rows_of(store: &PostgresStore, keys: &[String]) -> i64 {
    let query = format!(
        "SELECT count(*) FROM \"{}\".\"{}\" WHERE key = ANY($1)",
        store.schema(),
        store.table()
    );
    sqlx::query_scalar(AssertSqlSafe(query))
        .bind(keys)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// The whole failover; `synchronous` picks the durability.
async fn failover(synchronous: bool) -> faults::Report {
    let primary = Arc::new(OwnPostgres::start());
    let replica = Arc::new(OwnPostgres::replica_of(&primary));
    let mut connect: PgConnectOptions = primary.url().parse().unwrap();
    if synchronous {
        let admin = pool(connect.clone(), false).await;
        sqlx::query("ALTER SYSTEM SET synchronous_standby_names = '*'")
            .execute(&admin)
            .await
            .unwrap();
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&admin)
            .await
            .unwrap();
        wait_for_sync_standby(&admin).await;
        admin.close().await;
        // The session writes wait for the standby's flush (the servers'
        // own default is `off`).
        connect = connect.options([("synchronous_commit", "on")]);
    }
    let primary_pool = pool(connect.clone(), false).await;
    let candidate = pool(connect.clone().port(replica.port()), true).await;
    let store = PostgresStore::builder(primary_pool)
        .schema(schema_name())
        .candidates([candidate])
        .build()
        .unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.primary_address(), primary.address());
    let _sweeper = store.spawn_sweeper(Duration::from_millis(200), 100);
    let app = faults::app(store.clone());

    let name = if synchronous {
        "postgres failover, synchronous commit"
    } else {
        "postgres failover, asynchronous replica"
    };
    let plan = Plan {
        durability: if synchronous {
            Durability::AllKept
        } else {
            Durability::CountLost
        },
        ..Plan::default()
    };
    let (killed, promoted) = (primary.clone(), replica.clone());
    let mut promotion = Duration::ZERO;
    let report = faults::under_load_with(&app, name, plan, || async {
        let start = Instant::now();
        tokio::task::spawn_blocking(move || killed.kill())
            .await
            .unwrap();
        // The operator's (or a tool's) reaction: a moment later, promote.
        tokio::time::sleep(Duration::from_millis(300)).await;
        tokio::task::spawn_blocking(move || promoted.promote())
            .await
            .unwrap();
        promotion = start.elapsed();
    })
    .await;
    assert_eq!(
        store.primary_address(),
        replica.address(),
        "writes follow the promotion"
    );
    println!(
        "{name}: SIGKILL to first success {:?} (promotion done {promotion:?} after the kill); \
         {} of {} requests failed (503), longest {:?}; {} acknowledged increments lost",
        report.fault_to_success(),
        report.failed,
        report.requests,
        report.longest,
        report.lost
    );
    if synchronous {
        assert_eq!(report.lost, 0, "{name}: acknowledged writes lost");
    }

    // The sweeper follows the primary: rows expiring now go from the new one.
    let mut keys = Vec::new();
    for _ in 0..10 {
        let key = Id::random().unwrap().store_key();
        let record = record_expiring_in(Duration::from_millis(300));
        assert!(store.create(&key, &record).await.unwrap());
        keys.push(key.as_str().to_owned());
    }
    assert_eq!(rows_of(&store, &keys).await, 10);
    let swept = eventually(Duration::from_secs(10), || async {
        rows_of(&store, &keys).await == 0
    })
    .await;
    assert!(
        swept,
        "the sweeper did not delete expired rows on the new primary"
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_failover_with_synchronous_commit_loses_no_acknowledged_write() {
    failover(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_failover_to_an_asynchronous_replica_reports_the_loss() {
    failover(false).await;
}
