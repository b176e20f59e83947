//! [`StoreConfig`]: one value that picks the backend, from a URL or a config file.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which backend keeps the sessions, and how to reach it.
///
/// Parse it from a URL with [`StoreConfig::from_url`] (typically the
/// `SESSION_STORE` environment variable), or deserialize it from a config
/// file; then [`connect`](StoreConfig::connect) it. An app built once runs
/// on every backend compiled in:
///
/// | URL | backend |
/// |---|---|
/// | `memory://?capacity=100000` | in-process memory (stateful) |
/// | `redis://127.0.0.1:6379/0?pool=16&prefix=myapp:` | one Redis server |
/// | `redis+cluster://10.0.0.1:7000,10.0.0.2:7000?prefix=myapp:&durable=1` | Redis Cluster (seed nodes); `durable=N`: each write confirmed by N replicas of its shard |
/// | `redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster?durable=all&durable_timeout=250ms&read_from=replicas` | the primary of `mymaster`, found and followed through its sentinels; `durable=all` (the default): each write confirmed by every replica Sentinel may promote (`durable=N`: by N, which is no promise across a failover); `read_from=replicas`: loads from its replicas, never below the client's version floor |
/// | `postgres://app@db/app?schema=sessions&table=sessions&pool=10` | Postgres |
/// | `postgres://app@db1/app?replicas=db2:5432,db3:5432&read_from=replicas&synchronous_commit=on` | Postgres with streaming replicas: loads from the replicas (never below what the client has seen), writes to whichever server is the primary |
/// | `mysql://app:secret@db/app?table=sessions&pool=10` (or `mariadb://`) | MySQL 8 / MariaDB |
///
/// Every URL also takes `timeout`, the store operation timeout of the
/// layer (`500ms`, `2s`, or milliseconds as a bare number). Options the
/// backend's own client understands (for example Postgres' `sslmode`) are
/// passed through; any other option is an error naming it (a misspelt
/// option never goes unnoticed).
///
/// Postgres also takes `replicas=HOST:PORT,...` (streaming replicas of the
/// URL's server: candidates for primary, and read replicas with
/// `read_from=replicas`), `hosts=HOST:PORT,...` (other candidates for
/// primary), `read_from=primary|replicas` (default `primary`) and
/// `synchronous_commit=off|local|remote_write|on|remote_apply` (the
/// Postgres setting, for the store's connections; see the
/// `session-postgres` docs, "Replicas and failover").
///
/// ```
/// use session::{Backend, StoreConfig};
///
/// let config = StoreConfig::from_url("redis://127.0.0.1:6379/2?prefix=app:&timeout=500ms")?;
/// assert_eq!(config.op_timeout(), Some(std::time::Duration::from_millis(500)));
/// assert!(matches!(config.backend, Backend::Redis { .. }));
///
/// // The same, from a config file:
/// let from_file: StoreConfig = serde_json::from_str(
///     r#"{ "backend": "redis", "url": "redis://127.0.0.1:6379/2", "prefix": "app:", "op_timeout_ms": 500 }"#,
/// ).unwrap();
/// assert_eq!(from_file, config);
/// # Ok::<(), session::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoreConfig {
    /// The backend and its settings.
    #[serde(flatten)]
    pub backend: Backend,
    /// The layer's store operation timeout in milliseconds (default: the layer's, 2 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_timeout_ms: Option<u64>,
}

/// A backend and its settings. Every variant exists whatever features are
/// compiled in, so a config file always parses; connecting to a backend that
/// is not compiled in is a [`ConfigError::NotCompiledIn`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Backend {
    /// The in-process memory store.
    Memory {
        /// At most this many sessions (default 1 000 000).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        capacity: Option<u64>,
    },
    /// One Redis server.
    Redis {
        /// `redis://[user:password@]host[:port][/db]`, without our options.
        url: String,
        /// Connection pool size.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pool: Option<usize>,
        /// Key prefix.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix: Option<String>,
    },
    /// A Redis Cluster.
    RedisCluster {
        /// Seed nodes, each `redis://host:port`.
        nodes: Vec<String>,
        /// Connection pool size.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pool: Option<usize>,
        /// Key prefix.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix: Option<String>,
        /// Replicas of the write's shard that must confirm each write
        /// before it is acknowledged (`WAIT` on that shard's master);
        /// default 0.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        durable: Option<u32>,
        /// How long a write waits for those replicas, in milliseconds
        /// (default 250).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        durable_timeout_ms: Option<u64>,
    },
    /// The primary of a Redis replication group that Redis Sentinel
    /// manages: found through the sentinels, followed across failovers.
    RedisSentinel {
        /// The sentinels, each `redis://host:port`.
        sentinels: Vec<String>,
        /// The primary's name, as in the sentinels' `sentinel monitor`.
        master: String,
        /// Key prefix.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix: Option<String>,
        /// Replicas that must confirm each write before it is acknowledged
        /// (`WAIT`): `all` (URL `durable=all`, config `"all"`), every
        /// replica Sentinel may promote, the default (see
        /// `session_redis::DEFAULT_SENTINEL_DURABLE` for why); or a number,
        /// which behind Sentinel is no promise across a failover unless it
        /// covers every replica; 0 to acknowledge without waiting.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        durable: Option<Durable>,
        /// How long a write waits for those replicas, in milliseconds
        /// (default 250).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        durable_timeout_ms: Option<u64>,
        /// Loads may be answered by the primary's replicas, never below
        /// the client's version floor (URL: `read_from=replicas`; default
        /// `read_from=primary`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        read_from_replicas: bool,
    },
    /// Postgres.
    Postgres {
        /// `postgres://user[:password]@host[:port]/db[?client options]`, without our options.
        url: String,
        /// Schema of the sessions table (default `public`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        schema: Option<String>,
        /// Name of the sessions table (default `sessions`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        table: Option<String>,
        /// Connection pool size (per server).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pool: Option<u32>,
        /// Streaming replicas of the server, each `host:port`: candidates
        /// for primary, and read replicas with `read_from` `replicas`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        replicas: Vec<String>,
        /// Other candidates for primary, each `host:port`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        hosts: Vec<String>,
        /// Where loads read (default [`ReadFrom::Primary`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        read_from: Option<ReadFrom>,
        /// Postgres' `synchronous_commit` for the store's connections
        /// (`off`, `local`, `remote_write`, `on` or `remote_apply`; default:
        /// the server's).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        synchronous_commit: Option<String>,
    },
    /// MySQL 8 or MariaDB.
    #[serde(rename = "mysql")]
    MySql {
        /// `mysql://user[:password]@host[:port]/db[?client options]` (a
        /// `mariadb://` URL is the same), without our options.
        url: String,
        /// Database of the sessions table (default: the URL's).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        database: Option<String>,
        /// Name of the sessions table (default `sessions`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        table: Option<String>,
        /// Connection pool size.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pool: Option<u32>,
    },
}

/// How many replicas confirm each write of a store behind Redis Sentinel
/// (`durable=all` or `durable=N` in the URL; `"all"` or a number in a
/// config file). See `session_redis::Durable`.
///
/// ```
/// use session::{Backend, Durable, StoreConfig};
///
/// let config = StoreConfig::from_url("redis+sentinel://127.0.0.1:26379/m?durable=all")?;
/// assert!(matches!(config.backend, Backend::RedisSentinel { durable: Some(Durable::All), .. }));
/// let from_file: Durable = serde_json::from_str(r#""all""#).unwrap();
/// assert_eq!(from_file, Durable::All);
/// assert_eq!(serde_json::from_str::<Durable>("1").unwrap(), Durable::Replicas(1));
/// assert!(serde_json::from_str::<Durable>(r#""al""#).is_err());
/// # Ok::<(), session::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "DurableValue", into = "DurableValue")]
#[non_exhaustive]
pub enum Durable {
    /// This many replicas, whichever they are (0: no waiting).
    Replicas(u32),
    /// Every replica Sentinel may promote, at least one.
    All,
}

/// How a [`Durable`] is written in a config file: a number or `"all"`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum DurableValue {
    Replicas(u32),
    Word(String),
}

impl TryFrom<DurableValue> for Durable {
    type Error = &'static str;

    fn try_from(value: DurableValue) -> Result<Self, Self::Error> {
        match value {
            DurableValue::Replicas(n) => Ok(Self::Replicas(n)),
            DurableValue::Word(word) => parse_durable(&word).ok_or(DURABLE_FORMAT),
        }
    }
}

impl From<Durable> for DurableValue {
    fn from(durable: Durable) -> Self {
        match durable {
            Durable::Replicas(n) => Self::Replicas(n),
            Durable::All => Self::Word("all".to_owned()),
        }
    }
}

/// What `durable` takes behind Sentinel.
const DURABLE_FORMAT: &str = "all or a number of replicas";

fn parse_durable(value: &str) -> Option<Durable> {
    match value {
        "all" => Some(Durable::All),
        n => n.parse().ok().map(Durable::Replicas),
    }
}

/// Where a replicated store's loads read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReadFrom {
    /// Every load reads the primary.
    #[default]
    Primary,
    /// Loads may be served by a replica, never below the version the client
    /// has seen or written.
    Replicas,
}

/// The values Postgres takes for `synchronous_commit`.
const SYNCHRONOUS_COMMIT: [&str; 5] = ["off", "local", "remote_write", "on", "remote_apply"];

/// The query options sqlx's Postgres driver takes (`options[NAME]` too).
const POSTGRES_CLIENT_OPTIONS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// The query options sqlx's MySQL driver takes.
const MYSQL_CLIENT_OPTIONS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslca",
    "ssl-ca",
    "charset",
    "collation",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "socket",
    "timezone",
    "time-zone",
];

/// A store URL or config that cannot be used. Each variant names the part at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL has no `scheme://`, or is not a URL at all.
    #[error("store URL `{0}` is not of the form scheme://...")]
    NotAUrl(String),
    /// A scheme no backend answers to.
    #[error(
        "unknown store scheme `{0}` (expected memory, redis, redis+cluster, redis+sentinel, postgres, postgresql, mysql or mariadb)"
    )]
    UnknownScheme(String),
    /// The URL names no host where one is needed.
    #[error("store URL has no host")]
    MissingHost,
    /// A `redis+sentinel://` URL without `/MASTER_NAME` after its sentinels.
    #[error("redis+sentinel URL has no /MASTER_NAME after the sentinels")]
    MissingMasterName,
    /// A host's port is not a number from 1 to 65535.
    #[error("invalid port `{0}`")]
    InvalidPort(String),
    /// A query option this backend does not take.
    #[error("unknown option `{option}` for the {backend} store")]
    UnknownOption {
        /// The backend.
        backend: &'static str,
        /// The option as written.
        option: String,
    },
    /// A query option with a value that does not parse.
    #[error("invalid value `{value}` for option `{option}`: {expected}")]
    InvalidOption {
        /// The option.
        option: String,
        /// The value as written.
        value: String,
        /// What a valid value looks like.
        expected: &'static str,
    },
    /// The config asks for a backend this build does not include.
    #[error("the {0} store is not compiled in: enable the `session` crate's `{0}` feature")]
    NotCompiledIn(&'static str),
}

impl StoreConfig {
    /// A config for `backend` with the layer's default timeout.
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            op_timeout_ms: None,
        }
    }

    /// The memory store with its default capacity: what apps start with.
    pub fn memory() -> Self {
        Self::new(Backend::Memory { capacity: None })
    }

    /// The store operation timeout, if the config sets one.
    pub fn op_timeout(&self) -> Option<Duration> {
        self.op_timeout_ms.map(Duration::from_millis)
    }

    /// Parses a store URL (see the table on [`StoreConfig`]).
    ///
    /// ```
    /// use session::{ConfigError, StoreConfig};
    ///
    /// assert!(StoreConfig::from_url("memory://").is_ok());
    /// assert_eq!(
    ///     StoreConfig::from_url("redis://localhost:6379?pool_size=4"),
    ///     Err(ConfigError::UnknownOption { backend: "redis", option: "pool_size".into() }),
    /// );
    /// ```
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the scheme, port or option at fault.
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let url = url.trim();
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| ConfigError::NotAUrl(url.to_owned()))?;
        let (body, query) = match rest.split_once('?') {
            Some((body, query)) => (body, query),
            None => (rest, ""),
        };
        let mut options = Options::parse(query);
        let op_timeout_ms = options.take("timeout", parse_timeout, TIMEOUT_FORMAT)?;
        let backend = match scheme.to_ascii_lowercase().as_str() {
            "memory" => {
                let capacity =
                    options.take("capacity", |v| v.parse().ok(), "a number of sessions")?;
                options.finish("memory", false)?;
                Backend::Memory { capacity }
            }
            "redis" => {
                let pool = options.take("pool", parse_pool, "a pool size from 1")?;
                let prefix = options.take("prefix", |v| Some(v.to_owned()), "a string")?;
                options.finish("redis", false)?;
                check_hosts(body, false)?;
                Backend::Redis {
                    url: format!("redis://{body}"),
                    pool,
                    prefix,
                }
            }
            "redis+cluster" => {
                let pool = options.take("pool", parse_pool, "a pool size from 1")?;
                let prefix = options.take("prefix", |v| Some(v.to_owned()), "a string")?;
                let durable =
                    options.take("durable", |v| v.parse().ok(), "a number of replicas")?;
                let durable_timeout_ms =
                    options.take("durable_timeout", parse_timeout, TIMEOUT_FORMAT)?;
                options.finish("redis+cluster", false)?;
                let nodes = redis_urls(body)?;
                Backend::RedisCluster {
                    nodes,
                    pool,
                    prefix,
                    durable,
                    durable_timeout_ms,
                }
            }
            "redis+sentinel" => {
                let prefix = options.take("prefix", |v| Some(v.to_owned()), "a string")?;
                let durable = options.take("durable", parse_durable, DURABLE_FORMAT)?;
                let durable_timeout_ms =
                    options.take("durable_timeout", parse_timeout, TIMEOUT_FORMAT)?;
                let read_from_replicas = options
                    .take(
                        "read_from",
                        |v| match v {
                            "replicas" => Some(true),
                            "primary" => Some(false),
                            _ => None,
                        },
                        "replicas or primary",
                    )?
                    .unwrap_or(false);
                options.finish("redis+sentinel", false)?;
                let (hosts, master) = body.split_once('/').ok_or(ConfigError::MissingMasterName)?;
                if master.is_empty() || master.contains('/') {
                    return Err(ConfigError::MissingMasterName);
                }
                let sentinels = redis_urls(hosts)?;
                Backend::RedisSentinel {
                    sentinels,
                    master: master.to_owned(),
                    prefix,
                    durable,
                    durable_timeout_ms,
                    read_from_replicas,
                }
            }
            "postgres" | "postgresql" => {
                let schema = options.take("schema", |v| Some(v.to_owned()), "an identifier")?;
                let hosts_list = |v: &str| check_hosts(v, true).ok();
                const HOSTS: &str = "comma-separated host:port";
                let replicas = options.take("replicas", hosts_list, HOSTS)?;
                let hosts = options.take("hosts", hosts_list, HOSTS)?;
                let read_from = options.take(
                    "read_from",
                    |v| match v {
                        "primary" => Some(ReadFrom::Primary),
                        "replicas" => Some(ReadFrom::Replicas),
                        _ => None,
                    },
                    "primary or replicas",
                )?;
                if read_from == Some(ReadFrom::Replicas) && replicas.is_none() {
                    return Err(ConfigError::InvalidOption {
                        option: "read_from".into(),
                        value: "replicas".into(),
                        expected: "replicas only with replicas=HOST:PORT,... naming them",
                    });
                }
                let synchronous_commit = options.take(
                    "synchronous_commit",
                    |v| SYNCHRONOUS_COMMIT.contains(&v).then(|| v.to_owned()),
                    "off, local, remote_write, on or remote_apply",
                )?;
                // Everything else is the Postgres client's (sslmode, application_name, ...).
                let (url, table, pool) =
                    sql_backend(options, "postgres", scheme, body, POSTGRES_CLIENT_OPTIONS)?;
                Backend::Postgres {
                    url,
                    schema,
                    table,
                    pool,
                    replicas: replicas.unwrap_or_default(),
                    hosts: hosts.unwrap_or_default(),
                    read_from,
                    synchronous_commit,
                }
            }
            "mysql" | "mariadb" => {
                let database = options.take("database", |v| Some(v.to_owned()), "an identifier")?;
                // Everything else is the MySQL client's (ssl-mode, charset, ...).
                // sqlx's driver knows only `mysql://`; MariaDB speaks the same protocol.
                let (url, table, pool) =
                    sql_backend(options, "mysql", "mysql", body, MYSQL_CLIENT_OPTIONS)?;
                Backend::MySql {
                    url,
                    database,
                    table,
                    pool,
                }
            }
            other => return Err(ConfigError::UnknownScheme(other.to_owned())),
        };
        Ok(Self {
            backend,
            op_timeout_ms,
        })
    }
}

/// What the SQL backends share: their `table` and `pool` options, the
/// client's own options (`client`, the driver's) passed through, and the
/// URL (with `scheme`) that goes to the client.
fn sql_backend(
    mut options: Options,
    backend: &'static str,
    scheme: &str,
    body: &str,
    client: &[&str],
) -> Result<(String, Option<String>, Option<u32>), ConfigError> {
    let table = options.take("table", |v| Some(v.to_owned()), "an identifier")?;
    let pool = options.take(
        "pool",
        |v| v.parse().ok().filter(|n| *n > 0),
        "a pool size from 1",
    )?;
    let takes = |option: &str| {
        client.contains(&option)
            || (backend == "postgres" && option.starts_with("options[") && option.ends_with(']'))
    };
    if let Some((option, _)) = options.0.iter().find(|(option, _)| !takes(option)) {
        return Err(ConfigError::UnknownOption {
            backend,
            option: option.clone(),
        });
    }
    let passthrough = options.finish(backend, true)?;
    check_hosts(authority(body), false)?;
    let url = if passthrough.is_empty() {
        format!("{scheme}://{body}")
    } else {
        format!("{scheme}://{body}?{passthrough}")
    };
    Ok((url, table, pool))
}

const TIMEOUT_FORMAT: &str = "a duration like 500ms or 2s";

fn parse_timeout(value: &str) -> Option<u64> {
    let (number, scale) = if let Some(ms) = value.strip_suffix("ms") {
        (ms, 1)
    } else if let Some(s) = value.strip_suffix('s') {
        (s, 1000)
    } else {
        (value, 1)
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|ms| *ms > 0)
}

fn parse_pool(value: &str) -> Option<usize> {
    value.parse().ok().filter(|n| *n > 0)
}

/// The `host[:port]` part of `[user[:password]@]host[:port][/path]`.
fn authority(body: &str) -> &str {
    let body = body.split('/').next().unwrap_or("");
    body.rsplit_once('@').map_or(body, |(_, host)| host)
}

/// Checks each comma-separated `host[:port]` (or one, unless `many`);
/// returns them.
fn check_hosts(body: &str, many: bool) -> Result<Vec<String>, ConfigError> {
    let hosts = if many { body } else { authority(body) };
    let mut checked = Vec::new();
    for host in hosts.split(',') {
        let host = host.trim();
        let (name, port) = match host.rsplit_once(':') {
            // An IPv6 literal without a port: `[::1]`.
            Some((name, port)) if !port.ends_with(']') => (name, Some(port)),
            _ => (host, None),
        };
        if name.is_empty() {
            return Err(ConfigError::MissingHost);
        }
        if let Some(port) = port
            && !matches!(port.parse::<u16>(), Ok(p) if p > 0)
        {
            return Err(ConfigError::InvalidPort(port.to_owned()));
        }
        if many && port.is_none() {
            return Err(ConfigError::InvalidPort(String::new()));
        }
        checked.push(host.to_owned());
    }
    Ok(checked)
}

/// Comma-separated `host:port`s (each port required), as `redis://host:port`.
fn redis_urls(hosts: &str) -> Result<Vec<String>, ConfigError> {
    Ok(check_hosts(hosts, true)?
        .into_iter()
        .map(|host| format!("redis://{host}"))
        .collect())
}

/// Query options, consumed one by one so leftovers can be reported.
struct Options(Vec<(String, String)>);

impl Options {
    fn parse(query: &str) -> Self {
        Self(
            url::form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn take<T>(
        &mut self,
        option: &str,
        parse: impl Fn(&str) -> Option<T>,
        expected: &'static str,
    ) -> Result<Option<T>, ConfigError> {
        let Some(at) = self.0.iter().position(|(k, _)| k == option) else {
            return Ok(None);
        };
        let (_, value) = self.0.remove(at);
        parse(&value).map(Some).ok_or(ConfigError::InvalidOption {
            option: option.to_owned(),
            value,
            expected,
        })
    }

    /// Errors on a leftover option, or (with `passthrough`) returns them re-encoded.
    fn finish(self, backend: &'static str, passthrough: bool) -> Result<String, ConfigError> {
        match self.0.first() {
            Some((option, _)) if !passthrough => Err(ConfigError::UnknownOption {
                backend,
                option: option.clone(),
            }),
            _ => Ok(url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&self.0)
                .finish()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis(url: &str, pool: Option<usize>, prefix: Option<&str>) -> Backend {
        Backend::Redis {
            url: url.into(),
            pool,
            prefix: prefix.map(Into::into),
        }
    }

    #[test]
    fn valid_urls() {
        let cases: Vec<(&str, Backend, Option<u64>)> = vec![
            ("memory://", Backend::Memory { capacity: None }, None),
            (
                "memory://?capacity=5000",
                Backend::Memory {
                    capacity: Some(5000),
                },
                None,
            ),
            (
                "MEMORY://?timeout=2s",
                Backend::Memory { capacity: None },
                Some(2000),
            ),
            (
                "redis://127.0.0.1:6379",
                redis("redis://127.0.0.1:6379", None, None),
                None,
            ),
            (
                "redis://localhost",
                redis("redis://localhost", None, None),
                None,
            ),
            (
                "redis://:secret@10.1.2.3:6380/2?pool=32&prefix=app%3A&timeout=750ms",
                redis("redis://:secret@10.1.2.3:6380/2", Some(32), Some("app:")),
                Some(750),
            ),
            (
                "redis://[::1]:6379/0",
                redis("redis://[::1]:6379/0", None, None),
                None,
            ),
            (
                "redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002?prefix=s:",
                Backend::RedisCluster {
                    nodes: vec![
                        "redis://127.0.0.1:7000".into(),
                        "redis://127.0.0.1:7001".into(),
                        "redis://127.0.0.1:7002".into(),
                    ],
                    pool: None,
                    prefix: Some("s:".into()),
                    durable: None,
                    durable_timeout_ms: None,
                },
                None,
            ),
            (
                "redis+cluster://c1:7000,c2:7000?durable=1&durable_timeout=50ms",
                Backend::RedisCluster {
                    nodes: vec!["redis://c1:7000".into(), "redis://c2:7000".into()],
                    pool: None,
                    prefix: None,
                    durable: Some(1),
                    durable_timeout_ms: Some(50),
                },
                None,
            ),
            (
                "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster",
                Backend::RedisSentinel {
                    sentinels: vec![
                        "redis://127.0.0.1:26379".into(),
                        "redis://127.0.0.1:26380".into(),
                    ],
                    master: "mymaster".into(),
                    prefix: None,
                    durable: None,
                    durable_timeout_ms: None,
                    read_from_replicas: false,
                },
                None,
            ),
            (
                "redis+sentinel://s1:26379/m?durable=all",
                Backend::RedisSentinel {
                    sentinels: vec!["redis://s1:26379".into()],
                    master: "m".into(),
                    prefix: None,
                    durable: Some(Durable::All),
                    durable_timeout_ms: None,
                    read_from_replicas: false,
                },
                None,
            ),
            (
                "redis+sentinel://s1:26379/m?durable=2&durable_timeout=100ms&prefix=a:&timeout=1s&read_from=replicas",
                Backend::RedisSentinel {
                    sentinels: vec!["redis://s1:26379".into()],
                    master: "m".into(),
                    prefix: Some("a:".into()),
                    durable: Some(Durable::Replicas(2)),
                    durable_timeout_ms: Some(100),
                    read_from_replicas: true,
                },
                Some(1000),
            ),
            (
                "postgres://app@db.internal/app?schema=auth&table=web_sessions&pool=8&timeout=1500",
                Backend::Postgres {
                    url: "postgres://app@db.internal/app".into(),
                    schema: Some("auth".into()),
                    table: Some("web_sessions".into()),
                    pool: Some(8),
                    replicas: vec![],
                    hosts: vec![],
                    read_from: None,
                    synchronous_commit: None,
                },
                Some(1500),
            ),
            (
                "postgres://app@db1/app?replicas=db2:5432,db3:5433&read_from=replicas\
                 &synchronous_commit=remote_apply&hosts=db4:5432&application_name=web\
                 &options[statement_timeout]=5s",
                Backend::Postgres {
                    url: "postgres://app@db1/app?application_name=web\
                          &options%5Bstatement_timeout%5D=5s"
                        .into(),
                    schema: None,
                    table: None,
                    pool: None,
                    replicas: vec!["db2:5432".into(), "db3:5433".into()],
                    hosts: vec!["db4:5432".into()],
                    read_from: Some(ReadFrom::Replicas),
                    synchronous_commit: Some("remote_apply".into()),
                },
                None,
            ),
            (
                "postgresql://u:p@127.0.0.1:5433/db?sslmode=disable&schema=s",
                Backend::Postgres {
                    url: "postgresql://u:p@127.0.0.1:5433/db?sslmode=disable".into(),
                    schema: Some("s".into()),
                    table: None,
                    pool: None,
                    replicas: vec![],
                    hosts: vec![],
                    read_from: None,
                    synchronous_commit: None,
                },
                None,
            ),
            (
                "mysql://app:pw@db.internal:3307/app?database=auth&table=web_sessions&pool=8&timeout=1s",
                Backend::MySql {
                    url: "mysql://app:pw@db.internal:3307/app".into(),
                    database: Some("auth".into()),
                    table: Some("web_sessions".into()),
                    pool: Some(8),
                },
                Some(1000),
            ),
            (
                "mariadb://u@127.0.0.1/db?ssl-mode=disabled",
                Backend::MySql {
                    url: "mysql://u@127.0.0.1/db?ssl-mode=disabled".into(),
                    database: None,
                    table: None,
                    pool: None,
                },
                None,
            ),
        ];
        for (url, backend, timeout) in cases {
            let config = StoreConfig::from_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(config.backend, backend, "{url}");
            assert_eq!(config.op_timeout_ms, timeout, "{url}");
        }
    }

    #[test]
    fn invalid_urls_name_the_bad_part() {
        let unknown = |backend, option: &str| ConfigError::UnknownOption {
            backend,
            option: option.into(),
        };
        let invalid = |option: &str, value: &str, expected| ConfigError::InvalidOption {
            option: option.into(),
            value: value.into(),
            expected,
        };
        let cases: Vec<(&str, ConfigError)> = vec![
            ("", ConfigError::NotAUrl(String::new())),
            (
                "127.0.0.1:6379",
                ConfigError::NotAUrl("127.0.0.1:6379".into()),
            ),
            (
                "sqlite://db/app",
                ConfigError::UnknownScheme("sqlite".into()),
            ),
            ("mysql://u@/app", ConfigError::MissingHost),
            ("mariadb://db:x/app", ConfigError::InvalidPort("x".into())),
            (
                "mysql://db/app?pool=0",
                invalid("pool", "0", "a pool size from 1"),
            ),
            ("rediss://host", ConfigError::UnknownScheme("rediss".into())),
            (
                "redis://host:notaport",
                ConfigError::InvalidPort("notaport".into()),
            ),
            (
                "redis://host:70000",
                ConfigError::InvalidPort("70000".into()),
            ),
            ("redis://host:0", ConfigError::InvalidPort("0".into())),
            ("redis://", ConfigError::MissingHost),
            ("redis://host?pool_size=3", unknown("redis", "pool_size")),
            (
                "redis://host?pool=0",
                invalid("pool", "0", "a pool size from 1"),
            ),
            (
                "redis://host?pool=many",
                invalid("pool", "many", "a pool size from 1"),
            ),
            (
                "memory://?capacity=-1",
                invalid("capacity", "-1", "a number of sessions"),
            ),
            ("memory://?prefix=x", unknown("memory", "prefix")),
            // `durable=` takes `all` or a number behind Sentinel; a misspelt
            // word is refused, and a cluster takes only a number.
            (
                "redis+sentinel://s1:26379/m?durable=al",
                invalid("durable", "al", "all or a number of replicas"),
            ),
            (
                "redis+sentinel://s1:26379/m?durable=ALL",
                invalid("durable", "ALL", "all or a number of replicas"),
            ),
            (
                "redis+cluster://c1:7000?durable=all",
                invalid("durable", "all", "a number of replicas"),
            ),
            // An option neither we nor the driver take is refused, named.
            ("postgres://u@db/app?bogus=1", unknown("postgres", "bogus")),
            (
                "postgres://u@db/app?sslmode=disable&replica=db2:5432",
                unknown("postgres", "replica"),
            ),
            ("mysql://u@db/app?bogus=1", unknown("mysql", "bogus")),
            (
                "mariadb://u@db/app?application_name=x",
                unknown("mysql", "application_name"),
            ),
            (
                "postgres://u@db/app?read_from=replicas",
                invalid(
                    "read_from",
                    "replicas",
                    "replicas only with replicas=HOST:PORT,... naming them",
                ),
            ),
            (
                "postgres://u@db/app?replicas=db2:5432&read_from=nearest",
                invalid("read_from", "nearest", "primary or replicas"),
            ),
            (
                "postgres://u@db/app?replicas=db2",
                invalid("replicas", "db2", "comma-separated host:port"),
            ),
            (
                "postgres://u@db/app?synchronous_commit=yes",
                invalid(
                    "synchronous_commit",
                    "yes",
                    "off, local, remote_write, on or remote_apply",
                ),
            ),
            (
                "memory://?timeout=soon",
                invalid("timeout", "soon", TIMEOUT_FORMAT),
            ),
            (
                "memory://?timeout=0ms",
                invalid("timeout", "0ms", TIMEOUT_FORMAT),
            ),
            (
                "redis+cluster://a:7000,b",
                ConfigError::InvalidPort(String::new()),
            ),
            ("redis+cluster://a:7000,:7001", ConfigError::MissingHost),
            (
                "redis+cluster://a:7000,b:x",
                ConfigError::InvalidPort("x".into()),
            ),
            (
                "redis+cluster://a:1?schema=s",
                unknown("redis+cluster", "schema"),
            ),
            ("redis+sentinel://s1:26379", ConfigError::MissingMasterName),
            ("redis+sentinel://s1:26379/", ConfigError::MissingMasterName),
            (
                "redis+sentinel://s1:26379/a/b",
                ConfigError::MissingMasterName,
            ),
            (
                "redis+sentinel://s1/m",
                ConfigError::InvalidPort(String::new()),
            ),
            ("redis+sentinel://s1:26379,:1/m", ConfigError::MissingHost),
            (
                "redis+sentinel://s1:26379/m?durabel=1",
                unknown("redis+sentinel", "durabel"),
            ),
            (
                "redis+sentinel://s1:26379/m?pool=4",
                unknown("redis+sentinel", "pool"),
            ),
            (
                "redis+sentinel://s1:26379/m?durable=-1",
                invalid("durable", "-1", "all or a number of replicas"),
            ),
            (
                "redis+sentinel://s1:26379/m?durable_timeout=soon",
                invalid("durable_timeout", "soon", TIMEOUT_FORMAT),
            ),
            (
                "postgres://u@db:5x/app",
                ConfigError::InvalidPort("5x".into()),
            ),
            ("postgres://u@/app", ConfigError::MissingHost),
            (
                "postgres://db/app?pool=0",
                invalid("pool", "0", "a pool size from 1"),
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(StoreConfig::from_url(url), Err(expected), "{url}");
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let error = StoreConfig::from_url("redis://h?colour=blue").unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown option `colour` for the redis store"
        );
        let error = StoreConfig::from_url("redis://h:99999").unwrap_err();
        assert_eq!(error.to_string(), "invalid port `99999`");
    }
}
