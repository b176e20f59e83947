//! What lands in the database: no raw session ids, exact round trips, the
//! database clock deciding liveness, undecodable rows, migrations, names.

mod common;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::{fresh_store, pool, schema_name};
use http::StatusCode;
use serde_json::json;
use session_core::conformance::http::{id_of, send};
use session_core::conformance::store::{new_key, new_record};
use session_core::{Session, SessionError, SessionLayer, SessionStore, StoreError};
use session_postgres::sqlx::{self, AssertSqlSafe};
use session_postgres::{Error, IdentifierKind, IdentifierProblem, PostgresStore};

async fn login(session: Session) -> Result<&'static str, SessionError> {
    session.insert("n", 1).await?;
    session.set_principal("ada").await?;
    session.cycle_id().await?;
    Ok("in")
}

async fn count(session: Session) -> Result<String, SessionError> {
    let n: u64 = session
        .update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(n.to_string())
}

/// Runs `sql` against the store's table (`{t}` stands for it).
async fn exec(store: &PostgresStore, sql: &str) {
    let t = format!("\"{}\".\"{}\"", store.schema(), store.table());
    sqlx::query(AssertSqlSafe(sql.replace("{t}", &t)))
        .execute(store.pool())
        .await
        .expect("test SQL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stored_row_contains_a_raw_session_id() {
    let store = fresh_store().await;
    let app = Router::new()
        .route("/login", get(login))
        .route("/count", get(count))
        .layer(SessionLayer::new(store.clone()));
    let mut ids = Vec::new();
    for _ in 0..5 {
        let first = send(&app, "/count", None).await;
        let pair = first.cookie_pair().expect("cookie");
        ids.push(id_of(&pair));
        let after_login = send(&app, "/login", Some(pair.as_bytes())).await;
        assert_eq!(after_login.status, StatusCode::OK);
        let pair = after_login.cookie_pair().expect("a new id at login");
        ids.push(id_of(&pair));
        assert_eq!(send(&app, "/count", Some(pair.as_bytes())).await.body, "2");
    }

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
    )
    .bind(store.schema())
    .fetch_all(store.pool())
    .await
    .expect("tables");
    assert!(tables.contains(&store.table().to_owned()), "{tables:?}");
    let mut dumped = Vec::new();
    for table in &tables {
        // Every column of every row, as text.
        let rows: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT row_to_json(t)::text FROM \"{}\".\"{table}\" t",
            store.schema()
        )))
        .fetch_all(store.pool())
        .await
        .expect("dump");
        dumped.extend(rows);
    }
    let session_rows: i64 = common::row_count(&store).await.expect("count");
    assert_eq!(session_rows, 5, "one live row per logged-in session");
    let keys: Vec<String> = ids[1..]
        .iter()
        .step_by(2)
        .map(|id| id.store_key().to_string())
        .collect();
    for key in &keys {
        assert!(
            dumped.iter().any(|row| row.contains(key.as_str())),
            "the row of store key {key} was not found in the dump"
        );
    }
    for id in &ids {
        let raw = id.encode();
        assert!(
            dumped.iter().all(|row| !row.contains(&raw)),
            "a stored row contains a raw session id"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_round_trip_exactly_including_awkward_json() {
    let store = fresh_store().await;
    let key = new_key();
    let mut record = new_record();
    record.principal = Some("ada \u{1F980} \"quoted\"".into());
    record.persistent = true;
    record.version = 41;
    for (k, v) in [
        ("nul", json!("a\u{0000}b")),
        ("unicode", json!("zwölf \u{1F600} \u{2028}")),
        ("float", json!(0.1)),
        ("big", json!(u64::MAX)),
        ("negative", json!(i64::MIN)),
        ("nested", json!({"b": [1, {"c": null}], "a": true})),
        ("", json!("empty key")),
    ] {
        record.data.insert(k.into(), v);
    }
    assert!(store.create(&key, &record).await.expect("create"));
    assert_eq!(store.load(&key).await.expect("load"), Some(record.clone()));

    let mut next = record.clone();
    next.version = 42;
    next.data.insert("more".into(), json!([1.5e300, -0.0]));
    assert_eq!(
        store.save(&key, &next, 41).await.expect("save"),
        session_core::SaveOutcome::Saved
    );
    assert_eq!(store.load(&key).await.expect("load"), Some(next));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_follows_the_database_clock_not_app_instants() {
    let store = fresh_store().await;

    // App-clock deadlines say live; the database says expired: absent.
    let key = new_key();
    assert!(store.create(&key, &new_record()).await.expect("create"));
    exec(
        &store,
        &format!(
            "UPDATE {{t}} SET expires_at = now() - interval '1 second' WHERE key = '{}'",
            key.as_str()
        ),
    )
    .await;
    assert_eq!(store.load(&key).await.expect("load"), None);
    let deadline = session_core::record::now() + session_core::time::Duration::hours(1);
    assert!(!store.touch(&key, 0, deadline).await.expect("touch"));
    assert_eq!(
        store.save(&key, &new_record(), 0).await.expect("save"),
        session_core::SaveOutcome::Gone
    );
    assert!(
        store.create(&key, &new_record()).await.expect("create"),
        "an expired row does not block a create"
    );

    // App-clock deadlines say expired (a server whose clock runs far ahead
    // wrote them); the database says live: present.
    let key = new_key();
    assert!(store.create(&key, &new_record()).await.expect("create"));
    exec(
        &store,
        &format!(
            "UPDATE {{t}} SET idle_deadline = now() - interval '1 day', \
             absolute_deadline = now() - interval '1 day' WHERE key = '{}'",
            key.as_str()
        ),
    )
    .await;
    assert!(store.load(&key).await.expect("load").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_rows_are_absent_not_errors() {
    let store = fresh_store().await;
    let principal = format!("p-{}", new_key().short());
    let mut keys = Vec::new();
    for _ in 0..5 {
        let key = new_key();
        let mut record = new_record();
        record.principal = Some(principal.clone());
        assert!(store.create(&key, &record).await.expect("create"));
        keys.push(key);
    }
    let corruptions = [
        "format = 99",
        "data = '[1, 2]'",
        "version = -1",
        "absolute_deadline = 'infinity'",
    ];
    for (key, set) in keys.iter().zip(corruptions) {
        exec(
            &store,
            &format!("UPDATE {{t}} SET {set} WHERE key = '{}'", key.as_str()),
        )
        .await;
        assert_eq!(store.load(key).await.expect("load"), None, "{set}");
    }
    let listed = store.list_by_principal(&principal).await.expect("list");
    assert_eq!(listed.len(), 1, "only the intact session is listed");
    assert_eq!(listed[0].key, keys[4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent_and_safe_to_run_concurrently() {
    let pool = pool().await;
    let schema = schema_name();
    // Two tables in one schema, each migrated by two instances at once.
    let stores: Vec<PostgresStore> = [
        "web_sessions",
        "api_sessions",
        "web_sessions",
        "api_sessions",
    ]
    .into_iter()
    .map(|table| {
        PostgresStore::builder(pool.clone())
            .schema(schema.clone())
            .table(table)
            .build()
            .expect("valid names")
    })
    .collect();
    let runs: Vec<_> = stores
        .iter()
        .cloned()
        .map(|s| tokio::spawn(async move { s.migrate().await }))
        .collect();
    for run in runs {
        run.await.expect("task").expect("concurrent migrate");
    }
    stores[0].migrate().await.expect("migrate again");
    let applied: Vec<(String, i32)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT table_name, version FROM \"{schema}\".session_store_migrations \
         ORDER BY table_name, version"
    )))
    .fetch_all(&pool)
    .await
    .expect("migrations");
    let expected = vec![
        ("api_sessions".to_owned(), 1),
        ("api_sessions".to_owned(), 2),
        ("web_sessions".to_owned(), 1),
        ("web_sessions".to_owned(), 2),
    ];
    assert_eq!(applied, expected, "each migration recorded once per table");

    let key = new_key();
    assert!(stores[0].create(&key, &new_record()).await.expect("create"));
    assert!(
        stores[2].load(&key).await.expect("load").is_some(),
        "same table"
    );
    assert_eq!(
        stores[1].load(&key).await.expect("load"),
        None,
        "other table"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmigrated_table_is_a_typed_error() {
    let store = PostgresStore::builder(pool().await)
        .schema(schema_name())
        .build()
        .expect("valid names");
    let error = store.load(&new_key()).await.expect_err("no table yet");
    let StoreError::Backend(source) = &error else {
        panic!("expected a backend error, got {error:?}");
    };
    assert!(
        matches!(
            source.downcast_ref::<Error>(),
            Some(Error::MissingTable { .. })
        ),
        "{source:?}"
    );
}

#[tokio::test]
async fn bad_schema_and_table_names_are_refused_with_a_typed_error() {
    let pool =
        sqlx::PgPool::connect_lazy("postgres://unused@127.0.0.1:1/unused").expect("lazy pool");
    let cases = [
        (
            Some("Auth"),
            None,
            IdentifierKind::Schema,
            IdentifierProblem::InvalidCharacter('A'),
        ),
        (
            Some("pg_temp"),
            None,
            IdentifierKind::Schema,
            IdentifierProblem::Reserved,
        ),
        (
            Some(""),
            None,
            IdentifierKind::Schema,
            IdentifierProblem::Empty,
        ),
        (
            None,
            Some("s\"; DROP TABLE x; --"),
            IdentifierKind::Table,
            IdentifierProblem::InvalidCharacter('"'),
        ),
        (
            None,
            Some("9lives"),
            IdentifierKind::Table,
            IdentifierProblem::LeadingDigit,
        ),
        (
            None,
            Some(&*"t".repeat(49)),
            IdentifierKind::Table,
            IdentifierProblem::TooLong,
        ),
    ];
    for (schema, table, kind, problem) in cases {
        let mut builder = PostgresStore::builder(pool.clone());
        if let Some(schema) = schema {
            builder = builder.schema(schema);
        }
        if let Some(table) = table {
            builder = builder.table(table);
        }
        match builder.build() {
            Err(Error::InvalidIdentifier {
                kind: k,
                problem: p,
                name,
            }) => {
                assert_eq!((k, p), (kind, problem), "{name:?}");
                assert_eq!(Some(name.as_str()), schema.or(table));
            }
            other => panic!("{schema:?}.{table:?}: expected InvalidIdentifier, got {other:?}"),
        }
    }
}

/// `sweep_at` and `expires_at` of the row of `key`, and `now()`, as Unix seconds.
async fn sweep_at_and_expiry(
    store: &PostgresStore,
    key: &session_core::StoreKey,
) -> (f64, f64, f64) {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT extract(epoch FROM sweep_at)::float8, extract(epoch FROM expires_at)::float8, \
            extract(epoch FROM now())::float8 \
         FROM \"{}\".\"{}\" WHERE key = $1",
        store.schema(),
        store.table()
    )))
    .bind(key.as_str())
    .fetch_one(store.pool())
    .await
    .expect("sweep_at")
}

/// Updates and HOT updates of the store's table so far (statistics arrive
/// with a delay; this waits until `updates` have been counted).
async fn hot_updates(store: &PostgresStore, updates: i64) -> (i64, i64) {
    let query = || async {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables \
             WHERE schemaname = $1 AND relname = $2",
        )
        .bind(store.schema())
        .bind(store.table())
        .fetch_one(store.pool())
        .await
        .expect("pg_stat_user_tables")
    };
    common::eventually(Duration::from_secs(30), || async {
        query().await.0 >= updates
    })
    .await;
    query().await
}

/// Saves and touches leave every indexed column as it was (so Postgres
/// updates the row in place: a HOT update, no index entry written), while
/// `sweep_at`, which the sweeper's index is on, stays within a few minutes
/// of `expires_at`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_hot_updates_and_keep_sweep_at_close_to_expires_at() {
    let store = fresh_store().await;
    let key = new_key();
    let mut record = new_record();
    assert!(store.create(&key, &record).await.expect("create"));
    let (sweep_at, expires_at, _) = sweep_at_and_expiry(&store, &key).await;
    assert!(
        (sweep_at - expires_at).abs() < 1e-6,
        "{sweep_at} {expires_at}"
    );

    const SAVES: u64 = 20;
    for version in 0..SAVES {
        let mut next = record.clone();
        next.version = version + 1;
        next.data.insert("n".into(), json!(version + 1));
        assert_eq!(
            store.save(&key, &next, version).await.expect("save"),
            session_core::SaveOutcome::Saved
        );
        record = next;
    }
    // What the layer's touch asks for: the idle timeout from now.
    let idle = session_core::time::Duration::try_from(record.idle_timeout).expect("timeout");
    let deadline = session_core::record::now() + idle;
    assert!(
        store
            .touch(&key, record.version, deadline)
            .await
            .expect("touch")
    );
    let (after, expires_at, _) = sweep_at_and_expiry(&store, &key).await;
    assert_eq!(after, sweep_at, "sweep_at did not move");
    assert!(
        (expires_at - sweep_at).abs() <= 300.0,
        "within 5 minutes of expires_at: {sweep_at} {expires_at}"
    );
    let (updates, hot) = hot_updates(&store, SAVES as i64 + 1).await;
    assert_eq!(
        (updates, hot),
        (SAVES as i64 + 1, SAVES as i64 + 1),
        "every save and touch was a HOT update"
    );

    // Farther below or above: the next write sets it to `expires_at`.
    for shift in ["- interval '1 hour'", "+ interval '1 hour'"] {
        exec(
            &store,
            &format!(
                "UPDATE {{t}} SET sweep_at = expires_at {shift} WHERE key = '{}'",
                key.as_str()
            ),
        )
        .await;
        let mut next = record.clone();
        next.version += 1;
        assert_eq!(
            store.save(&key, &next, record.version).await.expect("save"),
            session_core::SaveOutcome::Saved
        );
        record = next;
        let (sweep_at, expires_at, _) = sweep_at_and_expiry(&store, &key).await;
        assert!(
            (sweep_at - expires_at).abs() < 1e-6,
            "{shift}: {sweep_at} {expires_at}"
        );
    }
    exec(
        &store,
        &format!(
            "UPDATE {{t}} SET sweep_at = expires_at - interval '1 hour' WHERE key = '{}'",
            key.as_str()
        ),
    )
    .await;
    assert!(
        store
            .touch(&key, record.version, deadline)
            .await
            .expect("touch")
    );
    let (sweep_at, expires_at, _) = sweep_at_and_expiry(&store, &key).await;
    assert!(
        (sweep_at - expires_at).abs() < 1e-6,
        "touch: {sweep_at} {expires_at}"
    );

    // A save that shortens the lifetime lowers sweep_at with it, so the
    // sweeper finds the row as soon as it expires.
    let mut short = session_core::conformance::store::record_expiring_in(Duration::from_secs(60));
    short.version = record.version + 1;
    assert_eq!(
        store
            .save(&key, &short, record.version)
            .await
            .expect("save"),
        session_core::SaveOutcome::Saved
    );
    let (sweep_at, expires_at, db_now) = sweep_at_and_expiry(&store, &key).await;
    assert!(expires_at - db_now <= 60.0, "{expires_at} {db_now}");
    assert!(
        (sweep_at - expires_at).abs() < 1e-6,
        "shorter: {sweep_at} {expires_at}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touch_and_save_keep_expiry_on_the_database_clock() {
    // A record saved with a short idle timeout is gone after it, by the
    // database clock; a touch moves expires_at, not just the stored deadline.
    let store = fresh_store().await;
    let key = new_key();
    let record = session_core::conformance::store::record_expiring_in(Duration::from_millis(200));
    assert!(store.create(&key, &record).await.expect("create"));
    let expires = |store: PostgresStore, key: String| async move {
        sqlx::query_scalar::<_, f64>(AssertSqlSafe(format!(
            "SELECT extract(epoch FROM expires_at - now())::float8 FROM \"{}\".\"{}\" WHERE key = $1",
            store.schema(),
            store.table()
        )))
        .bind(key)
        .fetch_one(store.pool())
        .await
        .expect("expires_at")
    };
    let before = expires(store.clone(), key.as_str().to_owned()).await;
    assert!(
        before <= 0.2,
        "expires_at is now() + the record's ttl: {before}"
    );
    let deadline = session_core::record::now() + session_core::time::Duration::minutes(10);
    assert!(
        store
            .touch(&key, record.version, deadline)
            .await
            .expect("touch")
    );
    let after = expires(store.clone(), key.as_str().to_owned()).await;
    assert!(
        (590.0..=600.0).contains(&after),
        "a touch sets expires_at to now() + (deadline - app now): {after}"
    );
}

/// A save whose expected version matched when it started, but whose row a
/// concurrent transaction changes while the save waits for the row lock,
/// reports what that transaction left: Gone after a delete, Conflict after
/// another save.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_waiting_on_a_concurrent_writer_reports_what_it_left() {
    let store = fresh_store().await;
    let t = format!("\"{}\".\"{}\"", store.schema(), store.table());
    for (change, expected) in [
        (
            "DELETE FROM {t} WHERE key = $1",
            session_core::SaveOutcome::Gone,
        ),
        (
            "UPDATE {t} SET version = version + 1 WHERE key = $1",
            session_core::SaveOutcome::Conflict,
        ),
    ] {
        let key = new_key();
        let record = new_record();
        assert!(store.create(&key, &record).await.expect("create"));

        let mut tx = store.pool().begin().await.expect("begin");
        sqlx::query(AssertSqlSafe(change.replace("{t}", &t)))
            .bind(key.as_str())
            .execute(&mut *tx)
            .await
            .expect("change in the open transaction");

        let saving = {
            let (store, key) = (store.clone(), key.clone());
            let mut next = record.clone();
            next.version = 1;
            tokio::spawn(async move { store.save(&key, &next, 0).await })
        };
        // Commit only once the save is waiting for the row lock.
        let waiting = common::eventually(Duration::from_secs(10), || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
                 WHERE wait_event_type = 'Lock' AND position($1 in query) > 0)",
            )
            .bind(store.schema())
            .fetch_one(store.pool())
            .await
            .expect("pg_stat_activity")
        })
        .await;
        assert!(waiting, "the save never waited for the row lock");
        tx.commit().await.expect("commit");

        let outcome = saving.await.expect("task").expect("save");
        assert_eq!(outcome, expected, "after `{change}`");
        if expected == session_core::SaveOutcome::Gone {
            assert_eq!(
                store.load(&key).await.expect("load"),
                None,
                "not resurrected"
            );
        }
    }
}
