//! The contended path: `CLIENTS` parallel clients on ONE session, every
//! request a `get` then `insert` of a counter, spread round-robin over 3 app
//! instances (3 layers, each with its own Redis client) on one Redis; and,
//! in the same run, the same clients each on a session of its own (no
//! contention) as the baseline.
//!
//! Requests go through tower's `oneshot` in-process: no HTTP, no load
//! generator, so what is measured is the layer, the handler and the store.
//! Reported per mode: answered requests per second, the share answered
//! `200`, `409` and `503`, and the handler runs per request (a run beyond
//! the first is a re-run on fresh data). Each mode also checks that the
//! stored counters equal the number of `200` answers.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release -p bench --bin contended -- [CLIENTS] [SECONDS]
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::get;
use http::header::{COOKIE, SET_COOKIE};
use http::{Request, StatusCode};
use session_core::{Session, SessionError, SessionLayer};
use session_redis::RedisStore;
use tower::ServiceExt as _;

const INSTANCES: usize = 3;

async fn incr(
    State(runs): State<Arc<AtomicU64>>,
    session: Session,
) -> Result<String, SessionError> {
    runs.fetch_add(1, Ordering::Relaxed);
    let n: u64 = session.get("n").await?.unwrap_or_default();
    session.insert("n", n + 1).await?;
    Ok((n + 1).to_string())
}

async fn send(app: &Router, cookie: Option<&str>) -> (StatusCode, Option<String>, String) {
    let mut request = Request::get("/incr");
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let pair = response.headers().get(SET_COOKIE).map(|v| {
        let v = v.to_str().expect("ascii");
        v.split(';').next().expect("pair").to_owned()
    });
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .expect("body");
    (status, pair, String::from_utf8_lossy(&body).into_owned())
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    conflict: AtomicU64,
    unavailable: AtomicU64,
}

async fn run(
    apps: &Arc<Vec<Router>>,
    runs: &Arc<AtomicU64>,
    clients: usize,
    seconds: u64,
    shared: bool,
) {
    // One session for all, or one per client.
    let sessions = if shared { 1 } else { clients };
    let mut cookies = Vec::new();
    for i in 0..sessions {
        let (_, pair, _) = send(&apps[i % INSTANCES], None).await;
        cookies.push(pair.expect("a new session"));
    }
    let cookies = Arc::new(cookies);
    let tally = Arc::new(Tally::default());
    runs.store(0, Ordering::SeqCst);
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (apps, cookies, tally) = (apps.clone(), cookies.clone(), tally.clone());
            tokio::spawn(async move {
                let cookie = &cookies[client % cookies.len()];
                let mut i = client;
                while Instant::now() < until {
                    let (status, _, _) = send(&apps[i % INSTANCES], Some(cookie)).await;
                    let counter = match status {
                        StatusCode::OK => &tally.ok,
                        StatusCode::CONFLICT => &tally.conflict,
                        _ => &tally.unavailable,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (ok, conflict, unavailable) = (
        tally.ok.load(Ordering::SeqCst),
        tally.conflict.load(Ordering::SeqCst),
        tally.unavailable.load(Ordering::SeqCst),
    );
    let total = ok + conflict + unavailable;
    let runs = runs.load(Ordering::SeqCst);
    // Every 200 is in the store: the counters add up to 1 + the 200s of each session.
    let mut stored = 0;
    for cookie in cookies.iter() {
        let (_, _, body) = send(&apps[0], Some(cookie)).await;
        stored += body.parse::<u64>().expect("a count") - 2;
    }
    let exact = if stored == ok { "exact" } else { "MISMATCH" };
    println!(
        "{:<28} {:>9.0} req/s  200 {:>5.1}%  409 {:>4.1}%  503 {:>4.1}%  runs/request {:.2}  counts {exact} ({ok} answered, {stored} stored)",
        if shared {
            format!("{clients} clients, ONE session")
        } else {
            format!("{clients} clients, own sessions")
        },
        total as f64 / elapsed,
        100.0 * ok as f64 / total as f64,
        100.0 * conflict as f64 / total as f64,
        100.0 * unavailable as f64 / total as f64,
        runs as f64 / total as f64,
    );
}

#[tokio::main]
async fn main() -> Result<(), bench::BoxError> {
    let mut args = std::env::args().skip(1);
    let clients: usize = args.next().map_or(Ok(32), |a| a.parse())?;
    let seconds: u64 = args.next().map_or(Ok(8), |a| a.parse())?;
    let url = bench::setup::redis_url()?;
    let prefix = format!("contended:{}:", std::process::id());
    let runs = Arc::new(AtomicU64::new(0));
    let apps: Vec<Router> = (0..INSTANCES)
        .map(|_| {
            let store = RedisStore::from_url(url.clone())?.key_prefix(prefix.clone());
            Ok::<_, bench::BoxError>(
                Router::new()
                    .route("/incr", get(incr))
                    .with_state(runs.clone())
                    .layer(SessionLayer::new(store).secure(false)),
            )
        })
        .collect::<Result<_, _>>()?;
    let apps = Arc::new(apps);
    println!("{INSTANCES} instances on Redis, get-then-insert, {seconds} s per mode");
    for round in 1..=3 {
        println!("round {round}");
        run(&apps, &runs, clients, seconds, false).await;
        run(&apps, &runs, clients, seconds, true).await;
    }
    Ok(())
}
