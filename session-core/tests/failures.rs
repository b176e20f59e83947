//! A store that fails or hangs, a missing layer, a handle kept too long:
//! each has a documented outcome, and none panics or hangs.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use http::StatusCode;
use http::header::RETRY_AFTER;
use session_core::conformance::http::send;
use session_core::conformance::support::{FailingStore, HangingStore};
use session_core::{FailurePolicy, Id, Session, SessionError, SessionLayer, SessionStore};
use tokio::time::Instant;

#[derive(Clone, Default)]
struct Seen {
    error: Arc<AtomicBool>,
    kept: Arc<Mutex<Option<Session>>>,
}

/// Reads then writes; reports a session error in its body instead of failing.
async fn tolerant(State(seen): State<Seen>, session: Session) -> String {
    let read = session.get::<u64>("n").await;
    let write = session.insert("n", 1).await;
    match read.and(write) {
        Ok(()) => "ok".to_owned(),
        Err(error) => {
            seen.error.store(error.is_store_failure(), Ordering::SeqCst);
            format!("served without session: {error}")
        }
    }
}

/// Propagates session errors with `?`.
async fn strict(session: Session) -> Result<&'static str, SessionError> {
    session.insert("n", 1).await?;
    Ok("ok")
}

async fn keep(State(seen): State<Seen>, session: Session) -> &'static str {
    *seen.kept.lock().unwrap() = Some(session);
    "kept"
}

fn app(store: impl SessionStore, policy: FailurePolicy, timeout: Duration) -> (Router, Seen) {
    let seen = Seen::default();
    let layer = SessionLayer::new(store)
        .failure_policy(policy)
        .op_timeout(timeout);
    let router = Router::new()
        .route("/tolerant", get(tolerant))
        .route("/strict", get(strict))
        .route("/keep", get(keep))
        .with_state(seen.clone())
        .layer(layer);
    (router, seen)
}

fn existing_cookie() -> Vec<u8> {
    format!("session={}", Id::random().unwrap().encode()).into_bytes()
}

const TIMEOUT: Duration = Duration::from_millis(250);

#[tokio::test]
async fn failing_store_rejects_with_503_and_retry_after() {
    for cookie in [Some(existing_cookie()), None] {
        let (app, seen) = app(FailingStore, FailurePolicy::Reject, TIMEOUT);
        let reply = send(&app, "/tolerant", cookie.as_deref()).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.headers[RETRY_AFTER], "1");
        assert!(reply.set_cookies.is_empty());
        if cookie.is_some() {
            assert!(
                seen.error.load(Ordering::SeqCst),
                "the handler saw a store error"
            );
        }
    }
}

#[tokio::test]
async fn failing_store_degrade_serves_without_session() {
    let (app, seen) = app(FailingStore, FailurePolicy::Degrade, TIMEOUT);
    let reply = send(&app, "/tolerant", Some(&existing_cookie())).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.body.starts_with("served without session"),
        "{}",
        reply.body
    );
    assert!(seen.error.load(Ordering::SeqCst));
    assert!(
        reply.set_cookies.is_empty(),
        "no cookie change without a store"
    );

    // A new session whose create fails: the handler's response, no cookie.
    let reply = send(&app, "/tolerant", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "ok");
    assert!(
        reply.set_cookies.is_empty(),
        "a session that was not stored got a cookie"
    );
}

#[tokio::test]
async fn session_error_propagated_with_question_mark_is_a_503() {
    let (app, _) = app(FailingStore, FailurePolicy::Degrade, TIMEOUT);
    let reply = send(&app, "/strict", Some(&existing_cookie())).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.headers[RETRY_AFTER], "1");
    assert_eq!(reply.body, "session store unavailable");
}

// Paused time: the runtime's clock jumps to the next timer when every task is
// idle, so "within the timeout" is checked on the virtual clock exactly,
// without wall-clock assertions.
#[tokio::test(start_paused = true)]
async fn hanging_store_rejects_within_op_timeout() {
    for (cookie, calls) in [(Some(existing_cookie()), "load"), (None, "create")] {
        let (app, seen) = app(HangingStore, FailurePolicy::Reject, TIMEOUT);
        let start = Instant::now();
        let reply = send(&app, "/tolerant", cookie.as_deref()).await;
        let waited = start.elapsed();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{calls}");
        assert_eq!(reply.headers[RETRY_AFTER], "1");
        assert!(
            waited >= TIMEOUT,
            "{calls}: answered before the timeout ({waited:?})"
        );
        assert!(
            waited < TIMEOUT * 2,
            "{calls}: waited {waited:?} for a hanging store"
        );
        assert_eq!(seen.error.load(Ordering::SeqCst), cookie.is_some());
    }
}

#[tokio::test(start_paused = true)]
async fn hanging_store_degrade_serves_without_session() {
    let (app, _) = app(HangingStore, FailurePolicy::Degrade, TIMEOUT);
    let start = Instant::now();
    let reply = send(&app, "/tolerant", Some(&existing_cookie())).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.body.starts_with("served without session"),
        "{}",
        reply.body
    );
    assert!(reply.set_cookies.is_empty());
    assert!(start.elapsed() < TIMEOUT * 2);
}

#[tokio::test]
async fn extractor_without_layer_names_the_missing_layer() {
    async fn needs(_: Session) -> &'static str {
        "unreachable"
    }
    async fn optional(session: Option<Session>) -> &'static str {
        if session.is_some() {
            "session"
        } else {
            "no session"
        }
    }
    let app = Router::new()
        .route("/needs", get(needs))
        .route("/optional", get(optional));
    let reply = send(&app, "/needs", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.body.contains("SessionLayer"), "{}", reply.body);
    assert_eq!(send(&app, "/optional", None).await.body, "no session");
}

#[tokio::test]
async fn handle_kept_past_the_request_is_closed() {
    let (app, seen) = app(
        session_memory::MemoryStore::new(),
        FailurePolicy::Reject,
        TIMEOUT,
    );
    assert_eq!(send(&app, "/keep", None).await.body, "kept");
    let session = seen.kept.lock().unwrap().take().unwrap();
    assert!(matches!(
        session.insert("late", 1).await,
        Err(SessionError::Closed)
    ));
    assert!(matches!(
        session.get::<u64>("n").await,
        Err(SessionError::Closed)
    ));
}

/// A cookie name that cannot travel in `Set-Cookie` is refused when the
/// layer is configured: before, it gave an empty `Set-Cookie`, which logs
/// the user out right after a login.
#[test]
fn invalid_cookie_settings_are_refused_when_configured() {
    use session_core::CookieConfigError;
    use session_memory::MemoryStore;
    let layer = || SessionLayer::new(MemoryStore::new());
    assert!(matches!(
        layer().try_cookie_name("my session"),
        Err(CookieConfigError::Name(_))
    ));
    assert!(matches!(
        layer().try_domain("example.com;"),
        Err(CookieConfigError::Domain(_))
    ));
    assert!(matches!(
        layer().try_path("no-slash"),
        Err(CookieConfigError::Path(_))
    ));
    assert!(layer().try_cookie_name("sid").is_ok());
    let panicked = std::panic::catch_unwind(|| layer().cookie_name("a=b"));
    let message = *panicked
        .expect_err("cookie_name must refuse \"a=b\"")
        .downcast::<String>()
        .unwrap();
    assert!(
        message.contains("\"a=b\" is not an RFC 6265 token"),
        "{message}"
    );
}

/// A request whose handler takes its session (so the layer keeps a copy of
/// the request for a possible re-run) leaves nothing behind: once the app
/// is gone, so is the store. (Found by the `cookie_header` fuzz target's
/// leak check: the copy held the session that held the copy.)
#[tokio::test]
async fn a_request_keeps_nothing_alive_after_it() {
    use session_memory::MemoryStore;
    let store = Arc::new(MemoryStore::new());
    let app = Router::new()
        .route("/strict", get(strict))
        .layer(SessionLayer::from_arc(store.clone()));
    let cookie = send(&app, "/strict", None).await.cookie_pair().unwrap();
    for _ in 0..3 {
        let reply = send(&app, "/strict", Some(cookie.as_bytes())).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    drop(app);
    // The layer's finishing work runs in tasks of its own: let them end.
    tokio::task::yield_now().await;
    assert_eq!(
        Arc::strong_count(&store),
        1,
        "a request kept the store alive"
    );
}

/// The default `ping` is one read and no write on a store that answers,
/// and the store's error on one that does not.
#[tokio::test]
async fn ping_is_one_read_and_fails_with_the_store() {
    use session_core::conformance::support::CountingStore;
    let counting = CountingStore::new(session_memory::MemoryStore::default());
    counting.ping().await.unwrap();
    let counts = counting.counts();
    assert_eq!((counts.load, counts.writes()), (1, 0));
    assert!(FailingStore.ping().await.is_err());
}
