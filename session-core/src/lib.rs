#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod commit;
mod cookies;
mod error;
#[cfg(feature = "axum")]
mod extract;
mod id;
pub mod layer;
mod locks;
mod meter;
pub mod observe;
pub mod record;
pub mod replica;
mod session;
mod store;
pub mod sweeper;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use ::cookie::{Key, SameSite};
pub use error::{BoxError, SessionError, StoreError};
#[cfg(feature = "axum")]
pub use extract::MissingSessionLayer;
pub use id::{ENCODED_ID_LEN, Id, RandomnessError, STORE_KEY_LEN, StoreKey};
pub use layer::{ConflictPolicy, CookieConfigError, FailurePolicy, SessionLayer, SessionService};
pub use observe::SessionEvents;
pub use record::{Data, DecodeError, Expiry, Record};
pub use session::Session;
pub use store::{DeleteOutcome, LoadOutcome, SaveOutcome, SessionInfo, SessionStore};

/// Re-exported so backends implement [`SessionStore`] with the same macro version.
pub use async_trait::async_trait;
/// Re-exported: record timestamps are [`time::OffsetDateTime`]s.
pub use time;
