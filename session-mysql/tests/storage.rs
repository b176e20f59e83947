//! What the rows hold, against a real server: big sessions round-trip byte
//! for byte, the server's time zone changes no expiry, a garbage row reads
//! as absent, no raw session id reaches a row, and the migrations.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{OwnMariaDb, fresh_store, pool, pool_on, row_count, store_in_fresh_database, table};
use serde_json::json;
use session_core::conformance::store::{new_key, new_record};
use session_core::record::{now, to_unix_ms};
use session_core::time;
use session_core::{Id, SessionLayer, SessionStore};
use session_mysql::sqlx::{self, AssertSqlSafe, Row as _};
use session_mysql::{MySqlStore, NameKind};

/// A 1 MiB session (the layer's `max_session_size` raised above it) is
/// written through the layer and read back byte for byte: no 64 KiB `BLOB`
/// truncating it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_session_round_trips_byte_for_byte() {
    use axum::Router;
    use axum::routing::get;
    use session_core::Session;
    use session_core::conformance::http::send;

    const MIB: usize = 1 << 20;
    // Every byte value a JSON string may carry, repeated, so that a
    // truncation or a charset conversion anywhere would show.
    let blob: String = (0..MIB)
        .map(|i| char::from(b' ' + (i % 94) as u8))
        .chain("é€😀".chars())
        .collect();
    let store = fresh_store().await;
    let app = {
        let (blob, expected) = (blob.clone(), blob.clone());
        Router::new()
            .route(
                "/put",
                get(move |session: Session| {
                    let blob = blob.clone();
                    async move {
                        session.insert("blob", blob).await.unwrap();
                        "ok"
                    }
                }),
            )
            .route(
                "/get",
                // Compared in the handler: the test client caps bodies below 1 MiB.
                get(move |session: Session| {
                    let blob = expected.clone();
                    async move {
                        match session.get::<String>("blob").await.unwrap() {
                            Some(got) if got == blob => "same".to_owned(),
                            Some(got) => format!("differs: {} bytes", got.len()),
                            None => "missing".to_owned(),
                        }
                    }
                }),
            )
            .layer(
                SessionLayer::new(store.clone())
                    .secure(false)
                    .max_session_size(2 * MIB),
            )
    };
    let put = send(&app, "/put", None).await;
    assert_eq!(put.status, 200, "{}", put.body);
    let cookie = put.cookie_pair().unwrap();
    let got = send(&app, "/get", Some(cookie.as_bytes())).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, "same", "the 1 MiB value came back changed");

    // And in the row itself: the whole JSON document, nothing cut.
    let stored: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT MAX(LENGTH(data)) FROM {}",
        table(&store)
    )))
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(stored as usize > MIB, "stored {stored} bytes");
}

/// The rows' instants are the record's own, in Unix milliseconds, however
/// the server's (and the connection's) time zone is set: a server at
/// `+05:30` or at `SYSTEM` (with the process zone `Asia/Kolkata`) gives the
/// same `expires_at_ms`, the record loads while live and is gone once
/// expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_time_zone_changes_no_expiry() {
    for (zone, env) in [("+05:30", vec![]), ("SYSTEM", vec![("TZ", "Asia/Kolkata")])] {
        let server = OwnMariaDb::start(&[&format!("--default-time-zone={zone}")], &env);
        // A pool that keeps the server's time zone on its connections (sqlx
        // sets `+00:00` unless told not to), as another client would.
        let options: session_mysql::sqlx::mysql::MySqlConnectOptions =
            server.url().parse().unwrap();
        let pool = MySqlStore::pool_options()
            .connect_with(options.timezone(None))
            .await
            .unwrap();
        let (global, session): (String, String) =
            sqlx::query_as("SELECT @@global.time_zone, @@session.time_zone")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!((global.as_str(), session.as_str()), (zone, zone));
        let store = store_in_fresh_database(pool).await;

        let key = new_key();
        let mut record = new_record();
        let start = now();
        record.idle_deadline = start + time::Duration::milliseconds(1500);
        assert!(store.create(&key, &record).await.unwrap());
        let expires: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT expires_at_ms FROM {} WHERE store_key = ?",
            table(&store)
        )))
        .bind(key.as_str())
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!(expires, to_unix_ms(record.expires_at()), "{zone}");
        assert_eq!(
            store.load(&key).await.unwrap(),
            Some(record.clone()),
            "{zone}"
        );
        tokio::time::sleep(Duration::from_millis(1600)).await;
        assert_eq!(store.load(&key).await.unwrap(), None, "{zone}: expired");
    }
}

/// Rows whose columns hold what no record has read as absent (and are
/// logged), never an error and never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_rows_read_as_absent() {
    let store = fresh_store().await;
    let t = table(&store);
    let cases = [
        ("data", "x'00ff7b6e6f74206a736f6e'"),
        ("data", "'[1, 2, 3]'"),
        ("data", "''"),
        ("format", "99"),
        ("version", "-5"),
        ("idle_timeout_ms", "-1"),
        ("created_at_ms", "9223372036854775807"),
    ];
    for (column, value) in cases {
        let key = new_key();
        assert!(store.create(&key, &new_record()).await.unwrap());
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {t} SET {column} = {value} WHERE store_key = ?"
        )))
        .bind(key.as_str())
        .execute(store.pool())
        .await
        .unwrap();
        assert_eq!(
            store.load(&key).await.unwrap(),
            None,
            "{column} = {value} must read as absent"
        );
    }
}

/// Rows are keyed by the hash of the id: neither the raw id nor its bytes
/// appear in any column of any row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_raw_id_in_any_row() {
    let store = fresh_store().await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let id = Id::random().unwrap();
        let key = id.store_key();
        let mut record = new_record();
        record.data.insert("n".into(), json!(i));
        record.principal = Some(format!("user-{i}"));
        assert!(store.create(&key, &record).await.unwrap());
        ids.push(id);
    }
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT CONCAT_WS('|', store_key, format, version, CAST(data AS CHAR), \
            principal, HEX(principal_hash), created_at_ms, last_access_ms, \
            idle_deadline_ms, absolute_deadline_ms, idle_timeout_ms, persistent, \
            expires_at_ms) AS whole FROM {}",
        table(&store)
    )))
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 20);
    let dump: String = rows
        .iter()
        .map(|r| r.try_get::<String, _>("whole").unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    for id in &ids {
        let raw = id.encode();
        assert!(!dump.contains(&raw), "a raw id is in the table");
        assert!(dump.contains(id.store_key().as_str()));
    }
}

/// `migrate` twice, and from many instances at once, leaves one table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent_and_safe_in_parallel() {
    let pool = pool().await;
    let database = common::database_name();
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let store = MySqlStore::builder(pool.clone())
                .database(database.clone())
                .build()
                .unwrap();
            tokio::spawn(async move { store.migrate().await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let store = MySqlStore::builder(pool)
        .database(database)
        .build()
        .unwrap();
    store.migrate().await.unwrap();
    assert_eq!(row_count(&store).await, 0);
    let key = new_key();
    assert!(store.create(&key, &new_record()).await.unwrap());
    assert_eq!(row_count(&store).await, 1);
}

/// A store whose table was never migrated says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmigrated_table_says_run_migrate() {
    let store = MySqlStore::builder(pool().await)
        .database(common::database_name())
        .build()
        .unwrap();
    let error = store.load(&new_key()).await.unwrap_err();
    let source = std::error::Error::source(&error).unwrap().to_string();
    assert!(source.contains("run MySqlStore::migrate"), "{source}");
}

#[tokio::test]
async fn bad_names_are_refused() {
    let pool = session_mysql::sqlx::MySqlPool::connect_lazy("mysql://u@localhost/db").unwrap();
    let refused = MySqlStore::builder(pool).table("a`b").build().unwrap_err();
    assert!(matches!(
        refused,
        session_mysql::Error::InvalidIdentifier {
            kind: NameKind::Table,
            ..
        }
    ));
    let _ = pool_on; // used by other test binaries
}
