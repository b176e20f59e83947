//! The load driver of every backend's fault tests: 20 users keep counting in
//! their sessions through the layer while the test breaks the server
//! (restart, kill, freeze), then [`check`] asserts what every backend
//! promises under faults.
//!
//! The assertions: no task panics; no request waits past the op timeout
//! plus a margin ([`LONGEST`]); every failure is a `503` with `Retry-After`,
//! in flight during the fault window (from the fault until recovery is
//! observed); a request succeeds within [`RECOVERY`] of the server being
//! back; no session is replaced; and every write answered 2xx is still there
//! afterwards (the writes answered 503 are counted: applied or not).
//!
//! A fault that a backend does not promise to survive without loss (a
//! failover to an asynchronous replica) runs with [`under_load_with`] and
//! [`Durability::CountLost`]: the acknowledged writes that vanished are
//! then counted and returned in the [`Report`] instead of failing the test,
//! so the test can report (and assert) the measured loss.
//!
//! A backend's test builds the app with [`app`] on a store of its own server
//! and hands [`under_load`] the fault to inject:
//!
//! ```no_run
//! # async fn run(store: session_memory::MemoryStore) {
//! use session_core::conformance::faults;
//!
//! let app = faults::app(store);
//! faults::under_load(&app, "server restart", || async {
//!     // stop the server, start it again; return once it is back
//! })
//! .await;
//! # }
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use http::StatusCode;
use http::header::RETRY_AFTER;

use super::http::{Reply, send};
use crate::{FailurePolicy, SessionLayer, SessionStore};

/// Concurrent users of the load.
pub const USERS: usize = 20;
/// The layer's store operation timeout in the fault tests.
pub const OP_TIMEOUT: Duration = Duration::from_millis(500);
/// The longest a request may take. A request makes at most two timed store
/// phases, its load and its save, and each gets its own [`OP_TIMEOUT`]
/// deadline, so the layer itself promises 2 x `OP_TIMEOUT`; the extra second
/// absorbs scheduling on a busy 2-core machine (the tests run beside other
/// builds). This bounds hangs; it is not a performance target.
pub const LONGEST: Duration = Duration::from_millis(2 * 500 + 1000);
/// The promise: serving again within 2 s of the server being back.
pub const RECOVERY: Duration = Duration::from_secs(2);
/// Each user's pause between requests: steady load, not a CPU hog.
pub const PAUSE: Duration = Duration::from_millis(20);
/// Steady load before the fault and after recovery.
pub const STEADY: Duration = Duration::from_millis(1500);

/// `/count` and `/read` of the fault tests: the conformance apps' handlers.
pub use super::http::{count, read};

/// The app of the fault tests on `store`: `/count` and `/read` under a layer
/// with [`OP_TIMEOUT`] and [`FailurePolicy::Reject`].
pub fn app(store: impl SessionStore) -> Router {
    let layer = SessionLayer::new(store)
        .op_timeout(OP_TIMEOUT)
        .failure_policy(FailurePolicy::Reject);
    Router::new()
        .route("/count", get(count))
        .route("/read", get(read))
        .layer(layer)
}

/// The whole fault test: [`STEADY`] load, then `inject` (which breaks the
/// server and returns once it is back), recovery, [`STEADY`] load again,
/// each user's count read back, and [`check`] under the name `fault`.
///
/// # Panics
///
/// When any of the assertions in the [module docs](self) fails.
pub async fn under_load<F, Fut>(app: &Router, fault: &str, inject: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    under_load_with(app, fault, Plan::default(), inject).await;
}

/// What a fault test expects of the writes acknowledged around the fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Every write answered 2xx is still there afterwards (asserted).
    AllKept,
    /// Acknowledged writes may vanish (an asynchronous replica promoted):
    /// they are counted in [`Report::lost`], and every other assertion holds.
    CountLost,
}

/// How [`under_load_with`] runs a fault.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Steady load before the fault is injected (default [`STEADY`]).
    pub before: Duration,
    /// What is asserted of the acknowledged writes (default
    /// [`Durability::AllKept`]).
    pub durability: Durability,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            before: STEADY,
            durability: Durability::AllKept,
        }
    }
}

/// What a fault test measured.
#[derive(Debug)]
pub struct Report {
    /// Requests sent, the users' first ones included.
    pub requests: usize,
    /// Requests answered 503.
    pub failed: usize,
    /// The longest any request took.
    pub longest: Duration,
    /// The fault window.
    pub window: Window,
    /// Acknowledged increments that are not in the counts afterwards: the
    /// drops of each user's acknowledged counts (a count at or below an
    /// earlier acknowledged one), and of its final count below its last
    /// acknowledged one. Always 0 under [`Durability::AllKept`].
    pub lost: u64,
    /// Writes answered 503 (applied or not).
    pub ambiguous: u64,
}

impl Report {
    /// From the fault to the first success of a request that started once
    /// the server was back.
    pub fn fault_to_success(&self) -> Duration {
        self.window.recovered - self.window.injected
    }
}

/// [`under_load`] with a [`Plan`]: `plan.before` of steady load, then
/// `inject`, recovery, [`STEADY`] load again, the counts read back, and
/// [`check_with`]; returns what was measured.
///
/// # Panics
///
/// When any of the assertions in the [module docs](self) fails (under
/// [`Durability::CountLost`], all but the one on acknowledged writes).
pub async fn under_load_with<F, Fut>(app: &Router, fault: &str, plan: Plan, inject: F) -> Report
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let load = Load::start(app).await;
    tokio::time::sleep(plan.before).await;
    let injected = load.now();
    inject().await;
    let back = load.now();
    let window = load.recover(injected, back).await;
    tokio::time::sleep(STEADY).await;
    let (outcomes, cookies) = load.finish().await;
    let finals = read_counts(app, &cookies).await;
    check_with(fault, plan.durability, &outcomes, window, &finals)
}

/// One request of the load, as its user saw it.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Which user sent it.
    pub user: usize,
    /// When it started, since the load started.
    pub start: Duration,
    /// How long it took.
    pub took: Duration,
    /// The answer's status.
    pub status: StatusCode,
    /// The answer's `Retry-After`.
    pub retry_after: Option<String>,
    /// The count in a 2xx body: this request's write, acknowledged.
    pub count: Option<u64>,
    /// Whether the response set a cookie (a replaced session).
    pub set_cookie: bool,
}

impl Outcome {
    /// When it was answered, since the load started.
    pub fn end(&self) -> Duration {
        self.start + self.took
    }
}

/// The fault window, in time since the load started.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// The fault was injected.
    pub injected: Duration,
    /// The server was back (restarted, or resumed).
    pub back: Duration,
    /// The first request that started after `back` was answered 2xx.
    pub recovered: Duration,
}

/// [`USERS`] concurrent users, each in a session of its own, each sending
/// `/count` in a loop (with a short pause) until told to stop.
#[derive(Debug)]
pub struct Load {
    t0: Instant,
    log: Arc<Mutex<Vec<Outcome>>>,
    stop: Arc<AtomicBool>,
    users: Vec<tokio::task::JoinHandle<()>>,
    cookies: Vec<String>,
}

impl Load {
    /// Creates each user's session (its first count, which must succeed)
    /// and starts the users.
    pub async fn start(app: &Router) -> Self {
        let t0 = Instant::now();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut cookies = Vec::with_capacity(USERS);
        for user in 0..USERS {
            let (outcome, reply) = request(app, t0, user, "/count", None).await;
            assert_eq!(reply.status, StatusCode::OK, "user {user}'s first request");
            assert_eq!(reply.body, "1", "user {user}'s first request");
            cookies.push(reply.cookie_pair().expect("a new session sets a cookie"));
            lock(&log).push(outcome);
        }
        let users = cookies
            .iter()
            .enumerate()
            .map(|(user, cookie)| {
                let (app, log, stop, cookie) =
                    (app.clone(), log.clone(), stop.clone(), cookie.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let (outcome, _) =
                            request(&app, t0, user, "/count", Some(cookie.as_bytes())).await;
                        lock(&log).push(outcome);
                        tokio::time::sleep(PAUSE).await;
                    }
                })
            })
            .collect();
        Self {
            t0,
            log,
            stop,
            users,
            cookies,
        }
    }

    /// Time since the load started.
    pub fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    /// Waits (at most 5 s, to measure rather than hang) for a request that
    /// started after `back` to succeed, and asserts it came within [`RECOVERY`].
    pub async fn recover(&self, injected: Duration, back: Duration) -> Window {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let first = lock(&self.log)
                .iter()
                .filter(|o| o.start >= back && o.status.is_success())
                .map(Outcome::end)
                .min();
            if let Some(recovered) = first {
                assert!(
                    recovered - back <= RECOVERY,
                    "first success {:?} after the server was back",
                    recovered - back
                );
                return Window {
                    injected,
                    back,
                    recovered,
                };
            }
            assert!(
                Instant::now() < deadline,
                "no request succeeded within 5 s of the server being back; last outcomes: {:?}",
                lock(&self.log).iter().rev().take(5).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the users (every task must end without a panic); gives every
    /// request's outcome and each user's cookie.
    pub async fn finish(self) -> (Vec<Outcome>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for (user, task) in self.users.into_iter().enumerate() {
            if let Err(error) = task.await {
                panic!("user {user}'s task failed: {error}");
            }
        }
        let outcomes = std::mem::take(&mut *lock(&self.log));
        (outcomes, self.cookies)
    }
}

async fn request(
    app: &Router,
    t0: Instant,
    user: usize,
    path: &str,
    cookie: Option<&[u8]>,
) -> (Outcome, Reply) {
    let start = t0.elapsed();
    let reply = send(app, path, cookie).await;
    let took = t0.elapsed() - start;
    let outcome = Outcome {
        user,
        start,
        took,
        status: reply.status,
        retry_after: reply
            .headers
            .get(RETRY_AFTER)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        count: if reply.status.is_success() {
            Some(reply.body.parse().expect("a 2xx /count answers a number"))
        } else {
            None
        },
        set_cookie: !reply.set_cookies.is_empty(),
    };
    (outcome, reply)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Each user's count, read back after the load (every session must still
/// be there).
pub async fn read_counts(app: &Router, cookies: &[String]) -> Vec<u64> {
    let mut counts = Vec::with_capacity(cookies.len());
    for (user, cookie) in cookies.iter().enumerate() {
        let reply = send(app, "/read", Some(cookie.as_bytes())).await;
        assert_eq!(reply.status, StatusCode::OK, "user {user}'s read-back");
        let n = reply.body.parse().unwrap_or_else(|_| {
            panic!("user {user}'s session is gone: /read said {:?}", reply.body)
        });
        counts.push(n);
    }
    counts
}

/// The assertions shared by every fault (see the [module docs](self)).
pub fn check(fault: &str, outcomes: &[Outcome], window: &Window, finals: &[u64]) {
    check_with(fault, Durability::AllKept, outcomes, *window, finals);
}

/// [`check`], with the acknowledged writes asserted kept or only counted
/// lost, as `durability` says; returns what was measured.
///
/// # Panics
///
/// When an assertion fails.
pub fn check_with(
    fault: &str,
    durability: Durability,
    outcomes: &[Outcome],
    window: Window,
    finals: &[u64],
) -> Report {
    let window = &window;
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.status.is_success()).collect();
    let longest = outcomes.iter().map(|o| o.took).max().unwrap_or_default();
    let last_failure = failed.iter().map(|o| o.start).max();
    println!(
        "{fault}: {} requests, {} failed (503), longest {longest:?}; fault at {:?}, \
         server back {:?} later, first success {:?} after that; last failure started at {:?}",
        outcomes.len(),
        failed.len(),
        window.injected,
        window.back - window.injected,
        window.recovered - window.back,
        last_failure,
    );

    // No hang: every request answered within the layer's bound.
    for o in outcomes {
        assert!(
            o.took <= LONGEST,
            "{fault}: a request took {:?}: {o:?}",
            o.took
        );
    }

    // Failures: 503 with Retry-After, only while the fault lasted. A request
    // already in flight when the fault hit may fail too, so "during" means
    // in flight at some moment between the fault and the observed recovery.
    for o in &failed {
        assert_eq!(
            o.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{fault}: a failure other than 503: {o:?}"
        );
        assert_eq!(
            o.retry_after.as_deref(),
            Some("1"),
            "{fault}: a 503 without Retry-After: 1: {o:?}"
        );
        assert!(
            o.end() >= window.injected && o.start <= window.recovered,
            "{fault}: a request failed outside the fault window {window:?}: {o:?}"
        );
    }

    // No session was replaced: a lost record would make the layer start a
    // new session and set a new cookie.
    for o in outcomes.iter().skip(USERS) {
        assert!(!o.set_cookie, "{fault}: a session was replaced: {o:?}");
    }

    // Durability, per user. Each user sends one request at a time, so its
    // acknowledged counts must rise; a write answered 503 may or may not
    // have been applied, so the final count lies between the acknowledged
    // writes and those plus the unacknowledged ones.
    let (mut ambiguous_writes, mut ambiguous_applied, mut lost) = (0, 0, 0);
    for (user, &last) in finals.iter().enumerate() {
        let mine: Vec<&Outcome> = outcomes.iter().filter(|o| o.user == user).collect();
        let acked: Vec<&Outcome> = mine.iter().copied().filter(|o| o.count.is_some()).collect();
        let counts: Vec<u64> = acked.iter().filter_map(|o| o.count).collect();
        // A count at or below an earlier acknowledged one: the increments
        // from it up to the earlier one were lost (the user sends one
        // request at a time).
        let mut user_lost: u64 = counts
            .windows(2)
            .map(|pair| (pair[0] + 1).saturating_sub(pair[1]))
            .sum();
        user_lost += counts.last().map_or(0, |&top| top.saturating_sub(last));
        let ambiguous = mine.len() as u64 - acked.len() as u64;
        if durability == Durability::AllKept {
            for pair in acked.windows(2) {
                assert!(
                    pair[0].count < pair[1].count,
                    "{fault}: user {user}'s acknowledged count went back: {:?} then {:?}",
                    pair[0],
                    pair[1]
                );
            }
            let before_fault = acked.iter().filter(|o| o.end() < window.injected).count() as u64;
            let acked = acked.len() as u64;
            assert!(
                last >= before_fault,
                "{fault}: user {user} had {before_fault} writes acknowledged before the fault, \
                 {last} after it"
            );
            assert!(
                acked <= last && last <= acked + ambiguous,
                "{fault}: user {user}: {acked} writes acknowledged, {ambiguous} answered 503, \
                 but the count is {last}"
            );
            ambiguous_applied += last - acked;
        } else {
            // Lost writes lower the count; nothing raises it past the writes sent.
            let sent = mine.len() as u64;
            assert!(
                last <= sent,
                "{fault}: user {user} sent {sent} writes, but the count is {last}"
            );
        }
        ambiguous_writes += ambiguous;
        lost += user_lost;
    }
    if durability == Durability::AllKept {
        println!(
            "{fault}: every acknowledged write kept; of the {ambiguous_writes} writes answered 503, \
             {ambiguous_applied} were applied anyway"
        );
    } else {
        let acked = outcomes.iter().filter(|o| o.count.is_some()).count();
        println!(
            "{fault}: {lost} of {acked} acknowledged increments lost; {ambiguous_writes} writes answered 503"
        );
    }
    Report {
        requests: outcomes.len(),
        failed: failed.len(),
        longest,
        window: *window,
        lost,
        ambiguous: ambiguous_writes,
    }
}
