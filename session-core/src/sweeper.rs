//! The background task of the SQL stores that deletes expired rows: one
//! loop for every backend without native expiry, which gives it its batch
//! step (for example `PostgresStore::delete_expired_batch`).
//!
//! The loop sweeps at once, then every `period`, each time in batches of at
//! most `batch` rows until a batch comes back short. A failing sweep
//! (database down, restarting, unreachable, a lock timeout) is logged with
//! `tracing` and retried after a backoff that starts at 250 ms and doubles
//! up to a minute; the sweeper never ends on an error. The task ends when
//! its [`SweeperHandle`] is dropped.
//!
//! Each sweep that deleted rows adds them to the `session_swept_total`
//! counter (label `backend`) and tells the [`SessionEvents`] hook given to
//! [`SweeperHandle::report_to`], if any.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{SessionEvents, StoreError};

/// The first wait after a failed sweep; it doubles with each further failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between attempts while the database keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A running sweeper, from [`spawn`] (which a store's `spawn_sweeper` calls).
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

#[derive(Default)]
struct Stats {
    deleted: AtomicU64,
    failures: AtomicU64,
    events: RwLock<Option<Arc<dyn SessionEvents>>>,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats")
            .field("deleted", &self.deleted)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
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

    /// Reports every later sweep that deleted expired records to
    /// `events` ([`SessionEvents::swept`], with the count), after the
    /// batches' statements returned. Replaces a hook given before.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use session_core::SessionEvents;
    ///
    /// struct Expiries;
    /// impl SessionEvents for Expiries {
    ///     fn swept(&self, backend: &'static str, count: u64) {
    ///         println!("{count} expired {backend} sessions deleted");
    ///     }
    /// }
    ///
    /// let sweeper = session_core::sweeper::spawn(
    ///     "custom",
    ///     "sessions".to_owned(),
    ///     Duration::from_secs(300),
    ///     1_000,
    ///     |_batch| async { Ok::<u64, session_core::StoreError>(0) },
    /// );
    /// sweeper.report_to(Expiries);
    /// # }
    /// ```
    pub fn report_to(&self, events: impl SessionEvents) {
        let events: Arc<dyn SessionEvents> = Arc::new(events);
        *self
            .stats
            .events
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(events);
    }
}

/// Starts a task that runs `step(batch)` (delete up to `batch` expired
/// rows, give how many went) at once, then every `period`, each time until
/// a step deletes fewer than `batch` rows; `table` names the table in logs,
/// `backend` (the store's [`backend`](crate::SessionStore::backend) name)
/// labels the `session_swept_total` counter.
///
/// A failing step is logged and retried after a backoff (250 ms, doubling
/// up to a minute); the task never ends on an error, only when the handle
/// is dropped or [stopped](SweeperHandle::stop).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
///
/// let sweeper = session_core::sweeper::spawn(
///     "custom",
///     "sessions".to_owned(),
///     Duration::from_secs(300),
///     1_000,
///     |_batch| async { Ok::<u64, session_core::StoreError>(0) },
/// );
/// sweeper.stop().await;
/// # }
/// ```
///
/// # Panics
///
/// When called outside a Tokio runtime (like `tokio::spawn`).
pub fn spawn<F, Fut>(
    backend: &'static str,
    table: String,
    period: Duration,
    batch: u32,
    step: F,
) -> SweeperHandle
where
    F: Fn(u32) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<u64, StoreError>> + Send + 'static,
{
    let (stop, stopped) = oneshot::channel();
    let stats = Arc::new(Stats::default());
    let task = tokio::spawn(sweep_loop(
        backend,
        table,
        step,
        period,
        batch.max(1),
        stopped,
        stats.clone(),
    ));
    SweeperHandle { stop, task, stats }
}

async fn sweep_loop<F, Fut>(
    backend: &'static str,
    table: String,
    step: F,
    period: Duration,
    batch: u32,
    mut stopped: oneshot::Receiver<()>,
    stats: Arc<Stats>,
) where
    F: Fn(u32) -> Fut,
    Fut: Future<Output = Result<u64, StoreError>>,
{
    let mut failures: u32 = 0;
    loop {
        let wait = match sweep(backend, &step, batch, &mut stopped, &stats).await {
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
                    table = %table,
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
    Failed(StoreError),
}

/// Deletes batches until one comes back short, or the handle is dropped.
async fn sweep<F, Fut>(
    backend: &'static str,
    step: &F,
    batch: u32,
    stopped: &mut oneshot::Receiver<()>,
    stats: &Stats,
) -> Sweep
where
    F: Fn(u32) -> Fut,
    Fut: Future<Output = Result<u64, StoreError>>,
{
    let mut swept = 0;
    loop {
        let result = tokio::select! {
            biased;
            _ = &mut *stopped => return Sweep::Stopped,
            result = step(batch) => result,
        };
        match result {
            Ok(deleted) => {
                swept += deleted;
                stats.deleted.fetch_add(deleted, Ordering::Relaxed);
                if deleted < u64::from(batch) {
                    if swept > 0 {
                        tracing::debug!(deleted = swept, "session sweeper deleted expired rows");
                        metrics::counter!("session_swept_total", "backend" => backend)
                            .increment(swept);
                        let events = stats
                            .events
                            .read()
                            .unwrap_or_else(PoisonError::into_inner)
                            .clone();
                        if let Some(events) = events {
                            events.swept(backend, swept);
                        }
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
