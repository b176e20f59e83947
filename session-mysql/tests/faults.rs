//! Faults under load: MariaDB restarted (a clean shutdown, which closes
//! every connection, then a start on the same port and data) while 20 users
//! keep counting in their sessions through the layer.
//!
//! Asserts what the shared driver ([`session_core::conformance::faults`])
//! checks for every backend: no task panics; no request waits past the op
//! timeout plus a margin; every failure is a `503` with `Retry-After`, in
//! flight during the fault window (from the restart until recovery is
//! observed); a request succeeds within 2 s of the server being back; and
//! every write answered 2xx is still there afterwards (the writes answered
//! 503 are counted, applied or not).
//!
//! The test starts its own MariaDB server and never touches another.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{OwnMariaDb, pool_on, store_in_fresh_database};
use session_core::conformance::faults;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mariadb_under_load() {
    let server = Arc::new(OwnMariaDb::start(&[], &[]));
    // The pool the crate recommends (see `pool_on`), as an application has it.
    let pool = pool_on(&server.url(), Duration::from_secs(1)).await;
    let app = faults::app(store_in_fresh_database(pool).await);
    faults::under_load(&app, "mariadb restart", || async {
        tokio::task::spawn_blocking({
            let server = server.clone();
            move || server.restart()
        })
        .await
        .unwrap();
    })
    .await;
}
