//! Test support: the shared server from `MYSQL_URL`, a fresh database per
//! test, and MariaDB servers a test starts (and restarts) itself.
//!
//! A missing or unreachable server fails the test with a message saying how
//! to get one: these tests never skip silently (in CI or elsewhere).

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use session_mysql::MySqlStore;
use session_mysql::sqlx::{self, AssertSqlSafe, MySqlPool};

pub(crate) const HOW_TO: &str = "run `scripts/test` (it starts a throwaway MariaDB with \
     scripts/lib/mysql.sh) or set MYSQL_URL to a MySQL/MariaDB server whose user may create \
     databases";

/// The shared test server's URL.
pub(crate) fn mysql_url() -> String {
    match std::env::var("MYSQL_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!("MYSQL_URL is not set: {HOW_TO}"),
    }
}

/// A pool on `url`; panics (with [`HOW_TO`]) when the server cannot be reached.
///
/// 32 connections, as for Postgres: the conformance suite sends 100
/// requests at one session.
pub(crate) async fn pool_on(url: &str, acquire_timeout: Duration) -> MySqlPool {
    match MySqlStore::pool_options()
        .max_connections(32)
        .acquire_timeout(acquire_timeout)
        .connect(url)
        .await
    {
        Ok(pool) => pool,
        Err(error) => panic!("cannot reach MySQL at {url} ({error}): {HOW_TO}"),
    }
}

/// A pool on the shared test server.
pub(crate) async fn pool() -> MySqlPool {
    pool_on(&mysql_url(), Duration::from_secs(10)).await
}

/// A database name no other test (or earlier run) uses.
pub(crate) fn database_name() -> String {
    let tag = session_core::conformance::store::new_key()
        .short()
        .to_ascii_lowercase()
        .replace('-', "_");
    format!("session_test_{tag}{}", std::process::id())
}

/// A migrated store in a database of its own on `pool`.
pub(crate) async fn store_in_fresh_database(pool: MySqlPool) -> MySqlStore {
    let store = MySqlStore::builder(pool)
        .database(database_name())
        .build()
        .expect("generated database names are valid");
    store.migrate().await.expect("migrate");
    store
}

/// A migrated store in a fresh database on the shared test server.
pub(crate) async fn fresh_store() -> MySqlStore {
    store_in_fresh_database(pool().await).await
}

/// The store's table, qualified, for raw statements in tests.
pub(crate) fn table(store: &MySqlStore) -> String {
    format!(
        "`{}`.`{}`",
        store.database().expect("test stores name their database"),
        store.table()
    )
}

/// Rows in the store's table.
pub(crate) async fn row_count(store: &MySqlStore) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM {}",
        table(store)
    )))
    .fetch_one(store.pool())
    .await
    .expect("count rows")
}

/// A MariaDB server of the test's own: `mariadb-install-db` into a temp
/// dir, `mariadbd` on a free loopback port, run as the `mysql` user when
/// the tests run as root. Extra server options (`--default-time-zone=..`)
/// are kept for restarts. Stopped and deleted on drop.
pub(crate) struct OwnMariaDb {
    dir: PathBuf,
    port: u16,
    user: String,
    extra: Vec<String>,
    child: Mutex<Option<Child>>,
}

impl OwnMariaDb {
    /// Initializes and starts a server with `extra` options and `env`.
    pub(crate) fn start(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let as_root = output(Command::new("id").arg("-u")).trim() == "0";
        let user = if as_root {
            "mysql".to_owned()
        } else {
            output(Command::new("id").arg("-un")).trim().to_owned()
        };
        let dir = PathBuf::from(
            output(Command::new("mktemp").args(["-d", "-t", "session-mysql-test.XXXXXX"])).trim(),
        );
        if as_root {
            run(Command::new("chown").arg(format!("{user}:")).arg(&dir));
        }
        let server = Self {
            dir,
            port: free_port(),
            user,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            child: Mutex::new(None),
        };
        run(Command::new(sbin("mariadb-install-db")).args([
            "--no-defaults",
            &format!("--user={}", server.user),
            &format!("--datadir={}", path(&server.dir.join("data"))),
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
        ]));
        server.start_again_with(env);
        let socket = server.dir.join("mysqld.sock");
        run(Command::new("mariadb")
            .args([
                "--no-defaults",
                &format!("--socket={}", path(&socket)),
                "-uroot",
            ])
            .args([
                "-e",
                "CREATE DATABASE sessions; \
                 CREATE USER 'sessions'@'127.0.0.1' IDENTIFIED BY 'sessions'; \
                 GRANT ALL PRIVILEGES ON *.* TO 'sessions'@'127.0.0.1';",
            ]));
        server
    }

    /// The URL of its `sessions` database.
    pub(crate) fn url(&self) -> String {
        format!("mysql://sessions:sessions@127.0.0.1:{}/sessions", self.port)
    }

    /// Starts the stopped server again, on the same port and data, and
    /// waits until it answers.
    pub(crate) fn start_again(&self) {
        self.start_again_with(&[]);
    }

    fn start_again_with(&self, env: &[(&str, &str)]) {
        let data = self.dir.join("data");
        let socket = self.dir.join("mysqld.sock");
        let child = Command::new(sbin("mariadbd"))
            .args([
                "--no-defaults".to_owned(),
                format!("--user={}", self.user),
                format!("--datadir={}", path(&data)),
                format!("--port={}", self.port),
                format!("--socket={}", path(&socket)),
                "--bind-address=127.0.0.1".to_owned(),
                format!("--log-error={}", path(&self.dir.join("error.log"))),
                format!("--pid-file={}", path(&self.dir.join("mysqld.pid"))),
                "--innodb-flush-log-at-trx-commit=2".to_owned(),
                "--skip-log-bin".to_owned(),
                "--skip-name-resolve".to_owned(),
            ])
            .args(&self.extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("mariadbd did not start: {e}: {HOW_TO}"));
        *self.child.lock().expect("child") = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ping = Command::new("mariadb-admin")
                .args([
                    "--no-defaults",
                    &format!("--socket={}", path(&socket)),
                    "-uroot",
                    "ping",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if ping.is_ok_and(|s| s.success()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd on port {} did not answer within 60 s; its log:\n{}",
                self.port,
                std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (SIGTERM: a clean shutdown that closes every
    /// connection) and waits until it has exited.
    pub(crate) fn stop(&self) {
        if let Some(mut child) = self.child.lock().expect("child").take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// A clean shutdown and a start on the same port and data.
    pub(crate) fn restart(&self) {
        self.stop();
        self.start_again();
    }
}

impl Drop for OwnMariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().ok().and_then(|mut c| c.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// A server program, also from an sbin directory not on PATH.
fn sbin(name: &str) -> PathBuf {
    ["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found (Debian package mariadb-server): {HOW_TO}"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

fn run(command: &mut Command) {
    let result = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{command:?} did not start: {e}: {HOW_TO}"));
    assert!(
        result.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
}

fn output(command: &mut Command) -> String {
    let result = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{command:?} did not start: {e}"));
    assert!(result.status.success(), "{command:?} failed");
    String::from_utf8(result.stdout).expect("UTF-8 output")
}
