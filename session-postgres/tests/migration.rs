//! Upgrading a table an earlier version of the crate created and filled:
//! migration 2 (`sweep_at` and its index instead of the index on
//! `expires_at`) on a table that migration 1 made, with live sessions in it.

mod common;

use common::{pool, schema_name};
use serde_json::json;
use session_core::conformance::store::{new_key, new_record};
use session_core::record::{now, to_unix_ms};
use session_core::{Record, SaveOutcome, SessionStore, StoreKey};
use session_postgres::PostgresStore;
use session_postgres::sqlx::{self, AssertSqlSafe, PgPool};

/// What `migrate()` of the first version left: the migrations table with
/// version 1 recorded, and migration 1's table, verbatim (an applied
/// migration is never edited, so this is the table every such install has).
fn version_1(schema: &str, table: &str) -> String {
    let t = format!("\"{schema}\".\"{table}\"");
    format!(
        "CREATE SCHEMA \"{schema}\"; \
         CREATE TABLE \"{schema}\".\"session_store_migrations\" ( \
            table_name text NOT NULL, \
            version integer NOT NULL, \
            description text NOT NULL, \
            applied_at timestamptz NOT NULL DEFAULT now(), \
            PRIMARY KEY (table_name, version) \
         ); \
         CREATE TABLE {t} ( \
            key text COLLATE \"C\" PRIMARY KEY, \
            format smallint NOT NULL, \
            version bigint NOT NULL, \
            data json NOT NULL, \
            principal text, \
            created_at timestamptz NOT NULL, \
            last_access timestamptz NOT NULL, \
            idle_deadline timestamptz NOT NULL, \
            absolute_deadline timestamptz NOT NULL, \
            idle_timeout_ms bigint NOT NULL, \
            persistent boolean NOT NULL, \
            expires_at timestamptz NOT NULL \
         ); \
         CREATE INDEX \"{table}_expires_at_idx\" ON {t} (expires_at); \
         CREATE INDEX \"{table}_principal_idx\" ON {t} (principal) \
            WHERE principal IS NOT NULL; \
         INSERT INTO \"{schema}\".\"session_store_migrations\" (table_name, version, description) \
            VALUES ('{table}', 1, 'create the session table');"
    )
}

/// Inserts `record` the way the first version's `create` did (instants as
/// Unix milliseconds through `to_timestamp`, data as text cast to `json`),
/// naming only the columns migration 1 made.
async fn insert_as_version_1(
    pool: &PgPool,
    store: &PostgresStore,
    key: &StoreKey,
    record: &Record,
) {
    let t = format!("\"{}\".\"{}\"", store.schema(), store.table());
    let ttl_ms = i64::try_from(record.ttl(now()).as_millis()).expect("ttl");
    let ts = |n: u32| format!("to_timestamp(${n}::float8 / 1000)");
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {t} (key, format, version, data, principal, created_at, last_access, \
            idle_deadline, absolute_deadline, idle_timeout_ms, persistent, expires_at) \
         VALUES ($1, 1, $2, $3::json, $4, {}, {}, {}, {}, $9, $10, \
            now() + $11::int8 * interval '1 millisecond')",
        ts(5),
        ts(6),
        ts(7),
        ts(8),
    )))
    .bind(key.as_str())
    .bind(i64::try_from(record.version).expect("version"))
    .bind(serde_json::to_string(&record.data).expect("data"))
    .bind(record.principal.as_deref())
    .bind(to_unix_ms(record.created_at))
    .bind(to_unix_ms(record.last_access))
    .bind(to_unix_ms(record.idle_deadline))
    .bind(to_unix_ms(record.absolute_deadline))
    .bind(i64::try_from(record.idle_timeout.as_millis()).expect("timeout"))
    .bind(record.persistent)
    .bind(ttl_ms)
    .execute(pool)
    .await
    .expect("insert as version 1 did");
}

/// A record whose deadline passed before it was written.
fn expired_record() -> Record {
    let mut record = new_record();
    record.idle_deadline = now() - session_core::time::Duration::seconds(1);
    record
}

/// `sweep_at` of the row of `key` as text (`-infinity` stays readable).
async fn sweep_at_and_expiry(store: &PostgresStore, key: &StoreKey) -> (String, String) {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT sweep_at::text, expires_at::text FROM \"{}\".\"{}\" WHERE key = $1",
        store.schema(),
        store.table()
    )))
    .bind(key.as_str())
    .fetch_one(store.pool())
    .await
    .expect("sweep_at")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_a_version_1_table_keeps_its_sessions() {
    let pool = pool().await;
    let schema = schema_name();
    let store = PostgresStore::builder(pool.clone())
        .schema(schema.clone())
        .build()
        .expect("valid names");
    sqlx::raw_sql(AssertSqlSafe(version_1(&schema, store.table())))
        .execute(&pool)
        .await
        .expect("version 1 table");

    // Sessions an instance of the first version wrote.
    let (ada, plain, expired) = (new_key(), new_key(), new_key());
    let mut ada_record = new_record();
    ada_record.principal = Some("ada".into());
    ada_record.persistent = true;
    ada_record.version = 7;
    ada_record
        .data
        .insert("awkward".into(), json!("a\u{0000}b \u{1F980} 0.1"));
    ada_record.data.insert("float".into(), json!(0.1));
    let plain_record = new_record();
    insert_as_version_1(&pool, &store, &ada, &ada_record).await;
    insert_as_version_1(&pool, &store, &plain, &plain_record).await;
    insert_as_version_1(&pool, &store, &expired, &expired_record()).await;

    store.migrate().await.expect("migrate to version 2");
    store.migrate().await.expect("migrate again: nothing to do");

    let applied: Vec<i32> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT version FROM \"{schema}\".session_store_migrations \
         WHERE table_name = $1 ORDER BY version"
    )))
    .bind(store.table())
    .fetch_all(&pool)
    .await
    .expect("migrations");
    assert_eq!(applied, vec![1, 2]);
    let mut indexes: Vec<String> =
        sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE schemaname = $1")
            .bind(&schema)
            .fetch_all(&pool)
            .await
            .expect("indexes");
    indexes.sort();
    assert_eq!(
        indexes,
        [
            "session_store_migrations_pkey",
            "sessions_pkey",
            "sessions_principal_idx",
            "sessions_sweep_at_idx",
        ],
        "the index on expires_at is replaced by the one on sweep_at"
    );

    // Live sessions read back exactly; the expired one stays absent.
    assert_eq!(
        store.load(&ada).await.expect("load"),
        Some(ada_record.clone())
    );
    assert_eq!(
        store.load(&plain).await.expect("load"),
        Some(plain_record.clone())
    );
    assert_eq!(store.load(&expired).await.expect("load"), None);
    let listed = store.list_by_principal("ada").await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, ada);

    // Live rows got their exact bound, the expired one the catch-all.
    let (sweep_at, expires_at) = sweep_at_and_expiry(&store, &ada).await;
    assert_eq!(sweep_at, expires_at);
    assert_eq!(sweep_at_and_expiry(&store, &expired).await.0, "-infinity");

    // And they take writes as before.
    let mut next = ada_record.clone();
    next.version = 8;
    next.data.insert("n".into(), json!(1));
    assert_eq!(
        store.save(&ada, &next, 7).await.expect("save"),
        SaveOutcome::Saved
    );
    assert_eq!(store.load(&ada).await.expect("load"), Some(next));
    assert_eq!(
        store.save(&ada, &ada_record, 7).await.expect("stale save"),
        SaveOutcome::Conflict
    );
    let deadline = now() + session_core::time::Duration::hours(30);
    assert!(
        store
            .touch(&plain, plain_record.version, deadline)
            .await
            .expect("touch")
    );

    // A row an instance of the first version writes after the migration
    // (a rolling upgrade) names no `sweep_at`: the default lets the
    // sweeper find it all the same.
    let late = new_key();
    insert_as_version_1(&pool, &store, &late, &expired_record()).await;
    assert_eq!(sweep_at_and_expiry(&store, &late).await.0, "-infinity");
    assert_eq!(store.delete_expired().await.expect("sweep"), 2);
    assert_eq!(common::row_count(&store).await.expect("count"), 2);
    assert!(store.load(&ada).await.expect("load").is_some());
    assert!(store.load(&plain).await.expect("load").is_some());
}
