//! Faults under load: Redis killed (SIGKILL) and restarted from its AOF, and
//! Redis frozen (SIGSTOP) for 3 s, while 20 users keep counting in their
//! sessions through the layer.
//!
//! For each fault, the assertions of the shared driver
//! ([`session_core::conformance::faults`]): no task panics; no request waits
//! past the op timeout plus a margin; every failure is a `503` with
//! `Retry-After`, in flight during the fault window (from the fault until
//! recovery is observed); a request succeeds within 2 s of the server being
//! back; and every write answered 2xx is still there afterwards.
//!
//! Each test starts its own `redis-server` and never touches another.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use common::OwnRedis;
use session_core::conformance::faults;
use session_redis::RedisStore;

/// A store on `server` with the builder's default timeouts, and the app:
/// `/count` increments the session's counter, `/read` reads it.
fn app(server: &OwnRedis) -> Router {
    let store = RedisStore::builder(server.url())
        .build()
        .unwrap()
        .key_prefix("faults:");
    faults::app(store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_redis_sigkill_restart_under_load() {
    let server = Arc::new(OwnRedis::start(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]));
    let app = app(&server);
    faults::under_load(&app, "redis SIGKILL + restart", || async {
        server.kill();
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Same port, same dir: the server reloads its AOF.
        tokio::task::spawn_blocking({
            let server = server.clone();
            move || server.start_again()
        })
        .await
        .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_redis_sigstop_3s_under_load() {
    let server = OwnRedis::start(&[]);
    let app = app(&server);
    faults::under_load(&app, "redis SIGSTOP 3 s", || async {
        server.freeze();
        tokio::time::sleep(Duration::from_secs(3)).await;
        server.thaw();
    })
    .await;
}
