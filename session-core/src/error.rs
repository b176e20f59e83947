//! Errors of stores and of the session handle.

use std::time::Duration;

/// A boxed error from a backend (a Redis, Postgres or other client error).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A store call failed. Every [`SessionStore`](crate::SessionStore) method
/// returns this; the cause is kept as the error's source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed: connection refused, I/O error, server error.
    #[error("session store backend failed")]
    Backend(#[source] BoxError),
    /// The call did not finish within the layer's store operation timeout.
    #[error("session store call did not finish within {0:?}")]
    Timeout(Duration),
    /// The record could not be encoded for the backend.
    #[error("session record could not be encoded")]
    Encode(#[source] serde_json::Error),
}

impl StoreError {
    /// Wraps a backend's error.
    ///
    /// ```
    /// use session_core::StoreError;
    ///
    /// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
    /// let error = StoreError::backend(io);
    /// assert!(std::error::Error::source(&error).is_some());
    /// ```
    pub fn backend(error: impl Into<BoxError>) -> Self {
        Self::Backend(error.into())
    }
}

/// An operation on a [`Session`](crate::Session) failed.
///
/// With the `axum` feature this is also a response: store failures answer
/// `503 Service Unavailable` with `Retry-After`, the others `500`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// Loading the session from the store failed or timed out.
    #[error("session store unavailable")]
    Store(#[from] StoreError),
    /// The store failed on an earlier call in this request; the session is
    /// not retried within the same request, so a slow store costs one
    /// timeout per request, not one per call.
    #[error("session store unavailable (failed earlier in this request)")]
    StoreFailedEarlier,
    /// A value could not be serialized into, or deserialized from, the session.
    #[error("session value `{key}` has an unexpected shape")]
    Value {
        /// The session key the value lives under.
        key: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// The change would make the session's data larger than the layer's
    /// [`max_session_size`](crate::SessionLayer::max_session_size); it was
    /// not made, and the session is as it was before.
    #[error("session data would be {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The data's JSON size with the change.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The request's response was already produced and the session saved;
    /// changes made through a handle kept past the request are not stored.
    #[error("the session was already saved at the end of its request")]
    Closed,
    /// The OS random number generator failed while drawing a new id.
    #[error("could not draw a new session id")]
    Randomness(#[from] crate::RandomnessError),
}

impl SessionError {
    /// Whether the error comes from the store (unavailable or slow): the case
    /// the layer's failure policy handles.
    pub fn is_store_failure(&self) -> bool {
        matches!(self, Self::Store(_) | Self::StoreFailedEarlier)
    }
}
