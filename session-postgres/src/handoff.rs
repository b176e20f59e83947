//! Handing a connection from a store call that is done with it straight to
//! one that is waiting for one, without the round trip through the pool.
//!
//! sqlx pings every connection it takes back into the pool (a `Sync` and its
//! `ReadyForQuery`: a second round trip after every statement, on the app's
//! CPU and the server's). When every connection of the pool is busy and
//! store calls are waiting, a call that finishes gives its connection to the
//! longest-waiting store call instead. Measured on the load benchmark, that
//! ping was about a sixth of the CPU a session write cost (app and
//! Postgres), and a fifth of a read's.
//!
//! What the pool's round trip guarantees stays guaranteed:
//!
//! - Only a connection whose statement completed is handed on; one whose
//!   call failed or was cancelled mid-statement goes back to the pool (which
//!   pings or closes it). sqlx drains whatever a completed statement left
//!   unread before it sends the next one.
//! - A connection goes back to the pool after [`MAX_HANDED`] out of it, so
//!   the pool's own checks (`max_lifetime`, `before_acquire`) still see
//!   every connection regularly, and other users of a shared pool get their
//!   turn.
//! - A connection taken from the pool before the last connection failure
//!   (see `health`) is never handed on.
//! - A call waits for the pool and for a hand-over at once, and takes
//!   whichever comes first; store calls are handed connections in the order
//!   they started waiting. When the pool could still grow, the abandoned
//!   acquire is left to finish (it may be opening a connection), and its
//!   connection is handed on or returned.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgPool, Postgres};
use tokio::sync::oneshot;

use crate::health;

/// The longest a connection is handed from call to call before it goes back
/// to the pool (and is pinged there once).
pub(crate) const MAX_HANDED: Duration = Duration::from_millis(100);

/// A connection out of the pool, and since when.
pub(crate) struct Held {
    conn: PoolConnection<Postgres>,
    since: Instant,
}

impl Held {
    fn new(conn: PoolConnection<Postgres>) -> Self {
        Self {
            conn,
            since: Instant::now(),
        }
    }

    /// The connection, and when it left the pool (for [`from_parts`](Self::from_parts)).
    pub(crate) fn into_parts(self) -> (PoolConnection<Postgres>, Instant) {
        (self.conn, self.since)
    }

    /// What [`into_parts`](Self::into_parts) took apart.
    pub(crate) fn from_parts(conn: PoolConnection<Postgres>, since: Instant) -> Self {
        Self { conn, since }
    }
}

/// The store calls waiting for a connection, oldest first.
#[derive(Default)]
pub(crate) struct Handoff {
    waiting: Mutex<VecDeque<oneshot::Sender<Held>>>,
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handoff")
            .field("waiting", &self.lock().len())
            .finish()
    }
}

impl Handoff {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<oneshot::Sender<Held>>> {
        // The lock guards a queue that is never left half-changed.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection: from the pool, or from a store call done with its own,
    /// whichever comes first.
    pub(crate) async fn take(self: &Arc<Self>, pool: &PgPool) -> Result<Held, sqlx::Error> {
        let (sender, mut handed) = oneshot::channel();
        self.lock().push_back(sender);
        let mut acquire = Box::pin(pool.acquire());
        tokio::select! {
            biased;
            Ok(held) = &mut handed => {
                if pool.size() < pool.options().get_max_connections() {
                    // The pool had room, so the acquire may be opening a
                    // connection: let it finish rather than waste it, and
                    // hand its connection on (or back).
                    let (handoff, pool) = (Arc::clone(self), pool.clone());
                    tokio::spawn(async move {
                        if let Ok(conn) = acquire.await {
                            handoff.give(Held::new(conn), &pool);
                        }
                    });
                }
                Ok(held)
            }
            acquired = &mut acquire => {
                // Nobody may hand over to this call any more; a connection
                // handed over meanwhile goes on to the next one waiting.
                handed.close();
                if let Ok(held) = handed.try_recv() {
                    self.give(held, pool);
                }
                // Calls served by the pool (like this one) leave their place
                // in the queue behind; drop those now, so that the queue
                // stays as long as the calls waiting, even while the
                // database is down and no statement completes.
                self.lock().retain(|waiting| !waiting.is_closed());
                acquired.map(Held::new)
            }
        }
    }

    /// Gives a connection whose statement completed to the oldest store call
    /// waiting for one, or back to the pool.
    pub(crate) fn give(&self, mut held: Held, pool: &PgPool) {
        let out_for = held.since.elapsed();
        if out_for >= MAX_HANDED || health::opened_before_last_failure(out_for) || pool.is_closed()
        {
            return; // dropped: back to the pool
        }
        loop {
            let Some(waiting) = self.lock().pop_front() else {
                return; // dropped: back to the pool
            };
            match waiting.send(held) {
                Ok(()) => return,
                // That call got its connection elsewhere, or gave up.
                Err(back) => held = back,
            }
        }
    }
}
