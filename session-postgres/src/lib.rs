#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod handoff;
mod health;
mod pg_types;
mod sql;
mod store;
mod sweeper;
mod topology;

pub use error::{Error, IdentifierKind, IdentifierProblem};
/// A running sweeper, from [`PostgresStore::spawn_sweeper`].
pub use session_core::sweeper::SweeperHandle;
pub use sql::MAX_IDENTIFIER_LEN;
pub use store::{
    DEFAULT_SCHEMA, DEFAULT_SWEEP_BATCH, DEFAULT_TABLE, PostgresStore, PostgresStoreBuilder,
    ReadFrom,
};

/// Re-exported so an app needs one dependency to build the pool it hands
/// to [`PostgresStore::new`].
pub use sqlx;

/// What the cargo-fuzz targets in `fuzz/` drive: the client-side
/// `timestamptz` conversion. Not public API: hidden from the docs, no
/// stability promise, may change in any release.
#[doc(hidden)]
pub mod __fuzz {
    pub use crate::pg_types::{fuzz_decode_timestamptz, fuzz_encode_timestamptz};
}
