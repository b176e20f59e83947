//! Serializability through the layer: parallel requests on one session,
//! written the way handlers really are (`get` then `insert`), through
//! several app instances sharing the store. Each instance is its own
//! [`SessionLayer`], so it has its own per-session turns, as separate
//! processes would.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::http::{Reply, id_of, keeps_session, send, send_as};
use super::support::{Call, CountingStore, FaultStore};
use crate::{Record, Session, SessionError, SessionLayer, SessionStore};

/// What the test app's handlers report to the test.
#[derive(Clone, Default)]
struct Probe {
    /// Handler runs per route, re-runs included.
    runs: Arc<std::sync::Mutex<BTreeMap<&'static str, usize>>>,
    /// Armed: the next holding handler stops after its read until released.
    armed: Arc<AtomicBool>,
    loaded: Arc<Notify>,
    release: Arc<Notify>,
}

impl Probe {
    fn ran(&self, route: &'static str) {
        *self
            .runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(route)
            .or_default() += 1;
    }

    fn runs(&self, route: &'static str) -> usize {
        self.runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(route)
            .copied()
            .unwrap_or(0)
    }

    /// Arms the hold: the next holding handler waits after its read.
    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    async fn hold(&self) {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.loaded.notify_one();
            self.release.notified().await;
        }
    }

    /// Sends `GET path` with the cookie `pair` through `app`, its handler
    /// held after its read (see [`held_as`](Self::held_as)).
    async fn held(&self, app: &Router, path: &str, pair: &str) -> HeldRequest {
        self.held_as(app, Method::GET, path, pair).await
    }

    /// Arms the hold, sends `method path` with the cookie `pair` through
    /// `app`, and waits until its handler has read the session and holds.
    async fn held_as(&self, app: &Router, method: Method, path: &str, pair: &str) -> HeldRequest {
        self.arm();
        let task = {
            let (app, path, pair) = (app.clone(), path.to_owned(), pair.to_owned());
            tokio::spawn(async move { send_as(&app, method, &path, Some(pair.as_bytes())).await })
        };
        self.loaded.notified().await;
        HeldRequest {
            task,
            probe: self.clone(),
        }
    }
}

/// A request whose handler holds after its read, until [`finish`](Self::finish).
struct HeldRequest {
    task: tokio::task::JoinHandle<Reply>,
    probe: Probe,
}

impl HeldRequest {
    /// Lets the handler go on; the request's reply.
    async fn finish(self) -> Reply {
        self.probe.release.notify_one();
        self.task.await.expect("request task")
    }
}

type Answer = Result<String, SessionError>;

/// `get` then `insert`: the idiom every session library's users write.
async fn incr(State(probe): State<Probe>, session: Session) -> Answer {
    probe.ran("incr");
    let n: u64 = session.get("n").await?.unwrap_or_default();
    probe.hold().await;
    session.insert("n", n + 1).await?;
    Ok((n + 1).to_string())
}

/// Reads `a` and writes `b = 10 a` from it.
async fn derive(State(probe): State<Probe>, session: Session) -> Answer {
    probe.ran("derive");
    let a: u64 = session.get("a").await?.unwrap_or_default();
    probe.hold().await;
    session.insert("b", a * 10).await?;
    Ok((a * 10).to_string())
}

/// Reads `a` (held after the read when armed); with the query `?write`,
/// also writes `b = 10 a` from it.
async fn sometimes(State(probe): State<Probe>, session: Session, uri: http::Uri) -> Answer {
    probe.ran("sometimes");
    let a: u64 = session.get("a").await?.unwrap_or_default();
    probe.hold().await;
    if uri.query() == Some("write") {
        session.insert("b", a * 10).await?;
    }
    Ok((a * 10).to_string())
}

/// A blind write of `key`.
async fn set(
    State(probe): State<Probe>,
    session: Session,
    Path((key, value)): Path<(String, u64)>,
) -> Answer {
    probe.ran("set");
    session.insert(&key, value).await?;
    Ok(value.to_string())
}

/// `update` of `u`.
async fn bump(State(probe): State<Probe>, session: Session) -> Answer {
    probe.ran("bump");
    let u = session
        .update("u", |u: Option<u64>| u.unwrap_or(0) + 1)
        .await?;
    Ok(u.to_string())
}

/// A login: reads `n`, then (held) cycles the id and sets a principal.
async fn login(State(probe): State<Probe>, session: Session) -> Answer {
    probe.ran("login");
    let n: u64 = session.get("n").await?.unwrap_or_default();
    probe.hold().await;
    session.cycle_id().await?;
    session.set_principal("ada").await?;
    Ok(n.to_string())
}

/// Inserts `bytes` bytes under `key` (held after the insert when armed);
/// `413` when the layer refuses it as too large.
async fn blob(
    State(probe): State<Probe>,
    session: Session,
    Path((key, bytes)): Path<(String, usize)>,
) -> Result<String, (StatusCode, String)> {
    probe.ran("blob");
    match session.insert(&key, "x".repeat(bytes)).await {
        Ok(()) => {}
        Err(SessionError::TooLarge { size, limit }) => {
            return Err((StatusCode::PAYLOAD_TOO_LARGE, format!("{size} > {limit}")));
        }
        Err(error) => return Err((StatusCode::SERVICE_UNAVAILABLE, error.to_string())),
    }
    probe.hold().await;
    Ok("stored".to_owned())
}

/// Reads `n` (held after the read when armed) and changes nothing.
async fn peek(State(probe): State<Probe>, session: Session) -> Answer {
    probe.ran("peek");
    let n: u64 = session.get("n").await?.unwrap_or_default();
    probe.hold().await;
    Ok(n.to_string())
}

/// Shortens the session's idle timeout to 15 minutes.
async fn shorten(session: Session) -> Answer {
    let minutes = |n: u64| std::time::Duration::from_secs(60 * n);
    session
        .set_expiry(crate::Expiry::new(minutes(15), minutes(7 * 24 * 60)))
        .await?;
    Ok("shortened".to_owned())
}

async fn destroy(session: Session) -> Answer {
    session.destroy().await?;
    Ok("destroyed".to_owned())
}

/// Writes, then fails.
async fn fail(session: Session) -> Result<String, (StatusCode, &'static str)> {
    session
        .insert("failed", true)
        .await
        .map_err(|_| (StatusCode::SERVICE_UNAVAILABLE, "store"))?;
    Err((StatusCode::INTERNAL_SERVER_ERROR, "handler failed"))
}

fn instance(layer: SessionLayer, probe: &Probe) -> Router {
    Router::new()
        .route("/incr", get(incr))
        .route("/derive", get(derive).post(derive))
        .route("/sometimes", get(sometimes))
        .route("/set/{key}/{value}", get(set))
        .route("/bump", get(bump))
        .route("/login", get(login).post(login))
        .route("/destroy", get(destroy))
        .route("/peek", get(peek))
        .route("/shorten", get(shorten))
        .route("/blob/{key}/{bytes}", get(blob))
        .route("/fail", get(fail))
        .with_state(probe.clone())
        .layer(layer)
}

/// `n` app instances over one store.
fn instances(store: &Arc<dyn SessionStore>, n: usize) -> (Vec<Router>, Probe) {
    let probe = Probe::default();
    let apps = (0..n)
        .map(|_| instance(SessionLayer::from_arc(store.clone()), &probe))
        .collect();
    (apps, probe)
}

async fn stored(store: &Arc<dyn SessionStore>, pair: &str) -> Option<Record> {
    store.load(&id_of(pair).store_key()).await.expect("load")
}

fn value(record: &Record, key: &str) -> Value {
    record.data.get(key).cloned().unwrap_or(Value::Null)
}

async fn get_with(app: &Router, path: &str, pair: &str) -> Reply {
    send(app, path, Some(pair.as_bytes())).await
}

/// A new session, made by `GET path` through `app`: its cookie pair.
async fn new_session(app: &Router, path: &str) -> String {
    send(app, path, None)
        .await
        .cookie_pair()
        .expect("a session cookie")
}

/// A request that read the session before a parallel commit and wrote
/// after it: refused with `409`, no cookie.
fn assert_refused(late: &Reply) {
    assert_eq!(late.status, StatusCode::CONFLICT, "{}", late.body);
    assert!(late.set_cookies.is_empty(), "{:?}", late.set_cookies);
}

/// Sends `requests` parallel requests for the paths `path(i)`, spread over
/// the instances, all with the cookie `pair`.
async fn parallel(
    apps: &[Router],
    requests: usize,
    pair: &str,
    path: impl Fn(usize) -> String,
) -> Vec<(String, Reply)> {
    let tasks: Vec<_> = (0..requests)
        .map(|i| {
            let (app, pair, path) = (apps[i % apps.len()].clone(), pair.to_owned(), path(i));
            tokio::spawn(async move {
                let reply = get_with(&app, &path, &pair).await;
                (path, reply)
            })
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.expect("request task"));
    }
    replies
}

/// The counts the 2xx answers carried, sorted; panics on an answer that is
/// neither a success nor one of the documented refusals (409, or 503 when
/// the turn or the store took longer than the operation timeout).
fn successes<'a>(replies: impl IntoIterator<Item = &'a Reply>) -> Vec<u64> {
    let mut counts = Vec::new();
    for reply in replies {
        match reply.status {
            StatusCode::OK => counts.push(reply.body.parse::<u64>().expect("a count")),
            StatusCode::CONFLICT | StatusCode::SERVICE_UNAVAILABLE => {}
            other => panic!("undocumented answer {other}: {}", reply.body),
        }
    }
    counts.sort_unstable();
    counts
}

/// 300 parallel `get`-then-`insert` requests with one cookie, spread over 3
/// app instances: the stored counter equals 1 + the number of successful
/// answers, and those answers are exactly 2, 3, ..., each having seen its
/// own predecessor's value.
pub async fn get_then_insert_counter_is_serializable_across_instances<S: SessionStore>(store: S) {
    const REQUESTS: usize = 300;
    let lags = store.reads_may_lag();
    let store: Arc<dyn SessionStore> = Arc::new(store);
    let (apps, probe) = instances(&store, 3);
    let first = send(&apps[0], "/incr", None).await;
    assert_eq!(first.body, "1");
    let pair = first.cookie_pair().expect("cookie");

    let replies = parallel(&apps, REQUESTS, &pair, |_| "/incr".to_owned()).await;
    let counts = successes(replies.iter().map(|(_, r)| r));
    let timed_out = replies
        .iter()
        .filter(|(_, r)| r.status == StatusCode::SERVICE_UNAVAILABLE)
        .count() as u64;
    let n = value(&stored(&store, &pair).await.expect("session"), "n");
    let n = n.as_u64().expect("n is a count");
    let answered = counts.len() as u64;
    // Every 200 is in the store. A 503 (the turn or a store call outlasted
    // the operation timeout on a loaded machine) means "not known": its
    // write may have landed. Nothing else may have.
    assert!(
        (1 + answered..=1 + answered + timed_out).contains(&n),
        "stored counter {n} vs {answered} answered 200 and {timed_out} 503"
    );
    let mut distinct = counts.clone();
    distinct.dedup();
    assert_eq!(
        distinct, counts,
        "two successful answers saw the same predecessor"
    );
    assert!(
        counts.iter().all(|c| (2..=n).contains(c)),
        "an answer outside 2..={n}: {counts:?}"
    );
    if timed_out == 0 {
        assert_eq!(n, 1 + answered);
        assert_eq!(
            counts,
            (2..=n).collect::<Vec<_>>(),
            "the successful answers are not each their own predecessor + 1"
        );
    }
    assert!(
        !counts.is_empty(),
        "no request succeeded ({} handler runs)",
        probe.runs("incr")
    );
    for (_, reply) in &replies {
        assert!(keeps_session(reply, &pair, lags), "{:?}", reply.set_cookies);
    }
    eprintln!(
        "get-then-insert x{REQUESTS} over 3 instances: {answered} succeeded, {timed_out} timed out, {} handler runs",
        probe.runs("incr") - 1
    );
}

/// Request A reads `a` and writes `b` from it while a parallel request
/// changes `a`: nothing derived from the stale `a` is committed. A `GET`
/// runs again on the fresh session (its answer is the re-run's); a `POST`
/// is refused with `409` and writes nothing.
pub async fn stale_read_is_never_committed<S: SessionStore>(store: S) {
    let store: Arc<dyn SessionStore> = Arc::new(store);
    let (apps, probe) = instances(&store, 2);
    let pair = new_session(&apps[0], "/set/a/1").await;

    // Each round: a = start, A reads it, then a = a' before A commits.
    // (A read whose write changes nothing commits nothing, and is
    // serializable before the parallel write: each round's A changes b.)
    for (method, start, a, expected) in [
        (Method::GET, 1, 2, StatusCode::OK),
        (Method::POST, 5, 3, StatusCode::CONFLICT),
    ] {
        let reset = get_with(&apps[1], &format!("/set/a/{start}"), &pair).await;
        assert_eq!(reset.status, StatusCode::OK);
        let runs = probe.runs("derive");
        let held = probe
            .held_as(&apps[0], method.clone(), "/derive", &pair)
            .await;
        let set = get_with(&apps[1], &format!("/set/a/{a}"), &pair).await;
        assert_eq!(set.status, StatusCode::OK);
        let derived = held.finish().await;
        assert_eq!(derived.status, expected, "{method}: {}", derived.body);
        let record = stored(&store, &pair).await.expect("session");
        assert_eq!(value(&record, "a"), json!(a));
        if method == Method::GET {
            assert_eq!(derived.body, (a * 10).to_string(), "the re-run's answer");
            assert_eq!(value(&record, "b"), json!(a * 10), "b from the fresh a");
            assert_eq!(probe.runs("derive") - runs, 2, "one run, one re-run");
        } else {
            assert_eq!(value(&record, "b"), json!(20), "the refused POST wrote b");
            assert_eq!(probe.runs("derive") - runs, 1, "a POST never runs twice");
        }
    }
}

/// A path whose requests have only read their session is learnt as such,
/// and its requests are no longer copied for a re-run. The first request
/// there that writes and turns out stale is refused (`409`) instead of run
/// again, and commits nothing; that write marks the path as writing, so
/// from then on its stale requests run again.
pub async fn path_learnt_read_only_refuses_its_first_stale_write<S: SessionStore>(store: S) {
    let store: Arc<dyn SessionStore> = Arc::new(store);
    let (apps, probe) = instances(&store, 2);
    let pair = new_session(&apps[0], "/set/a/1").await;
    for _ in 0..crate::layer::rerun::LEARN_AFTER {
        let read = get_with(&apps[0], "/sometimes", &pair).await;
        assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    }

    // Each round: `/sometimes?write` reads a, then a changes before it commits.
    for (a, rerun) in [(2, false), (3, true)] {
        let runs = probe.runs("sometimes");
        let held = probe.held(&apps[0], "/sometimes?write", &pair).await;
        let set = get_with(&apps[1], &format!("/set/a/{a}"), &pair).await;
        assert_eq!(set.status, StatusCode::OK);
        let late = held.finish().await;
        let record = stored(&store, &pair).await.expect("session");
        assert_eq!(value(&record, "a"), json!(a));
        if rerun {
            assert_eq!(late.status, StatusCode::OK, "{}", late.body);
            assert_eq!(late.body, (a * 10).to_string(), "the re-run's answer");
            assert_eq!(value(&record, "b"), json!(a * 10), "b from the fresh a");
            assert_eq!(probe.runs("sometimes") - runs, 2, "one run, one re-run");
        } else {
            assert_refused(&late);
            assert_eq!(
                value(&record, "b"),
                Value::Null,
                "the refused request wrote b"
            );
            assert_eq!(probe.runs("sometimes") - runs, 1, "no copy, no re-run");
        }
    }
}

/// `update` of one key, `get`-then-`insert` of another and blind writes of a
/// third, all in parallel over 3 instances: each counter equals the number
/// of its successful answers, which are its own predecessors + 1.
pub async fn update_mixed_with_get_insert_on_other_keys<S: SessionStore>(store: S) {
    const EACH: usize = 40;
    let store: Arc<dyn SessionStore> = Arc::new(store);
    let (apps, _) = instances(&store, 3);
    let pair = new_session(&apps[0], "/set/a/0").await;
    let replies = parallel(&apps, 3 * EACH, &pair, |i| match i % 3 {
        0 => "/bump".to_owned(),
        1 => "/incr".to_owned(),
        _ => format!("/set/a/{i}"),
    })
    .await;
    let of = |prefix: &str| {
        successes(
            replies
                .iter()
                .filter(|(p, _)| p.starts_with(prefix))
                .map(|(_, r)| r),
        )
    };
    let (bumps, incrs, sets) = (of("/bump"), of("/incr"), of("/set/"));
    let record = stored(&store, &pair).await.expect("session");
    assert_eq!(
        bumps,
        (1..=bumps.len() as u64).collect::<Vec<_>>(),
        "update answers"
    );
    assert_eq!(value(&record, "u"), json!(bumps.len()), "update count");
    assert_eq!(
        incrs,
        (1..=incrs.len() as u64).collect::<Vec<_>>(),
        "get/insert answers"
    );
    assert_eq!(value(&record, "n"), json!(incrs.len()), "get/insert count");
    let a = value(&record, "a").as_u64().expect("a");
    assert!(
        sets.contains(&a),
        "a = {a} was not written by a successful request"
    );
}

/// A request that read `n` before a parallel logout and writes `n + 1`
/// after it is refused (`409`) and never brings the session back.
pub async fn destroy_racing_get_then_insert_never_resurrects<S: SessionStore>(store: S) {
    let store: Arc<dyn SessionStore> = Arc::new(store);
    let (apps, probe) = instances(&store, 2);
    let pair = new_session(&apps[0], "/incr").await;
    let held = probe.held(&apps[0], "/incr", &pair).await;
    let out = get_with(&apps[1], "/destroy", &pair).await;
    assert_eq!(out.status, StatusCode::OK);
    assert_refused(&held.finish().await);
    assert_eq!(stored(&store, &pair).await, None, "the logout was undone");
}

/// `cycle_id` racing a write to the old id, forced both ways: a write that
/// reaches the old id between the new id's creation and the old id's
/// deletion is carried to the new id; a write that comes after the id
/// changed is refused. Either way the old id is dead.
pub async fn cycle_id_racing_a_write_to_the_old_id<S: SessionStore>(store: S) {
    let faults = Arc::new(FaultStore::new(store));
    let store: Arc<dyn SessionStore> = faults.clone();
    let (apps, probe) = instances(&store, 2);
    let old = new_session(&apps[0], "/incr").await;

    // Carried: the login's deletion of the old id waits until a parallel
    // write to the old id has been acknowledged.
    let pause = faults.pause(Call::DeleteIfUnchanged);
    let login = {
        let (app, old) = (apps[0].clone(), old.clone());
        tokio::spawn(async move { get_with(&app, "/login", &old).await })
    };
    pause.reached().await;
    let write = get_with(&apps[1], "/set/carried/7", &old).await;
    assert_eq!(write.status, StatusCode::OK, "the parallel write");
    pause.release();
    let login = login.await.expect("task");
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let new = login.cookie_pair().expect("the new id");
    assert_ne!(new, old);
    assert_eq!(stored(&store, &old).await, None, "the old id is dead");
    let record = stored(&store, &new).await.expect("new session");
    assert_eq!(
        value(&record, "carried"),
        json!(7),
        "the acknowledged write was dropped"
    );
    assert_eq!(record.principal.as_deref(), Some("ada"));
    assert_eq!(value(&record, "n"), json!(1));

    // Refused: a request that read the session before the login and writes
    // after it finds the old id gone.
    let held = probe.held(&apps[1], "/incr", &new).await;
    let second = get_with(&apps[0], "/login", &new).await;
    assert_eq!(second.status, StatusCode::OK);
    let newest = second.cookie_pair().expect("the newest id");
    assert_refused(&held.finish().await);
    assert_eq!(stored(&store, &new).await, None, "the old id came back");
    let record = stored(&store, &newest).await.expect("newest session");
    assert_eq!(value(&record, "n"), json!(1), "the refused write landed");
    assert_eq!(value(&record, "carried"), json!(7));
}

/// Without a parallel commit the layer makes no store call beyond what the
/// request needs and runs no handler twice: a new session is one create, a
/// write of an existing one a load and a save, a read one load, a login
/// (cycle) a load, a create and one compare-and-delete, a logout one delete.
pub async fn non_conflicting_commits_make_no_extra_store_calls<S: SessionStore>(store: S) {
    let counting = Arc::new(CountingStore::new(store));
    let store: Arc<dyn SessionStore> = counting.clone();
    let (apps, probe) = instances(&store, 1);
    let app = &apps[0];
    let mut before = counting.counts();
    let mut step = |what: &str, expect: [u64; 5]| {
        let now = counting.counts();
        let got = [
            now.create - before.create,
            now.load - before.load,
            now.save - before.save,
            now.delete - before.delete,
            now.total() - before.total(),
        ];
        assert_eq!(got, expect, "{what}: [create, load, save, delete, total]");
        before = now;
    };
    let pair = new_session(app, "/incr").await;
    step("new session", [1, 0, 0, 0, 1]);
    assert_eq!(get_with(app, "/incr", &pair).await.body, "2");
    step("get then insert", [0, 1, 1, 0, 2]);
    assert_eq!(get_with(app, "/derive", &pair).await.body, "0");
    step("read a, write b", [0, 1, 1, 0, 2]);
    let pair = get_with(app, "/login", &pair)
        .await
        .cookie_pair()
        .expect("new id");
    step("login", [1, 1, 0, 1, 3]);
    assert_eq!(
        get_with(app, "/destroy", &pair).await.status,
        StatusCode::OK
    );
    step("logout", [0, 0, 0, 1, 1]);
    assert_eq!(
        probe.runs("incr") + probe.runs("derive") + probe.runs("login"),
        4
    );
}

/// A handler that changed its session and then answered 5xx commits
/// nothing: no new session, no change to an existing one.
pub async fn failed_handler_commits_nothing<S: SessionStore>(store: S) {
    let store: Arc<dyn SessionStore> = Arc::new(store);
    let (apps, _) = instances(&store, 1);
    let failed = send(&apps[0], "/fail", None).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        failed.set_cookies.is_empty(),
        "a failed request made a session"
    );
    let pair = new_session(&apps[0], "/incr").await;
    let failed = get_with(&apps[0], "/fail", &pair).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    let record = stored(&store, &pair).await.expect("session");
    assert_eq!(
        value(&record, "failed"),
        Value::Null,
        "a failed request's change was saved"
    );
    assert_eq!(record.version, 0);
}

/// Two parallel requests each add 40 000 bytes under their own key: each
/// fits the 64 KiB limit alone, both together do not. The one that commits
/// second meets the first's write; its changes on the fresh record would
/// pass the limit, so they are not committed: it runs again and is told
/// its value is too large. Nothing over the limit is ever stored.
pub async fn size_limit_holds_when_parallel_writes_combine<S: SessionStore>(store: S) {
    let store: Arc<dyn SessionStore> = Arc::new(store);
    let (apps, probe) = instances(&store, 2);
    let pair = new_session(&apps[0], "/set/a/1").await;
    let held = probe.held(&apps[0], "/blob/one/40000", &pair).await;
    let other = get_with(&apps[1], "/blob/two/40000", &pair).await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);
    let late = held.finish().await;
    assert_eq!(late.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", late.body);
    let record = stored(&store, &pair).await.expect("session");
    let size = serde_json::to_vec(&record.data).expect("json").len();
    assert!(
        size <= crate::layer::DEFAULT_MAX_SESSION_SIZE,
        "{size} bytes stored"
    );
    assert!(record.data.contains_key("two"));
    assert!(
        !record.data.contains_key("one"),
        "the refused value was stored"
    );
    assert_eq!(probe.runs("blob"), 3, "two runs, one re-run");
}

/// A read-only request's touch racing a `set_expiry` that shortens the idle
/// timeout (forced): the touch was computed from the version the reader
/// loaded, with the old, long timeout, so it changes nothing once the
/// shorter expiry is saved. The session keeps the short idle deadline.
pub async fn touch_never_undoes_a_shorter_idle_timeout<S: SessionStore>(store: S) {
    let store: Arc<dyn SessionStore> = Arc::new(store);
    let probe = Probe::default();
    let apps: Vec<Router> = (0..2)
        .map(|_| {
            // Every read is due for a touch.
            let layer =
                SessionLayer::from_arc(store.clone()).touch_interval(std::time::Duration::ZERO);
            instance(layer, &probe)
        })
        .collect();
    let pair = new_session(&apps[0], "/incr").await;
    let reader = probe.held(&apps[0], "/peek", &pair).await;
    let short = get_with(&apps[1], "/shorten", &pair).await;
    assert_eq!(short.status, StatusCode::OK);
    let shortened = stored(&store, &pair).await.expect("session");
    let read = reader.finish().await;
    assert_eq!((read.status, read.body.as_str()), (StatusCode::OK, "1"));
    let after = stored(&store, &pair).await.expect("session");
    assert_eq!(
        after.idle_deadline, shortened.idle_deadline,
        "the reader's touch moved the shortened idle deadline"
    );
    let limit = crate::record::now() + time::Duration::minutes(15);
    assert!(
        after.idle_deadline <= limit,
        "idle deadline {} past 15 minutes",
        after.idle_deadline
    );
}
