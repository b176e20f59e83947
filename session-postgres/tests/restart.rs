//! A Postgres restart under a running app: requests fail fast while the
//! server is down and recover by themselves, with no application restart.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::{OwnPostgres, pool_on, store_in_fresh_schema};
use http::StatusCode;
use session_core::conformance::http::send;
use session_core::{FailurePolicy, Session, SessionError, SessionLayer};

async fn count(session: Session) -> Result<String, SessionError> {
    let n: u64 = session
        .update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(n.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_recover_after_pg_ctl_restart() {
    let server = Arc::new(OwnPostgres::start());
    let pool = pool_on(&server.url(), Duration::from_secs(1)).await;
    let store = store_in_fresh_schema(pool).await;
    let layer = SessionLayer::new(store)
        .op_timeout(Duration::from_millis(500))
        .failure_policy(FailurePolicy::Reject);
    let app = Router::new().route("/count", get(count)).layer(layer);

    let first = send(&app, "/count", None).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body, "1");
    let cookie = first.cookie_pair().expect("a session cookie");

    // Requests keep coming while the server restarts: each one is answered
    // (served, or refused with 503 by the failure policy), none hangs.
    let restarting = tokio::task::spawn_blocking({
        let server = server.clone();
        move || server.restart()
    });
    let mut during = Vec::new();
    while !restarting.is_finished() {
        during.push(send(&app, "/count", Some(cookie.as_bytes())).await.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    restarting.await.expect("pg_ctl restart");
    for status in &during {
        assert!(
            *status == StatusCode::OK || *status == StatusCode::SERVICE_UNAVAILABLE,
            "during the restart a request got {status}"
        );
    }

    // Same app, same pool, same store: the session is served again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let last = loop {
        let reply = send(&app, "/count", Some(cookie.as_bytes())).await;
        if reply.status == StatusCode::OK || tokio::time::Instant::now() >= deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        last.status,
        StatusCode::OK,
        "no recovery after the restart: {last:?}"
    );
    assert!(
        last.set_cookies.is_empty(),
        "the session was replaced, not recovered: {:?}",
        last.set_cookies
    );
    let n: u64 = last.body.parse().expect("a count");
    assert!(
        n >= 2,
        "the session's data did not survive the restart: {n}"
    );
}
