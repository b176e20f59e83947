//! The visit counter: `GET /` answers with the number of earlier visits in
//! this session, then counts this one.

use axum::Router;
use axum::routing::get;
use session::{Session, SessionError, SessionLayer};

/// The counter app behind `layer`.
pub fn app(layer: SessionLayer) -> Router {
    Router::new().route("/", get(count)).layer(layer)
}

async fn count(session: Session) -> Result<String, SessionError> {
    let visits: u64 = session
        .update("visits", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(format!("{} earlier visits in this session\n", visits - 1))
}
