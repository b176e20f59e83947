#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod builder;
mod connection;
mod encoding;
mod scripts;
mod store;

pub use builder::{
    BuildError, DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_SIZE, DEFAULT_RESPONSE_TIMEOUT,
    DEFAULT_WAIT_TIMEOUT, RedisStoreBuilder,
};
pub use store::{DEFAULT_KEY_PREFIX, DEFAULT_SHARED_CONNECTIONS, RedisStore};

pub use deadpool_redis;
pub use redis;
