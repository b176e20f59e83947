//! The background task that deletes expired rows: session-core's sweeper
//! loop, run with this store's batch step.

use std::time::Duration;

use session_core::sweeper::{self, SweeperHandle};

use crate::PostgresStore;

impl PostgresStore {
    /// Starts a task that deletes expired rows: at once, then every `period`,
    /// each time in statements of at most `batch` rows until none are left.
    ///
    /// Expired rows are invisible anyway; sweeping only reclaims space, so
    /// batches keep each statement short and its locks few, and rows a
    /// request is writing are skipped rather than waited for. Several
    /// instances may each run a sweeper on the same table.
    ///
    /// A failing sweep (database down, restarting, unreachable) is logged
    /// with `tracing` and retried after a backoff that starts at 250 ms and
    /// doubles up to a minute; the sweeper never ends on an error. The task
    /// ends when the returned handle is dropped.
    ///
    /// ```no_run
    /// # async fn run(store: session_postgres::PostgresStore) {
    /// use std::time::Duration;
    ///
    /// let sweeper = store.spawn_sweeper(Duration::from_secs(300), 1_000);
    /// // ... serve requests ...
    /// sweeper.stop().await;
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime (like `tokio::spawn`).
    pub fn spawn_sweeper(&self, period: Duration, batch: u32) -> SweeperHandle {
        let store = self.clone();
        let table = format!("{}.{}", self.schema(), self.table());
        sweeper::spawn("postgres", table, period, batch, move |batch| {
            let store = store.clone();
            async move { store.delete_expired_batch(batch).await }
        })
    }
}
