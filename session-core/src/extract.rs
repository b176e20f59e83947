//! The axum extractor (feature `axum`).

use std::convert::Infallible;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{HeaderValue, RETRY_AFTER};
use http::request::Parts;

use crate::{Session, SessionError};

/// Rejection of the [`Session`] extractor: the request has no session because
/// no [`SessionLayer`](crate::SessionLayer) runs in front of the handler.
///
/// Answers `500 Internal Server Error`: it is a wiring mistake, not a client error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, thiserror::Error)]
#[error(
    "no session in the request: add `SessionLayer` to the router (`.layer(SessionLayer::new(store))`) \
     so that it wraps this route"
)]
pub struct MissingSessionLayer;

impl MissingSessionLayer {
    /// The status this rejection answers with.
    pub fn status(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    /// The body text this rejection answers with.
    pub fn body_text(&self) -> String {
        self.to_string()
    }
}

impl IntoResponse for MissingSessionLayer {
    fn into_response(self) -> Response {
        (self.status(), self.body_text()).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = MissingSessionLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let session = parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(MissingSessionLayer)?;
        // A handler that takes its session may need to run again on fresh
        // data: keep its request's head for that (see `ConflictPolicy`).
        session.remember(parts);
        Ok(session)
    }
}

/// `Option<Session>`: `None` where no layer runs, instead of a rejection.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Session {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        let session = parts.extensions.get::<Session>().cloned();
        if let Some(session) = &session {
            session.remember(parts);
        }
        Ok(session)
    }
}

/// A store failure answers `503 Service Unavailable` with `Retry-After: 1`;
/// other session errors answer `500`. The body names the failure without
/// internal detail.
impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        if self.is_store_failure() {
            let mut response =
                (StatusCode::SERVICE_UNAVAILABLE, "session store unavailable").into_response();
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            response
        } else {
            (StatusCode::INTERNAL_SERVER_ERROR, "session error").into_response()
        }
    }
}
