//! Partial failures: a store where only `create`, only a delete, or only a
//! save misbehaves. A login or logout that did not happen is never answered
//! as if it had, under either failure policy, and a failed login leaves
//! nothing of itself on the id the client had before it.
#![allow(clippy::unwrap_used)] // tests

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http::StatusCode;
use session_core::conformance::http::{Reply, destroy, id_of, login, send};
use session_core::conformance::support::{Call, FaultStore};
use session_core::{FailurePolicy, Record, Session, SessionError, SessionLayer, SessionStore};
use session_memory::MemoryStore;

async fn count(session: Session) -> Result<String, SessionError> {
    let n: u64 = session.get("n").await?.unwrap_or_default();
    session.insert("n", n + 1).await?;
    Ok((n + 1).to_string())
}

fn app(store: Arc<FaultStore<MemoryStore>>, policy: FailurePolicy, timeout: Duration) -> Router {
    Router::new()
        .route("/count", get(count))
        .route("/login", get(login))
        .route("/logout", get(destroy))
        .layer(
            SessionLayer::from_arc(store)
                .failure_policy(policy)
                .op_timeout(timeout),
        )
}

const POLICIES: [FailurePolicy; 2] = [FailurePolicy::Reject, FailurePolicy::Degrade];

async fn with_cookie(app: &Router, path: &str, pair: &str) -> Reply {
    send(app, path, Some(pair.as_bytes())).await
}

/// A session of its own for each case: `/count` once.
async fn session(app: &Router) -> String {
    send(app, "/count", None).await.cookie_pair().unwrap()
}

/// The session the cookie `pair` names, read from the store directly.
async fn stored(store: &FaultStore<MemoryStore>, pair: &str) -> Option<Record> {
    store.load(&id_of(pair).store_key()).await.unwrap()
}

/// `reply` has `status` and sets no cookie (`case` says which case it is).
fn assert_answer(reply: &Reply, status: StatusCode, case: &str) {
    assert_eq!(reply.status, status, "{case}: {}", reply.body);
    assert!(
        reply.set_cookies.is_empty(),
        "{case}: {:?}",
        reply.set_cookies
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_login_never_leaves_the_principal_on_the_old_id() {
    for policy in POLICIES {
        for failing in [Call::Create, Call::DeleteIfUnchanged] {
            let store = Arc::new(FaultStore::new(MemoryStore::new()));
            let app = app(store.clone(), policy, Duration::from_secs(2));
            let old = session(&app).await;
            store.fail(failing, 0);
            let reply = with_cookie(&app, "/login", &old).await;
            let case = format!("{policy:?}, {failing:?} failing");
            assert_answer(&reply, StatusCode::SERVICE_UNAVAILABLE, &case);
            store.heal();
            let record = stored(&store, &old).await;
            let record = record.expect("the old session is as it was");
            assert_eq!(
                record.principal, None,
                "{case}: the old id carries the login"
            );
            assert_eq!(record.version, 0, "{case}: the old id was written");
            assert!(
                store.list_by_principal("ada").await.unwrap().is_empty(),
                "{case}: the login left a session of ada behind"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logout_is_never_answered_as_done() {
    for policy in POLICIES {
        let store = Arc::new(FaultStore::new(MemoryStore::new()));
        let app = app(store.clone(), policy, Duration::from_secs(2));
        let pair = session(&app).await;
        store.fail(Call::Delete, 0);
        let reply = with_cookie(&app, "/logout", &pair).await;
        assert_answer(
            &reply,
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("{policy:?}"),
        );
        store.heal();
        assert!(
            stored(&store, &pair).await.is_some(),
            "{policy:?}: the session is still there, as the 503 says"
        );
        let again = with_cookie(&app, "/logout", &pair).await;
        assert_eq!(again.status, StatusCode::OK, "the retried logout works");
        assert!(stored(&store, &pair).await.is_none());
    }
}

/// A new visitor's first write whose create fails: `503` under Reject; the
/// handler's answer without a cookie under Degrade; nothing stored either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_create_stores_nothing() {
    for (policy, status) in [
        (FailurePolicy::Reject, StatusCode::SERVICE_UNAVAILABLE),
        (FailurePolicy::Degrade, StatusCode::OK),
    ] {
        let store = Arc::new(FaultStore::new(MemoryStore::new()));
        store.fail(Call::Create, 0);
        let app = app(store.clone(), policy, Duration::from_secs(2));
        let reply = send(&app, "/count", None).await;
        assert_answer(&reply, status, &format!("{policy:?}"));
        assert_eq!(store.inner().len(), 0, "{policy:?}");
    }
}

/// What a `503` after a write means: the write may have landed. A save that
/// reached the store but answered after the operation timeout is a `503`,
/// and the stored session has the change (documented in SECURITY.md and the
/// layer's docs); a client that retries applies it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_answering_late_is_a_503_that_may_have_landed() {
    let store = Arc::new(FaultStore::new(MemoryStore::new()));
    let app = app(
        store.clone(),
        FailurePolicy::Reject,
        Duration::from_millis(100),
    );
    let pair = session(&app).await;
    store.answer_late(Call::Save, Duration::from_millis(300));
    let reply = with_cookie(&app, "/count", &pair).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    store.heal();
    let record = stored(&store, &pair).await.unwrap();
    assert_eq!(record.data["n"], 2, "the late save landed all the same");
}
