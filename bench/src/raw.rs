//! The raw variant: handlers doing by hand the store commands a session read
//! or write needs, with no session library. The yardstick for "close to the
//! raw store".
//!
//! A session is a JSON object under a random 128-bit id carried in the `sid`
//! cookie (used as the key as is: no hashing, no signing, no expiry policy
//! beyond the store's TTL, no compare-and-set). Per request:
//!
//! - read: one fetch (Redis `GET`, Postgres `SELECT`, a moka `get`);
//! - write: a fetch, then a write of the incremented value (`SET .. EX`,
//!   `UPDATE`), or for a client without a session one insert and a `Set-Cookie`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use redis::AsyncCommands as _;
use serde_json::{Map, Value};
use session_core::Id;

use crate::app::{COUNTER, NO_SESSION};

/// The cookie the raw handlers use.
pub const COOKIE_NAME: &str = "sid";

/// The lifetime of a raw session (refreshed on every write), as our default idle timeout.
pub const TTL: Duration = Duration::from_secs(24 * 3600);

/// The Redis key prefix of raw sessions.
pub const REDIS_PREFIX: &str = "bench:raw:";

/// The Postgres table of raw sessions (created by [`Raw::prepare`]).
pub const PG_TABLE: &str = "bench_raw";

/// Where the raw handlers keep sessions.
#[derive(Clone)]
pub enum Raw {
    /// A moka cache of JSON strings, with a time-to-idle.
    Memory(moka::future::Cache<String, Arc<str>>),
    /// One shared multiplexed connection.
    Redis(redis::aio::MultiplexedConnection),
    /// A sqlx pool.
    Postgres(sqlx::PgPool),
    /// A sqlx MySQL pool (the table is in the URL's database).
    MySql(sqlx::MySqlPool),
}

/// Errors of the raw handlers, answered as `500`.
#[derive(Debug)]
pub enum RawError {
    /// Redis failed.
    Redis(redis::RedisError),
    /// Postgres or MySQL failed.
    Sql(sqlx::Error),
}

impl From<redis::RedisError> for RawError {
    fn from(error: redis::RedisError) -> Self {
        Self::Redis(error)
    }
}

impl From<sqlx::Error> for RawError {
    fn from(error: sqlx::Error) -> Self {
        Self::Sql(error)
    }
}

impl std::fmt::Display for RawError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Redis(e) => write!(f, "redis: {e}"),
            Self::Sql(e) => write!(f, "sql: {e}"),
        }
    }
}

impl std::error::Error for RawError {}

impl IntoResponse for RawError {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

impl Raw {
    /// A memory store of at most `capacity` sessions.
    pub fn memory(capacity: u64) -> Self {
        Self::Memory(
            moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(TTL)
                .build(),
        )
    }

    /// Creates the Postgres or MySQL table (if missing) and empties it.
    ///
    /// # Errors
    ///
    /// The database's.
    pub async fn prepare(&self) -> Result<(), RawError> {
        if let Self::Postgres(pool) = self {
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS bench_raw ( \
                 key text COLLATE \"C\" PRIMARY KEY, data text NOT NULL, \
                 expires_at timestamptz NOT NULL)",
            )
            .execute(pool)
            .await?;
            sqlx::query("TRUNCATE bench_raw").execute(pool).await?;
        }
        if let Self::MySql(pool) = self {
            // What a hand-written MySQL store would do: the key, the data,
            // an expiry in Unix ms (no TIMESTAMP), the server's clock.
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS bench_raw ( \
                 store_key VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY, \
                 data LONGBLOB NOT NULL, expires_at_ms BIGINT NOT NULL)",
            )
            .execute(pool)
            .await?;
            sqlx::query("TRUNCATE TABLE bench_raw")
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    async fn fetch(&self, id: &str) -> Result<Option<Arc<str>>, RawError> {
        Ok(match self {
            Self::Memory(cache) => cache.get(id).await,
            Self::Redis(conn) => {
                let mut conn = conn.clone();
                let data: Option<String> = conn.get(format!("{REDIS_PREFIX}{id}")).await?;
                data.map(Arc::from)
            }
            Self::Postgres(pool) => {
                let data: Option<String> = sqlx::query_scalar(
                    "SELECT data FROM bench_raw WHERE key = $1 AND expires_at > now()",
                )
                .bind(id)
                .fetch_optional(pool)
                .await?;
                data.map(Arc::from)
            }
            Self::MySql(pool) => {
                let data: Option<Vec<u8>> = sqlx::query_scalar(
                    "SELECT data FROM bench_raw WHERE store_key = ? AND expires_at_ms > ?",
                )
                .bind(id)
                .bind(unix_ms())
                .fetch_optional(pool)
                .await?;
                data.map(|d| Arc::from(String::from_utf8_lossy(&d)))
            }
        })
    }

    async fn store(&self, id: &str, data: String, new: bool) -> Result<(), RawError> {
        match self {
            Self::Memory(cache) => cache.insert(id.to_owned(), Arc::from(data)).await,
            Self::Redis(conn) => {
                let mut conn = conn.clone();
                let () = conn
                    .set_ex(format!("{REDIS_PREFIX}{id}"), data, TTL.as_secs())
                    .await?;
            }
            Self::Postgres(pool) => {
                let sql = if new {
                    "INSERT INTO bench_raw (key, data, expires_at) \
                     VALUES ($1, $2, now() + interval '1 day')"
                } else {
                    "UPDATE bench_raw SET data = $2, expires_at = now() + interval '1 day' \
                     WHERE key = $1"
                };
                sqlx::query(sql).bind(id).bind(data).execute(pool).await?;
            }
            Self::MySql(pool) => {
                let expires = unix_ms() + 86_400_000;
                let query = if new {
                    sqlx::query(
                        "INSERT INTO bench_raw (store_key, data, expires_at_ms) VALUES (?, ?, ?)",
                    )
                    .bind(id)
                    .bind(data.into_bytes())
                    .bind(expires)
                } else {
                    sqlx::query(
                        "UPDATE bench_raw SET data = ?, expires_at_ms = ? WHERE store_key = ?",
                    )
                    .bind(data.into_bytes())
                    .bind(expires)
                    .bind(id)
                };
                query.execute(pool).await?;
            }
        }
        Ok(())
    }
}

/// The app clock in Unix milliseconds.
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The raw app over `raw`: the same routes as [`crate::app`].
pub fn app(raw: Raw) -> Router {
    Router::new()
        .route("/read", get(read))
        .route("/write", get(write))
        .route("/untouched", get(|| async { "ok" }))
        .with_state(raw)
}

fn cookie_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix("sid="))
}

fn counter(data: &str) -> Option<u64> {
    serde_json::from_str::<Map<String, Value>>(data)
        .ok()?
        .get(COUNTER)?
        .as_u64()
}

async fn read(State(raw): State<Raw>, headers: HeaderMap) -> Result<String, RawError> {
    let data = match cookie_id(&headers) {
        Some(id) => raw.fetch(id).await?,
        None => None,
    };
    Ok(match data.as_deref().and_then(counter) {
        Some(n) => n.to_string(),
        None => NO_SESSION.to_owned(),
    })
}

async fn write(State(raw): State<Raw>, headers: HeaderMap) -> Result<Response, RawError> {
    let existing = match cookie_id(&headers) {
        Some(id) => raw.fetch(id).await?.map(|data| (id.to_owned(), data)),
        None => None,
    };
    let (id, n, new) = match existing {
        Some((id, data)) => (id, counter(&data).unwrap_or(0) + 1, false),
        None => match Id::random() {
            Ok(id) => (id.encode(), 1, true),
            Err(_) => return Ok(StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        },
    };
    let mut data = Map::new();
    data.insert(COUNTER.to_owned(), Value::from(n));
    raw.store(&id, Value::Object(data).to_string(), new).await?;
    let mut response = n.to_string().into_response();
    if new {
        let cookie = format!("{COOKIE_NAME}={id}; Path=/; HttpOnly; SameSite=Lax");
        if let Ok(value) = HeaderValue::try_from(cookie) {
            response.headers_mut().insert(SET_COOKIE, value);
        }
    }
    Ok(response)
}
