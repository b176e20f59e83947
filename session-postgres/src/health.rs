//! Telling stale pooled connections apart after the database restarted.
//!
//! Pooled connections are not pinged before use (one round trip per
//! operation, not two), so after a restart the pool still holds connections
//! the server has closed. The first statement to meet one fails with
//! SQLSTATE 57P01 (or 57P02, 57P03), and notes the time here; from then on
//! the pool's `before_acquire` hook drops every connection opened before that
//! moment, so one failure clears them all instead of each failing a request.
//! The note is process-wide: another pool in the process then reconnects
//! too, which costs a connect and nothing else.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static START: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds since `START`, plus one, of the last connection failure; 0: none yet.
static FAILED_AT: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    u64::try_from(START.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
}

/// Notes that a connection failed now.
pub(crate) fn note_connection_failure() {
    FAILED_AT.fetch_max(now_ms(), Ordering::Relaxed);
}

/// Whether a connection of this age was opened before the last failure.
pub(crate) fn opened_before_last_failure(age: Duration) -> bool {
    let failed_at = FAILED_AT.load(Ordering::Relaxed);
    if failed_at == 0 {
        return false;
    }
    let since_failure = now_ms().saturating_sub(failed_at);
    u64::try_from(age.as_millis()).unwrap_or(u64::MAX) > since_failure
}

/// The server closed the connection before running the statement: an
/// administrator or crash shutdown (57P01, 57P02), or a server still
/// starting (57P03). Nothing ran, so the statement may run again.
pub(crate) fn closed_by_server(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| matches!(&*code, "57P01" | "57P02" | "57P03"))
}

/// The server refused the statement as read-only (SQLSTATE 25006,
/// `read_only_sql_transaction`): it is a standby, or was demoted. A
/// read-only server runs no write, so the statement did not run.
pub(crate) fn is_read_only(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "25006")
}

/// The connection itself failed (not the statement): I/O, protocol, or a
/// server closing it (the class 08 connection exceptions included).
pub(crate) fn is_connection_failure(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_)
    ) || closed_by_server(error)
        || error
            .as_database_error()
            .and_then(|e| e.code())
            .is_some_and(|code| code.starts_with("08"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_older_than_a_failure_are_stale() {
        // Nothing failed yet in this test process... unless another test
        // noted a failure; either way a brand-new connection is never stale.
        assert!(!opened_before_last_failure(Duration::ZERO));
        std::thread::sleep(Duration::from_millis(5));
        note_connection_failure();
        assert!(opened_before_last_failure(Duration::from_secs(3600)));
        assert!(!opened_before_last_failure(Duration::ZERO));
    }
}
