#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod health;
mod sql;
mod store;
mod sweeper;

pub use error::{Error, NameKind, NameProblem};
pub use sql::MAX_NAME_LEN;
pub use store::{DEFAULT_SWEEP_BATCH, DEFAULT_TABLE, MySqlStore, MySqlStoreBuilder};

/// A running sweeper, from [`MySqlStore::spawn_sweeper`].
pub use session_core::sweeper::SweeperHandle;

/// Re-exported so an app needs one dependency to build the pool it hands
/// to [`MySqlStore::new`].
pub use sqlx;
