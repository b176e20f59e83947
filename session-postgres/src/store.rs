//! `PostgresStore`: construction, migrations and the `SessionStore` contract.

use std::sync::Arc;
use std::time::Duration;

use session_core::record::now;
use session_core::replica::{ReadCounts, Served};
use session_core::time::OffsetDateTime;
use session_core::{
    Data, DeleteOutcome, LoadOutcome, Record, SaveOutcome, SessionInfo, SessionStore, StoreError,
    StoreKey, async_trait,
};
use sqlx::pool::PoolConnection;
use sqlx::postgres::types::PgInterval;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow, Postgres};
use sqlx::{AssertSqlSafe, Row as _};

use crate::error::Error;
use crate::handoff::Held;
use crate::health;
use crate::pg_types::{Json, PgTimestamp};
use crate::sql::{FORMAT, MIGRATIONS, Statements};
use crate::topology::{ACQUIRE_PROBE_AFTER, Node, REPLICA_TIMEOUT, Topology};

/// The schema a store uses unless told otherwise.
pub const DEFAULT_SCHEMA: &str = "public";
/// The table a store uses unless told otherwise.
pub const DEFAULT_TABLE: &str = "sessions";
/// Rows [`SessionStore::delete_expired`] deletes per statement.
pub const DEFAULT_SWEEP_BATCH: u32 = 1_000;

/// Sessions in a Postgres table, on a sqlx [`PgPool`].
///
/// One row per session, keyed by its [`StoreKey`] (never the session id).
/// Liveness is decided by the database clock: every write sets
/// `expires_at = now() + ttl`, every read filters on `expires_at > now()`, so
/// app servers with skewed clocks agree on which sessions are live.
///
/// Cloning is cheap; clones share the pool.
///
/// ```no_run
/// # async fn run() -> Result<(), session_postgres::Error> {
/// use session_postgres::PostgresStore;
///
/// let store = PostgresStore::connect("postgres://app@localhost/app").await?;
/// store.migrate().await?;
/// let layer = session_core::SessionLayer::new(store);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PostgresStore {
    sql: Arc<Statements>,
    /// The primary, the candidates for taking over from it, the read replicas.
    topology: Arc<Topology>,
}

/// Where [`SessionStore::load_at_least`] reads, the load the layer makes
/// for each request (see the crate docs, "Replicas and failover").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadFrom {
    /// Every load reads the primary (the default).
    #[default]
    Primary,
    /// Loads may be served by a replica, never below the version the
    /// client has seen or written (a replica below it, or missing the
    /// session the client has seen, is replaced by the primary's answer).
    Replicas,
}

/// Builds a [`PostgresStore`] with a chosen schema and table.
///
/// Names are validated before any SQL is built, since they are spliced into
/// statements: 1 to [`MAX_IDENTIFIER_LEN`](crate::MAX_IDENTIFIER_LEN) bytes
/// of lowercase ASCII letters, digits and `_`, not starting with a digit;
/// a schema may not start with `pg_`. Lowercase only, so the name a person
/// types unquoted in `psql` is the table the store uses.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use session_postgres::{PostgresStore, sqlx::PgPool};
///
/// let pool = PgPool::connect("postgres://app@localhost/app").await?;
/// let store = PostgresStore::builder(pool)
///     .schema("auth")
///     .table("web_sessions")
///     .build()?;
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use]
pub struct PostgresStoreBuilder {
    pool: PgPool,
    schema: String,
    table: String,
    candidates: Vec<PgPool>,
    replicas: Vec<PgPool>,
    read_from: ReadFrom,
}

impl PostgresStoreBuilder {
    /// The schema holding the table (default [`DEFAULT_SCHEMA`]).
    /// [`PostgresStore::migrate`] creates it when missing.
    ///
    /// ```no_run
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://app@localhost/app")?;
    /// let store = session_postgres::PostgresStore::builder(pool).schema("auth").build()?;
    /// assert_eq!(store.schema(), "auth");
    /// # Ok(()) }
    /// ```
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The session table (default [`DEFAULT_TABLE`]).
    ///
    /// ```no_run
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://app@localhost/app")?;
    /// let store = session_postgres::PostgresStore::builder(pool).table("web_sessions").build()?;
    /// assert_eq!(store.table(), "web_sessions");
    /// # Ok(()) }
    /// ```
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Pools on streaming replicas of the primary, for reads (used with
    /// [`read_from(ReadFrom::Replicas)`](Self::read_from)). A replica is
    /// not a candidate for primary unless also given to
    /// [`candidates`](Self::candidates) (its own pool there).
    ///
    /// ```no_run
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use session_postgres::{PostgresStore, ReadFrom, sqlx::PgPool};
    ///
    /// let primary = PgPool::connect_lazy("postgres://app@db1/app")?;
    /// let replicas = ["db2", "db3"].map(|host| {
    ///     PgPool::connect_lazy(&format!("postgres://app@{host}/app"))
    /// });
    /// let store = PostgresStore::builder(primary)
    ///     .replicas(replicas.into_iter().collect::<Result<Vec<_>, _>>()?)
    ///     .read_from(ReadFrom::Replicas)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn replicas(mut self, replicas: impl IntoIterator<Item = PgPool>) -> Self {
        self.replicas.extend(replicas);
        self
    }

    /// Where loads read (default [`ReadFrom::Primary`]).
    ///
    /// ```no_run
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://app@localhost/app")?;
    /// # let replica = sqlx::PgPool::connect_lazy("postgres://app@replica/app")?;
    /// use session_postgres::{PostgresStore, ReadFrom};
    /// let store = PostgresStore::builder(pool)
    ///     .replicas([replica])
    ///     .read_from(ReadFrom::Replicas)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn read_from(mut self, read_from: ReadFrom) -> Self {
        self.read_from = read_from;
        self
    }

    /// Pools on other servers that may become the primary (a replica that
    /// gets promoted): writes go to whichever of the builder's pool and
    /// these is not in recovery, found again when the current one fails
    /// (see the crate docs, "Replicas and failover"). Create them lazily
    /// (`connect_lazy`), so a server that is down at start-up is no error.
    ///
    /// ```no_run
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://app@db1/app")?;
    /// use session_postgres::{PostgresStore, sqlx::PgPool};
    /// let standby = PgPool::connect_lazy("postgres://app@db2/app")?;
    /// let store = PostgresStore::builder(pool).candidates([standby]).build()?;
    /// # Ok(()) }
    /// ```
    pub fn candidates(mut self, candidates: impl IntoIterator<Item = PgPool>) -> Self {
        self.candidates.extend(candidates);
        self
    }

    /// The store.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidIdentifier`] when the schema or table name breaks the
    /// rules above.
    pub fn build(self) -> Result<PostgresStore, Error> {
        Ok(PostgresStore {
            sql: Arc::new(Statements::new(&self.schema, &self.table)?),
            topology: Arc::new(Topology::new(
                self.pool,
                self.candidates,
                self.replicas,
                self.read_from == ReadFrom::Replicas,
            )),
        })
    }
}

impl PostgresStore {
    /// A store on `pool` using `public.sessions`.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use session_postgres::{PostgresStore, sqlx::postgres::PgPoolOptions};
    ///
    /// let pool = PgPoolOptions::new()
    ///     .max_connections(20)
    ///     .connect("postgres://app@localhost/app")
    ///     .await?;
    /// let store = PostgresStore::new(pool);
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    pub fn new(pool: PgPool) -> Self {
        Self {
            sql: Arc::new(default_statements()),
            topology: Arc::new(Topology::new(pool, Vec::new(), Vec::new(), false)),
        }
    }

    /// A builder for a store on `pool` with another schema or table.
    pub fn builder(pool: PgPool) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            pool,
            schema: DEFAULT_SCHEMA.to_owned(),
            table: DEFAULT_TABLE.to_owned(),
            candidates: Vec::new(),
            replicas: Vec::new(),
            read_from: ReadFrom::Primary,
        }
    }

    /// Connects a pool with [`pool_options`](Self::pool_options) to `url`
    /// (for example `postgres://user:password@host/database`) and gives a
    /// store on `public.sessions`. Build the pool yourself for other settings.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), session_postgres::Error> {
    /// let store = session_postgres::PostgresStore::connect("postgres://app@localhost/app").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] when the URL does not parse or the first connection fails.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let pool = Self::pool_options()
            .connect(url)
            .await
            .map_err(Error::Connect)?;
        Ok(Self::new(pool))
    }

    /// The pool options this crate recommends for a session pool: sqlx's
    /// defaults, except that a connection is not pinged each time it is
    /// taken from the pool (`test_before_acquire(false)`).
    ///
    /// With the ping, every session operation costs two round trips instead
    /// of one, and under many parallel requests on one session the longer
    /// load-to-save window means more compare-and-set conflicts. What the
    /// ping would catch, a connection the server closed (a restart), is
    /// handled instead by the store: the statement that meets such a
    /// connection runs again on a fresh one, and a `before_acquire` hook
    /// drops every pooled connection opened before a connection failure.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use session_postgres::PostgresStore;
    ///
    /// let pool = PostgresStore::pool_options()
    ///     .max_connections(32)
    ///     .connect("postgres://app@localhost/app")
    ///     .await?;
    /// let store = PostgresStore::new(pool);
    /// # Ok(()) }
    /// ```
    pub fn pool_options() -> PgPoolOptions {
        PgPoolOptions::new()
            .test_before_acquire(false)
            // After a connection failure, connections opened before it are
            // dropped instead of each failing a request of its own.
            .before_acquire(|_conn, meta| {
                Box::pin(std::future::ready(Ok(!health::opened_before_last_failure(
                    meta.age,
                ))))
            })
    }

    /// The pool on the current primary, the one the store writes to.
    pub fn pool(&self) -> &PgPool {
        &self.topology.primary().pool
    }

    /// `host:port` of the current primary, as last found (see the crate
    /// docs, "Replicas and failover").
    pub fn primary_address(&self) -> String {
        self.topology.primary().address()
    }

    /// How the loads with a version floor (the layer's) were answered so
    /// far: by a replica, or by the primary. All by the primary unless the
    /// store reads from replicas.
    pub fn replica_reads(&self) -> ReadCounts {
        self.topology.reads.counts()
    }

    /// The schema name.
    pub fn schema(&self) -> &str {
        &self.sql.schema
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.sql.table
    }

    /// Creates or upgrades the session table: runs every embedded migration
    /// this table has not had yet, in one transaction. Creates the schema
    /// when it does not exist. Safe to call at every start-up, from many
    /// instances at once: a transaction-scoped advisory lock (one per
    /// schema) lets one instance migrate while the others wait, then find
    /// nothing to do.
    ///
    /// Applied migrations are recorded in `<schema>.session_store_migrations`.
    ///
    /// # Errors
    ///
    /// [`Error::Migrate`] when a statement fails (for example for lack of
    /// privileges); nothing is changed then. [`Error::NoPrimary`] when the
    /// store has candidates for primary and none of them is one.
    pub async fn migrate(&self) -> Result<(), Error> {
        let sql = &self.sql;
        let pool = if self.topology.can_fail_over() {
            self.topology
                .writable()
                .await
                .ok_or(Error::NoPrimary)?
                .pool
                .clone()
        } else {
            self.pool().clone()
        };
        let mut tx = pool.begin().await.map_err(Error::Migrate)?;
        // Per schema, not per table: stores of two tables in one schema share
        // the migrations table, and concurrent `CREATE TABLE IF NOT EXISTS`
        // of the same table can fail on a catalog unique index.
        let lock_name = format!("session-postgres migrate \"{}\"", sql.schema);
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(lock_name)
            .execute(&mut *tx)
            .await
            .map_err(Error::Migrate)?;
        // `CREATE SCHEMA IF NOT EXISTS` needs the CREATE privilege on the
        // database even when the schema exists; a store that was given a
        // schema must not need it.
        let schema_exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(&sql.schema)
                .fetch_one(&mut *tx)
                .await
                .map_err(Error::Migrate)?;
        if !schema_exists {
            sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA \"{}\"", sql.schema)))
                .execute(&mut *tx)
                .await
                .map_err(Error::Migrate)?;
        }
        let migrations = sql.migrations_table();
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE TABLE IF NOT EXISTS {migrations} ( \
                table_name text NOT NULL, \
                version integer NOT NULL, \
                description text NOT NULL, \
                applied_at timestamptz NOT NULL DEFAULT now(), \
                PRIMARY KEY (table_name, version) \
             )"
        )))
        .execute(&mut *tx)
        .await
        .map_err(Error::Migrate)?;
        let applied: Vec<i32> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT version FROM {migrations} WHERE table_name = $1"
        )))
        .bind(&sql.table)
        .fetch_all(&mut *tx)
        .await
        .map_err(Error::Migrate)?;
        for migration in MIGRATIONS {
            if applied.contains(&migration.version) {
                continue;
            }
            sqlx::raw_sql(AssertSqlSafe((migration.sql)(sql)))
                .execute(&mut *tx)
                .await
                .map_err(Error::Migrate)?;
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {migrations} (table_name, version, description) VALUES ($1, $2, $3)"
            )))
            .bind(&sql.table)
            .bind(migration.version)
            .bind(migration.description)
            .execute(&mut *tx)
            .await
            .map_err(Error::Migrate)?;
            tracing::info!(
                table = %sql.qualified,
                version = migration.version,
                description = migration.description,
                "session table migrated"
            );
        }
        tx.commit().await.map_err(Error::Migrate)
    }

    /// Deletes up to `limit` expired rows in one statement and returns how
    /// many went: the step [`spawn_sweeper`](Self::spawn_sweeper) repeats.
    /// Rows locked by a request in flight are skipped, never waited for.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the statement fails.
    pub async fn delete_expired_batch(&self, limit: u32) -> Result<u64, StoreError> {
        let result = self
            .run(|mut conn| async move {
                let result = sqlx::query(AssertSqlSafe(self.sql.delete_expired_batch.clone()))
                    .bind(i64::from(limit))
                    .execute(&mut *conn)
                    .await;
                (conn, result)
            })
            .await?;
        Ok(result.rows_affected())
    }

    /// Runs one statement on the current primary.
    ///
    /// With one server: if its connection turns out to be one the server
    /// had already closed (a restart: SQLSTATE 57P01/57P02/57P03 in reply to
    /// the statement, so it never ran), it runs once more: the failure has
    /// marked every pooled connection opened before it as stale (see
    /// `health`), so the retry gets a fresh connection. Without this, after
    /// a restart every idle pooled connection would fail one request.
    ///
    /// With candidates for primary: a failure that says the server may no
    /// longer be the primary (read-only, refused, terminated) makes the
    /// store find the primary again, and a statement that provably did not
    /// run is sent to it (see `topology`).
    async fn run<T, F, Fut>(&self, statement: F) -> Result<T, StoreError>
    where
        F: Fn(PoolConnection<Postgres>) -> Fut,
        Fut: Future<Output = (PoolConnection<Postgres>, Result<T, sqlx::Error>)>,
    {
        if self.topology.can_fail_over() {
            return self.run_failing_over(&statement).await;
        }
        let node = self.topology.primary();
        let result = match self.attempt(node, &statement, false).await {
            Err(failed) if health::closed_by_server(&failed.error) => {
                health::note_connection_failure();
                self.attempt(node, &statement, false).await
            }
            other => other,
        };
        result.map_err(|failed| {
            if health::is_connection_failure(&failed.error) {
                health::note_connection_failure();
            }
            self.backend(failed.error)
        })
    }

    /// [`run`](Self::run) with candidates for primary.
    async fn run_failing_over<T, F, Fut>(&self, statement: &F) -> Result<T, StoreError>
    where
        F: Fn(PoolConnection<Postgres>) -> Fut,
        Fut: Future<Output = (PoolConnection<Postgres>, Result<T, sqlx::Error>)>,
    {
        let mut retries = 0;
        loop {
            let Some(node) = self.topology.writable().await else {
                return Err(StoreError::backend(Error::NoPrimary));
            };
            let failed = match self.attempt(&node, statement, true).await {
                Ok(value) => return Ok(value),
                Err(failed) => failed,
            };
            let error = &failed.error;
            let read_only = health::is_read_only(error);
            let connection = health::is_connection_failure(error);
            if connection {
                health::note_connection_failure();
            }
            if read_only || connection || !failed.sent {
                self.topology.suspect(&node);
            }
            let did_not_run = !failed.sent || read_only || health::closed_by_server(error);
            if did_not_run && retries < MAX_FAILOVER_RETRIES {
                retries += 1;
                continue;
            }
            return Err(self.backend(failed.error));
        }
    }

    /// Runs `statement` once on a connection to `node` (see `handoff`):
    /// afterwards the connection goes to a store call waiting for one if
    /// the statement completed, else back to the pool. With `probe`, a wait
    /// for a connection longer than [`ACQUIRE_PROBE_AFTER`] checks whether
    /// the server is still the primary, and gives up if it is not.
    async fn attempt<T, F, Fut>(&self, node: &Node, statement: &F, probe: bool) -> Result<T, Failed>
    where
        F: Fn(PoolConnection<Postgres>) -> Fut,
        Fut: Future<Output = (PoolConnection<Postgres>, Result<T, sqlx::Error>)>,
    {
        let unsent = |error| Failed { error, sent: false };
        let take = node.handoff.take(&node.pool);
        let held = if probe {
            tokio::pin!(take);
            match tokio::time::timeout(ACQUIRE_PROBE_AFTER, &mut take).await {
                Ok(held) => held,
                // A busy pool on a live primary: keep waiting (the layer's
                // timeout bounds it).
                Err(_) if node.is_primary().await => take.await,
                Err(_) => return Err(unsent(sqlx::Error::PoolTimedOut)),
            }
        } else {
            take.await
        };
        let (conn, since) = held.map_err(unsent)?.into_parts();
        let (conn, result) = statement(conn).await;
        match result {
            Ok(value) => {
                node.handoff.give(Held::from_parts(conn, since), &node.pool);
                Ok(value)
            }
            Err(error) => Err(Failed { error, sent: true }),
        }
    }

    /// A load from the replica `node`, within [`REPLICA_TIMEOUT`]; a replica
    /// that fails or is late rests (see `topology`).
    async fn load_from_replica(
        &self,
        node: &Node,
        key: &StoreKey,
    ) -> Result<Option<Record>, StoreError> {
        // On the replica's pool, with its hand-over (see `handoff`).
        let statement = |mut conn: PoolConnection<Postgres>| async move {
            let result = sqlx::query(AssertSqlSafe(self.sql.load.clone()))
                .bind(key.as_str())
                .fetch_optional(&mut *conn)
                .await;
            (conn, result)
        };
        let query = self.attempt(node, &statement, false);
        let row = match tokio::time::timeout(REPLICA_TIMEOUT, query).await {
            Ok(Ok(row)) => row,
            Ok(Err(failed)) => {
                Topology::rest(node);
                return Err(self.backend(failed.error));
            }
            Err(_) => {
                Topology::rest(node);
                return Err(StoreError::Timeout(REPLICA_TIMEOUT));
            }
        };
        match row {
            None => Ok(None),
            Some(row) => decode_row(key, &row).map_err(|e| self.backend(e)),
        }
    }

    /// After a compare-and-set statement (`save`, `delete_if_unchanged`)
    /// changed nothing: whether a live row is left under `key`, which tells
    /// `Conflict` (the version differed) from `Gone`. The statement looked
    /// after waiting for any writer holding the row; this new statement
    /// sees what that writer committed.
    async fn still_live(&self, key: &StoreKey) -> Result<bool, StoreError> {
        let live: Option<i64> = self
            .run(|mut conn| async move {
                let result = sqlx::query_scalar(AssertSqlSafe(self.sql.live_version.clone()))
                    .bind(key.as_str())
                    .fetch_optional(&mut *conn)
                    .await;
                (conn, result)
            })
            .await?;
        Ok(live.is_some())
    }

    /// A sqlx error as a store error; a missing table or schema (SQLSTATE
    /// `42P01`, `3F000`) says to run [`migrate`](Self::migrate).
    fn backend(&self, error: sqlx::Error) -> StoreError {
        let missing = error
            .as_database_error()
            .and_then(|e| e.code())
            .is_some_and(|code| code == "42P01" || code == "3F000");
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

/// How many times a statement that provably did not run is sent again to
/// a newly found primary.
const MAX_FAILOVER_RETRIES: u32 = 3;

/// A statement that failed, and whether it reached the server.
struct Failed {
    error: sqlx::Error,
    /// The statement was sent (it may have run) rather than failing to get
    /// a connection.
    sent: bool,
}

/// The defaults are constants that pass validation (a unit test checks),
/// so they skip it.
fn default_statements() -> Statements {
    Statements::unchecked(DEFAULT_SCHEMA, DEFAULT_TABLE)
}

/// A record's fields as bind parameters.
struct Params {
    version: i64,
    data: String,
    created_at: PgTimestamp,
    last_access: PgTimestamp,
    idle_deadline: PgTimestamp,
    absolute_deadline: PgTimestamp,
    idle_timeout_ms: i64,
    /// The record's remaining lifetime: `expires_at` becomes `now()` plus this.
    ttl: PgInterval,
    /// How far `sweep_at` may be from `expires_at` (see [`sweep_slack`]).
    slack: PgInterval,
}

impl Params {
    fn of(record: &Record) -> Result<Self, StoreError> {
        let ttl = record.ttl(now());
        Ok(Self {
            version: version_param(record.version)?,
            data: serde_json::to_string(&record.data).map_err(StoreError::Encode)?,
            created_at: PgTimestamp::of(record.created_at),
            last_access: PgTimestamp::of(record.last_access),
            idle_deadline: PgTimestamp::of(record.idle_deadline),
            absolute_deadline: PgTimestamp::of(record.absolute_deadline),
            idle_timeout_ms: saturating_ms(record.idle_timeout),
            ttl: interval(ttl),
            slack: interval(sweep_slack(ttl)),
        })
    }
}

/// The farthest a row's `sweep_at` is from its `expires_at`.
const MAX_SWEEP_SLACK: Duration = Duration::from_secs(5 * 60);

/// How far from `expires_at` a row's `sweep_at` may be before a write moves
/// it: an eighth of the lifetime, at most [`MAX_SWEEP_SLACK`].
///
/// A write that changes `sweep_at`, the indexed column, is a non-HOT update;
/// the larger the slack, the rarer those. In exchange the sweeper may delete
/// a row up to the slack after it expired (expired rows are invisible
/// anyway), and its index scan meets the live rows whose `sweep_at` has
/// passed: those expiring within their slack, at most an eighth of the live
/// rows, and for long lifetimes (the default 24 h idle timeout) a few in a
/// thousand.
fn sweep_slack(ttl: Duration) -> Duration {
    (ttl / 8).min(MAX_SWEEP_SLACK)
}

/// A duration as a Postgres `interval` of microseconds only (no days or
/// months, which would be counted in the session's time zone).
fn interval(d: Duration) -> PgInterval {
    PgInterval {
        months: 0,
        days: 0,
        microseconds: i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
    }
}

fn saturating_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A version as `bigint`. Versions count saves, so one past `i64::MAX` is
/// never reached; if it were, the write fails rather than wrapping around.
fn version_param(version: u64) -> Result<i64, StoreError> {
    i64::try_from(version).map_err(|_| StoreError::backend(VersionOutOfRange(version)))
}

/// A record version does not fit the `bigint` column.
#[derive(Debug, thiserror::Error)]
#[error("session version {0} does not fit a bigint")]
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

/// The record in `row`, `Ok(None)` (logged) when the row holds values no
/// record has; `Err` only when the row lacks the columns the store selects.
fn decode_row(key: &StoreKey, row: &PgRow) -> Result<Option<Record>, sqlx::Error> {
    let format: i16 = row.try_get("format")?;
    let version: i64 = row.try_get("version")?;
    let Json(data) = row.try_get("data")?;
    let idle_timeout_ms: i64 = row.try_get("idle_timeout_ms")?;
    let instants: [(&'static str, PgTimestamp); 4] = [
        ("created_at", row.try_get("created_at")?),
        ("last_access", row.try_get("last_access")?),
        ("idle_deadline", row.try_get("idle_deadline")?),
        ("absolute_deadline", row.try_get("absolute_deadline")?),
    ];
    let mut record = Record::default();
    record.principal = row.try_get("principal")?;
    record.persistent = row.try_get("persistent")?;
    let checked = (|| {
        if format != FORMAT {
            return Err(RowDecodeError::UnknownFormat(format));
        }
        let [created_at, last_access, idle_deadline, absolute_deadline] =
            instants.map(|(name, value)| value.instant().ok_or(RowDecodeError::Instant(name)));
        record.created_at = created_at?;
        record.last_access = last_access?;
        record.idle_deadline = idle_deadline?;
        record.absolute_deadline = absolute_deadline?;
        record.version = u64::try_from(version).map_err(|_| RowDecodeError::Negative("version"))?;
        let timeout =
            u64::try_from(idle_timeout_ms).map_err(|_| RowDecodeError::Negative("idle timeout"))?;
        record.idle_timeout = Duration::from_millis(timeout);
        record.data = serde_json::from_str::<Data>(data).map_err(RowDecodeError::Data)?;
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

#[async_trait]
impl SessionStore for PostgresStore {
    async fn create(&self, key: &StoreKey, record: &Record) -> Result<bool, StoreError> {
        let p = &Params::of(record)?;
        let result = self
            .run(|mut conn| async move {
                let result = sqlx::query(AssertSqlSafe(self.sql.create.clone()))
                    .bind(key.as_str())
                    .bind(p.version)
                    .bind(Json(&p.data))
                    .bind(record.principal.as_deref())
                    .bind(p.created_at)
                    .bind(p.last_access)
                    .bind(p.idle_deadline)
                    .bind(p.absolute_deadline)
                    .bind(p.idle_timeout_ms)
                    .bind(record.persistent)
                    .bind(p.ttl)
                    .execute(&mut *conn)
                    .await;
                (conn, result)
            })
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        let row = self
            .run(|mut conn| async move {
                let result = sqlx::query(AssertSqlSafe(self.sql.load.clone()))
                    .bind(key.as_str())
                    .fetch_optional(&mut *conn)
                    .await;
                (conn, result)
            })
            .await?;
        match row {
            None => Ok(None),
            Some(row) => decode_row(key, &row).map_err(|e| self.backend(e)),
        }
    }

    /// One `SELECT` of the row by key, which says whether it is live; only
    /// for an expired row a `DELETE` of it (of the version read, still
    /// expired), and the load whose `DELETE` removed it answers `Expired`.
    async fn load_observed(&self, key: &StoreKey) -> Result<LoadOutcome, StoreError> {
        let row = self
            .run(|mut conn| async move {
                let result = sqlx::query(AssertSqlSafe(self.sql.load_observed.clone()))
                    .bind(key.as_str())
                    .fetch_optional(&mut *conn)
                    .await;
                (conn, result)
            })
            .await?;
        let Some(row) = row else {
            return Ok(LoadOutcome::Missing);
        };
        let live: bool = row.try_get("live").map_err(|e| self.backend(e))?;
        if live {
            let record = decode_row(key, &row).map_err(|e| self.backend(e))?;
            return Ok(record.map_or(LoadOutcome::Missing, LoadOutcome::Found));
        }
        let version: i64 = row.try_get("version").map_err(|e| self.backend(e))?;
        let principal: Option<String> = row.try_get("principal").map_err(|e| self.backend(e))?;
        let purged = self
            .run(|mut conn| async move {
                let result = sqlx::query(AssertSqlSafe(self.sql.purge_expired_key.clone()))
                    .bind(key.as_str())
                    .bind(version)
                    .execute(&mut *conn)
                    .await;
                (conn, result)
            })
            .await?;
        Ok(if purged.rows_affected() == 1 {
            LoadOutcome::Expired { principal }
        } else {
            LoadOutcome::Missing
        })
    }

    /// As [`load_at_least`](Self::load_at_least); a replica's load is the
    /// plain one (a replica cannot purge, so it never answers `Expired`),
    /// the primary's is [`load_observed`](Self::load_observed).
    async fn load_observed_at_least(
        &self,
        key: &StoreKey,
        floor: Option<u64>,
    ) -> Result<LoadOutcome, StoreError> {
        let topology = &self.topology;
        if !topology.reads_may_lag() {
            return self.load_observed(key).await;
        }
        match topology.replica() {
            Some(node) => {
                let replica = async {
                    let record = self.load_from_replica(node, key).await?;
                    Ok(LoadOutcome::from(record))
                };
                topology
                    .reads
                    .load(floor, replica, || self.load_observed(key))
                    .await
            }
            None => {
                let outcome = self.load_observed(key).await?;
                topology.reads.count(Served::Primary);
                Ok(outcome)
            }
        }
    }

    /// True: an expired row stays until it is met or swept.
    fn observes_expiry(&self) -> bool {
        true
    }

    async fn load_at_least(
        &self,
        key: &StoreKey,
        floor: Option<u64>,
    ) -> Result<Option<Record>, StoreError> {
        let topology = &self.topology;
        if !topology.reads_may_lag() {
            return self.load(key).await;
        }
        match topology.replica() {
            Some(node) => {
                let replica = self.load_from_replica(node, key);
                topology.reads.load(floor, replica, || self.load(key)).await
            }
            None => {
                // Every replica is resting after a failure.
                let record = self.load(key).await?;
                topology.reads.count(Served::Primary);
                Ok(record)
            }
        }
    }

    fn reads_may_lag(&self) -> bool {
        self.topology.reads_may_lag()
    }

    async fn save(
        &self,
        key: &StoreKey,
        record: &Record,
        expected_version: u64,
    ) -> Result<SaveOutcome, StoreError> {
        let p = &Params::of(record)?;
        let expected = version_param(expected_version)?;
        let saved = self
            .run(|mut conn| async move {
                let result = sqlx::query(AssertSqlSafe(self.sql.save.clone()))
                    .bind(key.as_str())
                    .bind(expected)
                    .bind(p.version)
                    .bind(Json(&p.data))
                    .bind(record.principal.as_deref())
                    .bind(p.created_at)
                    .bind(p.last_access)
                    .bind(p.idle_deadline)
                    .bind(p.absolute_deadline)
                    .bind(p.idle_timeout_ms)
                    .bind(record.persistent)
                    .bind(p.ttl)
                    .bind(p.slack)
                    .execute(&mut *conn)
                    .await;
                (conn, result)
            })
            .await?;
        if saved.rows_affected() == 1 {
            return Ok(SaveOutcome::Saved);
        }
        Ok(if self.still_live(key).await? {
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
        let app_now = now();
        let now = PgTimestamp::of(app_now);
        let ttl = Duration::try_from(idle_deadline - app_now).unwrap_or(Duration::ZERO);
        let slack = interval(sweep_slack(ttl));
        let version = version_param(expected_version)?;
        let result = self
            .run(|mut conn| async move {
                let result = sqlx::query(AssertSqlSafe(self.sql.touch.clone()))
                    .bind(key.as_str())
                    .bind(now)
                    .bind(PgTimestamp::of(idle_deadline))
                    .bind(slack)
                    .bind(version)
                    .execute(&mut *conn)
                    .await;
                (conn, result)
            })
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        self.run(|mut conn| async move {
            let result = sqlx::query(AssertSqlSafe(self.sql.delete.clone()))
                .bind(key.as_str())
                .execute(&mut *conn)
                .await;
            (conn, result)
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
        let deleted = self
            .run(|mut conn| async move {
                let result = sqlx::query(AssertSqlSafe(self.sql.delete_if_unchanged.clone()))
                    .bind(key.as_str())
                    .bind(expected)
                    .execute(&mut *conn)
                    .await;
                (conn, result)
            })
            .await?;
        if deleted.rows_affected() == 1 {
            return Ok(DeleteOutcome::Deleted);
        }
        Ok(if self.still_live(key).await? {
            DeleteOutcome::Conflict
        } else {
            DeleteOutcome::Gone
        })
    }

    async fn list_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let rows = self
            .run(|mut conn| async move {
                let result = sqlx::query(AssertSqlSafe(self.sql.list_by_principal.clone()))
                    .bind(principal)
                    .fetch_all(&mut *conn)
                    .await;
                (conn, result)
            })
            .await?;
        let mut sessions = Vec::with_capacity(rows.len());
        for row in rows {
            let raw: String = row.try_get("key").map_err(|e| self.backend(e))?;
            let Some(key) = StoreKey::parse(&raw) else {
                tracing::warn!(
                    table = %self.sql.qualified,
                    "row with a malformed store key skipped in a principal listing"
                );
                continue;
            };
            if let Some(record) = decode_row(&key, &row).map_err(|e| self.backend(e))? {
                sessions.push(SessionInfo::new(key, &record));
            }
        }
        Ok(sessions)
    }

    async fn delete_by_principal(&self, principal: &str) -> Result<u64, StoreError> {
        let live: i64 = self
            .run(|mut conn| async move {
                let result =
                    sqlx::query_scalar(AssertSqlSafe(self.sql.delete_by_principal.clone()))
                        .bind(principal)
                        .fetch_one(&mut *conn)
                        .await;
                (conn, result)
            })
            .await?;
        Ok(u64::try_from(live).unwrap_or(0))
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
        "postgres"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_valid() {
        assert!(Statements::new(DEFAULT_SCHEMA, DEFAULT_TABLE).is_ok());
    }

    #[test]
    fn versions_beyond_bigint_are_refused() {
        assert_eq!(version_param(7).ok(), Some(7));
        assert!(version_param(u64::MAX).is_err());
    }
}
