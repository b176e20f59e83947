//! After a conflict, the changes of a request that read nothing the other
//! request changed are applied in order to the fresh record, as if the
//! request had run after the one that committed first; it does not run again.
#![allow(clippy::unwrap_used)] // tests

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use session_core::conformance::http::send;
use session_core::{Session, SessionError, SessionLayer};
use session_memory::MemoryStore;
use tokio::sync::Notify;

#[derive(Clone, Default)]
struct Gate {
    loaded: Arc<Notify>,
    release: Arc<Notify>,
    slow_runs: Arc<AtomicUsize>,
}

async fn start(session: Session) -> Result<&'static str, SessionError> {
    session.insert("n", 1).await?;
    Ok("started")
}

/// Blind changes only: `insert(1)` (a change of nothing here: n is 1
/// already, but applied after another request's write it must still
/// apply), `clear`, then two inserts.
async fn slow(State(gate): State<Gate>, session: Session) -> Result<&'static str, SessionError> {
    gate.slow_runs.fetch_add(1, Ordering::SeqCst);
    session.insert("n", 1).await?;
    session.clear().await?;
    session.insert("n", 2).await?;
    session.insert("m", 3).await?;
    gate.loaded.notify_one();
    gate.release.notified().await;
    Ok("slow")
}

async fn fast(session: Session) -> Result<&'static str, SessionError> {
    session.insert("n", 5).await?;
    session.insert("k", 6).await?;
    Ok("fast")
}

async fn read(session: Session) -> Result<String, SessionError> {
    let n: Option<u64> = session.get("n").await?;
    let m: Option<u64> = session.get("m").await?;
    let k: Option<u64> = session.get("k").await?;
    Ok(format!("{n:?} {m:?} {k:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_applies_every_change_in_order() {
    let gate = Gate::default();
    let app = Router::new()
        .route("/start", get(start))
        .route("/slow", get(slow))
        .route("/fast", get(fast))
        .route("/read", get(read))
        .with_state(gate.clone())
        .layer(SessionLayer::new(MemoryStore::new()));
    let cookie = send(&app, "/start", None).await.cookie_pair().unwrap();

    let held = {
        let (app, cookie) = (app.clone(), cookie.clone());
        tokio::spawn(async move { send(&app, "/slow", Some(cookie.as_bytes())).await })
    };
    gate.loaded.notified().await;
    send(&app, "/fast", Some(cookie.as_bytes())).await;
    gate.release.notify_one();
    assert_eq!(held.await.unwrap().status, 200);

    // Serially, slow after fast: fast's n and k, then cleared, n = 2, m = 3.
    let data = send(&app, "/read", Some(cookie.as_bytes())).await.body;
    assert_eq!(
        data, "Some(2) Some(3) None",
        "a change was skipped or reordered"
    );
    assert_eq!(
        gate.slow_runs.load(Ordering::SeqCst),
        1,
        "blind changes never run again"
    );
}
