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

/// `REDIS_SENTINEL_URL` (`redis+sentinel://HOST:PORT,.../MASTER`), or a
/// panic saying how to get one.
pub fn sentinel_url() -> String {
    std::env::var("REDIS_SENTINEL_URL").unwrap_or_else(|_| {
        panic!(
            "REDIS_SENTINEL_URL is not set: run `scripts/test`, which starts a primary, 2 replicas \
             and 3 sentinels (start_redis_sentinel in scripts/lib/redis.sh), or point the variable \
             at sentinels the tests may write through \
             (e.g. REDIS_SENTINEL_URL=redis+sentinel://127.0.0.1:26379/sessions)"
        )
    })
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

/// A store on the Sentinel-managed primary under a fresh prefix.
pub async fn sentinel_store() -> RedisStore {
    let url = sentinel_url();
    let store = RedisStore::builder(url.clone())
        .build()
        .expect("REDIS_SENTINEL_URL is a redis+sentinel:// URL")
        .key_prefix(fresh_prefix());
    ensure_reachable(&store, &format!("REDIS_SENTINEL_URL={url}")).await;
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
    /// A sentinel's config file (sentinels rewrite it), run with `--sentinel`.
    sentinel_config: Option<PathBuf>,
    child: Mutex<Option<Child>>,
}

impl OwnRedis {
    /// Starts a server with `args` on top of loopback-only, no RDB snapshots.
    pub fn start(args: &[&str]) -> Self {
        let server = Self::prepare(args);
        server.start_again();
        server
    }

    fn prepare(args: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "session-redis-test-{}-{}",
            std::process::id(),
            Id::random().unwrap().store_key().short()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            port: free_port(),
            dir,
            args: args.iter().map(|&a| a.to_owned()).collect(),
            sentinel_config: None,
            child: Mutex::new(None),
        }
    }

    /// Starts a sentinel (loopback only) with `config`'s lines after its
    /// own `bind`, `port`, `dir` and `logfile`.
    pub fn start_sentinel(config: &[String]) -> Self {
        let mut server = Self::prepare(&[]);
        let path = server.dir.join("sentinel.conf");
        let mut text = format!(
            "bind 127.0.0.1\nport {}\ndir {}\nlogfile {}\n",
            server.port,
            server.dir.display(),
            server.dir.join("redis.log").display()
        );
        for line in config {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&path, text).unwrap();
        server.sentinel_config = Some(path);
        server.start_again();
        server
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the (killed) server again, on the same port, dir and
    /// arguments, and waits until it answers `PING`.
    pub fn start_again(&self) {
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        if let Some(config) = &self.sentinel_config {
            command.arg(config).arg("--sentinel");
        } else {
            command
                .args(["--bind", "127.0.0.1", "--port", &port, "--save", ""])
                .arg("--dir")
                .arg(&self.dir)
                .arg("--logfile")
                .arg(self.dir.join("redis.log"));
        }
        let child = command
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

/// A replication group of the test's own: a primary, 2 replicas and 3
/// sentinels (quorum 2, `down-after-milliseconds 1000`) watching it under
/// the name [`OwnSentinels::MASTER`], each an [`OwnRedis`]. A fault test
/// kills or freezes this primary without touching any other test's servers.
pub struct OwnSentinels {
    /// The first primary (after a failover, a replica or dead).
    pub primary: OwnRedis,
    /// Its replicas at the start.
    pub replicas: Vec<OwnRedis>,
    sentinels: Vec<OwnRedis>,
}

impl OwnSentinels {
    /// The name the sentinels know the primary by.
    pub const MASTER: &'static str = "sessions";

    /// Starts them all and waits until every sentinel sees both replicas and
    /// the other two sentinels (a failover needs all of that).
    pub fn start() -> Self {
        // No 5 s wait before a full sync: the replicas are ready at once.
        let primary = OwnRedis::start(&["--repl-diskless-sync-delay", "0"]);
        let port = primary.port().to_string();
        let replicas: Vec<OwnRedis> = (0..2)
            .map(|_| OwnRedis::start(&["--replicaof", "127.0.0.1", &port]))
            .collect();
        // Synced before anything is written: a durable write needs them.
        let deadline = Instant::now() + Duration::from_secs(10);
        for replica in &replicas {
            while !sentinel_query::<String>(replica.port(), redis::cmd("INFO").arg("replication"))
                .is_some_and(|info| info.contains("master_link_status:up"))
            {
                assert!(
                    Instant::now() < deadline,
                    "replica on port {} did not sync with its primary",
                    replica.port()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let config = [
            format!("sentinel monitor {} 127.0.0.1 {port} 2", Self::MASTER),
            format!("sentinel down-after-milliseconds {} 1000", Self::MASTER),
            format!("sentinel failover-timeout {} 10000", Self::MASTER),
            format!("sentinel parallel-syncs {} 1", Self::MASTER),
        ];
        let sentinels: Vec<OwnRedis> = (0..3).map(|_| OwnRedis::start_sentinel(&config)).collect();
        let group = Self {
            primary,
            replicas,
            sentinels,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        for sentinel in &group.sentinels {
            loop {
                let info = sentinel_master_info(sentinel.port());
                let field = |name: &str| {
                    info.iter()
                        .position(|f| f == name)
                        .map(|i| info[i + 1].clone())
                };
                if field("num-slaves").as_deref() == Some("2")
                    && field("num-other-sentinels").as_deref() == Some("2")
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "sentinel on port {} did not see 2 replicas and 2 other sentinels: {info:?}",
                    sentinel.port()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        group
    }

    /// `redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/sessions`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        format!("redis+sentinel://{}/{}", hosts.join(","), Self::MASTER)
    }

    /// The primary's port as the first sentinel that answers names it.
    pub fn primary_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let reply: Option<Vec<String>> = sentinel_query(
                s.port(),
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(Self::MASTER),
            );
            reply.and_then(|addr| addr.get(1)?.parse().ok())
        })
    }

    /// Blocks until the sentinels name a primary other than `old` (a
    /// failover promoted a replica); panics after `within`.
    pub fn wait_for_promotion(&self, old: u16, within: Duration) -> u16 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(port) = self.primary_port().filter(|&p| p != old) {
                return port;
            }
            assert!(
                Instant::now() < deadline,
                "no replica promoted within {within:?} of the primary on port {old} failing"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl OwnSentinels {
    /// Blocks until the group is whole again after a fault: every sentinel
    /// names the same primary, none flags it down or in failover, and that
    /// primary has a replica online (so a `durable=1` write can succeed).
    /// Panics after `within`.
    pub fn wait_until_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let views: Vec<Option<(String, String)>> = self
                .sentinels
                .iter()
                .map(|s| {
                    let info = sentinel_master_info(s.port());
                    let field = |name: &str| {
                        info.iter()
                            .position(|f| f == name)
                            .and_then(|i| info.get(i + 1).cloned())
                    };
                    Some((field("port")?, field("flags")?))
                })
                .collect();
            let agreed = views
                .first()
                .cloned()
                .flatten()
                .filter(|(_, flags)| flags == "master");
            let healthy = agreed.as_ref().is_some_and(|(port, _)| {
                views
                    .iter()
                    .all(|v| v.as_ref().is_some_and(|(p, f)| p == port && f == "master"))
                    && port.parse::<u16>().ok().is_some_and(|port| {
                        sentinel_query::<String>(port, redis::cmd("INFO").arg("replication"))
                            .is_some_and(|info| {
                                info.contains("role:master") && info.contains(",state=online,")
                            })
                    })
            });
            if healthy {
                return;
            }
            if Instant::now() >= deadline {
                let roles: Vec<(u16, Option<String>)> = std::iter::once(&self.primary)
                    .chain(&self.replicas)
                    .map(|server| {
                        let info = sentinel_query::<String>(
                            server.port(),
                            redis::cmd("INFO").arg("replication"),
                        );
                        let summary = info.map(|i| {
                            i.lines()
                                .filter(|l| {
                                    l.starts_with("role:")
                                        || l.starts_with("master_port:")
                                        || l.starts_with("master_link_status:")
                                        || l.starts_with("connected_slaves:")
                                })
                                .collect::<Vec<_>>()
                                .join(" ")
                        });
                        (server.port(), summary)
                    })
                    .collect();
                panic!(
                    "the sentinel group was not healthy again within {within:?}: \
                     sentinels (port, flags) {views:?}; servers {roles:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `cmd`'s answer from the server (sentinel or not) on `port`, if it answers.
fn sentinel_query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> Option<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    conn.set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    cmd.query(&mut conn).ok()
}

fn sentinel_master_info(port: u16) -> Vec<String> {
    sentinel_query(
        port,
        redis::cmd("SENTINEL")
            .arg("master")
            .arg(OwnSentinels::MASTER),
    )
    .unwrap_or_default()
}
