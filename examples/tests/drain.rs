//! The README's move from memory to Redis: a counter on the memory store
//! stopped with `SESSION_DRAIN_TO` set hands its sessions over, and the same
//! counter started on Redis keeps counting for the same cookie.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::{env_or_fail, example_binary, free_port, request, set_cookie};
use tokio::process::{Child, Command};

async fn counter(store: &str, drain_to: Option<&str>) -> (Child, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut command = Command::new(example_binary("counter"));
    command
        .env("ADDR", addr.to_string())
        .env("SESSION_STORE", store)
        .env_remove("SESSION_DRAIN_TO")
        .stdout(Stdio::null())
        .kill_on_drop(true);
    if let Some(target) = drain_to {
        command.env("SESSION_DRAIN_TO", target);
    }
    let child = command.spawn().unwrap();
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return (child, addr);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the counter did not start on {addr}");
}

async fn stop(mut child: Child) {
    let pid = child.id().unwrap().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status().await;
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
    assert!(
        matches!(status, Ok(Ok(s)) if s.success()),
        "the counter did not stop cleanly: {status:?}"
    );
}

#[tokio::test]
async fn memory_sessions_drained_to_redis_at_shutdown_keep_counting() {
    let redis = format!(
        "{}?prefix=drain-test-{}:",
        env_or_fail("REDIS_URL"),
        free_port()
    );

    let (child, addr) = counter("memory://", Some(&redis)).await;
    let first = request(addr, "GET", "/", None).await;
    assert!(first.body.starts_with("0 "), "{}", first.body);
    let cookie = set_cookie(&first).expect("a session cookie");
    let second = request(addr, "GET", "/", Some(&cookie)).await;
    assert!(second.body.starts_with("1 "), "{}", second.body);
    stop(child).await;

    let (child, addr) = counter(&redis, None).await;
    let third = request(addr, "GET", "/", Some(&cookie)).await;
    assert!(
        third.body.starts_with("2 "),
        "the session did not survive the move: {}",
        third.body
    );
    assert!(set_cookie(&third).is_none(), "the cookie changed");
    stop(child).await;
}

/// The shutdown order of `examples::serve`: once shutdown begins the server
/// takes no new connection, a request already being served finishes (its
/// write included) before the drain starts, and the drain then hands the
/// session over with that write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_waits_for_requests_in_flight_and_takes_their_writes() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::Router;
    use axum::extract::State;
    use axum::routing::get;
    use session::{AnyStore, Session, SessionError, StoreConfig};
    use tokio::sync::{Notify, oneshot};

    #[derive(Clone)]
    struct Held {
        store: AnyStore,
        entered: Arc<Notify>,
        release: Arc<Notify>,
        drained_early: Arc<AtomicBool>,
    }

    async fn count(session: Session) -> Result<String, SessionError> {
        let n: u64 = session
            .update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
            .await?;
        Ok(n.to_string())
    }

    async fn slow(State(held): State<Held>, session: Session) -> Result<String, SessionError> {
        let n: u64 = session
            .update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
            .await?;
        held.entered.notify_one();
        held.release.notified().await;
        if held.store.memory().unwrap().is_draining() {
            held.drained_early.store(true, Ordering::SeqCst);
        }
        Ok(n.to_string())
    }

    let memory = |url: &str| {
        let url = url.to_owned();
        async move {
            StoreConfig::from_url(&url)
                .unwrap()
                .connect()
                .await
                .unwrap()
        }
    };
    let (store, target) = (memory("memory://").await, memory("memory://").await);
    let held = Held {
        store: store.clone(),
        entered: Arc::default(),
        release: Arc::default(),
        drained_early: Arc::default(),
    };
    let app = Router::new()
        .route("/", get(count))
        .route("/slow", get(slow))
        .with_state(held.clone())
        .layer(store.layer().secure(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn({
        let (store, target) = (store.clone(), target.clone());
        async move {
            examples::serve_then_drain(listener, app, &store, Some(&target), async {
                let _ = stopped.await;
            })
            .await
            .unwrap()
        }
    });

    let first = request(addr, "GET", "/", None).await;
    assert_eq!(first.body, "1");
    let cookie = set_cookie(&first).expect("a session cookie");
    let in_flight = tokio::spawn({
        let cookie = cookie.clone();
        async move { request(addr, "GET", "/slow", Some(&cookie)).await }
    });
    held.entered.notified().await;

    stop.send(()).unwrap();
    // New connections are refused while the request is still in flight.
    let mut refused = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        refused,
        "the server still accepts connections after shutdown began"
    );
    assert!(!in_flight.is_finished());
    assert!(
        !store.memory().unwrap().is_draining(),
        "the drain started before the request finished"
    );

    held.release.notify_one();
    let reply = in_flight.await.unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (200, "2"));
    let report = tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .expect("the server did not stop")
        .unwrap()
        .expect("a drain report");
    assert!(
        !held.drained_early.load(Ordering::SeqCst),
        "the drain started before the request finished"
    );
    assert_eq!((report.moved, report.skipped), (1, 0));
    let key = session_core::conformance::http::id_of(&cookie).store_key();
    let record = session::SessionStore::load(&target, &key)
        .await
        .unwrap()
        .expect("handed over");
    assert_eq!(
        record.data["n"], 2,
        "the request in flight at shutdown lost its write"
    );
}
