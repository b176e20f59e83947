#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod builder;
mod connection;
mod encoding;
mod scripts;
mod store;

pub use builder::{
    BuildError, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DURABLE_TIMEOUT, DEFAULT_FAILOVER_RETRY,
    DEFAULT_POOL_SIZE, DEFAULT_REPLICA_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT, DEFAULT_SENTINEL_DURABLE,
    DEFAULT_WAIT_TIMEOUT, Durable, ParseDurableError, RedisStoreBuilder,
};
pub use store::{DEFAULT_KEY_PREFIX, DEFAULT_SHARED_CONNECTIONS, NotReplicated, RedisStore};

pub use deadpool_redis;
pub use redis;

/// What the cargo-fuzz targets in `fuzz/` drive: the value codec and the
/// scripts' Lua header parser. Not public API: hidden from the docs, no
/// stability promise, may change in any release.
#[doc(hidden)]
pub mod __fuzz {
    pub use crate::encoding::{DecodeError, FORMAT, decode, encode};
    pub use crate::scripts::TOMBSTONE;

    /// The Lua prologue every script starts with: `TOMBSTONE` and the
    /// functions `parse(s, now)`, `live(key, now)` and `bury(key)`, for a
    /// Lua 5.1 of the fuzz target's own to run `parse`.
    pub fn lua_prologue() -> String {
        crate::scripts::prologue()
    }
}
