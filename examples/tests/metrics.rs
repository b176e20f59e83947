//! `GET /metrics` on the counter example's process: the session layer's
//! series in Prometheus text, with the counts the requests before imply,
//! and no session id in them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::{example_binary, free_port, request, set_cookie};
use tokio::process::Command;

#[tokio::test]
async fn counter_serves_session_series_at_metrics() {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = Command::new(example_binary("counter"))
        .env("ADDR", addr.to_string())
        .env("SESSION_STORE", "memory://")
        .env_remove("SESSION_DRAIN_TO")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "the counter did not start on {addr}");

    let first = request(addr, "GET", "/", None).await;
    assert!(first.body.starts_with("0 "), "{}", first.body);
    let cookie = set_cookie(&first).expect("a session cookie");
    for n in 1..=2 {
        let reply = request(addr, "GET", "/", Some(&cookie)).await;
        assert!(reply.body.starts_with(&format!("{n} ")), "{}", reply.body);
    }

    let metrics = request(addr, "GET", "/metrics", None).await;
    assert_eq!(metrics.status, 200);
    assert!(
        set_cookie(&metrics).is_none(),
        "a scrape touches no session"
    );
    let text = metrics.body;
    for line in [
        r#"session_creates_total{backend="memory",outcome="created"} 1"#,
        r#"session_loads_total{backend="memory",outcome="hit"} 2"#,
        r#"session_saves_total{backend="memory",outcome="saved"} 2"#,
        r#"session_store_call_seconds_count{backend="memory",op="load"} 2"#,
        r#"session_size_bytes_count{backend="memory"} 3"#,
        "session_memory_sessions ",
        "# HELP session_loads_total ",
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
    let id = cookie.split_once('=').unwrap().1;
    assert!(!text.contains(id), "the session id in the metrics:\n{text}");

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .await;
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
    assert!(matches!(status, Ok(Ok(s)) if s.success()), "{status:?}");
}
