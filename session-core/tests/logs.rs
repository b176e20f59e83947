//! No log line carries a raw session id: every store call is logged (at
//! trace level, span events included) through a whole session life cycle,
//! and the captured output is searched for every id the client ever held.

#![allow(clippy::unwrap_used)] // tests

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::get;
use session_core::conformance::http::{Reply, send};
use session_core::conformance::support::FailingStore;
use session_core::{Id, Session, SessionError, SessionLayer};
use session_memory::MemoryStore;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::FmtSpan;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

async fn count(session: Session) -> Result<String, SessionError> {
    let n: u64 = session
        .update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(n.to_string())
}

async fn login(session: Session) -> Result<&'static str, SessionError> {
    session.cycle_id().await?;
    session.set_principal("ada").await?;
    Ok("in")
}

async fn logout(session: Session) -> Result<&'static str, SessionError> {
    session.destroy().await?;
    Ok("out")
}

fn app(layer: SessionLayer) -> Router {
    Router::new()
        .route("/count", get(count))
        .route("/login", get(login))
        .route("/logout", get(logout))
        .layer(layer)
}

fn id_in(reply: &Reply) -> Option<String> {
    let pair = reply.cookie_pair()?;
    let value = pair.split_once('=')?.1;
    Id::decode(value).map(|id| id.encode())
}

#[tokio::test]
async fn no_log_line_carries_a_raw_session_id() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(FmtSpan::FULL)
        .with_ansi(false)
        .with_writer(capture.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut ids = Vec::new();
    let app = app(SessionLayer::new(MemoryStore::new()));
    let first = send(&app, "/count", None).await;
    let id = id_in(&first).expect("a new session");
    ids.push(id.clone());
    let cookie = format!("session={id}");
    send(&app, "/count", Some(cookie.as_bytes())).await;
    let login = send(&app, "/login", Some(cookie.as_bytes())).await;
    let cycled = id_in(&login).expect("a cycled id");
    ids.push(cycled.clone());
    // The old, now dead, id and the new one.
    send(&app, "/count", Some(cookie.as_bytes())).await;
    let cookie = format!("session={cycled}");
    send(&app, "/logout", Some(cookie.as_bytes())).await;
    send(&app, "/count", Some(cookie.as_bytes())).await;
    // A planted id, and a store that fails: the warnings name keys, not ids.
    let planted = Id::random().unwrap().encode();
    ids.push(planted.clone());
    let failing = self::app(SessionLayer::new(FailingStore));
    send(
        &failing,
        "/count",
        Some(format!("session={planted}").as_bytes()),
    )
    .await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    // The capture really saw the store calls, with their short store keys.
    assert!(
        logs.contains("session_store"),
        "no store spans captured:\n{logs}"
    );
    assert!(logs.contains("key="), "no keys in the logs:\n{logs}");
    assert!(
        logs.contains("session store call failed"),
        "no failure logged:\n{logs}"
    );
    for id in &ids {
        assert!(!logs.contains(id.as_str()), "a raw id reached the logs");
        // Nor any 8-character window of it, which would already be a partial leak.
        for window in id.as_bytes().windows(8) {
            let window = std::str::from_utf8(window).unwrap();
            assert!(
                !logs.contains(window),
                "part of an id ({window}) reached the logs"
            );
        }
    }
}
