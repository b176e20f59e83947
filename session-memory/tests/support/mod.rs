//! Helpers shared by the drain tests here and by the facade's tests (which
//! include this directory by path): live traffic to run while a drain goes
//! on ([`traffic`]). The store wrapper that holds chosen calls is
//! session-core's `conformance::support::FaultStore`.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // test helpers; not every test uses all

pub mod traffic;

use std::time::Duration;

use tokio::task::JoinHandle;

/// Awaits a spawned task (panics if it panicked or takes over 30 s).
pub async fn finish<T>(task: JoinHandle<T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the task did not finish within 30 s")
        .expect("the task panicked")
}

/// Gives `task` up to 100 ms to finish on its own (it may be waiting for
/// something the test still holds), then runs `release` and awaits it.
pub async fn release_then_finish<T>(mut task: JoinHandle<T>, release: impl FnOnce()) -> T {
    match tokio::time::timeout(Duration::from_millis(100), &mut task).await {
        Ok(done) => {
            release();
            done.expect("the task panicked")
        }
        Err(_) => {
            release();
            finish(task).await
        }
    }
}
