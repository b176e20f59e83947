//! Metrics and lifecycle events through the layer, on a real store: the
//! events fire once, after the store confirmed the change, with the right
//! keys; none fires for a change that was refused, rolled back or failed;
//! the metrics count what a scripted sequence of requests implies; and no
//! metric label or event ever carries a raw session id.
//!
//! Each case runs on a current-thread runtime under a [`Capture`] recorder
//! installed for that thread only ([`run`]), so that cases running in
//! parallel in one test process do not see each other's metrics.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use axum::Router;
use axum::routing::get;
use http::{Method, StatusCode};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use time::OffsetDateTime;

use super::http::{Reply, id_of, send, send_as};
use super::support::{At, Call, FaultStore};
use crate::{
    ConflictPolicy, DeleteOutcome, Id, Record, SaveOutcome, Session, SessionError, SessionEvents,
    SessionInfo, SessionLayer, SessionStore, StoreError, StoreKey,
};

/// A metrics recorder that keeps every series it is given, for tests.
///
/// Install it for one thread with [`metrics::with_local_recorder`] (or let
/// [`run`] do it).
#[derive(Debug, Default)]
pub struct Capture {
    series: Mutex<BTreeMap<SeriesKey, Arc<Series>>>,
}

/// A series' kind, name and labels.
type SeriesKey = (Kind, String, Vec<(String, String)>);

/// What a captured series is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A counter.
    Counter,
    /// A gauge.
    Gauge,
    /// A histogram.
    Histogram,
}

/// One captured series: a counter's total, a gauge's last value, or a
/// histogram's count of values.
#[derive(Debug, Default)]
struct Series {
    /// Counter total, or number of histogram values.
    count: AtomicU64,
    /// Gauge value (as f64 bits).
    gauge: AtomicU64,
}

impl CounterFn for Series {
    fn increment(&self, value: u64) {
        self.count.fetch_add(value, Ordering::SeqCst);
    }

    fn absolute(&self, value: u64) {
        self.count.fetch_max(value, Ordering::SeqCst);
    }
}

impl GaugeFn for Series {
    fn increment(&self, value: f64) {
        self.set(f64::from_bits(self.gauge.load(Ordering::SeqCst)) + value);
    }

    fn decrement(&self, value: f64) {
        self.set(f64::from_bits(self.gauge.load(Ordering::SeqCst)) - value);
    }

    fn set(&self, value: f64) {
        self.gauge.store(value.to_bits(), Ordering::SeqCst);
    }
}

impl HistogramFn for Series {
    fn record(&self, _value: f64) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }
}

impl Capture {
    fn series(&self, kind: Kind, key: &Key) -> Arc<Series> {
        let labels = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        self.series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((kind, key.name().to_owned(), labels))
            .or_default()
            .clone()
    }

    /// The sum over the series of `kind` named `name` that have all of
    /// `labels`: a counter's total, or a histogram's number of values.
    pub fn count(&self, kind: Kind, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|((k, n, l), _)| {
                *k == kind
                    && n == name
                    && labels
                        .iter()
                        .all(|(lk, lv)| l.iter().any(|(k, v)| k == lk && v == lv))
            })
            .map(|(_, s)| s.count.load(Ordering::SeqCst))
            .sum()
    }

    /// A counter's total over the series with all of `labels`.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.count(Kind::Counter, name, labels)
    }

    /// A histogram's number of values over the series with all of `labels`.
    pub fn histogram_count(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.count(Kind::Histogram, name, labels)
    }

    /// The last value of the gauge `name` (with no labels), if set.
    pub fn gauge(&self, name: &str) -> Option<f64> {
        self.series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(Kind::Gauge, name.to_owned(), Vec::new()))
            .map(|s| f64::from_bits(s.gauge.load(Ordering::SeqCst)))
    }

    /// Every series as text: kind, name and labels (`name{k=v,..}`).
    pub fn rendered(&self) -> Vec<String> {
        self.series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .map(|(kind, name, labels)| {
                let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{kind:?} {name}{{{}}}", labels.join(","))
            })
            .collect()
    }
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.series(Kind::Counter, key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.series(Kind::Gauge, key))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.series(Kind::Histogram, key))
    }
}

/// Runs `test` to the end on a new current-thread runtime with a fresh
/// [`Capture`] installed as this thread's recorder: every task of the
/// runtime (the layer's spawned commits too) records into it.
///
/// # Panics
///
/// If the runtime cannot be built, and whenever `test` panics.
pub fn run<F, Fut>(test: F)
where
    F: FnOnce(Arc<Capture>) -> Fut,
    Fut: Future<Output = ()>,
{
    let capture = Arc::new(Capture::default());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    let recorder = capture.clone();
    metrics::with_local_recorder(&*recorder, || runtime.block_on(test(capture)));
}

/// One thing seen, in the order seen: a store's answer or an event.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    /// The store answered that it created the record under this key.
    Created(String),
    /// The store answered that it deleted this key (`delete`).
    Deleted(String),
    /// The store answered `Deleted` to `delete_if_unchanged` on this key.
    Retired(String),
    /// The store answered `delete_by_principal` with this count.
    DeletedByPrincipal(u64),
    /// An event (rendered).
    Event(Event),
}

/// An event as the test's hook saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Created(String, Option<String>),
    IdCycled(String, String, Option<String>),
    Destroyed(String, Option<String>),
    Revoked(String, u64),
    Expired(String, Option<String>),
}

/// The shared, ordered log of store answers and events.
#[derive(Clone, Default)]
struct Journal(Arc<Mutex<Vec<Seen>>>);

impl Journal {
    fn push(&self, seen: Seen) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(seen);
    }

    fn all(&self) -> Vec<Seen> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn events(&self) -> Vec<Event> {
        self.all()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Event(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    /// Panics unless every event comes after the store's answer that made
    /// its change.
    fn assert_events_after_their_commits(&self) {
        let all = self.all();
        for (i, seen) in all.iter().enumerate() {
            let Seen::Event(event) = seen else { continue };
            let before = &all[..i];
            let confirmed = match event {
                Event::Created(key, _) => before.contains(&Seen::Created(key.clone())),
                Event::IdCycled(old, new, _) => {
                    before.contains(&Seen::Created(new.clone()))
                        && before.contains(&Seen::Retired(old.clone()))
                }
                Event::Destroyed(key, _) => before.contains(&Seen::Deleted(key.clone())),
                Event::Revoked(_, n) => before.contains(&Seen::DeletedByPrincipal(*n)),
                // Not a change the layer made: the store's answer to a
                // load, which `expired_load_counted_and_reported_once`
                // checks on its own.
                Event::Expired(..) => true,
            };
            assert!(
                confirmed,
                "{event:?} before its store call answered: {all:?}"
            );
        }
    }
}

impl SessionEvents for Journal {
    fn created(&self, key: &StoreKey, principal: Option<&str>) {
        self.push(Seen::Event(Event::Created(
            key.as_str().to_owned(),
            principal.map(str::to_owned),
        )));
    }

    fn id_cycled(&self, old: &StoreKey, new: &StoreKey, principal: Option<&str>) {
        self.push(Seen::Event(Event::IdCycled(
            old.as_str().to_owned(),
            new.as_str().to_owned(),
            principal.map(str::to_owned),
        )));
    }

    fn destroyed(&self, key: &StoreKey, principal: Option<&str>) {
        self.push(Seen::Event(Event::Destroyed(
            key.as_str().to_owned(),
            principal.map(str::to_owned),
        )));
    }

    fn revoked(&self, principal: &str, count: u64) {
        self.push(Seen::Event(Event::Revoked(principal.to_owned(), count)));
    }

    fn expired(&self, key: &StoreKey, principal: Option<&str>) {
        self.push(Seen::Event(Event::Expired(
            key.as_str().to_owned(),
            principal.map(str::to_owned),
        )));
    }
}

/// A store that writes its answers to the journal once it has them.
struct Journaled<S> {
    inner: S,
    journal: Journal,
}

#[async_trait]
impl<S: SessionStore> SessionStore for Journaled<S> {
    async fn create(&self, key: &StoreKey, record: &Record) -> Result<bool, StoreError> {
        let created = self.inner.create(key, record).await;
        if matches!(created, Ok(true)) {
            self.journal.push(Seen::Created(key.as_str().to_owned()));
        }
        created
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        self.inner.load(key).await
    }

    async fn save(
        &self,
        key: &StoreKey,
        record: &Record,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError> {
        self.inner.save(key, record, expected_version).await
    }

    async fn touch(
        &self,
        key: &StoreKey,
        expected_version: u64,
        idle_deadline: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.inner.touch(key, expected_version, idle_deadline).await
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        let deleted = self.inner.delete(key).await;
        if deleted.is_ok() {
            self.journal.push(Seen::Deleted(key.as_str().to_owned()));
        }
        deleted
    }

    async fn delete_if_unchanged(
        &self,
        key: &StoreKey,
        expected_version: u64,
    ) -> Result<DeleteOutcome, StoreError> {
        let outcome = self.inner.delete_if_unchanged(key, expected_version).await;
        if matches!(outcome, Ok(DeleteOutcome::Deleted)) {
            self.journal.push(Seen::Retired(key.as_str().to_owned()));
        }
        outcome
    }

    async fn list_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>, StoreError> {
        self.inner.list_by_principal(principal).await
    }

    async fn delete_by_principal(&self, principal: &str) -> Result<u64, StoreError> {
        let deleted = self.inner.delete_by_principal(principal).await;
        if let Ok(n) = deleted {
            self.journal.push(Seen::DeletedByPrincipal(n));
        }
        deleted
    }

    async fn delete_expired(&self) -> Result<u64, StoreError> {
        self.inner.delete_expired().await
    }

    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
}

type Answer = Result<String, SessionError>;

/// `get` then `insert` of `n`.
async fn incr(session: Session) -> Answer {
    let n: u64 = session.get("n").await?.unwrap_or_default();
    session.insert("n", n + 1).await?;
    Ok((n + 1).to_string())
}

async fn read(session: Session) -> Answer {
    let n: u64 = session.get("n").await?.unwrap_or_default();
    Ok(n.to_string())
}

/// Reads `n`, then cycles the id and sets the principal `ada`.
async fn login(session: Session) -> Answer {
    let n: u64 = session.get("n").await?.unwrap_or_default();
    session.cycle_id().await?;
    session.set_principal("ada").await?;
    Ok(n.to_string())
}

/// Reads the principal (to say goodbye), then destroys the session.
async fn logout(session: Session) -> Answer {
    let principal = session.principal().await?;
    session.destroy().await?;
    Ok(format!("bye {}", principal.unwrap_or_default()))
}

/// Destroys the session without reading it: the layer deletes what the
/// cookie names, and does not know its principal.
async fn drop_session(session: Session) -> Answer {
    session.destroy().await?;
    Ok("dropped".to_owned())
}

/// Writes, then fails: nothing is committed.
async fn fail(session: Session) -> Result<String, (StatusCode, &'static str)> {
    session
        .insert("failed", true)
        .await
        .map_err(|_| (StatusCode::SERVICE_UNAVAILABLE, "store"))?;
    Err((StatusCode::INTERNAL_SERVER_ERROR, "handler failed"))
}

fn app(layer: SessionLayer) -> Router {
    Router::new()
        .route("/incr", get(incr))
        .route("/read", get(read))
        .route("/login", get(login).post(login))
        .route("/logout", get(logout))
        .route("/drop", get(drop_session))
        .route("/fail", get(fail))
        .layer(layer)
}

/// The store key (as text) of the session a cookie pair names.
fn key_of(pair: &str) -> String {
    id_of(pair).store_key().as_str().to_owned()
}

async fn with(app: &Router, path: &str, pair: &str) -> Reply {
    send(app, path, Some(pair.as_bytes())).await
}

/// A success with `body`, and no `Set-Cookie` unless the store's reads may
/// lag (then a save raises the client's floor in its cookie).
fn answered(reply: &Reply, body: &str, lags: bool) -> bool {
    reply.status.is_success() && reply.body == body && (lags || reply.set_cookies.is_empty())
}

fn cookie(reply: &Reply) -> String {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.cookie_pair().expect("a session cookie")
}

/// A visitor's first write, a write, a login, a logout, a failed handler,
/// a logout that never loaded its session (no principal known) and a "log
/// out everywhere": each change fires its one event, in order,
/// after the store answered that it made it, with the store keys of the
/// cookies involved and the principal where there is one.
pub async fn events_fire_once_after_commit<S: SessionStore>(store: S, _capture: Arc<Capture>) {
    let journal = Journal::default();
    let store: Arc<dyn SessionStore> = Arc::new(Journaled {
        inner: store,
        journal: journal.clone(),
    });
    let layer = SessionLayer::from_arc(store.clone()).with_events(journal.clone());
    let app = app(layer.clone());

    let first = cookie(&send(&app, "/incr", None).await);
    assert!(with(&app, "/incr", &first).await.is_success_with("2"));
    let login = cookie(&with(&app, "/login", &first).await);
    let logout = with(&app, "/logout", &login).await;
    assert_eq!(logout.status, StatusCode::OK, "{}", logout.body);
    let failed = send(&app, "/fail", None).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(failed.set_cookies.is_empty());
    let dropped = cookie(&send(&app, "/incr", None).await);
    let drop = with(&app, "/drop", &dropped).await;
    assert_eq!(
        (drop.status, drop.body.as_str()),
        (StatusCode::OK, "dropped")
    );
    let second = cookie(&send(&app, "/incr", None).await);
    let second_login = cookie(&with(&app, "/login", &second).await);
    assert_eq!(layer.revoke_principal("ada").await.expect("revoke"), 1);
    assert_eq!(
        store
            .load(&id_of(&second_login).store_key())
            .await
            .expect("load"),
        None,
        "revoked"
    );

    let ada = Some("ada".to_owned());
    assert_eq!(
        journal.events(),
        [
            Event::Created(key_of(&first), None),
            Event::IdCycled(key_of(&first), key_of(&login), ada.clone()),
            Event::Destroyed(key_of(&login), ada.clone()),
            Event::Created(key_of(&dropped), None),
            Event::Destroyed(key_of(&dropped), None),
            Event::Created(key_of(&second), None),
            Event::IdCycled(key_of(&second), key_of(&second_login), ada),
            Event::Revoked("ada".to_owned(), 1),
        ]
    );
    journal.assert_events_after_their_commits();
}

/// A login whose view turned stale (a write reached the old id while it
/// was retiring it) fires no event when refused, and exactly one, with the
/// id it finally set, when run again; the new id it rolled back is in no
/// event. A logout or a first write whose store call failed fires none.
pub async fn no_event_for_a_stale_or_failed_change<S: SessionStore>(
    store: S,
    _capture: Arc<Capture>,
) {
    let journal = Journal::default();
    let journaled: Arc<dyn SessionStore> = Arc::new(Journaled {
        inner: store,
        journal: journal.clone(),
    });
    let faults = Arc::new(FaultStore::new(journaled.clone()));
    let store: Arc<dyn SessionStore> = faults.clone();
    let events = |layer: SessionLayer| layer.with_events(journal.clone());
    let refusing = app(events(
        SessionLayer::from_arc(store.clone()).conflict_policy(ConflictPolicy::Refuse),
    ));
    let rerunning = app(events(SessionLayer::from_arc(store.clone())));
    let other = app(events(SessionLayer::from_arc(store.clone())));
    let old = cookie(&send(&other, "/incr", None).await);
    let before = journal.events();
    assert_eq!(before, [Event::Created(key_of(&old), None)]);

    for (app, method) in [(&refusing, Method::POST), (&rerunning, Method::GET)] {
        let pause = faults.pause(Call::DeleteIfUnchanged);
        let login = {
            let (app, old, method) = (app.clone(), old.clone(), method.clone());
            tokio::spawn(async move { send_as(&app, method, "/login", Some(old.as_bytes())).await })
        };
        pause.reached().await;
        // The login read `n`; this changes it on the old id before the
        // login retires it: the login's view is stale.
        let write = with(&other, "/incr", &old).await;
        assert_eq!(write.status, StatusCode::OK, "{}", write.body);
        pause.release();
        let login = login.await.expect("login task");
        let rolled_back: Vec<String> = journal
            .all()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Created(key) => Some(key),
                _ => None,
            })
            .filter(|key| *key != key_of(&old))
            .collect();
        assert!(!rolled_back.is_empty(), "the login created a new id first");
        if method == Method::POST {
            assert_eq!(login.status, StatusCode::CONFLICT, "{}", login.body);
            assert_eq!(journal.events(), before, "an event for a refused login");
            assert_eq!(rolled_back.len(), 1);
            let gone = StoreKey::parse(&rolled_back[0]).expect("a store key");
            assert_eq!(store.load(&gone).await.expect("load"), None, "rolled back");
        } else {
            let new = cookie(&login);
            let mut expected = before.clone();
            expected.push(Event::IdCycled(
                key_of(&old),
                key_of(&new),
                Some("ada".to_owned()),
            ));
            assert_eq!(journal.events(), expected, "one event, for the re-run");
            assert!(
                rolled_back[1..].contains(&key_of(&new)),
                "the re-run's id was created"
            );
            let first_try = &rolled_back[1];
            assert_ne!(
                *first_try,
                key_of(&new),
                "the rolled-back id is not the new one"
            );
        }
    }
    journal.assert_events_after_their_commits();

    // Failures: a logout whose delete fails, a first write whose create fails.
    let events_before = journal.events();
    let live = cookie(&send(&other, "/incr", None).await);
    let events_before_failures = journal.events();
    assert_eq!(events_before_failures.len(), events_before.len() + 1);
    faults.fail(Call::Delete, 0);
    let logout = with(&other, "/logout", &live).await;
    assert_eq!(logout.status, StatusCode::SERVICE_UNAVAILABLE);
    faults.fail(Call::Create, 0);
    let first = send(&other, "/incr", None).await;
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        journal.events(),
        events_before_failures,
        "an event for a failed change"
    );
}

/// A scripted sequence of requests, and the counters, histograms and
/// labels it must leave: every series labelled with the store's backend
/// name, every count what the requests imply.
pub async fn metrics_count_a_scripted_sequence<S: SessionStore>(store: S, capture: Arc<Capture>) {
    let backend = store.backend();
    let faults = Arc::new(FaultStore::new(store));
    let store: Arc<dyn SessionStore> = faults.clone();
    let layer = SessionLayer::from_arc(store.clone());
    let app = app(layer.clone());
    let b = ("backend", backend);

    let first = cookie(&send(&app, "/incr", None).await); // create
    let lags = store.reads_may_lag();
    // A store whose reads may lag raises the client's floor in the cookie
    // after a save (see `crate::replica`): the browser keeps the new one.
    let second = with(&app, "/incr", &first).await; // load, save
    assert!(
        answered(&second, "2", lags),
        "{} {}",
        second.status,
        second.body
    );
    let first = second.cookie_pair().unwrap_or(first);
    assert!(with(&app, "/read", &first).await.is_success_with("2")); // load
    let unknown = format!("session={}", Id::random().expect("an id").encode());
    assert!(with(&app, "/read", &unknown).await.is_success_with("0")); // load (miss)
    let login = cookie(&with(&app, "/login", &first).await); // load, create, retire
    assert!(with(&app, "/logout", &login).await.status.is_success()); // load, delete
    assert_eq!(layer.revoke_principal("nobody").await.expect("revoke"), 0);

    let counter = |name: &str, outcome: &str| capture.counter(name, &[b, ("outcome", outcome)]);
    assert_eq!(counter("session_creates_total", "created"), 2);
    assert_eq!(counter("session_creates_total", "taken"), 0);
    assert_eq!(counter("session_loads_total", "hit"), 4);
    assert_eq!(counter("session_loads_total", "miss"), 1);
    assert_eq!(counter("session_saves_total", "saved"), 1);
    assert_eq!(counter("session_saves_total", "conflict"), 0);
    let deletes = |op: &str, outcome: &str| {
        capture.counter(
            "session_deletes_total",
            &[b, ("op", op), ("outcome", outcome)],
        )
    };
    assert_eq!(deletes("delete", "deleted"), 1);
    assert_eq!(deletes("delete_if_unchanged", "deleted"), 1);
    assert_eq!(capture.counter("session_revoked_total", &[b]), 0);
    assert_eq!(capture.counter("session_store_errors_total", &[]), 0);
    assert_eq!(capture.counter("session_stale_total", &[]), 0);
    let calls = |op: &str| capture.histogram_count("session_store_call_seconds", &[b, ("op", op)]);
    let expected_calls = [
        ("create", 2),
        ("load", 5),
        ("save", 1),
        ("touch", 0),
        ("delete", 1),
        ("delete_if_unchanged", 1),
        ("delete_by_principal", 1),
    ];
    for (op, n) in expected_calls {
        assert_eq!(calls(op), n, "{op} calls timed");
    }
    assert_eq!(
        capture.histogram_count("session_size_bytes", &[b]),
        3,
        "two creates and a save"
    );

    // A conflict: a write held before its save while another commits
    // first; it read `n`, so it is stale and runs again (a GET).
    let other = self::app(SessionLayer::from_arc(store.clone()));
    let held_save = faults.pause_at(Call::Save, At::Before);
    let session = cookie(&send(&app, "/incr", None).await);
    let held = {
        let (app, session) = (app.clone(), session.clone());
        tokio::spawn(async move { with(&app, "/incr", &session).await })
    };
    held_save.reached().await;
    assert!(answered(&with(&other, "/incr", &session).await, "2", lags));
    held_save.release();
    assert!(answered(&held.await.expect("task"), "3", lags));
    assert_eq!(counter("session_saves_total", "conflict"), 1);
    assert_eq!(counter("session_saves_total", "saved"), 3);
    assert_eq!(counter("session_stale_total", "rerun"), 1);
    assert_eq!(counter("session_stale_total", "refused"), 0);

    // A store failure, counted by call and kind.
    faults.fail(Call::Load, 0);
    assert_eq!(
        with(&app, "/read", &session).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        capture.counter(
            "session_store_errors_total",
            &[b, ("op", "load"), ("kind", "backend")]
        ),
        1
    );

    for series in capture.rendered() {
        assert!(series.contains(" session_"), "{series}");
        if !series.contains("session_memory_sessions") {
            assert!(series.contains(&format!("backend={backend}")), "{series}");
        }
    }
}

/// Every cookie a sequence of requests set, against every metric series
/// and every event it left: no raw id in any of them, only store keys.
pub async fn no_raw_id_in_metrics_or_events<S: SessionStore>(store: S, capture: Arc<Capture>) {
    let journal = Journal::default();
    let store: Arc<dyn SessionStore> = Arc::new(store);
    let layer = SessionLayer::from_arc(store.clone()).with_events(journal.clone());
    let app = app(layer.clone());
    let mut ids = Vec::new();
    let mut last_login = String::new();
    for _ in 0..3 {
        let first = cookie(&send(&app, "/incr", None).await);
        assert!(with(&app, "/incr", &first).await.status.is_success());
        let login = cookie(&with(&app, "/login", &first).await);
        assert!(with(&app, "/read", &login).await.status.is_success());
        ids.push(id_of(&first).encode());
        ids.push(id_of(&login).encode());
        // The cookie as the browser holds it (with its floor, on a store
        // whose reads may lag: without it a lagging replica may not know
        // the session yet, and the logout would find none).
        last_login = login;
    }
    let logout = with(&app, "/logout", &last_login).await;
    assert!(logout.status.is_success());
    assert_eq!(layer.revoke_principal("ada").await.expect("revoke"), 2);

    let events = journal.events();
    assert_eq!(events.len(), 3 * 2 + 1 + 1, "{events:?}");
    let texts: Vec<String> = capture
        .rendered()
        .into_iter()
        .chain(events.iter().map(|e| format!("{e:?}")))
        .collect();
    for id in &ids {
        let key = Id::decode(id).expect("an id").store_key();
        for text in &texts {
            assert!(!text.contains(id.as_str()), "a raw id in {text}");
        }
        assert!(
            events
                .iter()
                .any(|e| format!("{e:?}").contains(key.as_str())),
            "no event names the store key of a session: {events:?}"
        );
    }
}

/// A logged-in session (principal `ada`, idle timeout 300 ms) left to
/// expire, then loaded twice. On a store that
/// [observes expiry](SessionStore::observes_expiry) the first load counts
/// `session_loads_total{outcome="expired"}` and fires
/// [`expired`](SessionEvents::expired) once, with the session's store key
/// and principal, and the second counts `miss`; on one that does not (Redis
/// drops the record with its TTL) both count `miss` and no event fires.
/// Either way the visitor gets a fresh, empty session, and no raw id is in
/// any metric or event.
pub async fn expired_load_counted_and_reported_once<S: SessionStore>(
    store: S,
    capture: Arc<Capture>,
) {
    let observes = store.observes_expiry();
    let backend = store.backend();
    let journal = Journal::default();
    let expiry = crate::Expiry::new(
        std::time::Duration::from_millis(300),
        std::time::Duration::from_secs(60),
    );
    let layer = SessionLayer::new(store)
        .expiry(expiry)
        .with_events(journal.clone());
    let app = app(layer);
    let first = cookie(&send(&app, "/incr", None).await);
    // The cookie as the browser keeps it (with its floor, on a store whose
    // reads may lag).
    let login = cookie(&with(&app, "/login", &first).await);
    let key = key_of(&login);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let loads = |outcome: &str| {
        capture.counter(
            "session_loads_total",
            &[("backend", backend), ("outcome", outcome)],
        )
    };
    let expired_events = || -> Vec<Event> {
        journal
            .events()
            .into_iter()
            .filter(|e| matches!(e, Event::Expired(..)))
            .collect()
    };
    let misses = loads("miss");
    assert_eq!(loads("expired"), 0);
    let reply = with(&app, "/read", &login).await;
    assert!(
        reply.is_success_with("0"),
        "{} {}",
        reply.status,
        reply.body
    );
    if observes {
        assert_eq!(loads("expired"), 1, "the load that met the expired record");
        assert_eq!(loads("miss"), misses);
        assert_eq!(
            expired_events(),
            [Event::Expired(key.clone(), Some("ada".to_owned()))]
        );
    } else {
        assert_eq!(loads("expired"), 0);
        assert_eq!(loads("miss"), misses + 1);
        assert_eq!(expired_events(), []);
    }

    let again = with(&app, "/read", &login).await;
    assert!(
        again.is_success_with("0"),
        "{} {}",
        again.status,
        again.body
    );
    assert_eq!(loads("expired"), u64::from(observes), "once per expiry");
    assert_eq!(loads("miss"), misses + 1 + u64::from(!observes));
    assert_eq!(expired_events().len(), usize::from(observes), "once");

    let texts: Vec<String> = capture
        .rendered()
        .into_iter()
        .chain(journal.events().iter().map(|e| format!("{e:?}")))
        .collect();
    for pair in [&first, &login] {
        let id = id_of(pair).encode();
        for text in &texts {
            assert!(!text.contains(id.as_str()), "a raw id in {text}");
        }
    }
}

/// Loads through a store whose [reads may lag](SessionStore::reads_may_lag)
/// are counted in `session_replica_reads_total`, one per load, under the
/// store's backend name: `replica` once a replica has caught up with the
/// client's writes, `behind` or `primary` when the primary answered. A
/// store whose reads never lag has no such series.
pub async fn replica_reads_counted<S: SessionStore>(store: S, capture: Arc<Capture>) {
    let lags = store.reads_may_lag();
    let backend = store.backend();
    let layer = SessionLayer::new(store);
    let app = app(layer);
    let session = cookie(&send(&app, "/incr", None).await);
    let reads = |outcome: &str| {
        capture.counter(
            "session_replica_reads_total",
            &[("backend", backend), ("outcome", outcome)],
        )
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut loads = 0;
    loop {
        let reply = with(&app, "/read", &session).await;
        assert!(
            reply.is_success_with("1"),
            "{} {}",
            reply.status,
            reply.body
        );
        loads += 1;
        if !lags || reads("replica") > 0 || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let total = capture.counter("session_replica_reads_total", &[]);
    if lags {
        assert!(reads("replica") > 0, "no load served by a replica in 10 s");
        assert_eq!(
            reads("replica") + reads("behind") + reads("primary"),
            loads,
            "one count per load"
        );
        assert_eq!(total, loads, "every series under backend={backend}");
    } else {
        assert_eq!(total, 0, "replica reads counted on a store without lag");
    }
}

/// What a sweeper reported, per sweep.
#[derive(Clone, Default)]
struct Sweeps(Arc<Mutex<Vec<(&'static str, u64)>>>);

impl SessionEvents for Sweeps {
    fn swept(&self, backend: &'static str, count: u64) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((backend, count));
    }
}

/// For the SQL stores' sweeper: `spawn` starts it on `store` (batches of 2,
/// a short period). Five expired records and two live ones: the hook given
/// to [`report_to`](crate::sweeper::SweeperHandle::report_to) hears of all
/// five (in one call per sweep that deleted any, each after its batches
/// returned), `session_swept_total` counts five under the store's backend
/// name, and the live records are still there.
pub async fn sweeper_reports_what_it_deleted<S, F>(store: S, spawn: F, capture: Arc<Capture>)
where
    S: SessionStore,
    F: FnOnce(&S) -> crate::sweeper::SweeperHandle,
{
    use super::store::{new_key, new_record};
    let backend = store.backend();
    let mut expired = new_record();
    expired.idle_deadline = crate::record::now() - time::Duration::seconds(1);
    for _ in 0..5 {
        assert!(store.create(&new_key(), &expired).await.expect("create"));
    }
    let live = [new_key(), new_key()];
    for key in &live {
        assert!(store.create(key, &new_record()).await.expect("create"));
    }
    let sweeps = Sweeps::default();
    let sweeper = spawn(&store);
    sweeper.report_to(sweeps.clone());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while sweeper.deleted() < 5 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The hook is told after the sweep's last batch; give it that sweep.
    let reported = || -> u64 {
        sweeps
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(_, n)| n)
            .sum()
    };
    while reported() < 5 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    sweeper.stop().await;
    assert_eq!(
        reported(),
        5,
        "the hook heard of every expired record deleted"
    );
    let calls = sweeps
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert!(
        calls.iter().all(|&(b, n)| b == backend && n > 0),
        "{calls:?}"
    );
    assert_eq!(
        capture.counter("session_swept_total", &[("backend", backend)]),
        5
    );
    for key in &live {
        assert!(
            store.load(key).await.expect("load").is_some(),
            "a live record swept"
        );
    }
}
