//! `examples::serve`'s health endpoints and graceful shutdown, against real
//! processes: the example binaries, a Redis of the test's own (stopped and
//! started again) and the shared Redis `scripts/test` starts (REDIS_URL).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{env_or_fail, example_binary, free_port, request, set_cookie};
use session::{SessionStore, StoreConfig};
use tokio::process::{Child, Command};

/// Waits until `addr` accepts connections.
async fn wait_up(addr: SocketAddr, what: &str) {
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what} did not start on {addr}");
}

async fn signal(child: &Child, name: &str) {
    let pid = child.id().unwrap().to_string();
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
}

/// Sends SIGTERM and expects a clean exit within 15 s.
async fn terminate(mut child: Child, what: &str) {
    signal(&child, "TERM").await;
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
    assert!(
        matches!(status, Ok(Ok(s)) if s.success()),
        "{what} did not stop cleanly on SIGTERM: {status:?}"
    );
}

/// A redis-server of this test's own on a free loopback port.
struct OwnRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl OwnRedis {
    async fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("examples-health-redis-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = OwnRedis {
            port,
            dir,
            child: None,
        };
        redis.start_again().await;
        redis
    }

    async fn start_again(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", ""])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server (Debian package redis-server; scripts/test installs it)");
        self.child = Some(child);
        wait_up(self.addr(), "redis-server").await;
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    async fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().await.unwrap();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The counter on `store`, on a free port.
async fn counter(store: &str) -> (Child, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(example_binary("counter"))
        .env("ADDR", addr.to_string())
        .env("SESSION_STORE", store)
        .env_remove("SESSION_DRAIN_TO")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_up(addr, "the counter").await;
    (child, addr)
}

/// GET /readyz: (status, Retry-After, how long it took).
async fn readyz(addr: SocketAddr) -> (u16, Option<String>, Duration) {
    let started = Instant::now();
    let reply = request(addr, "GET", "/readyz", None).await;
    let retry_after = reply
        .headers
        .iter()
        .find(|(k, _)| k == "retry-after")
        .map(|(_, v)| v.clone());
    (reply.status, retry_after, started.elapsed())
}

#[tokio::test]
async fn healthz_and_readyz_answer_200_on_the_memory_store_and_touch_no_session() {
    let (child, addr) = counter("memory://").await;
    let health = request(addr, "GET", "/healthz", None).await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    assert!(set_cookie(&health).is_none(), "/healthz set a cookie");
    let ready = request(addr, "GET", "/readyz", None).await;
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    assert!(set_cookie(&ready).is_none(), "/readyz set a cookie");
    // The app itself is still there beside them.
    let visit = request(addr, "GET", "/", None).await;
    assert!(visit.body.starts_with("0 "), "{}", visit.body);
    terminate(child, "the counter").await;
}

/// Readiness follows the store: 200, then 503 with Retry-After within the
/// operation timeout while Redis is frozen (SIGSTOP: it hangs) and while it
/// is dead (refused), and 200 again once it is back. Liveness stays 200
/// throughout.
#[tokio::test]
async fn readyz_is_503_while_redis_is_stopped_and_200_again_when_it_is_back() {
    let mut redis = OwnRedis::start().await;
    let (child, addr) = counter(&format!("redis://{}?timeout=500ms", redis.addr())).await;
    assert_eq!(readyz(addr).await.0, 200);

    // Frozen: the ping hangs, the timeout answers.
    signal(redis.child.as_ref().unwrap(), "STOP").await;
    let (status, retry_after, took) = readyz(addr).await;
    assert_eq!((status, retry_after.as_deref()), (503, Some("1")));
    assert!(
        took < Duration::from_millis(1500),
        "/readyz took {took:?} with a 500 ms operation timeout"
    );
    assert_eq!(request(addr, "GET", "/healthz", None).await.status, 200);
    signal(redis.child.as_ref().unwrap(), "CONT").await;

    // Dead: the ping fails.
    redis.kill().await;
    let (status, retry_after, took) = readyz(addr).await;
    assert_eq!((status, retry_after.as_deref()), (503, Some("1")));
    assert!(took < Duration::from_millis(1500), "/readyz took {took:?}");
    assert_eq!(request(addr, "GET", "/healthz", None).await.status, 200);

    // Back on the same port: ready again without a restart of the app.
    redis.start_again().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, _) = readyz(addr).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {status} 10 s after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    terminate(child, "the counter").await;
}

/// One cluster-demo instance (`cluster --instance NAME --port PORT`) on
/// `store`, with its standard input held open (it stops when that closes).
async fn instance(store: &str, drain_to: Option<&str>) -> (Child, SocketAddr) {
    let port = free_port();
    let mut command = Command::new(example_binary("cluster"));
    command
        .args(["--instance", "t", "--port", &port.to_string()])
        .env("SESSION_STORE", store)
        .env_remove("SESSION_DRAIN_TO")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    if let Some(target) = drain_to {
        command.env("SESSION_DRAIN_TO", target);
    }
    let child = command.spawn().unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_up(addr, "the instance").await;
    (child, addr)
}

/// SIGTERM while `GET /slow` is in flight: new connections are refused at
/// once, the slow request still gets its 200, the process exits cleanly,
/// and `check` finds the request's write in the store.
async fn sigterm_finishes_a_slow_request(store: &str, drain_to: Option<&str>, check_in: &str) {
    let (child, addr) = instance(store, drain_to).await;
    let first = request(addr, "GET", "/", None).await;
    assert!(first.body.starts_with("0 "), "{}", first.body);
    let cookie = set_cookie(&first).expect("a session cookie");
    let in_flight = tokio::spawn({
        let cookie = cookie.clone();
        async move { request(addr, "GET", "/slow?ms=1500", Some(&cookie)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&child, "TERM").await;
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        refused,
        "the instance still accepts connections after SIGTERM"
    );
    assert!(!in_flight.is_finished(), "the slow request ended early");
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.starts_with("1 "), "{}", reply.body);
    let mut child = child;
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
    assert!(
        matches!(status, Ok(Ok(s)) if s.success()),
        "the instance did not stop cleanly: {status:?}"
    );

    let target = StoreConfig::from_url(check_in)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let key = session_core::conformance::http::id_of(&cookie).store_key();
    let record = target
        .load(&key)
        .await
        .unwrap()
        .expect("the session is in the store");
    assert_eq!(
        record.data["visits"], 2,
        "the request in flight at SIGTERM lost its write"
    );
}

fn redis_store(name: &str) -> String {
    format!(
        "{}?prefix={name}-{}:",
        env_or_fail("REDIS_URL"),
        free_port()
    )
}

#[tokio::test]
async fn sigterm_during_a_slow_request_on_redis_finishes_it_and_its_save_is_in_redis() {
    let redis = redis_store("health-sigterm");
    sigterm_finishes_a_slow_request(&redis, None, &redis).await;
}

#[tokio::test]
async fn sigterm_during_a_slow_request_on_memory_drains_its_write_to_session_drain_to() {
    let redis = redis_store("health-drain");
    sigterm_finishes_a_slow_request("memory://", Some(&redis), &redis).await;
}
