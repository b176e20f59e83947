//! Live traffic on a memory store while it drains into another store.
//!
//! Workers make store calls (or HTTP requests through the real layer) the
//! whole time: before the drain, while the drain is held at its first copy,
//! while it is held halfway, and after it is done. Each worker owns its
//! sessions and knows what it was told (every acknowledged write), and all
//! workers also count on a few shared sessions. At the end the target must
//! hold every acknowledged write, no destroyed or retired session, every
//! session created at any point, and the drain's report must count exactly
//! the sessions the memory store held when the drain began.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use serde_json::json;
use session_core::conformance::http::{count, destroy, id_of, login, send};
use session_core::conformance::store::{new_key, new_record};
use session_core::conformance::support::{At, Call, FaultStore};
use session_core::record::now;
use session_core::{DeleteOutcome, SaveOutcome, SessionLayer, SessionStore, StoreKey};
use session_memory::{DrainReport, MemoryStore};
use tokio::sync::RwLock;

use super::finish;

const WORKERS: u64 = 8;
const SHARED: usize = 4;

/// What a worker knows about one of its sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Known {
    /// Live with this count, at this version (`None`: the layer's versions, not checked).
    Alive { version: Option<u64>, n: u64 },
    /// Deleted or retired: must be nowhere.
    Dead,
}

/// State every worker shares with the test.
struct Shared {
    local: MemoryStore,
    /// Workers hold it shared for each operation; the test takes it alone
    /// to start the drain between operations.
    turn: RwLock<()>,
    stop: AtomicBool,
    ops: AtomicU64,
    /// Sessions the memory store holds while not draining (+1 create, -1 delete).
    live: AtomicI64,
    counters: Vec<StoreKey>,
    counted: Vec<AtomicU64>,
    failures: Mutex<Vec<String>>,
}

impl Shared {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }

    async fn ops_at_least(&self, n: u64) {
        let started = Instant::now();
        // Bounded: workers may all be waiting on a session the drain holds.
        while self.ops.load(Ordering::SeqCst) < n && started.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A tiny deterministic generator (xorshift), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Runs `workers` over `shared` while `local` drains into `target`, as the
/// module says; returns the report and what the workers know.
async fn run<T, W, F>(
    shared: Arc<Shared>,
    target: Arc<FaultStore<T>>,
    first_copies: u64,
    worker: W,
) -> (DrainReport, i64, Vec<HashMap<StoreKey, Known>>)
where
    T: SessionStore + Clone,
    W: Fn(Arc<Shared>, u64) -> F,
    F: Future<Output = HashMap<StoreKey, Known>> + Send + 'static,
{
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| tokio::spawn(worker(shared.clone(), w)))
        .collect();
    shared.ops_at_least(300).await;

    // Start the drain between two operations, so that what memory holds
    // then is known exactly; hold it at its first copy, then halfway.
    let turn = shared.turn.write().await;
    let live_at_start = shared.live.load(Ordering::SeqCst);
    let first = target.pause_at(Call::Create, At::Before);
    let halfway = target.pause_skipping(Call::Create, At::After, first_copies);
    let drain = tokio::spawn({
        let (local, target) = (shared.local.clone(), target.clone());
        async move { local.drain_into(&target).await.unwrap() }
    });
    first.reached().await;
    drop(turn);
    let before = shared.ops.load(Ordering::SeqCst);
    shared.ops_at_least(before + 300).await;
    first.release();
    halfway.reached().await;
    let ops = shared.ops.load(Ordering::SeqCst);
    shared.ops_at_least(ops + 300).await;
    halfway.release();
    let report = finish(drain).await;
    let during = shared.ops.load(Ordering::SeqCst) - before;
    assert!(
        during >= 300,
        "only {during} operations ran during the drain: the test did not test much"
    );
    // And on, after the drain.
    let ops = shared.ops.load(Ordering::SeqCst);
    shared.ops_at_least(ops + 300).await;
    shared.stop.store(true, Ordering::SeqCst);
    let mut known = Vec::new();
    for worker in workers {
        known.push(finish(worker).await);
    }
    (report, live_at_start, known)
}

/// Checks the end state against what the workers were told.
async fn verify<T: SessionStore + Clone>(
    shared: &Shared,
    target: &FaultStore<T>,
    report: DrainReport,
    live_at_start: i64,
    known: Vec<HashMap<StoreKey, Known>>,
) {
    let failures = shared.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} requests were answered wrongly during the drain, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let (mut lost, mut resurrected, mut alive, mut dead) = (0, 0, 0, 0);
    for (key, known) in known.iter().flatten() {
        let there = target.inner().load(key).await.unwrap();
        match known {
            Known::Alive { version, n } => {
                alive += 1;
                let found = there.map(|r| (version.map(|_| r.version), r.data["n"].clone()));
                if found != Some((*version, json!(n))) {
                    lost += 1;
                }
            }
            Known::Dead => {
                dead += 1;
                if there.is_some() {
                    resurrected += 1;
                }
            }
        }
    }
    assert_eq!(
        lost, 0,
        "{lost} of {alive} live sessions are missing from the target or lack an acknowledged write"
    );
    assert_eq!(
        resurrected, 0,
        "{resurrected} of {dead} destroyed or retired sessions are in the target"
    );
    for (key, counted) in shared.counters.iter().zip(&shared.counted) {
        let there = target
            .inner()
            .load(key)
            .await
            .unwrap()
            .expect("a shared session");
        assert_eq!(
            there.data["n"],
            json!(counted.load(Ordering::SeqCst)),
            "a shared session lost acknowledged increments"
        );
    }
    shared.local.delete_expired().await.unwrap();
    assert_eq!(
        shared.local.len(),
        0,
        "sessions left in memory after the drain"
    );
    let live_at_start = u64::try_from(live_at_start).unwrap();
    assert_eq!(
        (report.moved, report.skipped, report.kept),
        (live_at_start, 0, 0),
        "the report does not count the {live_at_start} sessions memory held when the drain began"
    );
}

fn new_shared(local: MemoryStore, counters: Vec<StoreKey>, live: i64) -> Arc<Shared> {
    Arc::new(Shared {
        local,
        turn: RwLock::new(()),
        stop: AtomicBool::new(false),
        ops: AtomicU64::new(0),
        live: AtomicI64::new(live),
        counted: counters.iter().map(|_| AtomicU64::new(0)).collect(),
        counters,
        failures: Mutex::new(Vec::new()),
    })
}

/// Store calls: `sessions` sessions spread over the workers, saved,
/// touched, deleted, cycled and created while the memory store drains
/// into `target`.
pub async fn store_calls_during_a_drain<T: SessionStore + Clone>(target: T, sessions: u64) {
    let local = MemoryStore::new();
    let mut owned: Vec<HashMap<StoreKey, Known>> = (0..WORKERS).map(|_| HashMap::new()).collect();
    for i in 0..sessions {
        let key = new_key();
        assert!(local.create(&key, &new_record()).await.unwrap());
        owned[usize::try_from(i % WORKERS).unwrap()].insert(
            key,
            Known::Alive {
                version: Some(0),
                n: 0,
            },
        );
    }
    let counters: Vec<StoreKey> = (0..SHARED).map(|_| new_key()).collect();
    for key in &counters {
        assert!(local.create(key, &new_record()).await.unwrap());
    }
    let live = i64::try_from(sessions + SHARED as u64).unwrap();
    let shared = new_shared(local, counters, live);
    let target = Arc::new(FaultStore::new(target));
    let owned = Arc::new(Mutex::new(owned));
    let (report, live_at_start, known) = run(shared.clone(), target.clone(), sessions / 2, {
        move |shared, w| {
            let mine = std::mem::take(&mut owned.lock().unwrap()[usize::try_from(w).unwrap()]);
            store_worker(shared, w, mine)
        }
    })
    .await;
    verify(&shared, &target, report, live_at_start, known).await;
}

async fn store_worker(
    shared: Arc<Shared>,
    w: u64,
    mut mine: HashMap<StoreKey, Known>,
) -> HashMap<StoreKey, Known> {
    let store = shared.local.clone();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (w + 1));
    let mut alive: Vec<StoreKey> = mine.keys().cloned().collect();
    while !shared.stop.load(Ordering::SeqCst) {
        let _turn = shared.turn.read().await;
        let roll = rng.below(100);
        if roll >= 80 {
            // Count on a shared session: compare-and-set, retried on conflict.
            let i = usize::try_from(rng.below(SHARED as u64)).unwrap();
            let key = &shared.counters[i];
            loop {
                let Some(mut record) = store.load(key).await.unwrap() else {
                    shared.fail(format!("shared session {} gone", key.short()));
                    break;
                };
                let expected = record.version;
                record.version += 1;
                let n = record.data["n"].as_u64().unwrap() + 1;
                record.data.insert("n".into(), json!(n));
                match store.save(key, &record, expected).await.unwrap() {
                    SaveOutcome::Saved => {
                        shared.counted[i].fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    SaveOutcome::Conflict => {}
                    SaveOutcome::Gone => {
                        shared.fail(format!("shared session {} gone on save", key.short()));
                        break;
                    }
                }
            }
        } else if roll >= 70 || alive.is_empty() {
            // A new visitor.
            let key = new_key();
            if store.create(&key, &new_record()).await.unwrap() {
                shared.live.fetch_add(1, Ordering::SeqCst);
                mine.insert(
                    key.clone(),
                    Known::Alive {
                        version: Some(0),
                        n: 0,
                    },
                );
                alive.push(key);
            } else {
                shared.fail("a create of a fresh key was refused".into());
            }
        } else {
            let at = usize::try_from(rng.below(alive.len() as u64)).unwrap();
            let key = alive[at].clone();
            let Known::Alive {
                version: Some(version),
                n,
            } = mine[&key]
            else {
                unreachable!("only live keys are in `alive`")
            };
            let Some(record) = store.load(&key).await.unwrap() else {
                shared.fail(format!("live session {} not found", key.short()));
                alive.swap_remove(at);
                continue;
            };
            if (record.version, record.data["n"].clone()) != (version, json!(n)) {
                shared.fail(format!(
                    "session {} read as v{} n={}, expected v{version} n={n}",
                    key.short(),
                    record.version,
                    record.data["n"]
                ));
            }
            match roll {
                0..50 => {
                    let mut next = record.clone();
                    next.version = version + 1;
                    next.data.insert("n".into(), json!(n + 1));
                    match store.save(&key, &next, version).await.unwrap() {
                        SaveOutcome::Saved => {
                            mine.insert(
                                key,
                                Known::Alive {
                                    version: Some(version + 1),
                                    n: n + 1,
                                },
                            );
                        }
                        other => shared.fail(format!("save of {}: {other:?}", key.short())),
                    }
                }
                50..60 => {
                    let later = now() + Duration::from_secs(60 + rng.below(600));
                    if !store.touch(&key, version, later).await.unwrap() {
                        shared.fail(format!("touch of live {} missed", key.short()));
                    }
                }
                60..65 => {
                    store.delete(&key).await.unwrap();
                    shared.live.fetch_sub(1, Ordering::SeqCst);
                    mine.insert(key, Known::Dead);
                    alive.swap_remove(at);
                }
                _ => {
                    // A login: the data under a new id, the old id retired.
                    let fresh = new_key();
                    let mut moved = record.clone();
                    moved.version = 0;
                    if !store.create(&fresh, &moved).await.unwrap() {
                        shared.fail("a create of a fresh key was refused".into());
                        continue;
                    }
                    match store.delete_if_unchanged(&key, version).await.unwrap() {
                        DeleteOutcome::Deleted => {}
                        other => shared.fail(format!("retire of {}: {other:?}", key.short())),
                    }
                    mine.insert(key, Known::Dead);
                    alive.swap_remove(at);
                    mine.insert(
                        fresh.clone(),
                        Known::Alive {
                            version: Some(0),
                            n,
                        },
                    );
                    alive.push(fresh);
                }
            }
        }
        shared.ops.fetch_add(1, Ordering::SeqCst);
    }
    mine
}

fn app(store: MemoryStore) -> Router {
    Router::new()
        .route("/count", get(count))
        .route("/logout", get(destroy))
        .route("/login", get(login))
        // Long enough that a request waiting for a held copy never times out.
        .layer(SessionLayer::new(store).op_timeout(Duration::from_secs(30)))
}

/// One user as a worker sees it: its cookie and how many counts it was told.
struct User {
    cookie: String,
    counted: u64,
}

/// HTTP requests through the real layer (an axum `Router` driven by tower's
/// `oneshot`): `users` users counting, logging in and out, new visitors
/// arriving, and every worker counting on a few shared sessions, while the
/// memory store under the layer drains into `target`.
pub async fn requests_during_a_drain<T: SessionStore + Clone>(target: T, users: u64) {
    let local = MemoryStore::new();
    let router = app(local.clone());
    let mut owned: Vec<Vec<User>> = (0..WORKERS).map(|_| Vec::new()).collect();
    for i in 0..users {
        let reply = send(&router, "/count", None).await;
        let cookie = reply.cookie_pair().expect("a session cookie");
        owned[usize::try_from(i % WORKERS).unwrap()].push(User { cookie, counted: 1 });
    }
    let mut shared_cookies = Vec::new();
    let mut counters = Vec::new();
    for _ in 0..SHARED {
        let reply = send(&router, "/count", None).await;
        let cookie = reply.cookie_pair().expect("a session cookie");
        counters.push(id_of(&cookie).store_key());
        shared_cookies.push(cookie);
    }
    let live = i64::try_from(users + SHARED as u64).unwrap();
    let shared = new_shared(local, counters, live);
    for counted in &shared.counted {
        counted.store(1, Ordering::SeqCst);
    }
    let target = Arc::new(FaultStore::new(target));
    let owned = Arc::new(Mutex::new(owned));
    let shared_cookies = Arc::new(shared_cookies);
    let (report, live_at_start, known) = run(shared.clone(), target.clone(), users / 2, {
        move |shared, w| {
            let mine = std::mem::take(&mut owned.lock().unwrap()[usize::try_from(w).unwrap()]);
            request_worker(shared, router.clone(), shared_cookies.clone(), w, mine)
        }
    })
    .await;
    verify(&shared, &target, report, live_at_start, known).await;
}

async fn request_worker(
    shared: Arc<Shared>,
    router: Router,
    shared_cookies: Arc<Vec<String>>,
    w: u64,
    mut users: Vec<User>,
) -> HashMap<StoreKey, Known> {
    let mut known = HashMap::new();
    let mut rng = Rng(0xD1B5_4A32_D192_ED03 ^ (w + 1));
    while !shared.stop.load(Ordering::SeqCst) {
        let _turn = shared.turn.read().await;
        let roll = rng.below(100);
        if roll >= 80 {
            let i = usize::try_from(rng.below(SHARED as u64)).unwrap();
            let reply = send(&router, "/count", Some(shared_cookies[i].as_bytes())).await;
            if reply.status.is_success() && reply.set_cookies.is_empty() {
                shared.counted[i].fetch_add(1, Ordering::SeqCst);
            } else {
                shared.fail(format!(
                    "shared count: {} {:?}",
                    reply.status, reply.set_cookies
                ));
            }
        } else if roll >= 70 || users.is_empty() {
            let reply = send(&router, "/count", None).await;
            match reply.cookie_pair() {
                Some(cookie) if reply.body == "1" => {
                    shared.live.fetch_add(1, Ordering::SeqCst);
                    users.push(User { cookie, counted: 1 });
                }
                _ => shared.fail(format!("new visitor: {} {:?}", reply.status, reply.body)),
            }
        } else {
            let at = usize::try_from(rng.below(users.len() as u64)).unwrap();
            let user = &mut users[at];
            let key = id_of(&user.cookie).store_key();
            match roll {
                0..60 => {
                    let reply = send(&router, "/count", Some(user.cookie.as_bytes())).await;
                    let expected = (user.counted + 1).to_string();
                    if reply.is_success_with(&expected) {
                        user.counted += 1;
                    } else {
                        shared.fail(format!(
                            "user {} counted {:?} ({}, {:?}), expected {expected}",
                            key.short(),
                            reply.body,
                            reply.status,
                            reply.set_cookies
                        ));
                    }
                }
                60..65 => {
                    let reply = send(&router, "/logout", Some(user.cookie.as_bytes())).await;
                    if !reply.status.is_success() {
                        shared.fail(format!("logout: {}", reply.status));
                    }
                    shared.live.fetch_sub(1, Ordering::SeqCst);
                    known.insert(key, Known::Dead);
                    users.swap_remove(at);
                }
                _ => {
                    let reply = send(&router, "/login", Some(user.cookie.as_bytes())).await;
                    match reply.cookie_pair() {
                        Some(cookie) if reply.status.is_success() => {
                            known.insert(key, Known::Dead);
                            user.cookie = cookie;
                        }
                        _ => {
                            shared.fail(format!("login: {} {:?}", reply.status, reply.set_cookies))
                        }
                    }
                }
            }
        }
        shared.ops.fetch_add(1, Ordering::SeqCst);
    }
    // What the store must hold for the users still logged in. The layer
    // picks the versions: compare the count only.
    for user in users {
        let key = id_of(&user.cookie).store_key();
        known.insert(
            key,
            Known::Alive {
                version: None,
                n: user.counted,
            },
        );
    }
    known
}
