//! The background task that deletes expired rows: session-core's sweeper
//! loop, run with this store's batch step.

use std::time::Duration;

use session_core::sweeper::{self, SweeperHandle};

use crate::MySqlStore;

impl MySqlStore {
    /// Starts a task that deletes expired rows: at once, then every `period`,
    /// each time in batches of at most `batch` rows until none are left
    /// (each batch is [`delete_expired_batch`](Self::delete_expired_batch):
    /// a lock-free read of expired keys, then a delete by primary key in key
    /// order, so it never deadlocks with requests).
    ///
    /// A failing sweep (server down, restarting, a lock wait timeout) is
    /// logged with `tracing` and retried after a backoff that starts at
    /// 250 ms and doubles up to a minute; the sweeper never ends on an
    /// error. Several instances may each run one on the same table. The task
    /// ends when the returned handle is dropped.
    ///
    /// ```no_run
    /// # async fn run(store: session_mysql::MySqlStore) {
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
        let table = self.sql_table_name();
        sweeper::spawn("mysql", table, period, batch, move |batch| {
            let store = store.clone();
            async move { store.delete_expired_batch(batch).await }
        })
    }
}
