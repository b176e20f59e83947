//! Which server takes the writes and which serve the reads.
//!
//! A store has one or more *candidates* for primary, each with a pool of its
//! own: the server it was built on, then any others it was given (the
//! `hosts` of a URL, its replicas). Writes, the principal index and the
//! sweeper go to the current primary only, the one candidate that is not in
//! recovery (`pg_is_in_recovery()`, what libpq's
//! `target_session_attrs=read-write` asks).
//!
//! When a statement on the current primary meets a read-only server
//! (SQLSTATE 25006: it was demoted, or a replica was promoted in its place),
//! a refused connection or one the server terminated, the store marks the
//! primary *suspect*. The next store call first probes the candidates, one
//! fresh connection each with a short timeout, and sends its statement to
//! the one that answers `pg_is_in_recovery() = false`. While none does
//! (the primary died and nothing is promoted yet), calls fail at once
//! instead of waiting for a dead server, and probing is repeated at most
//! every [`PROBE_EVERY`].
//!
//! A statement is sent again, to the new primary, only when it provably did
//! not run: the connection could not be had (refused, or the server was
//! found not to be the primary before the statement was sent), the server
//! answered 25006 (a read-only server runs no write), or it closed the
//! connection before running it (57P01, 57P02, 57P03, as after a restart).
//! A connection that broke while the statement was in flight (the primary
//! killed under it) may or may not have committed it: that call fails, and
//! only the calls after it go to the new primary.
//!
//! Read replicas are separate pools. Loads with a version floor (see
//! `session_core::replica`) go to them round-robin when the store reads
//! from replicas; a replica that fails or does not answer within
//! [`REPLICA_TIMEOUT`] is skipped for [`REPLICA_REST`], and the primary
//! answers instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use session_core::replica::ReadCounters;
use sqlx::Connection as _;
use sqlx::postgres::{PgConnection, PgPool};

use crate::handoff::Handoff;

/// How long a probe of one candidate may take (connect and query).
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// While no candidate is the primary, probes are this far apart at least.
pub(crate) const PROBE_EVERY: Duration = Duration::from_millis(50);
/// How long a replica may take to answer a load before the primary is asked.
pub(crate) const REPLICA_TIMEOUT: Duration = Duration::from_millis(250);
/// How long a replica that failed is left out of the reads.
pub(crate) const REPLICA_REST: Duration = Duration::from_secs(1);
/// How long a statement waits for a connection to the current primary
/// before the store probes whether that server is still the primary.
pub(crate) const ACQUIRE_PROBE_AFTER: Duration = Duration::from_millis(250);

/// One server and the store's pool on it.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) pool: PgPool,
    pub(crate) handoff: Arc<Handoff>,
    /// Milliseconds since `EPOCH` until which a replica is skipped; 0: never failed.
    rest_until: AtomicU64,
}

impl Node {
    pub(crate) fn new(pool: PgPool) -> Arc<Self> {
        Arc::new(Self {
            pool,
            handoff: Arc::default(),
            rest_until: AtomicU64::new(0),
        })
    }

    /// `host:port` of the server, for logs and tests.
    pub(crate) fn address(&self) -> String {
        let options = self.pool.connect_options();
        format!("{}:{}", options.get_host(), options.get_port())
    }

    /// Whether the server is up and not in recovery: a fresh connection
    /// (not one of the pool's), within [`PROBE_TIMEOUT`].
    pub(crate) async fn is_primary(&self) -> bool {
        let options = self.pool.connect_options();
        let probe = async {
            let mut conn = PgConnection::connect_with(&options).await?;
            let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
                .fetch_one(&mut conn)
                .await?;
            let _ = conn.close().await;
            Ok::<_, sqlx::Error>(!in_recovery)
        };
        matches!(
            tokio::time::timeout(PROBE_TIMEOUT, probe).await,
            Ok(Ok(true))
        )
    }
}

static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The servers of a store (see the module docs).
#[derive(Debug)]
pub(crate) struct Topology {
    candidates: Vec<Arc<Node>>,
    /// Index into `candidates` of the current primary.
    primary: AtomicUsize,
    /// The current primary failed in a way that says it may no longer be
    /// one: the next call probes first.
    suspect: AtomicBool,
    /// Held while probing; holds when the last probe that found no primary ended.
    probing: tokio::sync::Mutex<Option<Instant>>,
    replicas: Vec<Arc<Node>>,
    next_replica: AtomicUsize,
    pub(crate) read_from_replicas: bool,
    pub(crate) reads: ReadCounters,
}

impl Topology {
    pub(crate) fn new(
        primary: PgPool,
        candidates: Vec<PgPool>,
        replicas: Vec<PgPool>,
        read_from_replicas: bool,
    ) -> Self {
        let candidates: Vec<_> = std::iter::once(primary)
            .chain(candidates)
            .map(Node::new)
            .collect();
        // With candidates, the first call finds which one is the primary.
        let suspect = candidates.len() > 1;
        Self {
            candidates,
            primary: AtomicUsize::new(0),
            suspect: AtomicBool::new(suspect),
            probing: tokio::sync::Mutex::new(None),
            replicas: replicas.into_iter().map(Node::new).collect(),
            next_replica: AtomicUsize::new(0),
            read_from_replicas,
            reads: ReadCounters::for_backend("postgres"),
        }
    }

    /// Whether another server may take over from the primary.
    pub(crate) fn can_fail_over(&self) -> bool {
        self.candidates.len() > 1
    }

    /// Whether loads with a floor may go to a replica.
    pub(crate) fn reads_may_lag(&self) -> bool {
        self.read_from_replicas && !self.replicas.is_empty()
    }

    /// The current primary (as last found).
    pub(crate) fn primary(&self) -> &Arc<Node> {
        let at = self.primary.load(Ordering::Acquire);
        &self.candidates[at.min(self.candidates.len() - 1)]
    }

    /// Notes that `node` failed as a primary may when it is one no longer.
    pub(crate) fn suspect(&self, node: &Arc<Node>) {
        if self.can_fail_over() && Arc::ptr_eq(node, self.primary()) {
            self.suspect.store(true, Ordering::Release);
        }
    }

    /// The primary to send a statement to: the current one, unless it is
    /// suspect; then the candidates are probed first (one caller at a
    /// time). `None` when no candidate is the primary right now.
    pub(crate) async fn writable(&self) -> Option<Arc<Node>> {
        if !self.suspect.load(Ordering::Acquire) {
            return Some(self.primary().clone());
        }
        let mut last_miss = self.probing.lock().await;
        if !self.suspect.load(Ordering::Acquire) {
            // Another caller found it while this one waited.
            return Some(self.primary().clone());
        }
        if last_miss.is_some_and(|at| at.elapsed() < PROBE_EVERY) {
            return None;
        }
        let start = self.primary.load(Ordering::Acquire);
        let n = self.candidates.len();
        for step in 0..n {
            let at = (start + step) % n;
            if self.candidates[at].is_primary().await {
                if at != start {
                    tracing::warn!(
                        from = %self.candidates[start].address(),
                        to = %self.candidates[at].address(),
                        "postgres primary moved; writes follow"
                    );
                }
                self.primary.store(at, Ordering::Release);
                self.suspect.store(false, Ordering::Release);
                *last_miss = None;
                return Some(self.candidates[at].clone());
            }
        }
        tracing::warn!(
            candidates = n,
            "no postgres candidate is the primary (not in recovery) yet"
        );
        *last_miss = Some(Instant::now());
        None
    }

    /// The next replica to read from, skipping those resting after a failure.
    pub(crate) fn replica(&self) -> Option<&Arc<Node>> {
        let n = self.replicas.len();
        let start = self.next_replica.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        (0..n)
            .map(|i| &self.replicas[(start + i) % n])
            .find(|node| node.rest_until.load(Ordering::Relaxed) <= now)
    }

    /// Leaves `node` out of the reads for [`REPLICA_REST`].
    pub(crate) fn rest(node: &Node) {
        let until = now_ms().saturating_add(u64::try_from(REPLICA_REST.as_millis()).unwrap_or(0));
        node.rest_until.store(until, Ordering::Relaxed);
    }
}
