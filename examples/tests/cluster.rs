//! Stateful vs stateless, measured: the `cluster` example (N counter
//! instances behind a real nginx) driven by cookie-keeping clients.
//!
//! Needs nginx (`.ci/run` installs it; elsewhere `apt-get install nginx`) and,
//! for the shared-store cases, the servers `scripts/test` starts (REDIS_URL,
//! REDIS_SENTINEL_URL, DATABASE_URL, MYSQL_URL).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use common::{env_or_fail, example_binary, free_port, request};

/// A running demo: the cluster process, nginx's address and the instances.
struct Demo {
    child: Child,
    front: SocketAddr,
    admin: Option<SocketAddr>,
    instances: Vec<(String, SocketAddr)>,
}

impl Demo {
    async fn start(store: &str, routing: &str) -> Demo {
        let front: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut child = Command::new(example_binary("cluster"))
            .args(["--instances", "3", "--routing", routing])
            .env("ADDR", front.to_string())
            .env("SESSION_STORE", store)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so that a failing test can end nginx
            // and the instances too (see `Drop`).
            .process_group(0)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut instances = Vec::new();
        let mut admin = None;
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line == "ready" {
                    return true;
                }
                // "admin at http://127.0.0.1:40000 (GET/POST /instances, ...)"
                if let Some(rest) = line.strip_prefix("admin at http://") {
                    admin = rest.split(' ').next().and_then(|a| a.parse().ok());
                }
                // "instance 2 at http://127.0.0.1:40001 (kill it: ...)"
                if let Some(rest) = line.strip_prefix("instance ") {
                    let mut words = rest.split(' ');
                    let name = words.next().unwrap().to_owned();
                    let url = words.nth(1).unwrap();
                    instances.push((name, url.trim_start_matches("http://").parse().unwrap()));
                }
            }
            false
        })
        .await;
        if ready != Ok(true) {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err).await;
            panic!(
                "the cluster demo did not start (is nginx installed? apt-get install nginx): {err}"
            );
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Demo {
            child,
            front,
            admin,
            instances,
        }
    }

    /// Crashes an instance through its admin route.
    async fn crash(&self, name: &str) {
        let addr = self.instances.iter().find(|(n, _)| n == name).unwrap().1;
        let reply = request(addr, "POST", "/admin/crash", None).await;
        assert_eq!(reply.status, 200);
        // Wait until it no longer accepts connections.
        for _ in 0..100 {
            if TcpStream::connect(addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("instance {name} still up after /admin/crash");
    }

    async fn stop(mut self) {
        // SIGTERM lets the demo stop nginx and its instances.
        let pid = self.child.id().unwrap().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status().await;
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
        assert!(
            matches!(status, Ok(Ok(s)) if s.success()),
            "the demo did not stop cleanly: {status:?}"
        );
    }
}

/// A test that fails before `stop` must not leave nginx or an instance
/// running: the demo's whole process group is killed.
impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A browser-like client: keeps its cookies.
#[derive(Default)]
struct User {
    jar: Vec<(String, String)>,
}

impl User {
    /// GET / through nginx: (the count the body starts with, the serving instance).
    async fn visit(&mut self, demo: &Demo) -> (u64, String) {
        let cookies = (!self.jar.is_empty()).then(|| {
            self.jar
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        });
        let reply = request(demo.front, "GET", "/", cookies.as_deref()).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        for (name, value) in &reply.headers {
            if name == "set-cookie" {
                let pair = value.split(';').next().unwrap();
                let (k, v) = pair.split_once('=').unwrap();
                self.jar.retain(|(name, _)| name != k);
                if !v.is_empty() {
                    self.jar.push((k.to_owned(), v.to_owned()));
                }
            }
        }
        let count = reply.body.split(' ').next().unwrap().parse().unwrap();
        let instance = reply
            .headers
            .iter()
            .find(|(k, _)| k == "x-instance")
            .map(|(_, v)| v.clone())
            .expect("x-instance header");
        assert!(
            reply
                .body
                .trim_end()
                .ends_with(&format!("instance {instance})")),
            "{}",
            reply.body
        );
        (count, instance)
    }
}

async fn count_rises_by_one_round_robin(store: &str) {
    let demo = Demo::start(store, "round-robin").await;
    let mut user = User::default();
    let mut served_by = std::collections::BTreeSet::new();
    for expected in 0..9 {
        let (count, instance) = user.visit(&demo).await;
        assert_eq!(
            count, expected,
            "the session did not survive round-robin routing"
        );
        served_by.insert(instance);
    }
    assert_eq!(
        served_by.len(),
        3,
        "round-robin should have used every instance"
    );
    demo.stop().await;
}

async fn every_user_keeps_counting_when_an_instance_dies(store: &str) {
    let demo = Demo::start(store, "round-robin").await;
    let mut users: Vec<User> = (0..6).map(|_| User::default()).collect();
    for round in 0..3 {
        for user in &mut users {
            assert_eq!(user.visit(&demo).await.0, round);
        }
    }
    demo.crash("2").await;
    for round in 3..6 {
        for user in &mut users {
            let (count, instance) = user.visit(&demo).await;
            assert_eq!(
                count, round,
                "a user lost their session when instance 2 died"
            );
            assert_ne!(instance, "2");
        }
    }
    demo.stop().await;
}

#[tokio::test]
async fn memory_round_robin_session_does_not_survive_routing() {
    let demo = Demo::start("memory://", "round-robin").await;
    let mut user = User::default();
    let mut counts = Vec::new();
    for _ in 0..9 {
        counts.push(user.visit(&demo).await.0);
    }
    // Each instance only knows the sessions it created, and round-robin
    // sends every request elsewhere: the count keeps starting over.
    assert!(
        counts.iter().all(|&c| c == 0),
        "memory sessions survived round-robin routing: {counts:?}"
    );
    demo.stop().await;
}

#[tokio::test]
async fn memory_sticky_count_rises_by_one_per_request() {
    let demo = Demo::start("memory://", "sticky").await;
    for _ in 0..3 {
        let mut user = User::default();
        let mut instances = std::collections::BTreeSet::new();
        for expected in 0..8 {
            let (count, instance) = user.visit(&demo).await;
            assert_eq!(count, expected, "sticky routing lost the session");
            instances.insert(instance);
        }
        assert_eq!(instances.len(), 1, "a sticky user moved: {instances:?}");
    }
    demo.stop().await;
}

#[tokio::test]
async fn memory_sticky_session_dies_with_its_instance() {
    let demo = Demo::start("memory://", "sticky").await;
    let mut user = User::default();
    let mut home = String::new();
    for expected in 0..3 {
        let (count, instance) = user.visit(&demo).await;
        assert_eq!(count, expected);
        home = instance;
    }
    demo.crash(&home).await;
    let (count, instance) = user.visit(&demo).await;
    assert_ne!(instance, home);
    assert_eq!(count, 0, "the session outlived the instance that held it");
    demo.stop().await;
}

/// The demo's admin interface changes the instances at runtime: an added
/// instance gets round-robin traffic after nginx's reload, a restarted one
/// comes back, a removed one gets no more, and no request fails meanwhile.
#[tokio::test]
async fn the_admin_interface_adds_restarts_and_removes_instances_at_runtime() {
    use std::collections::BTreeSet;
    let demo = Demo::start("memory://", "round-robin").await;
    let admin = demo.admin.expect("the demo printed its admin address");
    let names = |list: &[&str]| {
        list.iter()
            .map(|s| (*s).to_owned())
            .collect::<BTreeSet<_>>()
    };
    let served_by = |demo: &Demo, visits: usize| {
        let front = demo.front;
        async move {
            let mut seen = BTreeSet::new();
            for _ in 0..visits {
                let reply = request(front, "GET", "/", None).await;
                assert_eq!(reply.status, 200, "{}", reply.body);
                let instance = reply.headers.iter().find(|(k, _)| k == "x-instance");
                seen.insert(instance.expect("x-instance").1.clone());
            }
            seen
        }
    };

    let added = request(admin, "POST", "/instances", None).await;
    assert_eq!(added.status, 200, "{}", added.body);
    assert!(
        added.body.starts_with("added 4 http://127.0.0.1:"),
        "{}",
        added.body
    );
    let listed = request(admin, "GET", "/instances", None).await;
    assert_eq!(listed.body.lines().count(), 4, "{}", listed.body);
    assert_eq!(served_by(&demo, 8).await, names(&["1", "2", "3", "4"]));

    let restarted = request(admin, "POST", "/instances/2/restart", None).await;
    assert_eq!(
        (restarted.status, restarted.body.as_str()),
        (200, "restarted 2\n")
    );
    assert_eq!(served_by(&demo, 8).await, names(&["1", "2", "3", "4"]));

    let removed = request(admin, "DELETE", "/instances/4", None).await;
    assert_eq!(
        (removed.status, removed.body.as_str()),
        (200, "removed 4\n")
    );
    assert_eq!(served_by(&demo, 9).await, names(&["1", "2", "3"]));
    assert_eq!(
        request(admin, "DELETE", "/instances/4", None).await.status,
        409
    );
    demo.stop().await;
}

/// A fresh name for this run's keys or schema, so a shared server is never disturbed.
fn fresh(prefix: &str) -> String {
    format!("{prefix}{}", free_port())
}

fn redis_store() -> String {
    format!(
        "{}?prefix={}:",
        env_or_fail("REDIS_URL"),
        fresh("cluster-test-")
    )
}

/// The primary behind the sentinels of `REDIS_SENTINEL_URL`, each write
/// confirmed by every replica Sentinel may promote (`durable=all`, said out
/// loud though it is the default).
fn sentinel_store() -> String {
    format!(
        "{}?durable=all&prefix={}:",
        env_or_fail("REDIS_SENTINEL_URL"),
        fresh("cluster-test-")
    )
}

fn postgres_store() -> String {
    let url = env_or_fail("DATABASE_URL");
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}schema={}", fresh("cluster_test_"))
}

#[tokio::test]
async fn redis_round_robin_count_rises_by_one_per_request() {
    count_rises_by_one_round_robin(&redis_store()).await;
}

#[tokio::test]
async fn redis_round_robin_kill_one_instance_every_user_keeps_counting() {
    every_user_keeps_counting_when_an_instance_dies(&redis_store()).await;
}

#[tokio::test]
async fn sentinel_round_robin_count_rises_by_one_per_request() {
    count_rises_by_one_round_robin(&sentinel_store()).await;
}

#[tokio::test]
async fn sentinel_round_robin_kill_one_instance_every_user_keeps_counting() {
    every_user_keeps_counting_when_an_instance_dies(&sentinel_store()).await;
}

fn mysql_store() -> String {
    let url = env_or_fail("MYSQL_URL");
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}database={}", fresh("cluster_test_"))
}

#[tokio::test]
async fn postgres_round_robin_count_rises_by_one_per_request() {
    count_rises_by_one_round_robin(&postgres_store()).await;
}

#[tokio::test]
async fn postgres_round_robin_kill_one_instance_every_user_keeps_counting() {
    every_user_keeps_counting_when_an_instance_dies(&postgres_store()).await;
}

#[tokio::test]
async fn mysql_round_robin_count_rises_by_one_per_request() {
    count_rises_by_one_round_robin(&mysql_store()).await;
}

#[tokio::test]
async fn mysql_round_robin_kill_one_instance_every_user_keeps_counting() {
    every_user_keeps_counting_when_an_instance_dies(&mysql_store()).await;
}
