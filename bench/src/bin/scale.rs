//! `scale`: how sessions scale in memory, in Redis, and in a Postgres table
//! being swept. Run by hand; writes the `scale` section of `BENCHMARKS.md`.
//!
//! ```text
//! cargo run --release -p bench --bin scale -- [memory] [redis] [postgres] [options]
//!   --sessions N      memory: sessions created (default 1000000)
//!   --redis-keys N    redis: sessions created per store (default 20000)
//!   --expired N       postgres: expired rows the sweeper deletes (default 1000000)
//!   --out PATH        markdown file whose `scale` section is rewritten
//!                     (default BENCHMARKS.md at the workspace root)
//!   --no-write        print only
//! ```
//!
//! - memory: each store in a fresh child process; resident memory (from
//!   `/proc/self/statm`) before and after creating N sessions holding one
//!   counter, divided by N.
//! - redis (`$REDIS_URL`): `MEMORY USAGE` of session keys written by our
//!   store and by tower-sessions' fred store, and the growth of `used_memory`.
//! - postgres (`$DATABASE_URL`): N expired rows in a table of ours, then
//!   `spawn_sweeper` deletes them while tasks keep loading and saving live
//!   sessions; latency of those calls before and during the sweep.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bench::app::COUNTER;
use bench::{BoxError, sys};
use serde_json::Value;
use session_core::record::now;
use session_core::{Expiry, Id, Record, SaveOutcome, SessionStore, StoreKey};
use tokio::sync::Mutex;

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let [cmd, n] = args.as_slice()
        && let Some(which) = cmd.strip_prefix("memory-child=")
    {
        return runtime.block_on(memory_child(which, n.parse()?));
    }
    runtime.block_on(run(args))
}

struct Options {
    parts: Vec<String>,
    sessions: u64,
    redis_keys: u64,
    expired: u64,
    out: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Options, BoxError> {
    let mut o = Options {
        parts: Vec::new(),
        sessions: 1_000_000,
        redis_keys: 20_000,
        expired: 1_000_000,
        out: Some(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../BENCHMARKS.md"
        ))),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut num = || -> Result<u64, BoxError> {
            Ok(it.next().ok_or(format!("{arg} needs a value"))?.parse()?)
        };
        match arg.as_str() {
            "memory" | "redis" | "postgres" => o.parts.push(arg.clone()),
            "--sessions" => o.sessions = num()?,
            "--redis-keys" => o.redis_keys = num()?,
            "--expired" => o.expired = num()?,
            "--out" => o.out = Some(PathBuf::from(it.next().ok_or("--out needs a value")?)),
            "--no-write" => o.out = None,
            other => return Err(format!("unknown option {other:?}").into()),
        }
    }
    if o.parts.is_empty() {
        o.parts = vec!["memory".into(), "redis".into(), "postgres".into()];
    }
    Ok(o)
}

async fn run(args: Vec<String>) -> Result<(), BoxError> {
    use std::fmt::Write as _;
    let o = parse(&args)?;
    let mut s = String::new();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    let _ = writeln!(s, "### Scale\n");
    let _ = writeln!(
        s,
        "- Command: `cargo run --release -p bench --bin scale --{}{}`",
        if args.is_empty() { "" } else { " " },
        args.join(" ")
    );
    let _ = writeln!(s, "- Date: {}", date.trim());
    let _ = writeln!(s, "- Machine: {} cores (nproc)\n", sys::cpus());
    for part in &o.parts {
        match part.as_str() {
            "memory" => memory(&o, &mut s).await?,
            "redis" => match bench::setup::redis_url() {
                Ok(url) => redis(&o, &url, &mut s).await?,
                Err(e) => eprintln!("skipping redis: {e}"),
            },
            _ => match bench::setup::database_url() {
                Ok(url) => postgres(&o, &url, &mut s).await?,
                Err(e) => eprintln!("skipping postgres: {e}"),
            },
        }
    }
    println!("{s}");
    if let Some(path) = &o.out {
        bench::write_section(path, "scale", &s)?;
        eprintln!("wrote the scale section of {}", path.display());
    }
    Ok(())
}

/// A fresh record holding the counter, as `/write` leaves it.
fn our_record() -> Record {
    let mut record = Record::new(now(), &Expiry::default());
    record.data.insert(COUNTER.to_owned(), Value::from(1u64));
    record
}

fn ts_record() -> tower_sessions::session::Record {
    let mut data = HashMap::new();
    data.insert(COUNTER.to_owned(), Value::from(1u64));
    tower_sessions::session::Record {
        id: tower_sessions::session::Id::default(),
        data,
        expiry_date: tower_sessions::cookie::time::OffsetDateTime::now_utc()
            + tower_sessions::cookie::time::Duration::days(14),
    }
}

fn new_key() -> Result<StoreKey, BoxError> {
    Ok(Id::random()?.store_key())
}

// ---- memory ----

const MEMORY_STORES: [&str; 3] = ["ours", "tower-sessions-moka", "tower-sessions-memory"];

async fn memory(o: &Options, s: &mut String) -> Result<(), BoxError> {
    use std::fmt::Write as _;
    let _ = writeln!(
        s,
        "#### Memory store: resident bytes per session at {} sessions\n",
        o.sessions
    );
    let _ = writeln!(
        s,
        "Each store in a fresh process; RSS from `/proc/self/statm` before and after creating the sessions (each holding one counter; ids drawn before the first reading), divided by the count. Includes the allocator's overhead.\n"
    );
    let _ = writeln!(
        s,
        "| store | sessions held | RSS growth | bytes / session | create time |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    let exe = std::env::current_exe()?;
    for which in MEMORY_STORES {
        eprintln!("memory: {which}...");
        let out = tokio::process::Command::new(&exe)
            .arg(format!("memory-child={which}"))
            .arg(o.sessions.to_string())
            .output()
            .await?;
        let line = String::from_utf8(out.stdout)?;
        let f: Vec<&str> = line.split_whitespace().collect();
        let [held, grown, secs] = f.as_slice() else {
            return Err(format!(
                "memory child {which} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        };
        let grown: u64 = grown.parse()?;
        let _ = writeln!(
            s,
            "| {which} | {held} | {:.0} MiB | {} | {secs} s |",
            grown as f64 / (1024.0 * 1024.0),
            grown / o.sessions.max(1)
        );
    }
    let _ = writeln!(s);
    Ok(())
}

/// In a fresh process: creates `n` sessions in one store and prints
/// `held rss_growth_bytes seconds`.
async fn memory_child(which: &str, n: u64) -> Result<(), BoxError> {
    use tower_sessions::SessionStore as _;
    // Our keys are drawn before the first reading (the store keeps its own copies).
    let keys: Vec<StoreKey> = if which == "ours" {
        (0..n).map(|_| new_key()).collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    let before = sys::rss_bytes().ok_or("no /proc/self/statm")?;
    let start = Instant::now();
    // Each arm measures while its store is alive.
    let (held, after) = match which {
        "ours" => {
            let store = session_memory::MemoryStore::with_capacity(n.max(1));
            for key in &keys {
                store.create(key, &our_record()).await?;
            }
            settle().await;
            (store.len(), sys::rss_bytes())
        }
        "tower-sessions-moka" => {
            let store = tower_sessions_moka_store::MokaStore::new(Some(n.max(1)));
            for _ in 0..n {
                store.create(&mut ts_record()).await?;
            }
            settle().await;
            (n, sys::rss_bytes())
        }
        "tower-sessions-memory" => {
            let store = tower_sessions::MemoryStore::default();
            for _ in 0..n {
                store.create(&mut ts_record()).await?;
            }
            (n, sys::rss_bytes())
        }
        other => return Err(format!("unknown memory store {other:?}").into()),
    };
    let secs = start.elapsed().as_secs_f64();
    let after = after.ok_or("no /proc/self/statm")?;
    println!("{held} {} {secs:.1}", after.saturating_sub(before));
    Ok(())
}

/// Lets moka's housekeeping (run on later calls and by its own timer) settle.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

// ---- redis ----

async fn redis(o: &Options, url: &str, s: &mut String) -> Result<(), BoxError> {
    use std::fmt::Write as _;
    use tower_sessions::SessionStore as _;
    use tower_sessions_redis_store::fred::prelude::{ClientLike as _, Config, Pool};
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let n = o.redis_keys;
    let _ = writeln!(s, "#### Redis: memory per session\n");
    let _ = writeln!(
        s,
        "{n} sessions written by each store (one counter each, no principal). `MEMORY USAGE` (SAMPLES 0) averaged over all of a store's keys; `used_memory` growth over the whole batch, per session.\n"
    );
    let _ = writeln!(
        s,
        "| store | key | MEMORY USAGE / key | used_memory growth / session |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|");

    // Ours.
    let prefix = "bench:scale:";
    let ours = session_redis::RedisStore::from_url(url)?.key_prefix(prefix);
    let before = used_memory(&mut conn).await?;
    let mut our_keys = Vec::new();
    for _ in 0..n {
        let key = new_key()?;
        ours.create(&key, &our_record()).await?;
        our_keys.push(ours.record_key(&key));
    }
    let after = used_memory(&mut conn).await?;
    let usage = memory_usage(&mut conn, &our_keys).await?;
    let _ = writeln!(
        s,
        "| ours (string: format-2 header + JSON) | `{prefix}s:<43-char key>` | {usage:.0} B | {:.0} B |",
        after.saturating_sub(before) as f64 / n as f64
    );
    let _: () = redis::cmd("DEL")
        .arg(&our_keys)
        .query_async(&mut conn)
        .await?;

    // tower-sessions (fred).
    let pool = Pool::new(Config::from_url(url)?, None, None, None, 2)?;
    pool.init().await?;
    let ts = tower_sessions_redis_store::RedisStore::new(pool);
    let before = used_memory(&mut conn).await?;
    let mut ts_keys = Vec::new();
    for _ in 0..n {
        let mut record = ts_record();
        ts.create(&mut record).await?;
        ts_keys.push(record.id.to_string());
    }
    let after = used_memory(&mut conn).await?;
    let usage = memory_usage(&mut conn, &ts_keys).await?;
    let _ = writeln!(
        s,
        "| tower-sessions (string, MessagePack) | `<22-char id>` | {usage:.0} B | {:.0} B |\n",
        after.saturating_sub(before) as f64 / n as f64
    );
    let _: () = redis::cmd("DEL")
        .arg(&ts_keys)
        .query_async(&mut conn)
        .await?;
    Ok(())
}

async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> Result<u64, BoxError> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "no used_memory in INFO".into())
}

async fn memory_usage(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &[String],
) -> Result<f64, BoxError> {
    let mut total = 0u64;
    for key in keys {
        let bytes: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(conn)
            .await?;
        total += bytes.unwrap_or(0);
    }
    Ok(total as f64 / keys.len().max(1) as f64)
}

// ---- postgres ----

/// Live sessions the concurrent load uses, and the tasks running it.
const LIVE: usize = 1000;
const TASKS: usize = 16;

#[derive(Default)]
struct Latencies {
    loads: Vec<u32>,
    saves: Vec<u32>,
}

fn pct(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len());
    f64::from(v[i - 1]) / 1000.0
}

async fn postgres(o: &Options, url: &str, s: &mut String) -> Result<(), BoxError> {
    use std::fmt::Write as _;
    let pool = session_postgres::PostgresStore::pool_options()
        .max_connections(bench::setup::PG_POOL_SIZE + 2)
        .connect(url)
        .await?;
    let store = session_postgres::PostgresStore::builder(pool.clone())
        .table("bench_sweep")
        .build()?;
    store.migrate().await?;
    sqlx::raw_sql("TRUNCATE bench_sweep").execute(&pool).await?;

    eprintln!("postgres: inserting {} expired rows...", o.expired);
    let start = Instant::now();
    // The columns of session-postgres' migration; expired an hour ago.
    sqlx::query(
        "INSERT INTO bench_sweep (key, format, version, data, principal, created_at, last_access, \
         idle_deadline, absolute_deadline, idle_timeout_ms, persistent, expires_at) \
         SELECT 'expired-' || i, 1, 1, '{\"n\":1}'::json, NULL, now() - interval '2 days', \
         now() - interval '1 day', now() - interval '1 hour', now() + interval '5 days', \
         86400000, false, now() - interval '1 hour' FROM generate_series(1, $1) AS i",
    )
    .bind(i64::try_from(o.expired)?)
    .execute(&pool)
    .await?;
    sqlx::raw_sql("ANALYZE bench_sweep").execute(&pool).await?;
    let insert_secs = start.elapsed().as_secs_f64();

    let mut keys = Vec::with_capacity(LIVE);
    for _ in 0..LIVE {
        let key = new_key()?;
        store.create(&key, &our_record()).await?;
        keys.push(key);
    }
    let keys = Arc::new(keys);
    let phase = Arc::new(Mutex::new(Latencies::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (store, keys, phase, stop) = (store.clone(), keys.clone(), phase.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while !stop.load(Ordering::Relaxed) {
                let key = &keys[i % keys.len()];
                i += TASKS;
                let t0 = Instant::now();
                let Ok(Some(mut record)) = store.load(key).await else {
                    continue;
                };
                let load = t0.elapsed().as_micros();
                let mut save = None;
                // One call in four is a write: load, then a compare-and-set save.
                if i % 4 == 0 {
                    let version = record.version;
                    record.version += 1;
                    let t1 = Instant::now();
                    if let Ok(SaveOutcome::Saved) = store.save(key, &record, version).await {
                        save = Some(t1.elapsed().as_micros());
                    }
                }
                let mut l = phase.lock().await;
                l.loads.push(u32::try_from(load).unwrap_or(u32::MAX));
                if let Some(save) = save {
                    l.saves.push(u32::try_from(save).unwrap_or(u32::MAX));
                }
            }
        }));
    }

    // Baseline, then the sweep, under the same load.
    let baseline_time = Duration::from_secs(5);
    tokio::time::sleep(baseline_time).await;
    let mut baseline = std::mem::take(&mut *phase.lock().await);
    eprintln!("postgres: sweeping...");
    let sweep_start = Instant::now();
    let sweeper = store.spawn_sweeper(
        Duration::from_secs(3600),
        session_postgres::DEFAULT_SWEEP_BATCH,
    );
    while sweeper.deleted() < o.expired && sweep_start.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sweep_time = sweep_start.elapsed();
    let mut during = std::mem::take(&mut *phase.lock().await);
    let deleted = sweeper.deleted();
    let failures = sweeper.failures();
    sweeper.stop().await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM bench_sweep WHERE expires_at <= now()")
            .fetch_one(&pool)
            .await?;

    let _ = writeln!(
        s,
        "#### Postgres: the sweeper deleting {} expired rows under load\n",
        o.expired
    );
    let _ = writeln!(
        s,
        "{} expired rows inserted with one `INSERT .. SELECT generate_series` ({insert_secs:.1} s), {LIVE} live sessions; {TASKS} tasks call our store directly in a loop: `load`, and in one call of four a compare-and-set `save` after it (pool of {} connections). 5 s of baseline, then `spawn_sweeper(1 h, {})` runs until every expired row is gone.\n",
        o.expired,
        bench::setup::PG_POOL_SIZE + 2,
        session_postgres::DEFAULT_SWEEP_BATCH
    );
    let _ = writeln!(
        s,
        "Sweep: {deleted} rows deleted in {:.1} s ({:.0} rows/s), {failures} failed sweeps, {left} expired rows left.\n",
        sweep_time.as_secs_f64(),
        deleted as f64 / sweep_time.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "| phase | loads/s | load p50 ms | load p99 ms | load max ms | save p50 ms | save p99 ms |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    for (name, l, secs) in [
        ("baseline", &mut baseline, baseline_time.as_secs_f64()),
        ("during sweep", &mut during, sweep_time.as_secs_f64()),
    ] {
        let rate = l.loads.len() as f64 / secs;
        let _ = writeln!(
            s,
            "| {name} | {rate:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            pct(&mut l.loads, 0.5),
            pct(&mut l.loads, 0.99),
            pct(&mut l.loads, 1.0),
            pct(&mut l.saves, 0.5),
            pct(&mut l.saves, 0.99),
        );
    }
    let _ = writeln!(s);
    sqlx::raw_sql("TRUNCATE bench_sweep").execute(&pool).await?;
    Ok(())
}
