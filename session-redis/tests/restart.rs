//! A Redis restart: while the server is down, session calls fail fast (503
//! with `Retry-After` under the reject policy, within the store timeout);
//! once it is back, requests succeed again without restarting the app.
//!
//! The test starts and stops its own `redis-server`, never a shared one.
#![allow(clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use http::StatusCode;
use http::header::RETRY_AFTER;
use session_core::conformance::http::send;
use session_core::{FailurePolicy, Session, SessionError, SessionLayer};
use session_redis::RedisStore;

const OP_TIMEOUT: Duration = Duration::from_millis(300);

/// A redis-server of this test's own, on a fixed loopback port.
struct Server {
    child: Child,
}

impl Server {
    fn start(port: u16, dir: &Path) -> Self {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): run `scripts/test`, which installs it, \
                     or install the Debian package redis-server"
                )
            });
        let server = Self { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !answers_ping(port) {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn stop(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

async fn count(session: Session) -> Result<String, SessionError> {
    let n: u64 = session
        .update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(n.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_again_after_redis_restarts() {
    let dir = std::env::temp_dir().join(format!("session-redis-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let server = Server::start(port, &dir);

    let store = RedisStore::builder(format!("redis://127.0.0.1:{port}"))
        .connect_timeout(Duration::from_millis(200))
        .response_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let layer = SessionLayer::new(store)
        .op_timeout(OP_TIMEOUT)
        .failure_policy(FailurePolicy::Reject);
    let app = Router::new().route("/count", get(count)).layer(layer);

    let first = send(&app, "/count", None).await;
    assert_eq!(first.status, StatusCode::OK);
    let pair = first.cookie_pair().unwrap();
    assert_eq!(send(&app, "/count", Some(pair.as_bytes())).await.body, "2");

    server.stop();
    // Both an existing session (load) and a new one (create) fail fast.
    for cookie in [Some(pair.as_bytes()), None] {
        let start = Instant::now();
        let reply = send(&app, "/count", cookie).await;
        let waited = start.elapsed();
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.body
        );
        assert_eq!(reply.headers[RETRY_AFTER], "1");
        assert!(
            waited < OP_TIMEOUT + Duration::from_secs(2),
            "a call to a stopped Redis took {waited:?}"
        );
    }

    let _server = Server::start(port, &dir);
    let back = Instant::now();
    loop {
        // The restarted server has no data (no persistence): a fresh session.
        let reply = send(&app, "/count", None).await;
        if reply.status == StatusCode::OK {
            assert_eq!(reply.body, "1");
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(2),
            "still {} two seconds after Redis came back",
            reply.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
