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

/// A store on the cluster under a fresh prefix, each write acknowledged
/// once a replica of its shard holds it (`durable=1`).
pub async fn durable_cluster_store() -> RedisStore {
    let nodes = cluster_nodes();
    let store = RedisStore::cluster_builder(nodes.clone())
        .durable(1)
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

/// A store on the Sentinel-managed primary under a fresh prefix, its loads
/// answered by the replicas (`read_from_replicas`) above the client's
/// version floor.
pub async fn sentinel_replica_store() -> RedisStore {
    let url = sentinel_url();
    let store = RedisStore::builder(url.clone())
        .read_from_replicas(true)
        .build()
        .expect("REDIS_SENTINEL_URL is a redis+sentinel:// URL")
        .key_prefix(fresh_prefix());
    ensure_reachable(&store, &format!("REDIS_SENTINEL_URL={url}")).await;
    store
}

/// `cmd` on the server on `port`, or a panic saying what failed.
pub fn query_port<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> T {
    sentinel_query(port, cmd).unwrap_or_else(|| panic!("{cmd:?} on port {port} failed"))
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

    /// The server's log so far (empty when it cannot be read).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
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
/// sentinels (quorum 2, `down-after-milliseconds` [`OwnSentinels::DOWN_AFTER`]) watching it under
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

    /// The sentinels' `down-after-milliseconds`. Not 1000: at 1 s, about 1
    /// failover in 11 was followed by a spurious second one (measured: 4 of
    /// 43), a sentinel flagging the primary it had just switched to down and
    /// at once objectively down (redis/redis#8607: gone at 2000).
    pub const DOWN_AFTER: Duration = Duration::from_millis(2000);

    /// Starts them all and waits until every sentinel sees both replicas and
    /// the other two sentinels (a failover needs all of that).
    pub fn start() -> Self {
        Self::start_with(&[&[], &[]])
    }

    /// [`OwnSentinels::start`], each replica started with its own extra
    /// arguments (`replica_args[i]` for replica `i`), e.g. a
    /// `--replica-priority`.
    pub fn start_with(replica_args: &[&[&str]; 2]) -> Self {
        // No 5 s wait before a full sync: the replicas are ready at once.
        let primary = OwnRedis::start(&["--repl-diskless-sync-delay", "0"]);
        let port = primary.port().to_string();
        let replicas: Vec<OwnRedis> = replica_args
            .iter()
            .map(|extra| {
                // A replica may become the primary, whose other replica may
                // then need a full sync: at once too.
                let mut args = vec![
                    "--replicaof",
                    "127.0.0.1",
                    &port,
                    "--repl-diskless-sync-delay",
                    "0",
                ];
                args.extend_from_slice(extra);
                OwnRedis::start(&args)
            })
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
            format!(
                "sentinel down-after-milliseconds {} {}",
                Self::MASTER,
                Self::DOWN_AFTER.as_millis()
            ),
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

    /// The sentinels' ports.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(OwnRedis::port).collect()
    }

    /// The events in every sentinel's log (its `#` lines: `+sdown`,
    /// `+odown`, `+new-epoch`, `+elected-leader`, `+selected-slave`,
    /// `+promoted-slave`, `+switch-master`, ...), each prefixed with the
    /// sentinel's port, in the order of their timestamps.
    pub fn failover_log(&self) -> Vec<String> {
        let mut lines: Vec<(String, String)> = self
            .sentinels
            .iter()
            .flat_map(|s| {
                let port = s.port();
                s.log()
                    .lines()
                    .filter_map(|l| {
                        // `PID:X 01 Dec 2026 16:46:36.495 # +event ...`
                        let (_, after) = l.split_once(":X ")?;
                        let (time, event) = after.split_once(" # ")?;
                        let event_line =
                            event.starts_with(['+', '-']) || event.contains(" voted for ");
                        let line = format!("{time} sentinel {port}: {event}");
                        event_line.then(|| (time.to_owned(), line))
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        lines.sort();
        lines.into_iter().map(|(_, line)| line).collect()
    }

    /// Blocks until every sentinel flags the replica on `port` down
    /// (`s_down` in its `SENTINEL REPLICAS`); panics after `within`.
    pub fn wait_for_replica_down(&self, port: u16, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let flagged = self.sentinels.iter().all(|s| {
                let listed: Vec<std::collections::HashMap<String, String>> = sentinel_query(
                    s.port(),
                    redis::cmd("SENTINEL").arg("REPLICAS").arg(Self::MASTER),
                )
                .unwrap_or_default();
                listed.iter().any(|r| {
                    r.get("port").and_then(|p| p.parse().ok()) == Some(port)
                        && r.get("flags")
                            .is_some_and(|f| f.split(',').any(|f| f == "s_down"))
                })
            });
            if flagged {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinels did not flag the replica on port {port} down within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
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
/// `cmd` on the server (or sentinel) on `port`; `None` when it fails or
/// does not answer within 500 ms.
pub fn sentinel_query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> Option<T> {
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

/// A free port P on loopback whose cluster bus port P + 10000 is free too.
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port <= 55535 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug)]
pub struct NodeLine {
    /// The node's id.
    pub id: String,
    /// Its client port.
    pub port: u16,
    /// `master` or `slave` (without `myself`), `fail` when so flagged.
    pub flags: String,
    /// The id of its master (replicas), `-` for masters.
    pub master_id: String,
    /// Its slot ranges (masters).
    pub slots: Vec<String>,
}

impl NodeLine {
    /// Whether it is a master not flagged failing.
    pub fn is_live_master(&self) -> bool {
        self.flags.split(',').any(|f| f == "master")
            && !self.flags.split(',').any(|f| f == "fail" || f == "fail?")
    }
}

/// `CLUSTER NODES` as the node on `port` sees the cluster, if it answers.
pub fn cluster_view(port: u16) -> Option<Vec<NodeLine>> {
    let text: String = sentinel_query(port, redis::cmd("CLUSTER").arg("NODES"))?;
    Some(
        text.lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let port = fields.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
                Some(NodeLine {
                    id: fields.first()?.to_string(),
                    port,
                    flags: fields.get(2)?.replace("myself,", ""),
                    master_id: fields.get(3)?.to_string(),
                    slots: fields.iter().skip(8).map(|s| s.to_string()).collect(),
                })
            })
            .collect(),
    )
}

/// A Redis Cluster of the test's own: 3 masters with a replica each (6
/// [`OwnRedis`] nodes), and room to grow with [`OwnCluster::add_master`].
/// A fault test kills or reshards it without touching any other test's
/// servers.
pub struct OwnCluster {
    /// Every node started, in order.
    pub nodes: Vec<OwnRedis>,
    node_timeout: Duration,
}

impl OwnCluster {
    /// Starts 6 nodes with `--cluster-node-timeout` `node_timeout` (a
    /// replica takes over about 2 x that after its master dies), makes them
    /// one cluster (`redis-cli --cluster create ... --cluster-replicas 1`),
    /// and waits until every node reports `cluster_state:ok` and every
    /// replica is in sync.
    pub fn start(node_timeout: Duration) -> Self {
        let nodes: Vec<OwnRedis> = (0..6).map(|_| Self::node(node_timeout)).collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs (Debian package redis-tools)");
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = Self {
            nodes,
            node_timeout,
        };
        cluster.wait_until_healthy(3, 3, Duration::from_secs(30));
        cluster
    }

    fn node(node_timeout: Duration) -> OwnRedis {
        let mut node = OwnRedis::prepare(&[]);
        node.port = free_cluster_port();
        let config = node.dir.join("nodes.conf").display().to_string();
        let timeout = node_timeout.as_millis().to_string();
        node.args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &config,
            "--cluster-node-timeout",
            &timeout,
            "--repl-diskless-sync-delay",
            "0",
        ]
        .iter()
        .map(|&a| a.to_owned())
        .collect();
        node.start_again();
        node
    }

    /// Every node's URL (what `REDIS_CLUSTER_NODES` holds).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(OwnRedis::url).collect()
    }

    /// The node on `port`.
    pub fn node_on(&self, port: u16) -> &OwnRedis {
        self.nodes.iter().find(|n| n.port() == port).unwrap()
    }

    /// The cluster as the first answering node sees it.
    pub fn view(&self) -> Vec<NodeLine> {
        self.nodes
            .iter()
            .find_map(|n| cluster_view(n.port()))
            .expect("a cluster node answers")
    }

    /// The port of the master serving `slot`, as the first answering node
    /// sees it.
    pub fn master_of_slot(&self, slot: u16) -> Option<u16> {
        self.view()
            .into_iter()
            .filter(NodeLine::is_live_master)
            .find(|n| {
                n.slots.iter().any(|range| {
                    let mut ends = range.split('-').map(|e| e.parse::<u16>());
                    match (ends.next(), ends.next()) {
                        (Some(Ok(a)), Some(Ok(b))) => (a..=b).contains(&slot),
                        (Some(Ok(a)), None) => a == slot,
                        _ => false,
                    }
                })
            })
            .map(|n| n.port)
    }

    /// The port of a replica of the master on `port`.
    pub fn replica_of(&self, port: u16) -> Option<u16> {
        let view = self.view();
        let id = view.iter().find(|n| n.port == port)?.id.clone();
        view.iter().find(|n| n.master_id == id).map(|n| n.port)
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot(&self, key: &str) -> u16 {
        self.nodes
            .iter()
            .find_map(|n| sentinel_query(n.port(), redis::cmd("CLUSTER").arg("KEYSLOT").arg(key)))
            .expect("a cluster node answers")
    }

    /// Blocks until every running node reports `cluster_state:ok`, `masters`
    /// masters serve slots, and `replicas` replicas have their link to their
    /// master up. Panics after `within`.
    pub fn wait_until_healthy(&self, masters: usize, replicas: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let infos: Vec<Option<(String, String)>> = self
                .nodes
                .iter()
                .filter(|n| n.lock().is_some())
                .map(|n| {
                    let cluster: String =
                        sentinel_query(n.port(), redis::cmd("CLUSTER").arg("INFO"))?;
                    let replication: String =
                        sentinel_query(n.port(), redis::cmd("INFO").arg("replication"))?;
                    Some((cluster, replication))
                })
                .collect();
            let synced = infos
                .iter()
                .flatten()
                .filter(|(_, replication)| {
                    replication.contains("role:slave")
                        && replication.contains("master_link_status:up")
                })
                .count();
            // Every node sees the same shape: gossip spreads a new role or
            // a failover a node at a time.
            let agreed = self.nodes.iter().filter(|n| n.lock().is_some()).all(|n| {
                cluster_view(n.port()).is_some_and(|view| {
                    let serving = view
                        .iter()
                        .filter(|l| l.is_live_master() && !l.slots.is_empty())
                        .count();
                    let following = view
                        .iter()
                        .filter(|l| l.flags.split(',').any(|f| f == "slave"))
                        .filter(|l| !l.flags.contains("fail"))
                        .count();
                    serving == masters && following == replicas
                })
            });
            let healthy = agreed
                && synced == replicas
                && infos.iter().all(|info| {
                    info.as_ref()
                        .is_some_and(|(cluster, _)| cluster.contains("cluster_state:ok"))
                });
            if healthy {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster was not healthy within {within:?}: {:?}",
                self.nodes.iter().find_map(|n| cluster_view(n.port()))
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Blocks until the master on `port` confirms a write to one of its
    /// slots with `WAIT 1` (a replica of it is in sync and acknowledging).
    /// Panics after `within`.
    pub fn wait_until_confirms(&self, port: u16, within: Duration) {
        let deadline = Instant::now() + within;
        let view = self.view();
        let ranges: Vec<(u16, u16)> = view
            .iter()
            .filter(|n| n.port == port)
            .flat_map(|n| n.slots.iter())
            .filter_map(|range| {
                let mut ends = range.split('-').map(|e| e.parse::<u16>().ok());
                let a = ends.next()??;
                Some((a, ends.next().flatten().unwrap_or(a)))
            })
            .collect();
        let key = (0..)
            .map(|i| format!("probe:{i}"))
            .find(|key| {
                let slot = self.slot(key);
                ranges.iter().any(|&(a, b)| (a..=b).contains(&slot))
            })
            .unwrap();
        loop {
            let confirmed = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
                .and_then(|mut conn| {
                    conn.set_read_timeout(Some(Duration::from_millis(500)))?;
                    redis::pipe()
                        .cmd("SET")
                        .arg(&key)
                        .arg("1")
                        .ignore()
                        .cmd("WAIT")
                        .arg(1)
                        .arg(100)
                        .query::<(i64,)>(&mut conn)
                })
                .map(|(n,)| n);
            if confirmed.as_ref().is_ok_and(|&n| n >= 1) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the master on {port} did not get a write confirmed within {within:?}: {confirmed:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Blocks until a node other than `old` serves `slot` as a live master
    /// (a replica promoted); its port. Panics after `within`.
    pub fn wait_for_promotion(&self, slot: u16, old: u16, within: Duration) -> u16 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(port) = self.master_of_slot(slot).filter(|&p| p != old) {
                return port;
            }
            assert!(
                Instant::now() < deadline,
                "no replica took slot {slot} over within {within:?} of its master on port {old} failing"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a 7th (8th, ...) node and adds it as a master without slots
    /// (`redis-cli --cluster add-node`); its port once every node knows it
    /// and it sees the cluster ok.
    pub fn add_master(&mut self) -> u16 {
        let view = self.view();
        let masters = view
            .iter()
            .filter(|n| n.is_live_master() && !n.slots.is_empty())
            .count();
        let replicas = view.iter().filter(|n| n.flags.contains("slave")).count();
        let node = Self::node(self.node_timeout);
        let port = node.port();
        let existing = format!("127.0.0.1:{}", self.nodes[0].port());
        self.nodes.push(node);
        run_redis_cli(&[
            "--cluster",
            "add-node",
            &format!("127.0.0.1:{port}"),
            &existing,
        ]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self
            .nodes
            .iter()
            .filter(|n| n.lock().is_some())
            .all(|n| cluster_view(n.port()).is_some_and(|view| view.iter().any(|l| l.port == port)))
        {
            assert!(
                Instant::now() < deadline,
                "the new node on {port} was not known to all"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.wait_until_healthy(masters, replicas, Duration::from_secs(20));
        port
    }

    /// Moves `slots` slots from all masters to the master on `to`
    /// (`redis-cli --cluster reshard ... --cluster-yes`); returns once done.
    pub fn reshard_to(&self, to: u16, slots: usize) {
        let id = self
            .view()
            .into_iter()
            .find(|n| n.port == to)
            .expect("the target node is in the cluster")
            .id;
        run_redis_cli(&[
            "--cluster",
            "reshard",
            &format!("127.0.0.1:{}", self.nodes[0].port()),
            "--cluster-from",
            "all",
            "--cluster-to",
            &id,
            "--cluster-slots",
            &slots.to_string(),
            "--cluster-yes",
        ]);
    }
}

/// Runs `redis-cli ARGS`; panics with its output when it fails.
fn run_redis_cli(args: &[&str]) {
    let output = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli runs (Debian package redis-tools)");
    if !output.status.success() {
        // The end says what failed; a reshard's plan before it is long.
        let text = String::from_utf8_lossy(&output.stdout);
        let tail: String = text
            .chars()
            .rev()
            .take(2000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        panic!(
            "redis-cli {args:?} failed: ...{tail}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
