//! Shared by the integration tests: the servers from the environment, fresh
//! key prefixes, a raw connection for looking at what the store wrote, and
//! Redis servers a test starts (and kills, freezes, restarts) itself.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use session_core::{Id, SessionStore};
use session_redis::RedisStore;
use session_redis::redis::{self, aio::ConnectionLike};

const HOW: &str = "run `scripts/test`, which starts throwaway Redis servers, \
                   or point the variable at a server the tests may write to \
                   (they only use fresh key prefixes)";

/// `REDIS_URL`, or a panic saying how to get a server.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| {
        panic!("REDIS_URL is not set: {HOW} (e.g. REDIS_URL=redis://127.0.0.1:6379)")
    })
}

/// `REDIS_CLUSTER_NODES` split at commas, or a panic saying how to get a cluster.
pub fn cluster_nodes() -> Vec<String> {
    let nodes = std::env::var("REDIS_CLUSTER_NODES").unwrap_or_else(|_| {
        panic!(
            "REDIS_CLUSTER_NODES is not set: {HOW} \
             (e.g. REDIS_CLUSTER_NODES=redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002)"
        )
    });
    nodes.split(',').map(|n| n.trim().to_owned()).collect()
}

/// A key prefix no other test uses.
pub fn fresh_prefix() -> String {
    format!("test-{}:", Id::random().unwrap().store_key().short())
}

/// Fails loudly when the store's server does not answer.
async fn ensure_reachable(store: &RedisStore, what: &str) {
    let probe = Id::random().unwrap().store_key();
    if let Err(error) = store.load(&probe).await {
        let mut chain = String::new();
        let mut source: Option<&dyn std::error::Error> = Some(&error);
        while let Some(e) = source {
            chain.push_str(&format!(": {e}"));
            source = e.source();
        }
        panic!("Redis at {what} is unreachable{chain}; {HOW}");
    }
}

/// A store on the standalone server under a fresh prefix.
pub async fn standalone_store() -> RedisStore {
    let url = redis_url();
    let store = RedisStore::from_url(url.clone())
        .expect("REDIS_URL is a Redis URL")
        .key_prefix(fresh_prefix());
    ensure_reachable(&store, &format!("REDIS_URL={url}")).await;
    store
}

/// A store on the cluster under a fresh prefix.
pub async fn cluster_store() -> RedisStore {
    let nodes = cluster_nodes();
    let store = RedisStore::cluster_builder(nodes.clone())
        .build()
        .expect("REDIS_CLUSTER_NODES are Redis URLs")
        .key_prefix(fresh_prefix());
    ensure_reachable(&store, &format!("REDIS_CLUSTER_NODES={}", nodes.join(","))).await;
    store
}

/// A plain connection to the standalone server, to inspect keys directly.
pub async fn raw_connection() -> impl ConnectionLike + Clone {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A plain connection to the cluster (routing each command by its key), to
/// inspect keys directly.
pub async fn raw_cluster_connection() -> impl ConnectionLike + Clone {
    redis::cluster::ClusterClient::new(cluster_nodes())
        .unwrap()
        .get_async_connection()
        .await
        .unwrap()
}

/// A redis-server of the test's own: a free loopback port, a temp dir (its
/// `--dir`, so an AOF survives a restart), the extra arguments given to
/// [`OwnRedis::start`]. Killed and its dir deleted on drop.
pub struct OwnRedis {
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
    child: Mutex<Option<Child>>,
}

impl OwnRedis {
    /// Starts a server with `args` on top of loopback-only, no RDB snapshots.
    pub fn start(args: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "session-redis-test-{}-{}",
            std::process::id(),
            Id::random().unwrap().store_key().short()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let server = Self {
            port: free_port(),
            dir,
            args: args.iter().map(|&a| a.to_owned()).collect(),
            child: Mutex::new(None),
        };
        server.start_again();
        server
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the (killed) server again, on the same port, dir and
    /// arguments, and waits until it answers `PING`.
    pub fn start_again(&self) {
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port, "--save", ""])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): run `scripts/test`, which installs it, \
                     or install the Debian package redis-server"
                )
            });
        let previous = self.lock().replace(child);
        assert!(previous.is_none(), "redis-server started twice");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !answers_ping(self.port) {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not start; its log:\n{}",
                self.port,
                std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the server dies without a chance to write anything more.
    pub fn kill(&self) {
        let mut child = self.lock().take().expect("redis-server is running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGSTOP: the server keeps its connections open but answers nothing.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`OwnRedis::freeze`].
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self
            .lock()
            .as_ref()
            .expect("redis-server is running")
            .id()
            .to_string();
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.lock().take() {
            // SIGKILL ends a stopped process too.
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
