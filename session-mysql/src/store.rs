//! `MySqlStore`: construction, migrations and the `SessionStore` contract.

use std::sync::Arc;
use std::time::Duration;

use session_core::record::{now, to_unix_ms};
use session_core::time::OffsetDateTime;
use session_core::{
    Data, DeleteOutcome, LoadOutcome, Record, SaveOutcome, SessionInfo, SessionStore, StoreError,
    StoreKey, async_trait,
};
use sha2::{Digest as _, Sha256};
use sqlx::mysql::{MySqlDatabaseError, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{AssertSqlSafe, Row as _};

use crate::error::Error;
use crate::health;
use crate::sql::{FORMAT, MIGRATIONS, Statements};

/// The table a store uses unless told otherwise.
pub const DEFAULT_TABLE: &str = "sessions";
/// Rows [`SessionStore::delete_expired`] deletes per statement.
pub const DEFAULT_SWEEP_BATCH: u32 = 1_000;

/// Server error numbers this crate branches on.
const ER_NO_SUCH_TABLE: u16 = 1146;
const ER_BAD_DB_ERROR: u16 = 1049;

/// Sessions in a MySQL 8 or MariaDB table, on a sqlx [`MySqlPool`].
///
/// One row per session, keyed by its [`StoreKey`] (never the session id).
/// Every instant is a `BIGINT` of Unix milliseconds, and liveness is decided
/// by the app server's clock: each statement binds the app's "now" and
/// compares it with `expires_at_ms` (see the crate docs for why).
///
/// Cloning is cheap; clones share the pool.
///
/// ```no_run
/// # async fn run() -> Result<(), session_mysql::Error> {
/// use session_mysql::MySqlStore;
///
/// let store = MySqlStore::connect("mysql://app:secret@localhost/app").await?;
/// store.migrate().await?;
/// let layer = session_core::SessionLayer::new(store);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct MySqlStore {
    pool: MySqlPool,
    sql: Arc<Statements>,
}

/// Builds a [`MySqlStore`] with a chosen database and table.
///
/// Names are checked before any SQL is built, since they are spliced into
/// statements: 1 to [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) bytes of
/// lowercase ASCII letters, digits and `_`, not starting with a digit; the
/// server's own databases (`mysql`, `sys`, `information_schema`,
/// `performance_schema`) are refused. Lowercase only, so the table is the
/// same whatever the server's `lower_case_table_names`.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use session_mysql::{MySqlStore, sqlx::MySqlPool};
///
/// let pool = MySqlPool::connect("mysql://app:secret@localhost/app").await?;
/// let store = MySqlStore::builder(pool)
///     .database("auth")
///     .table("web_sessions")
///     .build()?;
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use]
pub struct MySqlStoreBuilder {
    pool: MySqlPool,
    database: Option<String>,
    table: String,
}

impl MySqlStoreBuilder {
    /// The database holding the table (default: the connection's own, from
    /// the URL). [`MySqlStore::migrate`] creates it when missing.
    ///
    /// ```no_run
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// # let pool = sqlx::MySqlPool::connect_lazy("mysql://app@localhost/app")?;
    /// let store = session_mysql::MySqlStore::builder(pool).database("auth").build()?;
    /// assert_eq!(store.database(), Some("auth"));
    /// # Ok(()) }
    /// ```
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.database = Some(database.into());
        self
    }

    /// The session table (default [`DEFAULT_TABLE`]).
    ///
    /// ```no_run
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// # let pool = sqlx::MySqlPool::connect_lazy("mysql://app@localhost/app")?;
    /// let store = session_mysql::MySqlStore::builder(pool).table("web_sessions").build()?;
    /// assert_eq!(store.table(), "web_sessions");
    /// # Ok(()) }
    /// ```
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// The store.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidIdentifier`] when the database or table name breaks
    /// the rules above.
    pub fn build(self) -> Result<MySqlStore, Error> {
        Ok(MySqlStore {
            pool: self.pool,
            sql: Arc::new(Statements::new(self.database.as_deref(), &self.table)?),
        })
    }
}

impl MySqlStore {
    /// A store on `pool` using the table [`DEFAULT_TABLE`] in the
    /// connection's database.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use session_mysql::MySqlStore;
    ///
    /// let pool = MySqlStore::pool_options()
    ///     .max_connections(20)
    ///     .connect("mysql://app:secret@localhost/app")
    ///     .await?;
    /// let store = MySqlStore::new(pool);
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    pub fn new(pool: MySqlPool) -> Self {
        Self {
            pool,
            sql: Arc::new(Statements::unchecked(None, DEFAULT_TABLE)),
        }
    }

    /// A builder for a store on `pool` with another database or table.
    pub fn builder(pool: MySqlPool) -> MySqlStoreBuilder {
        MySqlStoreBuilder {
            pool,
            database: None,
            table: DEFAULT_TABLE.to_owned(),
        }
    }

    /// Connects a pool with [`pool_options`](Self::pool_options) to `url`
    /// (`mysql://user:password@host[:port]/database`; `mariadb://` is the
    /// same) and gives a store on [`DEFAULT_TABLE`] in that database. Build
    /// the pool yourself for other settings.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), session_mysql::Error> {
    /// let store = session_mysql::MySqlStore::connect("mariadb://app:secret@localhost/app").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] when the URL does not parse or the first connection fails.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let pool = Self::pool_options()
            .connect(&mysql_url(url))
            .await
            .map_err(Error::Connect)?;
        Ok(Self::new(pool))
    }

    /// The pool options this crate recommends for a session pool: sqlx's
    /// defaults, except that a connection is not pinged each time it is
    /// taken from the pool (`test_before_acquire(false)`): with the ping,
    /// every session operation costs two round trips instead of one.
    ///
    /// What the ping would catch, a connection the server closed (a
    /// restart), is handled instead: a `before_acquire` hook drops every
    /// pooled connection opened before the last connection failure, and a
    /// statement that may safely run twice runs again on a fresh one.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = session_mysql::MySqlStore::pool_options()
    ///     .max_connections(32)
    ///     .connect("mysql://app:secret@localhost/app")
    ///     .await?;
    /// let store = session_mysql::MySqlStore::new(pool);
    /// # Ok(()) }
    /// ```
    pub fn pool_options() -> MySqlPoolOptions {
        MySqlPoolOptions::new()
            .test_before_acquire(false)
            .before_acquire(|_conn, meta| {
                Box::pin(std::future::ready(Ok(!health::is_stale(meta.age))))
            })
    }

    /// The pool the store runs on.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// The database name, when one was set (else the connection's own).
    pub fn database(&self) -> Option<&str> {
        self.sql.database.as_deref()
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.sql.table
    }

    /// The table as the statements name it, for logs.
    pub(crate) fn sql_table_name(&self) -> String {
        self.sql.qualified.clone()
    }

    /// Creates or upgrades the session table: runs every embedded migration
    /// this table has not had yet, and creates the database when one was set
    /// and it does not exist. Safe to call at every start-up, from many
    /// instances at once: a named lock (`GET_LOCK`, one per database) lets
    /// one instance migrate while the others wait, then find nothing to do.
    ///
    /// Applied migrations are recorded in `session_store_migrations` in the
    /// same database. MySQL commits each DDL statement on its own, so each
    /// migration is one statement, and a failure leaves the earlier ones
    /// applied and recorded; calling `migrate` again resumes.
    ///
    /// # Errors
    ///
    /// [`Error::Migrate`] when a statement fails (for example for lack of
    /// privileges) or the lock is not had within 60 s.
    pub async fn migrate(&self) -> Result<(), Error> {
        let sql = &self.sql;
        // The lock is the connection's, so every statement runs on this one.
        let mut conn = self.pool.acquire().await.map_err(Error::Migrate)?;
        let lock_name = format!(
            "session_mysql:{}",
            sql.database.as_deref().unwrap_or("(default)")
        );
        let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 60)")
            .bind(&lock_name)
            .fetch_one(&mut *conn)
            .await
            .map_err(Error::Migrate)?;
        if locked != Some(1) {
            return Err(Error::Migrate(sqlx::Error::Protocol(format!(
                "GET_LOCK('{lock_name}') not granted within 60 s"
            ))));
        }
        let result = self.migrate_locked(&mut conn).await;
        let released = sqlx::query("DO RELEASE_LOCK(?)")
            .bind(&lock_name)
            .execute(&mut *conn)
            .await;
        result?;
        released.map(drop).map_err(Error::Migrate)
    }

    async fn migrate_locked(&self, conn: &mut sqlx::MySqlConnection) -> Result<(), Error> {
        let sql = &self.sql;
        if let Some(database) = &sql.database {
            // `CREATE DATABASE IF NOT EXISTS` needs the CREATE privilege even
            // when the database exists; a store given one must not need it.
            let exists: Option<String> = sqlx::query_scalar(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            )
            .bind(database)
            .fetch_optional(&mut *conn)
            .await
            .map_err(Error::Migrate)?;
            if exists.is_none() {
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "CREATE DATABASE IF NOT EXISTS `{database}` \
                     CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                )))
                .execute(&mut *conn)
                .await
                .map_err(Error::Migrate)?;
            }
        }
        let migrations = sql.migrations_table();
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE TABLE IF NOT EXISTS {migrations} ( \
                table_name VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, \
                version INT NOT NULL, \
                description VARCHAR(255) NOT NULL, \
                applied_at_ms BIGINT NOT NULL, \
                PRIMARY KEY (table_name, version) \
             ) ENGINE = InnoDB"
        )))
        .execute(&mut *conn)
        .await
        .map_err(Error::Migrate)?;
        let applied: Vec<i32> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT version FROM {migrations} WHERE table_name = ?"
        )))
        .bind(&sql.table)
        .fetch_all(&mut *conn)
        .await
        .map_err(Error::Migrate)?;
        for migration in MIGRATIONS {
            if applied.contains(&migration.version) {
                continue;
            }
            sqlx::raw_sql(AssertSqlSafe((migration.sql)(sql)))
                .execute(&mut *conn)
                .await
                .map_err(Error::Migrate)?;
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {migrations} (table_name, version, description, applied_at_ms) \
                 VALUES (?, ?, ?, ?)"
            )))
            .bind(&sql.table)
            .bind(migration.version)
            .bind(migration.description)
            .bind(to_unix_ms(now()))
            .execute(&mut *conn)
            .await
            .map_err(Error::Migrate)?;
            tracing::info!(
                table = %sql.qualified,
                version = migration.version,
                description = migration.description,
                "session table migrated"
            );
        }
        Ok(())
    }

    /// Deletes up to `limit` expired rows and returns how many went: the
    /// step [`spawn_sweeper`](Self::spawn_sweeper) repeats.
    ///
    /// Two statements: a plain read (no locks) of the keys of up to `limit`
    /// expired rows, oldest first, through the index on `expires_at_ms`;
    /// then one `DELETE` of those keys by primary key, in key order, each
    /// only if it is still expired (a row a create reused meanwhile stays).
    /// Live traffic locks one row per statement, so the sweeper and the
    /// requests can wait for each other but never in a cycle: no deadlock.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when a statement fails.
    pub async fn delete_expired_batch(&self, limit: u32) -> Result<u64, StoreError> {
        let now = to_unix_ms(now());
        let keys: Vec<String> = self
            .run(Retry::Safe, || {
                sqlx::query_scalar(AssertSqlSafe(self.sql.expired_keys.clone()))
                    .bind(now)
                    .bind(limit.max(1))
                    .fetch_all(&self.pool)
            })
            .await?;
        self.delete_keys(keys, "expires_at_ms + 0 <= ?", |q| q.bind(now))
            .await
    }

    /// Deletes `keys` (sorted here) in primary-key order while `condition`
    /// holds; `bind` binds the condition's parameters. See
    /// [`Statements::delete_keys`].
    async fn delete_keys(
        &self,
        mut keys: Vec<String>,
        condition: &str,
        bind: impl Fn(MySqlQuery<'_>) -> MySqlQuery<'_>,
    ) -> Result<u64, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        keys.sort_unstable();
        let statement = self.sql.delete_keys(keys.len(), condition);
        let result = self
            .run(Retry::Safe, || {
                let mut query = sqlx::query(AssertSqlSafe(statement.as_str())).persistent(false);
                for key in &keys {
                    query = query.bind(key.as_str());
                }
                bind(query).execute(&self.pool)
            })
            .await?;
        Ok(result.rows_affected())
    }

    /// Runs one statement; when its connection turns out to have failed,
    /// notes it (so that the pool drops every connection opened before) and,
    /// for a statement that may safely run twice, runs it once more on a
    /// fresh connection.
    async fn run<T, F, Fut>(&self, retry: Retry, statement: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let result = match statement().await {
            Err(error) if health::is_connection_failure(&error) => {
                health::connection_failed();
                match retry {
                    Retry::Safe => statement().await,
                    Retry::Never => Err(error),
                }
            }
            other => other,
        };
        result.map_err(|error| {
            if health::is_connection_failure(&error) {
                health::connection_failed();
            }
            self.backend(error)
        })
    }

    /// After a compare-and-set statement (`save`, `delete_if_unchanged`)
    /// changed nothing: whether a live row is left under `key`, which tells
    /// `Conflict` (the version differed) from `Gone`. The statement looked
    /// after waiting for any writer holding the row; this new statement (a
    /// transaction of its own) sees what that writer committed.
    async fn still_live(&self, key: &StoreKey, now: i64) -> Result<bool, StoreError> {
        let live: Option<i64> = self
            .run(Retry::Safe, || {
                sqlx::query_scalar(AssertSqlSafe(self.sql.live_version.clone()))
                    .bind(key.as_str())
                    .bind(now)
                    .fetch_optional(&self.pool)
            })
            .await?;
        Ok(live.is_some())
    }

    /// A sqlx error as a store error; a missing table or database (errors
    /// 1146, 1049) says to run [`migrate`](Self::migrate).
    fn backend(&self, error: sqlx::Error) -> StoreError {
        let missing = error
            .as_database_error()
            .and_then(|e| e.try_downcast_ref::<MySqlDatabaseError>())
            .is_some_and(|e| matches!(e.number(), ER_NO_SUCH_TABLE | ER_BAD_DB_ERROR));
        if missing {
            StoreError::backend(Error::MissingTable {
                table: self.sql.qualified.clone(),
                source: error,
            })
        } else {
            StoreError::backend(error)
        }
    }
}

type MySqlQuery<'q> = sqlx::query::Query<'q, sqlx::MySql, sqlx::mysql::MySqlArguments>;

/// Whether a statement whose connection failed may run again.
#[derive(Clone, Copy)]
enum Retry {
    /// Running it twice does what running it once does (reads, `touch`,
    /// `delete`, the sweeper's re-checked deletes).
    Safe,
    /// It may have run before the connection failed, and a second run could
    /// tell a wrong outcome (create: "taken"; compare-and-set: "conflict").
    Never,
}

/// `mariadb://` as the `mysql://` that sqlx's driver parses.
pub(crate) fn mysql_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("mariadb") => {
            format!("mysql://{rest}")
        }
        _ => url.to_owned(),
    }
}

/// A record's fields as bind parameters.
struct Params {
    version: i64,
    data: Vec<u8>,
    principal_hash: Option<Vec<u8>>,
    created_at: i64,
    last_access: i64,
    idle_deadline: i64,
    absolute_deadline: i64,
    idle_timeout_ms: i64,
    expires_at: i64,
}

impl Params {
    fn of(record: &Record) -> Result<Self, StoreError> {
        Ok(Self {
            version: version_param(record.version)?,
            data: serde_json::to_vec(&record.data).map_err(StoreError::Encode)?,
            principal_hash: record.principal.as_deref().map(principal_hash),
            created_at: to_unix_ms(record.created_at),
            last_access: to_unix_ms(record.last_access),
            idle_deadline: to_unix_ms(record.idle_deadline),
            absolute_deadline: to_unix_ms(record.absolute_deadline),
            idle_timeout_ms: i64::try_from(record.idle_timeout.as_millis()).unwrap_or(i64::MAX),
            expires_at: to_unix_ms(record.expires_at()),
        })
    }

    /// Binds the record's columns in the order `create` and `save` list them
    /// (after the key, for `create`).
    fn bind<'q>(&'q self, record: &'q Record, query: MySqlQuery<'q>) -> MySqlQuery<'q> {
        query
            .bind(self.version)
            .bind(self.data.as_slice())
            .bind(record.principal.as_deref())
            .bind(self.principal_hash.as_deref())
            .bind(self.created_at)
            .bind(self.last_access)
            .bind(self.idle_deadline)
            .bind(self.absolute_deadline)
            .bind(self.idle_timeout_ms)
            .bind(record.persistent)
            .bind(self.expires_at)
    }
}

/// The indexed form of a principal: its SHA-256.
fn principal_hash(principal: &str) -> Vec<u8> {
    Sha256::digest(principal.as_bytes()).to_vec()
}

/// A version as `BIGINT`. Versions count saves, so one past `i64::MAX` is
/// never reached; if it were, the write fails rather than wrapping around.
fn version_param(version: u64) -> Result<i64, StoreError> {
    i64::try_from(version).map_err(|_| StoreError::backend(VersionOutOfRange(version)))
}

/// A record version does not fit the `BIGINT` column.
#[derive(Debug, thiserror::Error)]
#[error("session version {0} does not fit a BIGINT")]
struct VersionOutOfRange(u64);

/// Why a row is not a record (it is then treated as absent, and logged).
#[derive(Debug, thiserror::Error)]
enum RowDecodeError {
    #[error("unknown record format {0}")]
    UnknownFormat(i16),
    #[error("negative {0}")]
    Negative(&'static str),
    #[error("data is not a JSON object")]
    Data(#[source] serde_json::Error),
    #[error("{0} is out of range")]
    Instant(&'static str),
}

/// The instant `ms` Unix milliseconds, or `None` beyond `time`'s range.
fn instant(ms: i64) -> Option<OffsetDateTime> {
    session_core::record::checked_from_unix_ms(ms)
}

/// The record in `row`, `Ok(None)` (logged, with the key's short prefix
/// only) when the row holds values no record has; `Err` only when the row
/// lacks the columns the store selects or they have other types.
fn decode_row(key: &StoreKey, row: &MySqlRow) -> Result<Option<Record>, sqlx::Error> {
    let format: i16 = row.try_get("format")?;
    let version: i64 = row.try_get("version")?;
    let data: &[u8] = row.try_get("data")?;
    let idle_timeout_ms: i64 = row.try_get("idle_timeout_ms")?;
    let instants: [(&'static str, i64); 4] = [
        ("created_at", row.try_get("created_at_ms")?),
        ("last_access", row.try_get("last_access_ms")?),
        ("idle_deadline", row.try_get("idle_deadline_ms")?),
        ("absolute_deadline", row.try_get("absolute_deadline_ms")?),
    ];
    let mut record = Record::default();
    record.principal = row.try_get("principal")?;
    record.persistent = row.try_get("persistent")?;
    let checked = (|| {
        if format != FORMAT {
            return Err(RowDecodeError::UnknownFormat(format));
        }
        let [created_at, last_access, idle_deadline, absolute_deadline] =
            instants.map(|(name, ms)| instant(ms).ok_or(RowDecodeError::Instant(name)));
        record.created_at = created_at?;
        record.last_access = last_access?;
        record.idle_deadline = idle_deadline?;
        record.absolute_deadline = absolute_deadline?;
        record.version = u64::try_from(version).map_err(|_| RowDecodeError::Negative("version"))?;
        let timeout =
            u64::try_from(idle_timeout_ms).map_err(|_| RowDecodeError::Negative("idle timeout"))?;
        record.idle_timeout = Duration::from_millis(timeout);
        record.data = serde_json::from_slice::<Data>(data).map_err(RowDecodeError::Data)?;
        Ok(())
    })();
    Ok(match checked {
        Ok(()) => Some(record),
        Err(error) => {
            tracing::warn!(key = key.short(), %error, "session record does not decode; treated as absent");
            None
        }
    })
}

/// Whether `error` is a duplicate key (error 1062 and its kin).
fn is_duplicate_key(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}

#[async_trait]
impl SessionStore for MySqlStore {
    async fn create(&self, key: &StoreKey, record: &Record) -> Result<bool, StoreError> {
        let p = &Params::of(record)?;
        let insert = || async {
            let query = sqlx::query(AssertSqlSafe(self.sql.create.clone())).bind(key.as_str());
            match p.bind(record, query).execute(&self.pool).await {
                Ok(_) => Ok(true),
                Err(error) if is_duplicate_key(&error) => Ok(false),
                Err(error) => Err(error),
            }
        };
        if self.run(Retry::Never, insert).await? {
            return Ok(true);
        }
        // The key is taken. Only by an expired row? Then that row goes
        // (never a live one: the DELETE re-checks expiry) and the plain
        // INSERT runs once more; a parallel create that wins meanwhile makes
        // it fail with 1062 again, and this create reports "taken".
        let now = to_unix_ms(now());
        let cleared = self
            .run(Retry::Safe, || {
                sqlx::query(AssertSqlSafe(self.sql.delete_expired_key.clone()))
                    .bind(key.as_str())
                    .bind(now)
                    .execute(&self.pool)
            })
            .await?;
        if cleared.rows_affected() == 0 {
            return Ok(false);
        }
        self.run(Retry::Never, insert).await
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        let now = to_unix_ms(now());
        let row = self
            .run(Retry::Safe, || {
                sqlx::query(AssertSqlSafe(self.sql.load.clone()))
                    .bind(key.as_str())
                    .bind(now)
                    .fetch_optional(&self.pool)
            })
            .await?;
        match row {
            None => Ok(None),
            Some(row) => decode_row(key, &row).map_err(|e| self.backend(e)),
        }
    }

    /// One `SELECT` of the row by key, live or not; only for an expired
    /// row a `DELETE` of it (still expired), and the load whose `DELETE`
    /// removed it answers `Expired`.
    async fn load_observed(&self, key: &StoreKey) -> Result<LoadOutcome, StoreError> {
        let now = to_unix_ms(now());
        let row = self
            .run(Retry::Safe, || {
                sqlx::query(AssertSqlSafe(self.sql.load_observed.clone()))
                    .bind(key.as_str())
                    .fetch_optional(&self.pool)
            })
            .await?;
        let Some(row) = row else {
            return Ok(LoadOutcome::Missing);
        };
        let expires_at_ms: i64 = row.try_get("expires_at_ms").map_err(|e| self.backend(e))?;
        if expires_at_ms > now {
            let record = decode_row(key, &row).map_err(|e| self.backend(e))?;
            return Ok(record.map_or(LoadOutcome::Missing, LoadOutcome::Found));
        }
        let principal: Option<String> = row.try_get("principal").map_err(|e| self.backend(e))?;
        let purged = self
            .run(Retry::Safe, || {
                sqlx::query(AssertSqlSafe(self.sql.delete_expired_key.clone()))
                    .bind(key.as_str())
                    .bind(now)
                    .execute(&self.pool)
            })
            .await?;
        Ok(if purged.rows_affected() == 1 {
            LoadOutcome::Expired { principal }
        } else {
            LoadOutcome::Missing
        })
    }

    /// True: an expired row stays until it is met or swept.
    fn observes_expiry(&self) -> bool {
        true
    }

    async fn save(
        &self,
        key: &StoreKey,
        record: &Record,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError> {
        let p = &Params::of(record)?;
        let expected = version_param(expected_version)?;
        let now = to_unix_ms(now());
        let saved = self
            .run(Retry::Never, || {
                let query = sqlx::query(AssertSqlSafe(self.sql.save.clone()));
                p.bind(record, query)
                    .bind(key.as_str())
                    .bind(now)
                    .bind(expected)
                    .execute(&self.pool)
            })
            .await?;
        if saved.rows_affected() == 1 {
            return Ok(SaveOutcome::Saved);
        }
        Ok(if self.still_live(key, now).await? {
            SaveOutcome::Conflict
        } else {
            SaveOutcome::Gone
        })
    }

    async fn touch(
        &self,
        key: &StoreKey,
        expected_version: u64,
        idle_deadline: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let now = now();
        let (now_ms, deadline) = (to_unix_ms(now), to_unix_ms(idle_deadline));
        let version = version_param(expected_version)?;
        let result = self
            .run(Retry::Safe, || {
                sqlx::query(AssertSqlSafe(self.sql.touch.clone()))
                    .bind(deadline)
                    .bind(deadline)
                    .bind(now_ms)
                    .bind(key.as_str())
                    .bind(version)
                    .bind(now_ms)
                    .execute(&self.pool)
            })
            .await?;
        // The connection reports rows matched, not rows changed
        // (CLIENT_FOUND_ROWS, which sqlx sets), so a touch that moved
        // nothing still counts as done.
        Ok(result.rows_affected() == 1)
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        self.run(Retry::Safe, || {
            sqlx::query(AssertSqlSafe(self.sql.delete.clone()))
                .bind(key.as_str())
                .execute(&self.pool)
        })
        .await?;
        Ok(())
    }

    async fn delete_if_unchanged(
        &self,
        key: &StoreKey,
        expected_version: u64,
    ) -> Result<DeleteOutcome, StoreError> {
        let expected = version_param(expected_version)?;
        let now = to_unix_ms(now());
        let deleted = self
            .run(Retry::Never, || {
                sqlx::query(AssertSqlSafe(self.sql.delete_if_unchanged.clone()))
                    .bind(key.as_str())
                    .bind(now)
                    .bind(expected)
                    .execute(&self.pool)
            })
            .await?;
        if deleted.rows_affected() == 1 {
            return Ok(DeleteOutcome::Deleted);
        }
        Ok(if self.still_live(key, now).await? {
            DeleteOutcome::Conflict
        } else {
            DeleteOutcome::Gone
        })
    }

    async fn list_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let hash = principal_hash(principal);
        let now = to_unix_ms(now());
        let rows = self
            .run(Retry::Safe, || {
                sqlx::query(AssertSqlSafe(self.sql.list_by_principal.clone()))
                    .bind(hash.as_slice())
                    .bind(now)
                    .fetch_all(&self.pool)
            })
            .await?;
        let mut sessions = Vec::with_capacity(rows.len());
        for row in rows {
            let raw: String = row.try_get("store_key").map_err(|e| self.backend(e))?;
            let Some(key) = StoreKey::parse(&raw) else {
                tracing::warn!(
                    table = %self.sql.qualified,
                    "row with a malformed store key skipped in a principal listing"
                );
                continue;
            };
            if let Some(record) = decode_row(&key, &row).map_err(|e| self.backend(e))?
                && record.principal.as_deref() == Some(principal)
            {
                sessions.push(SessionInfo::new(key, &record));
            }
        }
        Ok(sessions)
    }

    /// Finds the principal's rows with a plain read, then deletes them by
    /// primary key in key order (live ones first, to count them), like the
    /// sweeper: no statement locks rows through the principal index, so
    /// "log out everywhere" cannot deadlock with the sweeper or requests.
    async fn delete_by_principal(&self, principal: &str) -> Result<u64, StoreError> {
        let hash = principal_hash(principal);
        let rows: Vec<(String, i64)> = self
            .run(Retry::Safe, || {
                sqlx::query_as(AssertSqlSafe(self.sql.keys_of_principal.clone()))
                    .bind(hash.as_slice())
                    .fetch_all(&self.pool)
            })
            .await?;
        let keys: Vec<String> = rows.into_iter().map(|(key, _)| key).collect();
        let now = to_unix_ms(now());
        let live = self
            .delete_keys(
                keys.clone(),
                "IFNULL(principal_hash, '') = ? AND expires_at_ms + 0 > ?",
                |q| q.bind(hash.as_slice()).bind(now),
            )
            .await?;
        self.delete_keys(keys, "IFNULL(principal_hash, '') = ?", |q| {
            q.bind(hash.as_slice())
        })
        .await?;
        Ok(live)
    }

    /// Deletes every expired row, [`DEFAULT_SWEEP_BATCH`] rows per
    /// statement so no single statement holds many locks or runs long.
    async fn delete_expired(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let deleted = self.delete_expired_batch(DEFAULT_SWEEP_BATCH).await?;
            total += deleted;
            if deleted < u64::from(DEFAULT_SWEEP_BATCH) {
                return Ok(total);
            }
        }
    }

    fn backend(&self) -> &'static str {
        "mysql"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_valid() {
        assert!(Statements::new(None, DEFAULT_TABLE).is_ok());
    }

    #[test]
    fn versions_beyond_bigint_are_refused() {
        assert_eq!(version_param(7).ok(), Some(7));
        assert!(version_param(u64::MAX).is_err());
    }

    #[test]
    fn mariadb_urls_are_mysql_urls() {
        assert_eq!(mysql_url("mariadb://u:p@h/db"), "mysql://u:p@h/db");
        assert_eq!(mysql_url("MariaDB://h"), "mysql://h");
        assert_eq!(mysql_url("mysql://h/db"), "mysql://h/db");
    }

    #[test]
    fn principals_are_indexed_by_their_sha256() {
        assert_eq!(principal_hash("ada").len(), 32);
        assert_ne!(principal_hash("ada"), principal_hash("ada "));
    }
}
