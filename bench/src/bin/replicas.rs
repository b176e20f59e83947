//! Postgres with streaming replicas: read throughput with
//! `read_from=replicas` against primary-only, and the write cost of
//! synchronous commit.
//!
//! Requests go through tower's `oneshot` in-process (no HTTP, no load
//! generator): `CLIENTS` clients, each with a session of its own, keep
//! sending `/read` (or `/write`, a `get` then `insert`) for `SECONDS` per
//! mode; each client keeps the cookie its answers set, as a browser does.
//!
//! - Reads: primary only (`PostgresStore::new`), then with the replicas of
//!   `DATABASE_REPLICAS` as read replicas; the share of loads the replicas
//!   served is printed.
//! - Writes: `synchronous_commit` `off` (the test servers' default), `local`
//!   and `on` on the store's connections, with the primary's
//!   `synchronous_standby_names` set to `'*'` for the run (one replica a
//!   synchronous standby) and reset afterwards. Run it on throwaway servers
//!   only: it changes the primary's configuration while it runs.
//!
//! ```text
//! bash -c '. scripts/lib/common.sh; . scripts/lib/postgres.sh; trap run_cleanups EXIT;
//!   start_postgres; start_postgres_replicas 2;
//!   cargo run --release -p bench --bin replicas -- [CLIENTS] [SECONDS]'
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use http::header::{COOKIE, SET_COOKIE};
use http::{Request, StatusCode};
use session_core::SessionStore;
use session_postgres::sqlx::postgres::PgConnectOptions;
use session_postgres::sqlx::{self, PgPool};
use session_postgres::{PostgresStore, ReadFrom};
use tower::ServiceExt as _;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const POOL: u32 = 10;

async fn send(app: &Router, path: &str, cookie: Option<&str>) -> (StatusCode, Option<String>) {
    let mut request = Request::get(path);
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
    let _ = axum::body::to_bytes(response.into_body(), 1 << 16).await;
    (status, pair)
}

/// `clients` clients on `app`, each creating its session and then sending
/// `path` for `seconds`: the requests answered 200 per second, and the others.
async fn drive(app: &Router, path: &'static str, clients: usize, seconds: u64) -> (f64, u64) {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut cookies = Vec::new();
    for _ in 0..clients {
        let (status, pair) = send(app, "/write", None).await;
        assert_eq!(status, StatusCode::OK, "creating a session");
        cookies.push(pair.expect("a cookie"));
    }
    // Let the replicas replay the new sessions (asynchronous commit).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds);
    let tasks: Vec<_> = cookies
        .into_iter()
        .map(|mut cookie| {
            let (app, ok, failed) = (app.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    let (status, pair) = send(&app, path, Some(&cookie)).await;
                    if status == StatusCode::OK {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(pair) = pair {
                        cookie = pair;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
    let elapsed = start.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let rate = ok.load(Ordering::Relaxed) as f64 / elapsed;
    (rate, failed.load(Ordering::Relaxed))
}

fn app(store: impl SessionStore) -> Router {
    bench::app::ours(store)
}

async fn pool(options: PgConnectOptions) -> Result<PgPool, BoxError> {
    Ok(PostgresStore::pool_options()
        .max_connections(POOL)
        .connect_with(options)
        .await?)
}

async fn migrated(
    builder: session_postgres::PostgresStoreBuilder,
) -> Result<PostgresStore, BoxError> {
    let store = builder.schema("bench_replicas").build()?;
    store.migrate().await?;
    Ok(store)
}

async fn set_standbys(primary: &PgPool, value: &str) -> Result<(), BoxError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER SYSTEM SET synchronous_standby_names = '{value}'"
    )))
    .execute(primary)
    .await?;
    sqlx::query("SELECT pg_reload_conf()")
        .execute(primary)
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let clients: usize = args.next().map_or(Ok(32), |a| a.parse())?;
    let seconds: u64 = args.next().map_or(Ok(5), |a| a.parse())?;
    let url = std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL is not set")?;
    let replicas =
        std::env::var("DATABASE_REPLICAS").map_err(|_| "DATABASE_REPLICAS is not set")?;
    let primary: PgConnectOptions = url.parse()?;
    let replica_options: Vec<PgConnectOptions> = replicas
        .split(',')
        .map(|address| {
            let (host, port) = address.rsplit_once(':').expect("host:port");
            primary
                .clone()
                .host(host)
                .port(port.parse().expect("a port"))
        })
        .collect();
    println!("{clients} clients, {seconds} s per mode, pools of {POOL}");

    // Reads.
    let only = migrated(PostgresStore::builder(pool(primary.clone()).await?)).await?;
    let (rate, failed) = drive(&app(only.clone()), "/read", clients, seconds).await;
    println!("read, primary only: {rate:.0} req/s ({failed} failed)");
    let mut replica_pools = Vec::new();
    for options in &replica_options {
        replica_pools.push(pool(options.clone()).await?);
    }
    let replicated = migrated(
        PostgresStore::builder(pool(primary.clone()).await?)
            .replicas(replica_pools)
            .read_from(ReadFrom::Replicas),
    )
    .await?;
    let (rate, failed) = drive(&app(replicated.clone()), "/read", clients, seconds).await;
    let reads = replicated.replica_reads();
    println!(
        "read, read_from=replicas ({} replicas): {rate:.0} req/s ({failed} failed); \
         {} loads by a replica, {} by the primary ({:.0}% replica)",
        replica_options.len(),
        reads.replica,
        reads.primary,
        100.0 * reads.replica_share()
    );

    // Writes.
    let admin = pool(primary.clone()).await?;
    set_standbys(&admin, "*").await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let state: Vec<String> = sqlx::query_scalar("SELECT sync_state FROM pg_stat_replication")
        .fetch_all(&admin)
        .await?;
    println!("standbys: {state:?}");
    for level in ["off", "local", "on", "remote_apply"] {
        let options = primary.clone().options([("synchronous_commit", level)]);
        let store = migrated(PostgresStore::builder(pool(options).await?)).await?;
        let (rate, failed) = drive(&app(store), "/write", clients, seconds).await;
        println!("write, synchronous_commit={level}: {rate:.0} req/s ({failed} failed)");
    }
    set_standbys(&admin, "").await?;
    Ok(())
}
