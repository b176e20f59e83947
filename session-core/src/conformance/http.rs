//! HTTP-level conformance: the layer and a store together, through an axum
//! `Router` driven by tower's `ServiceExt::oneshot`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::routing::get;
use http::header::{COOKIE, SET_COOKIE};
use http::{Request, StatusCode};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Barrier, Notify};
use tower::ServiceExt as _;

use super::support::CountingStore;
use crate::{Expiry, Id, Key, SameSite, Session, SessionError, SessionLayer, SessionStore};

/// Gates that let a test hold a request between its load and its write,
/// or make parallel requests all load before any of them saves.
#[derive(Clone)]
struct Gate {
    loaded: Arc<Notify>,
    release: Arc<Notify>,
    together: Arc<Barrier>,
    /// How many requests may still wait at `together`: a request that runs
    /// again after a conflict must not wait for partners that never come.
    waiting: Arc<AtomicUsize>,
    /// Handler runs of the `-together` routes, re-runs included.
    runs: Arc<AtomicUsize>,
}

impl Gate {
    async fn together(&self) {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let first_runs = self
            .waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if first_runs.is_ok() {
            self.together.wait().await;
        }
    }

    /// Holds the first request that gets here until the test releases it
    /// (a re-run of it passes straight through).
    async fn hold(&self) {
        if self
            .waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            self.loaded.notify_one();
            self.release.notified().await;
        }
    }
}

/// The test app: one route per session operation.
fn app(layer: SessionLayer) -> (Router, Gate) {
    app_together(layer, 1)
}

/// The test app, whose `-together` routes wait until `n` requests have
/// made their change before any of them returns (and so saves).
fn app_together(layer: SessionLayer, n: usize) -> (Router, Gate) {
    let gate = Gate {
        loaded: Arc::default(),
        release: Arc::default(),
        together: Arc::new(Barrier::new(n)),
        waiting: Arc::new(AtomicUsize::new(n)),
        runs: Arc::default(),
    };
    let router = Router::new()
        .route("/count-together", get(count_together))
        .route("/insert-together/{key}", get(insert_together))
        .route("/held-cycle", get(held_cycle))
        .route("/count", get(count))
        .route("/read", get(read))
        .route("/untouched", get(|| async { "untouched" }))
        .route("/cycle", get(cycle))
        .route("/destroy", get(destroy))
        .route("/insert/{key}", get(insert))
        .route("/keys", get(keys))
        .route("/remember", get(remember))
        .route("/held-write", get(held_write))
        .route("/big/{bytes}", get(big))
        .with_state(gate.clone())
        .layer(layer);
    (router, gate)
}

/// A handler for test apps: adds one to the session's count `n` (through
/// `update`) and answers the new count.
pub async fn count(session: Session) -> Result<String, SessionError> {
    let n: u64 = session
        .update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(n.to_string())
}

/// A handler for test apps: answers the session's count `n`, or `none`,
/// and changes nothing.
pub async fn read(session: Session) -> Result<String, SessionError> {
    Ok(match session.get::<u64>("n").await? {
        Some(n) => n.to_string(),
        None => "none".to_owned(),
    })
}

/// A handler for test apps: gives the session a new id (a login), answers
/// `cycled`.
pub async fn cycle(session: Session) -> Result<&'static str, SessionError> {
    session.cycle_id().await?;
    Ok("cycled")
}

/// A handler for test apps: a login, which gives the session a new id and
/// sets its principal to `ada`; answers `welcome`.
pub async fn login(session: Session) -> Result<&'static str, SessionError> {
    session.cycle_id().await?;
    session.set_principal("ada").await?;
    Ok("welcome")
}

/// A handler for test apps: destroys the session (a logout), answers
/// `destroyed`.
pub async fn destroy(session: Session) -> Result<&'static str, SessionError> {
    session.destroy().await?;
    Ok("destroyed")
}

async fn insert(session: Session, Path(key): Path<String>) -> Result<&'static str, SessionError> {
    session.insert(&key, true).await?;
    Ok("inserted")
}

async fn keys(session: Session) -> Result<String, SessionError> {
    let mut found = Vec::new();
    for i in 0..1000 {
        if session.get::<bool>(&format!("k{i}")).await?.is_some() {
            found.push(format!("k{i}"));
        }
    }
    Ok(found.join(","))
}

async fn remember(session: Session) -> Result<&'static str, SessionError> {
    let expiry = Expiry::new(Duration::from_secs(3600), Duration::from_secs(30 * 86_400));
    session.set_expiry(expiry.persistent(true)).await?;
    Ok("remembered")
}

async fn count_together(
    State(gate): State<Gate>,
    session: Session,
) -> Result<String, SessionError> {
    let n: u64 = session
        .update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    gate.together().await;
    Ok(n.to_string())
}

async fn insert_together(
    State(gate): State<Gate>,
    session: Session,
    Path(key): Path<String>,
) -> Result<&'static str, SessionError> {
    session.insert(&key, true).await?;
    gate.together().await;
    Ok("inserted")
}

/// Loads the session, signals, waits for the test's release, then cycles its id.
async fn held_cycle(
    State(gate): State<Gate>,
    session: Session,
) -> Result<&'static str, SessionError> {
    let _ = session.get::<u64>("n").await?;
    gate.hold().await;
    session.cycle_id().await?;
    Ok("cycled")
}

/// Counts, then tries to store a string of `bytes` bytes; answers
/// `too large` when the layer refuses it.
async fn big(session: Session, Path(bytes): Path<usize>) -> Result<String, SessionError> {
    session
        .update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    match session.insert("blob", "x".repeat(bytes)).await {
        Ok(()) => Ok("stored".to_owned()),
        Err(SessionError::TooLarge { size, limit }) => Ok(format!("too large: {size} > {limit}")),
        Err(error) => Err(error),
    }
}

/// Reads `n`, signals, waits for the test's release, then writes `n + 1`
/// (get then insert, as handlers are written).
async fn held_write(
    State(gate): State<Gate>,
    session: Session,
) -> Result<&'static str, SessionError> {
    let n = session.get::<u64>("n").await?.unwrap_or(0);
    gate.hold().await;
    session.insert("n", n + 1).await?;
    Ok("written")
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// Body as text.
    pub body: String,
    /// The `Set-Cookie` headers.
    pub set_cookies: Vec<String>,
    /// All headers.
    pub headers: http::HeaderMap,
}

impl Reply {
    /// The single `Set-Cookie` header, if any (panics on more than one).
    pub fn set_cookie(&self) -> Option<&str> {
        assert!(
            self.set_cookies.len() <= 1,
            "more than one Set-Cookie: {:?}",
            self.set_cookies
        );
        self.set_cookies.first().map(String::as_str)
    }

    /// Whether this is a success answering `body` that set no cookie: the
    /// session the request was sent with went on.
    pub fn is_success_with(&self, body: &str) -> bool {
        self.status.is_success() && self.body == body && self.set_cookies.is_empty()
    }

    /// The `name=value` pair of the `Set-Cookie` header, as a browser would send it back.
    pub fn cookie_pair(&self) -> Option<String> {
        self.set_cookie()
            .and_then(|c| c.split(';').next())
            .map(|pair| pair.trim().to_owned())
    }
}

/// Sends `GET path` with an optional raw `Cookie` header through `app`.
pub async fn send(app: &Router, path: &str, cookie: Option<&[u8]>) -> Reply {
    send_as(app, http::Method::GET, path, cookie).await
}

/// Sends `method path` (empty body) with an optional raw `Cookie` header through `app`.
pub async fn send_as(
    app: &Router,
    method: http::Method,
    path: &str,
    cookie: Option<&[u8]>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(cookie) = cookie {
        request = request.header(
            COOKIE,
            http::HeaderValue::from_bytes(cookie).expect("header value"),
        );
    }
    let request = request.body(Body::empty()).expect("request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let set_cookies = headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().expect("ascii Set-Cookie").to_owned())
        .collect();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    Reply {
        status,
        body: String::from_utf8(body.to_vec()).expect("utf-8 body"),
        set_cookies,
        headers,
    }
}

async fn get_with(app: &Router, path: &str, cookie: &str) -> Reply {
    send(app, path, Some(cookie.as_bytes())).await
}

/// The session id in a `name=value` cookie pair (signed or not: the id is
/// the last 22 characters before the version floor `.V`, if any).
pub fn id_of(pair: &str) -> Id {
    let value = pair.split_once('=').expect("name=value").1;
    let value = floor_of(pair).map_or(value, |_| value.rsplit_once('.').map_or(value, |(v, _)| v));
    Id::decode(&value[value.len() - crate::ENCODED_ID_LEN..]).expect("a well-formed id")
}

/// The version floor a `name=value` cookie pair carries (`ID.V`), if any
/// (see [`replica`](crate::replica)).
pub fn floor_of(pair: &str) -> Option<u64> {
    let value = pair.split_once('=').expect("name=value").1;
    let (_, floor) = value.rsplit_once('.')?;
    floor.parse().ok()
}

/// A layer with a 10 s operation timeout, for the tests that assert that
/// every one of many parallel requests on one session succeeds: they queue
/// to commit one after another, and a loaded 2-core machine running the
/// whole suite in one process can take longer than the 2 s default for the
/// last of them. These tests are about what is kept, not about latency.
fn patient(layer: SessionLayer) -> SessionLayer {
    layer.op_timeout(Duration::from_secs(10))
}

fn is_removal(set_cookie: &str) -> bool {
    set_cookie.contains("Max-Age=0")
}

/// Whether `reply` kept the session the cookie `pair` names as it was: it
/// set no cookie, or, when the store's reads may lag (`lags`), only the
/// same session's cookie again with a version floor (see
/// [`replica`](crate::replica)).
pub fn keeps_session(reply: &Reply, pair: &str, lags: bool) -> bool {
    if !lags {
        return reply.set_cookies.is_empty();
    }
    reply.set_cookies.iter().all(|set| {
        let new = set.split(';').next().unwrap_or_default().trim();
        !is_removal(set) && id_of(new) == id_of(pair) && floor_of(new).is_some()
    })
}

/// The cookie a browser holds after `replies` to requests it sent with
/// `pair`: the session's cookie with the highest version floor set, else `pair`.
pub fn latest_pair<'a>(pair: &str, replies: impl IntoIterator<Item = &'a Reply>) -> String {
    replies
        .into_iter()
        .filter_map(Reply::cookie_pair)
        .filter(|new| id_of(new) == id_of(pair))
        .max_by_key(|new| floor_of(new))
        .filter(|new| floor_of(new) > floor_of(pair))
        .unwrap_or_else(|| pair.to_owned())
}

/// A new session sets one cookie with the secure defaults, and with the configured flags.
pub async fn new_session_sets_cookie_with_configured_flags<S: SessionStore>(store: S) {
    let lags = store.reads_may_lag();
    let store = Arc::new(store);
    let (app, _) = app(SessionLayer::from_arc(store.clone()));
    let reply = send(&app, "/count", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "1");
    let set = reply
        .set_cookie()
        .expect("a new session sets a cookie")
        .to_owned();
    let pair = reply.cookie_pair().expect("pair");
    assert!(pair.starts_with("session="), "{set}");
    // With replica reads the cookie carries the version floor 0 (`ID.0`).
    let floor = if lags { ".0".len() } else { 0 };
    assert_eq!(pair.len(), "session=".len() + 22 + floor, "{set}");
    assert_eq!(floor_of(&pair), lags.then_some(0), "{set}");
    for flag in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(
            set.split("; ").any(|a| a == flag),
            "default cookie lacks {flag}: {set}"
        );
    }
    assert!(
        !set.contains("Max-Age") && !set.contains("Expires"),
        "browser-session cookie by default: {set}"
    );
    assert!(
        store
            .load(&id_of(&pair).store_key())
            .await
            .expect("load")
            .is_some(),
        "record stored"
    );

    let layer = SessionLayer::from_arc(store.clone())
        .cookie_name("sid")
        .domain("example.test")
        .path("/app")
        .secure(false)
        .same_site(SameSite::Strict);
    let (app, _) = self::app(layer);
    let reply = send(&app, "/count", None).await;
    let set = reply.set_cookie().expect("cookie").to_owned();
    assert!(set.starts_with("sid="), "{set}");
    for attr in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/app",
        "Domain=example.test",
    ] {
        assert!(set.split("; ").any(|a| a == attr), "missing {attr}: {set}");
    }
    assert!(
        !set.split("; ").any(|a| a == "Secure"),
        "Secure was turned off: {set}"
    );

    let layer = SessionLayer::from_arc(store)
        .cookie_name("sid")
        .domain("example.test")
        .path("/app")
        .secure(false)
        .host_prefix(true);
    let (app, _) = self::app(layer);
    let reply = send(&app, "/count", None).await;
    let set = reply.set_cookie().expect("cookie").to_owned();
    assert!(set.starts_with("__Host-sid="), "{set}");
    assert!(
        set.split("; ").any(|a| a == "Secure"),
        "__Host- forces Secure: {set}"
    );
    assert!(
        set.split("; ").any(|a| a == "Path=/"),
        "__Host- forces Path=/: {set}"
    );
    assert!(!set.contains("Domain"), "__Host- forbids Domain: {set}");
    let pair = reply.cookie_pair().expect("pair");
    assert_eq!(
        get_with(&app, "/count", &pair).await.body,
        "2",
        "the prefixed cookie is read back"
    );
}

/// A handler that never touches its session causes no store call and no `Set-Cookie`.
pub async fn untouched_session_makes_no_store_call<S: SessionStore>(store: S) {
    let store = Arc::new(CountingStore::new(store));
    let (app, _) = app(SessionLayer::from_arc(store.clone()));
    let pair = send(&app, "/count", None)
        .await
        .cookie_pair()
        .expect("cookie");
    let before = store.counts();

    for cookie in [None, Some(pair.as_bytes())] {
        let reply = send(&app, "/untouched", cookie).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(
            reply.set_cookies.is_empty(),
            "untouched session set a cookie: {:?}",
            reply.set_cookies
        );
    }
    assert_eq!(
        store.counts(),
        before,
        "untouched session caused store calls"
    );
}

/// A request that only reads its session loads it once and writes nothing.
pub async fn read_only_request_does_not_save<S: SessionStore>(store: S) {
    let store = Arc::new(CountingStore::new(store));
    let (app, _) = app(SessionLayer::from_arc(store.clone()));
    let pair = send(&app, "/count", None)
        .await
        .cookie_pair()
        .expect("cookie");
    let before = store.counts();

    let reply = get_with(&app, "/read", &pair).await;
    assert_eq!(reply.body, "1");
    assert!(reply.set_cookies.is_empty(), "a read changed the cookie");
    let after = store.counts();
    assert_eq!(after.load - before.load, 1, "one load");
    assert_eq!(
        after.writes(),
        before.writes(),
        "a read within the touch interval writes nothing"
    );
}

/// Reads touch the session at most once per touch interval, and never save it.
pub async fn reads_touch_only_after_the_touch_interval<S: SessionStore>(store: S) {
    let store = Arc::new(CountingStore::new(store));
    let layer = SessionLayer::from_arc(store.clone()).touch_interval(Duration::from_millis(200));
    let (app, _) = app(layer);
    let pair = send(&app, "/count", None)
        .await
        .cookie_pair()
        .expect("cookie");
    let before = store.counts();
    get_with(&app, "/read", &pair).await;
    get_with(&app, "/read", &pair).await;
    assert_eq!(
        store.counts().touch,
        before.touch,
        "no touch within the interval"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reply = get_with(&app, "/read", &pair).await;
    assert_eq!(reply.body, "1");
    let after = store.counts();
    assert_eq!(
        after.touch - before.touch,
        1,
        "one touch once the interval passed"
    );
    assert_eq!(after.save, before.save, "a touch is not a save");
    assert!(
        reply.set_cookies.is_empty(),
        "a touch does not change the cookie"
    );
}

/// `cycle_id` issues a new cookie; the old id no longer loads; the data moves along.
pub async fn cycle_id_issues_new_cookie_and_kills_old_id<S: SessionStore>(store: S) {
    let store = Arc::new(store);
    let (app, _) = app(SessionLayer::from_arc(store.clone()));
    let old = send(&app, "/count", None)
        .await
        .cookie_pair()
        .expect("cookie");
    let reply = get_with(&app, "/cycle", &old).await;
    let new = reply.cookie_pair().expect("cycle_id sets a new cookie");
    assert_ne!(new, old);
    assert_eq!(
        store.load(&id_of(&old).store_key()).await.expect("load"),
        None,
        "old id still loads"
    );
    assert_eq!(
        get_with(&app, "/read", &new).await.body,
        "1",
        "data kept under the new id"
    );
    let stale = get_with(&app, "/read", &old).await;
    assert_eq!(stale.body, "none", "the old cookie reaches nothing");
}

/// `destroy` deletes the record and sends a removal cookie.
pub async fn destroy_removes_cookie_and_record<S: SessionStore>(store: S) {
    let store = Arc::new(store);
    let (app, _) = app(SessionLayer::from_arc(store.clone()));
    let pair = send(&app, "/count", None)
        .await
        .cookie_pair()
        .expect("cookie");
    let reply = get_with(&app, "/destroy", &pair).await;
    let set = reply
        .set_cookie()
        .expect("destroy sends a cookie")
        .to_owned();
    assert!(is_removal(&set), "not a removal cookie: {set}");
    assert!(
        set.starts_with("session=;"),
        "removal cookie carries no id: {set}"
    );
    assert_eq!(
        store.load(&id_of(&pair).store_key()).await.expect("load"),
        None
    );
    assert_eq!(get_with(&app, "/read", &pair).await.body, "none");
}

/// A request that loaded the session before a parallel request destroyed it
/// does not bring it back with its late write, and is answered `409`: its
/// write is not in the store, so it is not acknowledged.
pub async fn destroyed_session_not_resurrected_by_parallel_request<S: SessionStore>(store: S) {
    let store = Arc::new(store);
    let (app, gate) = app(SessionLayer::from_arc(store.clone()));
    let pair = send(&app, "/count", None)
        .await
        .cookie_pair()
        .expect("cookie");
    let key = id_of(&pair).store_key();

    let held = {
        let (app, pair) = (app.clone(), pair.clone());
        tokio::spawn(async move { get_with(&app, "/held-write", &pair).await })
    };
    gate.loaded.notified().await;
    let destroyed = get_with(&app, "/destroy", &pair).await;
    assert!(is_removal(destroyed.set_cookie().expect("removal")));
    gate.release.notify_one();
    let late = held.await.expect("task");

    // Its write could not be made: it is refused, not acknowledged.
    assert_eq!(late.status, StatusCode::CONFLICT, "{}", late.body);
    assert_eq!(
        store.load(&key).await.expect("load"),
        None,
        "the late write resurrected the session"
    );
    // Neither a new session nor a removal: the removal this response might
    // carry could reach the browser after a cookie set by a parallel login.
    assert!(late.set_cookies.is_empty(), "{:?}", late.set_cookies);
}

/// A request that loaded the session, then cycles its id after a parallel
/// request destroyed it, does not copy it into a new session (`409`).
pub async fn cycle_after_parallel_destroy_does_not_resurrect<S: SessionStore>(store: S) {
    let store = Arc::new(store);
    let (app, gate) = app(SessionLayer::from_arc(store.clone()));
    let pair = send(&app, "/count", None)
        .await
        .cookie_pair()
        .expect("cookie");
    let held = {
        let (app, pair) = (app.clone(), pair.clone());
        tokio::spawn(async move { get_with(&app, "/held-cycle", &pair).await })
    };
    gate.loaded.notified().await;
    get_with(&app, "/destroy", &pair).await;
    gate.release.notify_one();
    let late = held.await.expect("task");
    assert_eq!(
        late.status,
        StatusCode::CONFLICT,
        "a login on a destroyed session"
    );
    assert!(
        late.set_cookies.is_empty(),
        "a destroyed session was cycled into a new one: {:?}",
        late.set_cookies
    );
    assert_eq!(
        store.load(&id_of(&pair).store_key()).await.expect("load"),
        None
    );
}

/// A signed cookie with a tampered value gets a fresh session.
pub async fn tampered_signed_cookie_gets_fresh_session<S: SessionStore>(store: S) {
    let layer = SessionLayer::new(store).signing_keys([Key::generate()]);
    let (app, _) = app(layer);
    let pair = send(&app, "/count", None)
        .await
        .cookie_pair()
        .expect("cookie");
    assert_eq!(
        get_with(&app, "/count", &pair).await.body,
        "2",
        "the signed cookie works"
    );

    // Flip one character of the id part, and separately one of the signature.
    let flip = |s: &str, at: usize| {
        let mut bytes = s.as_bytes().to_vec();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).expect("ascii")
    };
    // The stored id with no signature, and signed with a key not listed:
    // both name a live session, so only the signature check turns them away.
    let id = id_of(&pair);
    let bare = format!("session={}", id.encode());
    let foreign = {
        let mut jar = cookie::CookieJar::new();
        jar.signed_mut(&Key::generate())
            .add(cookie::Cookie::new("session", id.encode()));
        format!("session={}", jar.get("session").expect("signed").value())
    };
    for tampered in [
        flip(&pair, pair.len() - 1),
        flip(&pair, "session=".len() + 3),
        bare,
        foreign,
    ] {
        let reply = get_with(&app, "/count", &tampered).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "1", "a tampered cookie reached the session");
        let fresh = reply.cookie_pair().expect("a fresh session cookie");
        assert_ne!(id_of(&fresh), id_of(&pair));
    }
}

/// A cookie signed with an older key that is still listed is accepted; once
/// the key is dropped, it is not.
pub async fn cookie_signed_with_rotated_key_accepted<S: SessionStore>(store: S) {
    let store: Arc<dyn SessionStore> = Arc::new(store);
    let (old, new) = (Key::generate(), Key::generate());
    let (before, _) = app(SessionLayer::from_arc(store.clone()).signing_keys([old.clone()]));
    let pair = send(&before, "/count", None)
        .await
        .cookie_pair()
        .expect("cookie");

    let (rotated, _) = app(SessionLayer::from_arc(store.clone()).signing_keys([new.clone(), old]));
    assert_eq!(
        get_with(&rotated, "/count", &pair).await.body,
        "2",
        "old key no longer verifies"
    );

    let (dropped, _) = app(SessionLayer::from_arc(store).signing_keys([new]));
    assert_eq!(
        get_with(&dropped, "/count", &pair).await.body,
        "1",
        "a dropped key still verifies"
    );
}

/// A session unused for longer than its idle timeout is gone.
pub async fn idle_timeout_enforced<S: SessionStore>(store: S) {
    let expiry = Expiry::new(Duration::from_millis(300), Duration::from_secs(60));
    let (app, _) = app(SessionLayer::new(store).expiry(expiry));
    let pair = send(&app, "/count", None)
        .await
        .cookie_pair()
        .expect("cookie");
    assert_eq!(get_with(&app, "/count", &pair).await.body, "2");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reply = get_with(&app, "/count", &pair).await;
    assert_eq!(reply.body, "1", "an idle-expired session was still served");
    assert_ne!(reply.cookie_pair().expect("a fresh session cookie"), pair);
}

/// A session in steady use still ends at its absolute lifetime.
pub async fn absolute_lifetime_enforced<S: SessionStore>(store: S) {
    let expiry = Expiry::new(Duration::from_millis(500), Duration::from_millis(900));
    let layer = SessionLayer::new(store)
        .expiry(expiry)
        .touch_interval(Duration::ZERO);
    let (app, _) = app(layer);
    let start = tokio::time::Instant::now();
    let pair = send(&app, "/count", None)
        .await
        .cookie_pair()
        .expect("cookie");
    // Each use is well within the idle timeout of the previous one, and
    // together they outlast the idle timeout: use keeps the session alive...
    for expected in ["2", "3"] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(get_with(&app, "/count", &pair).await.body, expected);
    }
    // ...until the absolute deadline, whatever the use.
    tokio::time::sleep_until(start + Duration::from_millis(1100)).await;
    let reply = get_with(&app, "/count", &pair).await;
    assert_eq!(reply.body, "1", "a session outlived its absolute lifetime");
}

/// A persistent expiry gives the cookie a `Max-Age` reaching the absolute deadline.
pub async fn persistent_expiry_sets_max_age<S: SessionStore>(store: S) {
    let lags = store.reads_may_lag();
    let (app, _) = app(SessionLayer::new(store));
    let pair = send(&app, "/count", None)
        .await
        .cookie_pair()
        .expect("cookie");
    let reply = get_with(&app, "/remember", &pair).await;
    let set = reply
        .set_cookie()
        .expect("set_expiry resends the cookie")
        .to_owned();
    let new = reply.cookie_pair().expect("pair");
    assert_eq!(id_of(&new), id_of(&pair), "same id");
    assert_eq!(
        floor_of(&new),
        lags.then_some(1),
        "the floor when reads may lag"
    );
    let max_age: u64 = set
        .split("; ")
        .find_map(|a| a.strip_prefix("Max-Age="))
        .expect("a Max-Age")
        .parse()
        .expect("seconds");
    assert!(
        (30 * 86_400 - 60..=30 * 86_400).contains(&max_age),
        "Max-Age {max_age}"
    );
    assert_eq!(get_with(&app, "/read", &pair).await.body, "1", "data kept");
}

/// Garbage cookies of every kind get a fresh session and a 200, never an error.
pub async fn bad_cookies_get_fresh_session<S: SessionStore>(store: S) {
    let (app, _) = app(SessionLayer::new(store));
    let unknown_a = Id::random().expect("rng").encode();
    let unknown_b = Id::random().expect("rng").encode();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty value", b"session=".to_vec()),
        ("no value", b"session".to_vec()),
        ("not base64", b"session=!!not*base64!!~~~~~~".to_vec()),
        (
            "21 chars",
            format!("session={}", &unknown_a[..21]).into_bytes(),
        ),
        ("23 chars", format!("session={unknown_a}A").into_bytes()),
        (
            "8 KiB value",
            format!("session={}", "A".repeat(8192)).into_bytes(),
        ),
        (
            "two cookies of our name",
            format!("session={unknown_a}; session={unknown_b}").into_bytes(),
        ),
        (
            "non-UTF-8 bytes",
            [
                &b"session="[..],
                &[0xff, 0xfe, 0x80],
                &b"AAAAAAAAAAAAAAAAAAA"[..],
            ]
            .concat(),
        ),
        ("quoted garbage", b"session=\"\"".to_vec()),
        ("separators only", b";;=;= ;session=;".to_vec()),
    ];
    for (what, cookie) in cases {
        let reply = send(&app, "/count", Some(&cookie)).await;
        assert_eq!(reply.status, StatusCode::OK, "{what}");
        assert_eq!(reply.body, "1", "{what}: not a fresh session");
        let pair = reply
            .cookie_pair()
            .unwrap_or_else(|| panic!("{what}: no fresh cookie"));
        let id = id_of(&pair);
        assert_ne!(id.encode(), unknown_a, "{what}: adopted a client-chosen id");
        assert_ne!(id.encode(), unknown_b, "{what}: adopted a client-chosen id");
    }
}

/// A well-formed but unknown id is never adopted (fixation): reading it
/// finds nothing and sets nothing, writing gets a new server-drawn id.
pub async fn unknown_id_is_never_adopted<S: SessionStore>(store: S) {
    let store = Arc::new(store);
    let (app, _) = app(SessionLayer::from_arc(store.clone()));
    let planted = Id::random().expect("rng");
    let pair = format!("session={}", planted.encode());

    let read = get_with(&app, "/read", &pair).await;
    assert_eq!(read.body, "none");
    assert!(read.set_cookies.is_empty(), "{:?}", read.set_cookies);

    let write = get_with(&app, "/count", &pair).await;
    let fresh = id_of(&write.cookie_pair().expect("new cookie"));
    assert_ne!(fresh, planted, "the planted id was adopted");
    assert_eq!(store.load(&planted.store_key()).await.expect("load"), None);
}

/// 100 parallel requests each adding one through `update` end exactly +100.
/// They all load and change the session before any of them commits, so all
/// but one of them read a value that changed: each of those runs again on
/// the fresh session, and every answer is a distinct count.
pub async fn parallel_requests_update_loses_nothing<S: SessionStore>(store: S) {
    const REQUESTS: u64 = 100;
    let (app, gate) = app_together(patient(SessionLayer::new(store)), REQUESTS as usize);
    let pair = send(&app, "/count", None)
        .await
        .cookie_pair()
        .expect("cookie");
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let (app, pair) = (app.clone(), pair.clone());
            tokio::spawn(async move { get_with(&app, "/count-together", &pair).await })
        })
        .collect();
    let mut counts = Vec::new();
    let mut replies = Vec::new();
    for task in tasks {
        let reply = task.await.expect("task");
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        counts.push(reply.body.parse::<u64>().expect("a count"));
        replies.push(reply);
    }
    counts.sort_unstable();
    assert_eq!(
        counts,
        (2..=REQUESTS + 1).collect::<Vec<_>>(),
        "each answer saw its own predecessor"
    );
    // Read as the browser that got those answers (with replica reads, its
    // cookie's floor is the last version written).
    let pair = latest_pair(&pair, &replies);
    assert_eq!(
        get_with(&app, "/read", &pair).await.body,
        (REQUESTS + 1).to_string()
    );
    // All loaded before any committed: all but the first ran again.
    let runs = gate.runs.load(Ordering::SeqCst) as u64;
    assert!(
        runs >= 2 * REQUESTS - 1,
        "{runs} runs: the conflicts this test forces did not happen"
    );
}

/// 50 parallel requests that each insert their own key all keep their key
/// (all load before any saves, as above).
pub async fn parallel_requests_inserting_own_key_all_kept<S: SessionStore>(store: S) {
    const REQUESTS: usize = 50;
    let lags = store.reads_may_lag();
    let store = Arc::new(CountingStore::new(store));
    let (app, gate) = app_together(patient(SessionLayer::from_arc(store.clone())), REQUESTS);
    let pair = send(&app, "/count", None)
        .await
        .cookie_pair()
        .expect("cookie");
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let (app, pair) = (app.clone(), pair.clone());
            tokio::spawn(
                async move { get_with(&app, &format!("/insert-together/k{i}"), &pair).await },
            )
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        let reply = task.await.expect("task");
        assert_eq!(reply.status, StatusCode::OK);
        assert!(keeps_session(&reply, &pair, lags), "{reply:?}");
        replies.push(reply);
    }
    // The cookie a browser keeps from those answers (with replica reads,
    // the highest floor: it has seen every write).
    let pair = latest_pair(&pair, &replies);
    // Blind writes of different keys conflict (all loaded before any
    // committed) but read nothing: they are applied to the fresh record,
    // never run again.
    assert_eq!(
        gate.runs.load(Ordering::SeqCst),
        REQUESTS,
        "a blind write ran again"
    );
    let expected: Vec<String> = (0..REQUESTS).map(|i| format!("k{i}")).collect();
    let mut found: Vec<String> = get_with(&app, "/keys", &pair)
        .await
        .body
        .split(',')
        .map(str::to_owned)
        .collect();
    found.sort_by_key(|k| k[1..].parse::<usize>().unwrap_or(usize::MAX));
    assert_eq!(found, expected);
    let saves = store.counts().save;
    assert!(
        saves > REQUESTS as u64 + 1,
        "{saves} saves: the conflicts this test forces did not happen"
    );
}

/// Cookies of other names with raw UTF-8 or other non-ASCII bytes, in the
/// same header, do not hide the session cookie.
pub async fn foreign_non_ascii_cookies_do_not_hide_the_session<S: SessionStore>(store: S) {
    let lags = store.reads_may_lag();
    let (app, _) = app(SessionLayer::new(store));
    let pair = send(&app, "/count", None)
        .await
        .cookie_pair()
        .expect("cookie");
    let header = [
        "name=Jos\u{e9}; ".as_bytes(),
        pair.as_bytes(),
        b"; junk=\xff\xfe; emoji=\xf0\x9f\x8d\xaa",
    ]
    .concat();
    let reply = send(&app, "/count", Some(&header)).await;
    assert_eq!(reply.body, "2", "the session was hidden by its neighbours");
    assert!(keeps_session(&reply, &pair, lags), "{reply:?}");
}

/// A stale cookie of our name sent before the live one (another path, an
/// old deployment) does not hide the live session.
pub async fn stale_cookie_before_live_one_does_not_hide_it<S: SessionStore>(store: S) {
    let lags = store.reads_may_lag();
    let (app, _) = app(SessionLayer::new(store));
    let pair = send(&app, "/count", None)
        .await
        .cookie_pair()
        .expect("cookie");
    let stale = format!("session={}", Id::random().expect("rng").encode());
    let reply = get_with(&app, "/count", &format!("{stale}; {pair}")).await;
    assert_eq!(reply.body, "2");
    assert!(keeps_session(&reply, &pair, lags), "{reply:?}");
}

/// A change that would make the session larger than the limit is refused
/// with a clear error, and nothing of it is written.
pub async fn oversized_session_refused_and_nothing_written<S: SessionStore>(store: S) {
    let store = Arc::new(store);
    let layer = SessionLayer::from_arc(store.clone()).max_session_size(1024);
    let (app, _) = app(layer);
    let reply = send(&app, "/big/100", None).await;
    assert_eq!(reply.body, "stored");
    let pair = reply.cookie_pair().expect("cookie");
    let key = id_of(&pair).store_key();

    let reply = get_with(&app, "/big/2000", &pair).await;
    assert!(reply.body.starts_with("too large: "), "{}", reply.body);
    assert!(reply.body.ends_with(" > 1024"), "{}", reply.body);
    let stored = store.load(&key).await.expect("load").expect("present");
    assert_eq!(
        stored.data["blob"].as_str().map(str::len),
        Some(100),
        "the big value was written"
    );
    // The other change of that request (the count) still counts.
    assert_eq!(stored.data["n"], serde_json::json!(2));

    // A visitor without a session whose first write is too big gets none.
    let reply = send(&app, "/big/5000", None).await;
    assert!(reply.body.starts_with("too large"), "{}", reply.body);
    let pair = reply
        .cookie_pair()
        .expect("the count alone makes a session");
    let stored = store
        .load(&id_of(&pair).store_key())
        .await
        .expect("load")
        .expect("present");
    assert!(stored.data.get("blob").is_none());
}
