//! Faults under load: Postgres restarted (`pg_ctl restart`, fast mode) while
//! 20 users keep counting in their sessions through the layer.
//!
//! Asserts what the shared driver ([`session_core::conformance::faults`])
//! checks: no task panics; no request waits past the op timeout plus a
//! margin; every failure is a `503` with `Retry-After`, in flight during the
//! fault window (from the restart until recovery is observed); a request
//! succeeds within 2 s of the server being back; and every write answered
//! 2xx is still there afterwards.
//!
//! The test starts its own Postgres server and never touches another.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::{OwnPostgres, pool_on, store_in_fresh_schema};
use http::StatusCode;
use session_core::SessionLayer;
use session_core::conformance::faults::{self, OP_TIMEOUT, count};
use session_core::conformance::http::send;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_postgres_under_load() {
    let server = Arc::new(OwnPostgres::start());
    // The pool the crate recommends (see `pool_on`), as an application has it.
    let pool = pool_on(&server.url(), Duration::from_secs(1)).await;
    let app = faults::app(store_in_fresh_schema(pool).await);
    faults::under_load(&app, "postgres pg_ctl restart", || async {
        // A fast shutdown (open connections are cut) and a start on the same
        // port and data; pg_ctl returns once the server accepts connections.
        tokio::task::spawn_blocking({
            let server = server.clone();
            move || server.restart()
        })
        .await
        .unwrap();
    })
    .await;
}

/// After a restart at light traffic, with a pool full of connections the
/// server has closed, the very next requests succeed: the first statement
/// that meets a closed connection runs again on a fresh one, and every
/// connection older than that failure is dropped instead of failing a
/// request of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_postgres_light_traffic_recovers_at_once() {
    let server = Arc::new(OwnPostgres::start());
    let pool = pool_on(&server.url(), Duration::from_secs(1)).await;
    // Fill the pool with idle connections, as a while of busier traffic would.
    let warm: Vec<_> = (0..16)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                sqlx_query_sleep(&pool).await;
            })
        })
        .collect();
    for task in warm {
        task.await.unwrap();
    }
    assert!(
        pool.num_idle() >= 8,
        "the pool did not warm up: {} idle",
        pool.num_idle()
    );

    let store = store_in_fresh_schema(pool.clone()).await;
    let app = Router::new()
        .route("/count", get(count))
        .layer(SessionLayer::new(store).op_timeout(OP_TIMEOUT));
    let mut cookies = Vec::new();
    for _ in 0..2 {
        let reply = send(&app, "/count", None).await;
        cookies.push(reply.cookie_pair().unwrap());
    }

    tokio::task::spawn_blocking({
        let server = server.clone();
        move || server.restart()
    })
    .await
    .unwrap();

    // Two users, a request each every 100 ms, for 2 s: all answered 200.
    for round in 2..22 {
        for cookie in &cookies {
            let reply = send(&app, "/count", Some(cookie.as_bytes())).await;
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "request {round} after the restart failed: {}",
                reply.body
            );
            assert_eq!(reply.body, round.to_string());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sqlx_query_sleep(pool: &session_postgres::sqlx::PgPool) {
    session_postgres::sqlx::query("SELECT pg_sleep(0.2)")
        .execute(pool)
        .await
        .unwrap();
}
