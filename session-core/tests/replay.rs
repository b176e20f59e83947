//! After a conflict, this request's changes are replayed in order on the
//! fresh record, as if the request had run after the one that saved first.
#![allow(clippy::unwrap_used)] // tests

use std::sync::Arc;

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
}

async fn start(session: Session) -> Result<&'static str, SessionError> {
    session.insert("n", 1).await?;
    Ok("started")
}

/// `update(+1)` then `insert(2)`: here the insert changes nothing (n is 2
/// already), but replayed after another request's write it must still apply.
async fn slow(State(gate): State<Gate>, session: Session) -> Result<&'static str, SessionError> {
    session
        .update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    session.insert("n", 2).await?;
    gate.loaded.notify_one();
    gate.release.notified().await;
    Ok("slow")
}

async fn fast(session: Session) -> Result<&'static str, SessionError> {
    session.insert("n", 5).await?;
    Ok("fast")
}

async fn read(session: Session) -> Result<String, SessionError> {
    Ok(session.get::<u64>("n").await?.unwrap().to_string())
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

    // Serially, slow after fast: n = 5, update -> 6, insert -> 2.
    let n = send(&app, "/read", Some(cookie.as_bytes())).await.body;
    assert_eq!(n, "2", "the replay skipped or reordered a change");
}

/// An `update` closure that would panic on the fresh value.
async fn fragile(State(gate): State<Gate>, session: Session) -> Result<&'static str, SessionError> {
    session
        .update("n", |n: Option<u64>| {
            let n = n.unwrap_or(0);
            assert!(n < 50, "this closure cannot handle {n}");
            n + 1
        })
        .await?;
    gate.loaded.notify_one();
    gate.release.notified().await;
    Ok("fragile")
}

async fn big(session: Session) -> Result<&'static str, SessionError> {
    session.insert("n", 100).await?;
    Ok("big")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closure_panicking_on_replay_does_not_crash_the_layer() {
    let gate = Gate::default();
    let app = Router::new()
        .route("/start", get(start))
        .route("/fragile", get(fragile))
        .route("/big", get(big))
        .route("/read", get(read))
        .with_state(gate.clone())
        .layer(SessionLayer::new(MemoryStore::new()));
    let cookie = send(&app, "/start", None).await.cookie_pair().unwrap();
    let held = {
        let (app, cookie) = (app.clone(), cookie.clone());
        tokio::spawn(async move { send(&app, "/fragile", Some(cookie.as_bytes())).await })
    };
    gate.loaded.notified().await;
    send(&app, "/big", Some(cookie.as_bytes())).await;
    gate.release.notify_one();
    let reply = held.await.expect("the layer must not panic");
    assert_eq!(reply.status, 200);
    // The change could not be replayed: the parallel writer's value stands.
    assert_eq!(
        send(&app, "/read", Some(cookie.as_bytes())).await.body,
        "100"
    );
}
