//! Changing backends logs nobody out: 1 000 live sessions made through the
//! layer on one backend keep working through `MigratingStore(old, new)`,
//! keep their data, and end up only in the new backend.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

mod common;

/// Without the backends this file tests, say so instead of compiling to nothing.
#[cfg(not(all(feature = "memory", feature = "redis", feature = "postgres")))]
#[test]
fn migration_tests_need_the_memory_redis_and_postgres_features() {
    panic!(
        "these tests need `--features memory,redis,postgres` (scripts/test passes --all-features)"
    );
}

#[cfg(all(feature = "memory", feature = "redis", feature = "postgres"))]
mod backends {
    use super::common::{connect, database_url, env, fresh};

    use axum::Router;
    use axum::routing::get;
    use session::{AnyStore, MigratingStore, Session, SessionError, SessionLayer, SessionStore};
    use session_core::conformance::http::{id_of, send};

    const SESSIONS: usize = 1_000;

    async fn redis() -> AnyStore {
        connect(&format!("{}?prefix=migrate-{}:", env("REDIS_URL"), fresh())).await
    }

    async fn postgres() -> AnyStore {
        connect(&database_url(&format!(
            "schema=migrate_{}&pool=16",
            fresh()
        )))
        .await
    }

    async fn count(session: Session) -> Result<String, SessionError> {
        let n: u64 = session
            .update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
            .await?;
        Ok(n.to_string())
    }

    fn app(layer: SessionLayer) -> Router {
        Router::new().route("/", get(count)).layer(layer)
    }

    async fn migrate(old: AnyStore, new: AnyStore) {
        // 1 000 users, each with two visits on the old backend.
        let before = app(old.layer());
        let mut cookies = Vec::with_capacity(SESSIONS);
        for _ in 0..SESSIONS {
            let pair = send(&before, "/", None)
                .await
                .cookie_pair()
                .expect("cookie");
            assert_eq!(send(&before, "/", Some(pair.as_bytes())).await.body, "2");
            cookies.push(pair);
        }

        // The deploy that switches backends: the same cookies keep counting.
        let after = app(SessionLayer::new(MigratingStore::new(
            old.clone(),
            new.clone(),
        )));
        for pair in &cookies {
            let reply = send(&after, "/", Some(pair.as_bytes())).await;
            assert_eq!(
                reply.body,
                "3",
                "{} -> {}: a user was logged out",
                old.backend(),
                new.backend()
            );
            assert!(reply.set_cookies.is_empty(), "the cookie changed");
        }
        for pair in &cookies {
            let key = id_of(pair).store_key();
            assert!(
                old.load(&key).await.unwrap().is_none(),
                "left behind in {}",
                old.backend()
            );
            let record = new.load(&key).await.unwrap().expect("moved");
            assert_eq!(record.data["n"], 3);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrate_memory_to_redis() {
        migrate(connect("memory://").await, redis().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrate_redis_to_postgres() {
        migrate(redis().await, postgres().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrate_postgres_to_memory() {
        migrate(postgres().await, connect("memory://").await).await;
    }
}
