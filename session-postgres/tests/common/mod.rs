//! Test support: the shared database from `DATABASE_URL`, fresh schemas, and
//! Postgres servers a test starts (and restarts) itself.
//!
//! A missing or unreachable database fails the test with a message saying
//! how to get one: these tests never skip silently.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher as _, Hasher as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use session_postgres::PostgresStore;
use session_postgres::sqlx::PgPool;

const HOW_TO: &str = "run `scripts/test` (it starts a throwaway Postgres) or set DATABASE_URL \
                      to a Postgres database the tests may create schemas in";

/// The streaming replicas of the shared test database (`DATABASE_REPLICAS`,
/// comma-separated `HOST:PORT`, exported by `scripts/test`). Missing: under
/// `CI=true` a failure; otherwise `None`, said on stderr.
pub(crate) fn database_replicas() -> Option<Vec<String>> {
    match std::env::var("DATABASE_REPLICAS") {
        Ok(list) if !list.trim().is_empty() => {
            Some(list.split(',').map(|h| h.trim().to_owned()).collect())
        }
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("DATABASE_REPLICAS is not set (CI=true): {HOW_TO} (with its streaming replicas)")
        }
        _ => {
            eprintln!(
                "DATABASE_REPLICAS is not set: replica reads tested against the primary only \
                 ({HOW_TO}, with its streaming replicas)"
            );
            None
        }
    }
}

/// `url` with its `host:port` replaced by `address`.
pub(crate) fn url_on(url: &str, address: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (userinfo, after) = rest.rsplit_once('@').map_or(("", rest), |(u, a)| (u, a));
    let path = after.find('/').map_or("", |at| &after[at..]);
    let at = if userinfo.is_empty() { "" } else { "@" };
    format!("{scheme}://{userinfo}{at}{address}{path}")
}

/// The shared test database's URL.
pub(crate) fn database_url() -> String {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!("DATABASE_URL is not set: {HOW_TO}"),
    }
}

/// A pool on `url`; panics (with [`HOW_TO`]) when the server cannot be reached.
///
/// 32 connections: the conformance suite sends 100 requests at one session,
/// and with a pool much smaller than that the wait for a connection between
/// a request's load and its save makes compare-and-set conflicts outlast the
/// layer's retries (see "Pool size" in the README).
pub(crate) async fn pool_on(url: &str, acquire_timeout: Duration) -> PgPool {
    match PostgresStore::pool_options()
        .max_connections(32)
        .acquire_timeout(acquire_timeout)
        .connect(url)
        .await
    {
        Ok(pool) => pool,
        Err(error) => panic!("cannot reach Postgres at DATABASE_URL ({error}): {HOW_TO}"),
    }
}

/// A pool on the shared test database.
pub(crate) async fn pool() -> PgPool {
    pool_on(&database_url(), Duration::from_secs(10)).await
}

/// A schema name no other test (or earlier run) uses.
pub(crate) fn schema_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("session_test_{:016x}", hasher.finish())
}

/// A migrated store in a schema of its own on `pool`.
pub(crate) async fn store_in_fresh_schema(pool: PgPool) -> PostgresStore {
    let store = PostgresStore::builder(pool)
        .schema(schema_name())
        .build()
        .expect("generated schema names are valid");
    store.migrate().await.expect("migrate");
    store
}

/// A migrated store in a fresh schema on the shared test database.
pub(crate) async fn fresh_store() -> PostgresStore {
    store_in_fresh_schema(pool().await).await
}

/// Rows in the store's table.
pub(crate) async fn row_count(store: &PostgresStore) -> Result<i64, session_postgres::sqlx::Error> {
    session_postgres::sqlx::query_scalar(session_postgres::sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{}\".\"{}\"",
        store.schema(),
        store.table()
    )))
    .fetch_one(store.pool())
    .await
}

/// Polls `check` every 50 ms until it holds or `limit` has passed.
pub(crate) async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Postgres server of the test's own: `initdb` into a temp dir, a free
/// loopback port, run as the `postgres` user when the tests run as root.
/// Stopped and deleted on drop.
pub(crate) struct OwnPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_root: bool,
}

impl OwnPostgres {
    /// Initializes and starts a server.
    pub(crate) fn start() -> Self {
        let bin = pg_bin();
        let as_root = run_output(Command::new("id").arg("-u")).trim() == "0";
        let dir = PathBuf::from(
            run_output(Command::new("mktemp").args(["-d", "-t", "session-pg-test.XXXXXX"])).trim(),
        );
        if as_root {
            run(Command::new("chown").arg("postgres:").arg(&dir));
        }
        let port = free_port();
        let server = Self {
            bin,
            dir,
            port,
            as_root,
        };
        let data = server.data();
        server.run_pg(
            "initdb",
            &[
                "-D",
                path(&data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
        );
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n",
            server.dir.display()
        );
        let mut existing =
            std::fs::read_to_string(data.join("postgresql.conf")).expect("postgresql.conf");
        existing.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), existing).expect("write postgresql.conf");
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhost all all 127.0.0.1/32 trust\n\
             host replication all 127.0.0.1/32 trust\n",
        )
        .expect("write pg_hba.conf");
        server.start_again();
        server
    }

    /// A streaming replica of `primary`: `pg_basebackup -R -X stream` into a
    /// temp dir of its own, started on a free loopback port.
    pub(crate) fn replica_of(primary: &Self) -> Self {
        let dir = PathBuf::from(
            run_output(Command::new("mktemp").args(["-d", "-t", "session-pg-replica.XXXXXX"]))
                .trim(),
        );
        if primary.as_root {
            run(Command::new("chown").arg("postgres:").arg(&dir));
        }
        let port = free_port();
        let server = Self {
            bin: primary.bin.clone(),
            dir,
            port,
            as_root: primary.as_root,
        };
        let data = server.data();
        let primary_port = primary.port.to_string();
        server.run_pg(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &primary_port,
                "-U",
                "postgres",
                "-D",
                path(&data),
                "-R",
                "-X",
                "stream",
            ],
        );
        // The backup copied the primary's settings; later lines win.
        let mut conf =
            std::fs::read_to_string(data.join("postgresql.conf")).expect("postgresql.conf");
        conf.push_str(&format!(
            "port = {port}\nunix_socket_directories = '{}'\nhot_standby = on\n",
            server.dir.display()
        ));
        std::fs::write(data.join("postgresql.conf"), conf).expect("write postgresql.conf");
        server.start_again();
        server
    }

    /// Its loopback port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub(crate) fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `pg_ctl promote`: a replica becomes a primary (returns once it is).
    pub(crate) fn promote(&self) {
        self.pg_ctl(&["promote"]);
    }

    /// SIGKILL to the postmaster (its backends die with it on their next
    /// check, and the kernel closes every connection).
    pub(crate) fn kill(&self) {
        let pid_file = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .expect("postmaster.pid of a running server");
        let pid = pid_file
            .lines()
            .next()
            .expect("a pid line")
            .trim()
            .to_owned();
        // Its backends notice the postmaster's death and exit on their own.
        run(Command::new("kill").args(["-KILL", &pid]));
    }

    /// The URL of its `postgres` database.
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (fast shutdown: sessions are disconnected).
    pub(crate) fn stop(&self) {
        self.pg_ctl(&["-m", "fast", "stop"]);
    }

    /// Starts the stopped server again, on the same port and data.
    pub(crate) fn start_again(&self) {
        let log = self.dir.join("server.log");
        self.pg_ctl(&["-l", path(&log), "start"]);
    }

    /// `pg_ctl restart`: a fast shutdown and a start.
    pub(crate) fn restart(&self) {
        let log = self.dir.join("server.log");
        self.pg_ctl(&["-m", "fast", "-l", path(&log), "restart"]);
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.data();
        let mut all = vec!["-D", path(&data), "-w", "-t", "60"];
        all.extend_from_slice(args);
        self.run_pg("pg_ctl", &all);
    }

    fn run_pg(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut command = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        command.args(args);
        run(&mut command);
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.data();
        let program = self.bin.join("pg_ctl");
        let args = ["-D", path(&data), "-m", "immediate", "-w", "stop"];
        let mut command = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let _ = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// The directory with `initdb` and `pg_ctl`: `PG_BIN` (exported by
/// `scripts/test`), else the newest `/usr/lib/postgresql/*/bin`.
fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
    });
    dirs.pop().unwrap_or_else(|| {
        panic!("Postgres server binaries (initdb, pg_ctl) not found: set PG_BIN or {HOW_TO}")
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

fn run(command: &mut Command) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{command:?} did not start: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn run_output(command: &mut Command) -> String {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{command:?} did not start: {e}"));
    assert!(output.status.success(), "{command:?} failed");
    String::from_utf8(output.stdout).expect("UTF-8 output")
}
