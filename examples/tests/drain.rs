//! The README's move from memory to Redis: a counter on the memory store
//! stopped with `SESSION_DRAIN_TO` set hands its sessions over, and the same
//! counter started on Redis keeps counting for the same cookie.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::{env_or_fail, example_binary, free_port, request, set_cookie};
use tokio::process::{Child, Command};

async fn counter(store: &str, drain_to: Option<&str>) -> (Child, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut command = Command::new(example_binary("counter"));
    command
        .env("ADDR", addr.to_string())
        .env("SESSION_STORE", store)
        .env_remove("SESSION_DRAIN_TO")
        .stdout(Stdio::null())
        .kill_on_drop(true);
    if let Some(target) = drain_to {
        command.env("SESSION_DRAIN_TO", target);
    }
    let child = command.spawn().unwrap();
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return (child, addr);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the counter did not start on {addr}");
}

async fn stop(mut child: Child) {
    let pid = child.id().unwrap().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status().await;
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
    assert!(
        matches!(status, Ok(Ok(s)) if s.success()),
        "the counter did not stop cleanly: {status:?}"
    );
}

#[tokio::test]
async fn memory_sessions_drained_to_redis_at_shutdown_keep_counting() {
    let redis = format!(
        "{}?prefix=drain-test-{}:",
        env_or_fail("REDIS_URL"),
        free_port()
    );

    let (child, addr) = counter("memory://", Some(&redis)).await;
    let first = request(addr, "GET", "/", None).await;
    assert!(first.body.starts_with("0 "), "{}", first.body);
    let cookie = set_cookie(&first).expect("a session cookie");
    let second = request(addr, "GET", "/", Some(&cookie)).await;
    assert!(second.body.starts_with("1 "), "{}", second.body);
    stop(child).await;

    let (child, addr) = counter(&redis, None).await;
    let third = request(addr, "GET", "/", Some(&cookie)).await;
    assert!(
        third.body.starts_with("2 "),
        "the session did not survive the move: {}",
        third.body
    );
    assert!(set_cookie(&third).is_none(), "the cookie changed");
    stop(child).await;
}
