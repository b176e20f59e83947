//! The background task that deletes expired rows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::PostgresStore;

/// The first wait after a failed sweep; it doubles with each further failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between attempts while the database keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A running sweeper, from [`PostgresStore::spawn_sweeper`].
///
/// Dropping the handle stops the sweeper at once, also mid-statement (a
/// batch is one statement, so it is either done or not at all).
/// [`stop`](Self::stop) does the same and waits for the task to end.
#[derive(Debug)]
#[must_use = "dropping the handle stops the sweeper"]
pub struct SweeperHandle {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    stats: Arc<Stats>,
}

#[derive(Debug, Default)]
struct Stats {
    deleted: AtomicU64,
    failures: AtomicU64,
}

impl SweeperHandle {
    /// Stops the sweeper and waits until its task has ended.
    pub async fn stop(self) {
        drop(self.stop);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "session sweeper task ended abnormally");
        }
    }

    /// Whether the sweeper's task has ended. It only ends when stopped (or
    /// when its runtime shuts down): database errors do not end it.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Expired rows deleted so far.
    pub fn deleted(&self) -> u64 {
        self.stats.deleted.load(Ordering::Relaxed)
    }

    /// Sweeps that failed so far (each was logged and retried after a backoff).
    pub fn failures(&self) -> u64 {
        self.stats.failures.load(Ordering::Relaxed)
    }
}

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
        let (stop, stopped) = oneshot::channel();
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(sweep_loop(
            self.clone(),
            period,
            batch.max(1),
            stopped,
            stats.clone(),
        ));
        SweeperHandle { stop, task, stats }
    }
}

async fn sweep_loop(
    store: PostgresStore,
    period: Duration,
    batch: u32,
    mut stopped: oneshot::Receiver<()>,
    stats: Arc<Stats>,
) {
    let mut failures: u32 = 0;
    loop {
        let wait = match sweep(&store, batch, &mut stopped, &stats).await {
            Sweep::Stopped => return,
            Sweep::Done => {
                failures = 0;
                period
            }
            Sweep::Failed(error) => {
                failures = failures.saturating_add(1);
                stats.failures.fetch_add(1, Ordering::Relaxed);
                let backoff = backoff(failures);
                tracing::warn!(
                    table = %format!("{}.{}", store.schema(), store.table()),
                    error = &error as &dyn std::error::Error,
                    consecutive_failures = failures,
                    retry_in = ?backoff,
                    "session sweeper failed; retrying"
                );
                backoff
            }
        };
        tokio::select! {
            _ = &mut stopped => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

enum Sweep {
    Done,
    Stopped,
    Failed(session_core::StoreError),
}

/// Deletes batches until one comes back short, or the handle is dropped.
async fn sweep(
    store: &PostgresStore,
    batch: u32,
    stopped: &mut oneshot::Receiver<()>,
    stats: &Stats,
) -> Sweep {
    let mut swept = 0;
    loop {
        let result = tokio::select! {
            biased;
            _ = &mut *stopped => return Sweep::Stopped,
            result = store.delete_expired_batch(batch) => result,
        };
        match result {
            Ok(deleted) => {
                swept += deleted;
                stats.deleted.fetch_add(deleted, Ordering::Relaxed);
                if deleted < u64::from(batch) {
                    if swept > 0 {
                        tracing::debug!(deleted = swept, "session sweeper deleted expired rows");
                    }
                    return Sweep::Done;
                }
                // Let request traffic at the pool between long runs of batches.
                tokio::task::yield_now().await;
            }
            Err(error) => return Sweep::Failed(error),
        }
    }
}

/// The wait after the `failures`-th consecutive failure.
fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    FIRST_BACKOFF.saturating_mul(1 << exponent).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), FIRST_BACKOFF);
        assert_eq!(backoff(2), FIRST_BACKOFF * 2);
        assert_eq!(backoff(3), FIRST_BACKOFF * 4);
        assert_eq!(backoff(20), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
