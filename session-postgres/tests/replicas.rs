//! Streaming replicas and replica reads: the conformance suite through a
//! store that reads from the shared test database's replicas
//! (`DATABASE_REPLICAS`), and replay paused on a replica of the test's own.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::{OwnPostgres, database_replicas, database_url, pool, pool_on, schema_name, url_on};
use session_core::conformance::http::{count, floor_of, read, send};
use session_core::{SessionLayer, SessionStore};
use session_postgres::sqlx::{self, PgPool};
use session_postgres::{PostgresStore, ReadFrom};

/// A lazily connected pool on `url`, as the store's read pools are.
fn lazy_pool(url: &str) -> PgPool {
    PostgresStore::pool_options()
        .max_connections(16)
        .connect_lazy(url)
        .unwrap()
}

/// A migrated store in a fresh schema on the shared database, reading from
/// its replicas (primary only, said on stderr, when there are none outside CI).
async fn replicated_store() -> PostgresStore {
    let url = database_url();
    let mut builder = PostgresStore::builder(pool().await).schema(schema_name());
    if let Some(replicas) = database_replicas() {
        builder = builder
            .replicas(
                replicas
                    .iter()
                    .map(|address| lazy_pool(&url_on(&url, address))),
            )
            .read_from(ReadFrom::Replicas);
    }
    let store = builder.build().unwrap();
    store.migrate().await.unwrap();
    store
}

session_core::conformance_tests!(prefix = replicated, replicated_store());

/// The two app instances of a test, sharing one store.
fn instance(store: &Arc<PostgresStore>) -> Router {
    let store: Arc<dyn SessionStore> = store.clone();
    Router::new()
        .route("/count", get(count))
        .route("/read", get(read))
        .layer(SessionLayer::from_arc(store).secure(false))
}

/// Waits until `replica` has replayed everything `primary` has written so far.
async fn caught_up(primary: &PgPool, replica: &PgPool) {
    // The insert location: with asynchronous commit (the test servers'
    // setting) the commits may not be written out yet.
    let target: String = sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text")
        .fetch_one(primary)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let done: bool = sqlx::query_scalar("SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn")
            .bind(&target)
            .fetch_one(replica)
            .await
            .unwrap();
        if done {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replica did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Replay paused on the replica: a client that just wrote reads its write
/// through the other instance every time (from the primary, since the
/// replica is below its floor), while clients that have seen nothing newer
/// than the replica keep being served by it. The share of loads the
/// replica served is measured and printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_paused_never_hides_a_clients_write_and_others_stay_on_the_replica() {
    let primary = OwnPostgres::start();
    let replica = OwnPostgres::replica_of(&primary);
    let primary_pool = pool_on(&primary.url(), Duration::from_secs(5)).await;
    let replica_pool = lazy_pool(&replica.url());
    let store = PostgresStore::builder(primary_pool.clone())
        .schema(schema_name())
        .replicas([replica_pool.clone()])
        .read_from(ReadFrom::Replicas)
        .build()
        .unwrap();
    store.migrate().await.unwrap();
    let store = Arc::new(store);
    let (a, b) = (instance(&store), instance(&store));

    // Ten readers, each with a session at count 1, and the writer.
    let mut readers = Vec::new();
    for _ in 0..10 {
        readers.push(send(&a, "/count", None).await.cookie_pair().unwrap());
    }
    let mut writer = send(&a, "/count", None).await.cookie_pair().unwrap();
    caught_up(&primary_pool, &replica_pool).await;
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&replica_pool)
        .await
        .unwrap();

    let before = store.replica_reads();
    let (mut writer_reads, mut reader_reads) = (0u64, 0u64);
    for round in 2..=21u64 {
        let wrote = send(&a, "/count", Some(writer.as_bytes())).await;
        assert_eq!(
            wrote.body,
            round.to_string(),
            "the writer counts on its own writes"
        );
        writer = wrote.cookie_pair().expect("each write moves the floor");
        assert_eq!(floor_of(&writer), Some(round - 1));
        for app in [&b, &a] {
            let seen = send(app, "/read", Some(writer.as_bytes())).await;
            assert!(
                seen.is_success_with(&round.to_string()),
                "round {round}: {seen:?}"
            );
            writer_reads += 1;
        }
        for reader in &readers {
            let seen = send(&b, "/read", Some(reader.as_bytes())).await;
            assert!(seen.is_success_with("1"), "a reader's session: {seen:?}");
            reader_reads += 1;
        }
    }
    let after = store.replica_reads();
    let (by_replica, by_primary) = (
        after.replica - before.replica,
        after.primary - before.primary,
    );
    // The replica is below the writer's floor from its second write on:
    // its reads all go to the primary; the readers' all stay on the replica.
    assert!(
        by_primary >= writer_reads,
        "{by_primary} primary loads, {writer_reads} writer reads"
    );
    assert!(
        by_replica >= reader_reads,
        "{by_replica} replica loads, {reader_reads} reader reads"
    );
    let total = by_replica + by_primary;
    println!(
        "replay paused: {by_replica} of {total} loads served by the replica ({:.0}%), \
         {by_primary} by the primary; the writer's {writer_reads} reads all saw its writes",
        100.0 * by_replica as f64 / total as f64
    );
    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&replica_pool)
        .await
        .unwrap();
}
