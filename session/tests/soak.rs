//! Concurrency soak: 200 concurrent clients each send 50 requests that read
//! a counter and write it back plus one (`get` then `insert`, as handlers
//! are written) over a few shared sessions, spread round-robin over 3 app
//! instances (each with its own store client) on one Redis, on one
//! Postgres, and on one MariaDB. Every final count is exact, one per successful request, and
//! the successful answers of a session are distinct: each saw its own
//! predecessor.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

/// Without the backends this file tests, say so instead of compiling to nothing.
#[cfg(not(all(feature = "redis", feature = "postgres", feature = "mysql")))]
#[test]
fn soak_needs_the_redis_postgres_and_mysql_features() {
    panic!(
        "the soak tests need `--features redis,postgres,mysql` (scripts/test passes --all-features)"
    );
}

mod common;

#[cfg(all(feature = "redis", feature = "postgres", feature = "mysql"))]
mod soak {

    use super::common;
    use common::{connect, database_url, env, fresh, mysql_url};

    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::routing::get;
    use session::{Session, SessionError};
    use session_core::conformance::http::send;

    const CLIENTS: usize = 200;
    const REQUESTS: usize = 50;
    const SESSIONS: usize = 4;
    const INSTANCES: usize = 3;

    async fn count(session: Session) -> Result<String, SessionError> {
        let n: u64 = session.get("n").await?.unwrap_or_default();
        session.insert("n", n + 1).await?;
        Ok((n + 1).to_string())
    }

    async fn read(session: Session) -> Result<String, SessionError> {
        Ok(session.get::<u64>("n").await?.unwrap_or(0).to_string())
    }

    async fn soak(url: &str) {
        // Three instances of the app, each with its own connection pool.
        let mut instances = Vec::new();
        for _ in 0..INSTANCES {
            let store = connect(url).await;
            instances.push(
                Router::new()
                    .route("/count", get(count))
                    .route("/read", get(read))
                    .layer(store.layer()),
            );
        }
        let mut cookies = Vec::new();
        for i in 0..SESSIONS {
            let reply = send(&instances[i % INSTANCES], "/count", None).await;
            cookies.push(reply.cookie_pair().expect("cookie"));
        }
        let instances = Arc::new(instances);
        let cookies = Arc::new(cookies);
        let ok: Arc<Vec<AtomicU64>> = Arc::new((0..SESSIONS).map(|_| AtomicU64::new(1)).collect());
        let answers: Arc<Vec<Mutex<Vec<u64>>>> =
            Arc::new((0..SESSIONS).map(|_| Mutex::new(vec![1])).collect());
        let failed = Arc::new(AtomicU64::new(0));

        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (instances, cookies, ok, failed, answers) = (
                    instances.clone(),
                    cookies.clone(),
                    ok.clone(),
                    failed.clone(),
                    answers.clone(),
                );
                tokio::spawn(async move {
                    let session = client % SESSIONS;
                    for request in 0..REQUESTS {
                        let app = &instances[(client + request) % INSTANCES];
                        let reply = send(app, "/count", Some(cookies[session].as_bytes())).await;
                        if reply.status == 200 {
                            ok[session].fetch_add(1, Ordering::SeqCst);
                            answers[session]
                                .lock()
                                .unwrap()
                                .push(reply.body.parse().unwrap());
                        } else {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.unwrap();
        }

        let failed = failed.load(Ordering::SeqCst);
        eprintln!(
            "{url}: {failed} of {} requests not answered 200",
            CLIENTS * REQUESTS
        );
        for (session, cookie) in cookies.iter().enumerate() {
            let stored: u64 = send(&instances[0], "/read", Some(cookie.as_bytes()))
                .await
                .body
                .parse()
                .unwrap();
            let answered = ok[session].load(Ordering::SeqCst);
            assert_eq!(
                stored, answered,
                "session {session}: {stored} stored, {answered} answered 200"
            );
            let mut seen = answers[session].lock().unwrap().clone();
            seen.sort_unstable();
            assert_eq!(
                seen,
                (1..=stored).collect::<Vec<_>>(),
                "session {session}: answers"
            );
        }
        assert_eq!(
            failed,
            0,
            "{failed} of {} requests were not answered 200",
            CLIENTS * REQUESTS
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn soak_redis_three_instances_every_count_exact() {
        soak(&format!(
            "{}?prefix=soak-{}:&pool=16",
            env("REDIS_URL"),
            fresh()
        ))
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn soak_postgres_three_instances_every_count_exact() {
        soak(&database_url(&format!("schema=soak_{}&pool=16", fresh()))).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn soak_mysql_three_instances_every_count_exact() {
        soak(&mysql_url(&format!("database=soak_{}&pool=16", fresh()))).await;
    }
}
