//! The one app shape every variant serves, so that only the session layer differs.
//!
//! Routes, all `GET`:
//!
//! - `/read`: reads the counter from the session (`none` when there is no session);
//! - `/write`: increments the counter, creating the session on a first visit
//!   (the `new` mix is `/write` from clients that send no cookie);
//! - `/untouched`: behind the layer, never touches the session.

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use session_core::{SessionError, SessionLayer, SessionStore};

/// The session key of the counter.
pub const COUNTER: &str = "n";

/// The body `/read` answers when the request has no session.
pub const NO_SESSION: &str = "none";

/// Our [`SessionLayer`] as every variant configures it: defaults, except
/// `Secure` off (the load runs over plain http on loopback, and clients do
/// not send `Secure` cookies over http).
pub fn ours_layer(store: impl SessionStore) -> SessionLayer {
    SessionLayer::new(store).secure(false)
}

/// The app behind our layer over `store`.
pub fn ours(store: impl SessionStore) -> Router {
    ours_with(ours_layer(store))
}

/// The app behind `layer` (one of ours, configured otherwise).
pub fn ours_with(layer: SessionLayer) -> Router {
    Router::new()
        .route("/read", get(ours_read))
        .route("/write", get(ours_write))
        .route("/untouched", get(untouched))
        .layer(layer)
}

async fn ours_read(session: session_core::Session) -> Result<String, SessionError> {
    Ok(match session.get::<u64>(COUNTER).await? {
        Some(n) => n.to_string(),
        None => NO_SESSION.to_owned(),
    })
}

/// `get` then `insert`, as for tower-sessions (and serializable here).
async fn ours_write(session: session_core::Session) -> Result<String, SessionError> {
    let n = session.get::<u64>(COUNTER).await?.unwrap_or(0) + 1;
    session.insert(COUNTER, n).await?;
    Ok(n.to_string())
}

async fn untouched() -> &'static str {
    "ok"
}

/// The app behind tower-sessions' `SessionManagerLayer` over `store`, with
/// its defaults except `Secure` off (as for ours).
pub fn tower_sessions<S>(store: S) -> Router
where
    S: tower_sessions::SessionStore + Clone,
{
    let layer = tower_sessions::SessionManagerLayer::new(store).with_secure(false);
    Router::new()
        .route("/read", get(ts_read))
        .route("/write", get(ts_write))
        .route("/untouched", get(untouched))
        .layer(layer)
}

fn ts_error(error: tower_sessions::session::Error) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response()
}

async fn ts_read(session: tower_sessions::Session) -> Result<String, Response> {
    Ok(match session.get::<u64>(COUNTER).await.map_err(ts_error)? {
        Some(n) => n.to_string(),
        None => NO_SESSION.to_owned(),
    })
}

async fn ts_write(session: tower_sessions::Session) -> Result<String, Response> {
    let n = session
        .get::<u64>(COUNTER)
        .await
        .map_err(ts_error)?
        .unwrap_or(0)
        + 1;
    session.insert(COUNTER, n).await.map_err(ts_error)?;
    Ok(n.to_string())
}

/// The same routes with no session layer at all: the ceiling.
pub fn bare() -> Router {
    Router::new()
        .route("/read", get(untouched))
        .route("/write", get(untouched))
        .route("/untouched", get(untouched))
}
