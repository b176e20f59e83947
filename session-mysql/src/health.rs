//! Pooled connections after the server restarted.
//!
//! Pooled connections are not pinged before use (one round trip per
//! operation, not two), so after a restart the pool still holds connections
//! the server has closed. The first statement to meet one fails; the store
//! then notes the moment, and the pool's `before_acquire`
//! hook (see [`MySqlStore::pool_options`](crate::MySqlStore::pool_options))
//! drops every connection opened before the last such moment, so one
//! failure clears them all instead of each failing a request.
//!
//! Unlike Postgres, MySQL does not say "the server closed this connection
//! before running your statement": the client just meets a closed socket.
//! So only statements that may safely run twice (reads, `touch`, `delete`)
//! are retried on a fresh connection; a create or compare-and-set whose
//! connection failed is reported as a failure (its write may have landed).

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The process's reference instant for the failure notes.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// When a connection last failed, process-wide (the pool options are built
/// before any store, so the hook cannot hold a store's state). Another pool
/// in the process then reconnects too, which costs a connect and nothing else.
/// Milliseconds after [`EPOCH`], plus one; 0 when none happened yet.
static LAST_FAILURE: AtomicU64 = AtomicU64::new(0);

fn ms_since_epoch() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

/// Notes that a connection failed now.
pub(crate) fn connection_failed() {
    LAST_FAILURE.fetch_max(ms_since_epoch(), Ordering::Relaxed);
}

/// Whether a pooled connection `age` old predates the last connection failure.
pub(crate) fn is_stale(age: Duration) -> bool {
    match LAST_FAILURE.load(Ordering::Relaxed) {
        0 => false,
        at => {
            let since = ms_since_epoch().saturating_sub(at);
            u64::try_from(age.as_millis()).unwrap_or(u64::MAX) > since
        }
    }
}

/// Client error numbers of a lost connection, and the server's "shutting
/// down" / "connection killed" errors (1053, 1927), after which the
/// connection is useless.
const CONNECTION_LOST: [u16; 5] = [1053, 1927, 2006, 2013, 2055];

/// The connection itself failed (I/O, protocol, the server going away),
/// not the statement.
pub(crate) fn is_connection_failure(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .is_some_and(|e| CONNECTION_LOST.contains(&e.number())),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_older_than_a_failure_are_stale() {
        assert!(!is_stale(Duration::ZERO));
        std::thread::sleep(Duration::from_millis(5));
        connection_failed();
        assert!(is_stale(Duration::from_secs(3600)));
        assert!(!is_stale(Duration::ZERO));
    }
}
