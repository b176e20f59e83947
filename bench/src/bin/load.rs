//! `load`: the load benchmark. Serves the same app with every variant (our
//! layer, tower-sessions, raw store calls, no layer) on every backend, one
//! server process at a time on a loopback port, and drives it with goose:
//! virtual users each with their own cookie jar. Variants alternate within
//! each backend x mix so that drift on a shared machine hits them alike.
//!
//! ```text
//! cargo run --release -p bench --bin load -- [options]
//!   --duration SECS     measured seconds per cell (default 10)
//!   --warmup SECS       seconds run and discarded once all users started (default 2)
//!   --users N           virtual users = distinct sessions (default 1000)
//!   --rounds N          times each cell runs, alternating variants (default 1)
//!   --backends LIST     memory,redis,postgres,mysql (default: all)
//!   --mixes LIST        read,write,new,untouched (default: all)
//!   --variants LIST     ours,tower-sessions,raw,bare (default: all that apply)
//!   --server-threads N  tokio workers of the server (default 1)
//!   --server-cpus LIST  taskset CPU list of the server (default 1)
//!   --load-cpus LIST    taskset CPU list of the load generator (default 0)
//!   --no-pin            no taskset
//!   --out PATH          markdown file whose `load` section is rewritten
//!                       (default BENCHMARKS.md at the workspace root)
//!   --no-write          print the table only
//! ```
//!
//! Redis needs `$REDIS_URL`, Postgres `$DATABASE_URL`, MySQL `$MYSQL_URL`; a backend whose URL is
//! missing is skipped. The internal `serve BACKEND VARIANT` subcommand is the
//! server process.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bench::app::NO_SESSION;
use bench::setup::{Backend, Variant};
use bench::{BoxError, sys};
use goose::client::GooseClientBuilder;
use goose::config::GooseConfiguration;
use goose::prelude::*;
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// What the virtual users do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mix {
    /// `/read` with a session (created by one `/write` when the user starts).
    Read,
    /// `/write` (counter increment) with a session.
    Write,
    /// `/write` from clients without cookies: every request creates a session.
    New,
    /// `/untouched` with a session cookie: the layer runs, the session is never used.
    Untouched,
}

impl Mix {
    const ALL: [Mix; 4] = [Mix::Read, Mix::Write, Mix::New, Mix::Untouched];

    fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::New => "new",
            Self::Untouched => "untouched",
        }
    }

    /// The variants compared in this mix: raw store calls are the yardstick
    /// of a session access, no layer at all that of the untouched route.
    fn variants(self) -> &'static [Variant] {
        match self {
            Self::Untouched => &[Variant::Ours, Variant::TowerSessions, Variant::Bare],
            _ => &[Variant::Ours, Variant::TowerSessions, Variant::Raw],
        }
    }
}

struct Options {
    duration: u64,
    warmup: u64,
    users: usize,
    rounds: usize,
    backends: Vec<Backend>,
    mixes: Vec<Mix>,
    variants: Vec<Variant>,
    server_threads: usize,
    server_cpus: String,
    load_cpus: String,
    pin: bool,
    out: Option<PathBuf>,
}

fn list<T>(value: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    value.split(',').map(|s| parse(s.trim())).collect()
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        duration: 10,
        warmup: 2,
        users: 1000,
        rounds: 1,
        backends: Backend::ALL.to_vec(),
        mixes: Mix::ALL.to_vec(),
        variants: Variant::ALL.to_vec(),
        server_threads: 1,
        server_cpus: "1".to_owned(),
        load_cpus: "0".to_owned(),
        pin: true,
        out: Some(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../BENCHMARKS.md"
        ))),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{arg} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{arg}: {e}"));
        match arg.as_str() {
            "--duration" => o.duration = num(value()?)?.max(1),
            "--warmup" => o.warmup = num(value()?)?,
            "--users" => o.users = num(value()?)?.max(1) as usize,
            "--rounds" => o.rounds = num(value()?)?.max(1) as usize,
            "--server-threads" => o.server_threads = num(value()?)?.max(1) as usize,
            "--backends" => o.backends = list(&value()?, |s| s.parse())?,
            "--variants" => o.variants = list(&value()?, |s| s.parse())?,
            "--mixes" => {
                o.mixes = list(&value()?, |s| {
                    Mix::ALL
                        .into_iter()
                        .find(|m| m.name() == s)
                        .ok_or_else(|| format!("unknown mix {s:?}"))
                })?
            }
            "--server-cpus" => o.server_cpus = value()?,
            "--load-cpus" => o.load_cpus = value()?,
            "--no-pin" => o.pin = false,
            "--out" => o.out = Some(PathBuf::from(value()?)),
            "--no-write" => o.out = None,
            other => {
                return Err(format!(
                    "unknown option {other:?} (see the doc comment of load.rs)"
                ));
            }
        }
    }
    Ok(o)
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        return serve(&args[1..]);
    }
    let options = parse_options(&args)?;
    let cpus = sys::cpus();
    let pinned = options.pin && cpus >= 2 && taskset_self(&options.load_cpus);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(run(options, args, cpus, pinned))
}

/// Pins this process (still single-threaded: every later thread inherits
/// it) to `cpus`. False when taskset is missing or fails.
fn taskset_self(cpus: &str) -> bool {
    std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The server process: builds the app, prints `listening ADDR`, serves until killed.
fn serve(args: &[String]) -> Result<(), BoxError> {
    let [backend, variant, rest @ ..] = args else {
        return Err("usage: load serve BACKEND VARIANT [THREADS|default]".into());
    };
    let backend: Backend = backend.parse()?;
    let variant: Variant = variant.parse()?;
    // THREADS: tokio workers, or `default` for `#[tokio::main]`'s (one per core).
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    match rest.first().map(String::as_str) {
        Some("default") => {}
        threads => {
            builder.worker_threads(threads.and_then(|t| t.parse().ok()).unwrap_or(1));
        }
    }
    let runtime = builder.enable_all().build()?;
    runtime.block_on(async move {
        let app = bench::setup::build(backend, variant).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening {}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        Ok(())
    })
}

// ---- what the virtual users record ----

/// Per-cell recording shared by all virtual users (they run on one thread;
/// the lock is uncontended).
struct Recorder {
    epoch: Instant,
    users: usize,
    started: usize,
    all_started: Option<Instant>,
    /// (completion time since epoch, latency), microseconds.
    samples: Vec<(u32, u32)>,
    errors: u64,
    /// `/read` answered without a session: a lost session, counted apart.
    misses: u64,
    first_error: Option<String>,
}

static RECORDER: Mutex<Option<Recorder>> = Mutex::new(None);

fn with_recorder<T>(f: impl FnOnce(&mut Recorder) -> T) -> Option<T> {
    let mut guard = RECORDER.lock().unwrap_or_else(|e| e.into_inner());
    guard.as_mut().map(f)
}

enum Outcome {
    Ok,
    Miss,
    Error(String),
}

async fn request(user: &mut GooseUser, path: &str, needs_session: bool) -> Outcome {
    let response = match user.get(path).await {
        Ok(response) => response.response,
        Err(error) => return Outcome::Error(error.to_string()),
    };
    match response {
        Ok(response) => {
            let status = response.status();
            match response.text().await {
                Ok(body) if !status.is_success() => Outcome::Error(format!("{status}: {body}")),
                Ok(body) if needs_session && body == NO_SESSION => Outcome::Miss,
                Ok(_) => Outcome::Ok,
                Err(error) => Outcome::Error(error.to_string()),
            }
        }
        Err(error) => Outcome::Error(error.to_string()),
    }
}

async fn timed(user: &mut GooseUser, path: &str, needs_session: bool) -> TransactionResult {
    let start = Instant::now();
    let outcome = request(user, path, needs_session).await;
    let done = Instant::now();
    with_recorder(|r| match outcome {
        Outcome::Ok => {
            let at = done.duration_since(r.epoch).as_micros();
            let latency = done.duration_since(start).as_micros();
            r.samples.push((
                u32::try_from(at).unwrap_or(u32::MAX),
                u32::try_from(latency).unwrap_or(u32::MAX),
            ));
        }
        Outcome::Miss => r.misses += 1,
        Outcome::Error(error) => {
            r.errors += 1;
            r.first_error.get_or_insert(error);
        }
    });
    Ok(())
}

fn mark_started() {
    with_recorder(|r| {
        r.started += 1;
        if r.started == r.users {
            r.all_started = Some(Instant::now());
        }
    });
}

/// On start: one `/write` to create the user's session (kept in its cookie jar).
async fn start_with_session(user: &mut GooseUser) -> TransactionResult {
    // Not recorded: it happens before measuring starts.
    let _ = request(user, "/write", false).await;
    mark_started();
    Ok(())
}

async fn start_without_session(_user: &mut GooseUser) -> TransactionResult {
    mark_started();
    Ok(())
}

async fn read(user: &mut GooseUser) -> TransactionResult {
    timed(user, "/read", true).await
}

async fn write(user: &mut GooseUser) -> TransactionResult {
    timed(user, "/write", false).await
}

async fn untouched(user: &mut GooseUser) -> TransactionResult {
    timed(user, "/untouched", false).await
}

// ---- one cell: a server, a goose attack, the figures ----

/// The figures of one run of one cell.
struct Cell {
    window: Duration,
    latencies: Vec<u32>,
    errors: u64,
    misses: u64,
    first_error: Option<String>,
    server_ticks: u64,
    load_ticks: u64,
    store_ticks: u64,
    machine_busy: u64,
    machine_total: u64,
}

struct CpuSample {
    server: u64,
    load: u64,
    store: HashMap<u32, u64>,
    machine: (u64, u64),
}

fn cpu_sample(server_pid: u32, store_pid: Option<u32>) -> CpuSample {
    CpuSample {
        server: sys::process_cpu_ticks(server_pid).unwrap_or(0),
        load: sys::process_cpu_ticks(std::process::id()).unwrap_or(0),
        store: store_pid.map(sys::tree_cpu_ticks).unwrap_or_default(),
        machine: sys::machine_cpu_ticks().unwrap_or((0, 0)),
    }
}

/// The pid of the store server a backend talks to (Redis itself, or the
/// Postgres postmaster whose children are the backends), so its CPU time
/// can be counted per request.
async fn store_pid(backend: Backend) -> Option<u32> {
    match backend {
        Backend::Memory => None,
        Backend::Redis => {
            let client = redis::Client::open(bench::setup::redis_url().ok()?).ok()?;
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut conn)
                .await
                .ok()?;
            info.lines()
                .find_map(|l| l.strip_prefix("process_id:"))
                .and_then(|p| p.trim().parse().ok())
        }
        Backend::Postgres => {
            use sqlx::Connection as _;
            let url = bench::setup::database_url().ok()?;
            let mut conn = sqlx::PgConnection::connect(&url).await.ok()?;
            let (backend,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
                .fetch_one(&mut conn)
                .await
                .ok()?;
            let _ = conn.close().await;
            sys::parent_pid(u32::try_from(backend).ok()?)
        }
        Backend::MySql => {
            // One server process, its connections threads: `pid_file` names it.
            use sqlx::Connection as _;
            let url = bench::setup::mysql_url().ok()?;
            let mut conn = sqlx::MySqlConnection::connect(&url).await.ok()?;
            let (file,): (String,) = sqlx::query_as("SELECT @@pid_file")
                .fetch_one(&mut conn)
                .await
                .ok()?;
            let _ = conn.close().await;
            std::fs::read_to_string(file).ok()?.trim().parse().ok()
        }
    }
}

async fn run_cell(
    o: &Options,
    backend: Backend,
    mix: Mix,
    variant: Variant,
    pinned: bool,
    store: Option<u32>,
) -> Result<Cell, BoxError> {
    let exe = std::env::current_exe()?;
    let mut command = if pinned {
        let mut c = tokio::process::Command::new("taskset");
        c.arg("-c").arg(&o.server_cpus).arg(&exe);
        c
    } else {
        tokio::process::Command::new(&exe)
    };
    command
        .args(["serve", backend.name(), variant.name()])
        .arg(o.server_threads.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut server = command.spawn()?;
    let pid = server.id().ok_or("server exited at once")?;
    let stdout = server.stdout.take().ok_or("no server stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .map_err(|_| "server did not start within 60 s")??
        .ok_or("server exited before listening")?;
    let addr = line
        .strip_prefix("listening ")
        .ok_or_else(|| format!("unexpected server output {line:?}"))?
        .to_owned();

    let result = attack(o, mix, &addr, pid, store).await;
    server.kill().await?;
    result
}

async fn attack(
    o: &Options,
    mix: Mix,
    addr: &str,
    server_pid: u32,
    store_pid: Option<u32>,
) -> Result<Cell, BoxError> {
    let users = o.users.to_string();
    let run_time = (o.warmup + o.duration + 1).to_string();
    let config = GooseConfiguration::parse_args_default(&[
        "--host",
        &format!("http://{addr}"),
        "--users",
        &users,
        "--increase-rate",
        &users,
        "--run-time",
        &run_time,
        "--no-telnet",
        "--no-print-metrics",
        "--no-error-summary",
        "--no-metrics",
        "--quiet",
    ])?;
    let (start, step) = match mix {
        Mix::Read => (transaction!(start_with_session), transaction!(read)),
        Mix::Write => (transaction!(start_with_session), transaction!(write)),
        Mix::New => (transaction!(start_without_session), transaction!(write)),
        Mix::Untouched => (transaction!(start_with_session), transaction!(untouched)),
    };
    let scenario = scenario!("users")
        .register_transaction(start.set_on_start())
        .register_transaction(step);
    let mut goose = GooseAttack::initialize_with_config(config)?.register_scenario(scenario);
    if mix == Mix::New {
        goose = goose
            .set_client_builder_without_cookies(GooseClientBuilder::new().without_cookies())?;
    }

    *RECORDER.lock().unwrap_or_else(|e| e.into_inner()) = Some(Recorder {
        epoch: Instant::now(),
        users: o.users,
        started: 0,
        all_started: None,
        samples: Vec::with_capacity(1 << 18),
        errors: 0,
        misses: 0,
        first_error: None,
    });
    let (warmup, duration) = (
        Duration::from_secs(o.warmup),
        Duration::from_secs(o.duration),
    );
    let sampler = tokio::spawn(async move {
        let all_started = loop {
            if let Some(Some(t)) = with_recorder(|r| r.all_started) {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let from = all_started + warmup;
        tokio::time::sleep_until(from.into()).await;
        let before = cpu_sample(server_pid, store_pid);
        tokio::time::sleep_until((from + duration).into()).await;
        (from, before, cpu_sample(server_pid, store_pid))
    });

    goose.execute().await?;
    let recorder = RECORDER
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .ok_or("recorder vanished")?;
    if recorder.all_started.is_none() {
        sampler.abort();
        return Err(format!(
            "only {} of {} users started; first error: {:?}",
            recorder.started, recorder.users, recorder.first_error
        )
        .into());
    }
    let (from, before, after) = sampler.await?;
    let lo = from.duration_since(recorder.epoch).as_micros();
    let hi = (from + duration).duration_since(recorder.epoch).as_micros();
    let latencies = recorder
        .samples
        .iter()
        .filter(|(at, _)| (lo..hi).contains(&u128::from(*at)))
        .map(|&(_, latency)| latency)
        .collect();
    Ok(Cell {
        window: duration,
        latencies,
        errors: recorder.errors,
        misses: recorder.misses,
        first_error: recorder.first_error,
        server_ticks: after.server.saturating_sub(before.server),
        load_ticks: after.load.saturating_sub(before.load),
        store_ticks: sys::tree_cpu_delta(&before.store, &after.store),
        machine_busy: after.machine.0.saturating_sub(before.machine.0),
        machine_total: after.machine.1.saturating_sub(before.machine.1),
    })
}

// ---- the run and the report ----

type Key = (usize, Mix, usize);

#[derive(Default)]
struct Totals {
    window: Duration,
    latencies: Vec<u32>,
    errors: u64,
    misses: u64,
    server_ticks: u64,
    load_ticks: u64,
    store_ticks: u64,
    machine_busy: u64,
    machine_total: u64,
    runs: usize,
}

struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    server_cpu: f64,
    server_us_per_req: f64,
    /// Redis's or Postgres's CPU time per request (0 for memory).
    store_us_per_req: f64,
    load_cpu: f64,
    machine_busy: f64,
}

impl Figures {
    /// Server plus store CPU per request (the server alone for memory,
    /// whose store lives in the server).
    fn total_us_per_req(&self) -> f64 {
        self.server_us_per_req + self.store_us_per_req
    }
}

impl Totals {
    fn add(&mut self, cell: Cell) {
        self.window += cell.window;
        self.latencies.extend(cell.latencies);
        self.errors += cell.errors;
        self.misses += cell.misses;
        self.server_ticks += cell.server_ticks;
        self.load_ticks += cell.load_ticks;
        self.store_ticks += cell.store_ticks;
        self.machine_busy += cell.machine_busy;
        self.machine_total += cell.machine_total;
        self.runs += 1;
    }

    fn figures(&mut self, ticks_per_s: f64) -> Figures {
        self.latencies.sort_unstable();
        let pct = |p: f64| -> f64 {
            if self.latencies.is_empty() {
                return f64::NAN;
            }
            let i =
                ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len());
            f64::from(self.latencies[i - 1]) / 1000.0
        };
        let secs = self.window.as_secs_f64();
        let n = self.latencies.len() as f64;
        let server_s = self.server_ticks as f64 / ticks_per_s;
        Figures {
            rps: n / secs,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            server_cpu: 100.0 * server_s / secs,
            server_us_per_req: 1e6 * server_s / n,
            store_us_per_req: 1e6 * self.store_ticks as f64 / ticks_per_s / n,
            load_cpu: 100.0 * self.load_ticks as f64 / ticks_per_s / secs,
            machine_busy: 100.0 * self.machine_busy as f64 / self.machine_total.max(1) as f64,
        }
    }
}

fn available(backend: Backend) -> bool {
    match backend {
        Backend::Memory => true,
        Backend::Redis => std::env::var_os("REDIS_URL").is_some(),
        Backend::Postgres => std::env::var_os("DATABASE_URL").is_some(),
        Backend::MySql => std::env::var_os("MYSQL_URL").is_some(),
    }
}

async fn run(o: Options, args: Vec<String>, cpus: usize, pinned: bool) -> Result<(), BoxError> {
    let started = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let backends: Vec<Backend> = o
        .backends
        .iter()
        .copied()
        .filter(|&b| {
            let ok = available(b);
            if !ok {
                eprintln!("skipping {b}: its URL variable is not set");
            }
            ok
        })
        .collect();
    let mut stores = HashMap::new();
    for &backend in &backends {
        let pid = store_pid(backend).await;
        if pid.is_none() && backend != Backend::Memory {
            eprintln!("{backend}: could not find the server's pid; its CPU is not counted");
        }
        stores.insert(backend_index(backend), pid);
    }
    let mut totals: BTreeMap<Key, Totals> = BTreeMap::new();
    for round in 0..o.rounds {
        for &backend in &backends {
            for (m, &mix) in o.mixes.iter().enumerate() {
                let variants: Vec<Variant> = mix
                    .variants()
                    .iter()
                    .copied()
                    .filter(|v| o.variants.contains(v))
                    .collect();
                // Rotate the order per round and mix: no variant always runs first.
                let k = variants.len().max(1);
                for i in 0..variants.len() {
                    let variant = variants[(i + round + m) % k];
                    eprint!("round {} {backend} {} {variant}: ", round + 1, mix.name());
                    let store = stores.get(&backend_index(backend)).copied().flatten();
                    match run_cell(&o, backend, mix, variant, pinned, store).await {
                        Ok(cell) => {
                            eprintln!(
                                "{} requests, {} errors, {} misses{}",
                                cell.latencies.len(),
                                cell.errors,
                                cell.misses,
                                cell.first_error
                                    .as_deref()
                                    .map(|e| format!(" (first error: {e})"))
                                    .unwrap_or_default()
                            );
                            let key = (backend_index(backend), mix, variant_index(variant));
                            totals.entry(key).or_default().add(cell);
                        }
                        Err(error) => eprintln!("failed: {error} ({error:?})"),
                    }
                }
            }
        }
    }
    let report = report(&o, &args, &mut totals, cpus, pinned, &started);
    println!("{report}");
    if let Some(path) = &o.out {
        bench::write_section(path, "load", &report)?;
        eprintln!("wrote the load section of {}", path.display());
    }
    Ok(())
}

fn backend_index(b: Backend) -> usize {
    Backend::ALL.iter().position(|&x| x == b).unwrap_or(0)
}

fn variant_index(v: Variant) -> usize {
    Variant::ALL.iter().position(|&x| x == v).unwrap_or(0)
}

/// The issue's targets: (backend, mix, against, minimum ratio of ours).
const TARGETS: &[(Backend, Mix, Variant, f64)] = &[
    (Backend::Memory, Mix::Write, Variant::TowerSessions, 1.2),
    (Backend::Memory, Mix::Untouched, Variant::Bare, 0.95),
    (Backend::Redis, Mix::Read, Variant::TowerSessions, 1.3),
    (Backend::Redis, Mix::Write, Variant::TowerSessions, 1.3),
    (Backend::Redis, Mix::Read, Variant::Raw, 0.9),
    (Backend::Redis, Mix::Write, Variant::Raw, 0.9),
    (Backend::Postgres, Mix::Read, Variant::TowerSessions, 1.5),
    (Backend::Postgres, Mix::Write, Variant::TowerSessions, 1.5),
    (Backend::Postgres, Mix::Read, Variant::Raw, 0.9),
    (Backend::Postgres, Mix::Write, Variant::Raw, 0.9),
];

fn report(
    o: &Options,
    args: &[String],
    totals: &mut BTreeMap<Key, Totals>,
    cpus: usize,
    pinned: bool,
    started: &str,
) -> String {
    use std::fmt::Write as _;
    let ticks = sys::clock_ticks() as f64;
    let figures: BTreeMap<Key, Figures> = totals
        .iter_mut()
        .map(|(k, t)| (*k, t.figures(ticks)))
        .collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Load: requests/s and latency per backend x mix x variant\n"
    );
    let _ = writeln!(
        s,
        "- Command: `cargo run --release -p bench --bin load --{}{}`",
        if args.is_empty() { "" } else { " " },
        args.join(" ")
    );
    let _ = writeln!(s, "- Date: {started}");
    let _ = writeln!(
        s,
        "- Machine: {cpus} cores (nproc){}; Redis and Postgres on the same machine, on loopback",
        sys::cpu_model()
            .map(|m| format!(", {m}"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        s,
        "- Placement: {}",
        if pinned {
            format!(
                "server process pinned to CPU {} ({} tokio worker{}), load generator to CPU {} (1 tokio worker), with `taskset`; Redis / Postgres not pinned",
                o.server_cpus,
                o.server_threads,
                if o.server_threads == 1 { "" } else { "s" },
                o.load_cpus
            )
        } else {
            "not pinned".to_owned()
        }
    );
    let _ = writeln!(
        s,
        "- Load: {} goose users, each with its own cookie jar (= {} distinct sessions in read / write / untouched; `new` users send no cookie, so every request creates one); no wait between requests; {} s warm-up then {} s measured per cell, {} round(s), variants alternating",
        o.users, o.users, o.warmup, o.duration, o.rounds
    );
    let _ = writeln!(
        s,
        "- Server CPU = CPU time of the server process over the measured window (100% = one core); \"server µs/req\" = that time per request. \"store µs/req\" = CPU time of the Redis server, or of the Postgres postmaster and all its backends and workers, per request. Their sum, \"total µs/req\", is what one request costs the machine, whichever side saturated first. Machine = all cores busy, including the load generator and anything else running.\n"
    );
    let _ = writeln!(
        s,
        "| backend | mix | variant | req/s | p50 ms | p99 ms | server CPU | server µs/req | store µs/req | total µs/req | load CPU | machine busy | errors | misses |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (&(b, mix, v), f) in &figures {
        let t = &totals[&(b, mix, v)];
        let store = if b == backend_index(Backend::Memory) {
            ("-".to_owned(), format!("{:.1}", f.server_us_per_req))
        } else {
            (
                format!("{:.1}", f.store_us_per_req),
                format!("{:.1}", f.total_us_per_req()),
            )
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.0}% | {:.1} | {} | {} | {:.0}% | {:.0}% | {} | {} |",
            Backend::ALL[b],
            mix.name(),
            Variant::ALL[v],
            f.rps,
            f.p50_ms,
            f.p99_ms,
            f.server_cpu,
            f.server_us_per_req,
            store.0,
            store.1,
            f.load_cpu,
            f.machine_busy,
            t.errors,
            t.misses
        );
    }
    let _ = writeln!(s, "\n### Ratios (ours / other, from the table above)\n");
    let _ = writeln!(
        s,
        "Throughput ratio > 1: ours serves more requests/s. CPU ratios > 1: ours spends less CPU per request (other µs/req / ours µs/req), in the server process alone and in server + store. When the load generator is the side that saturates (load CPU near 100%), the throughput ratio says little and the CPU ratios carry the comparison.\n"
    );
    let _ = writeln!(
        s,
        "| backend | mix | vs | req/s ratio | server CPU/req ratio | total CPU/req ratio | target | met (req/s) | met (total CPU/req) |"
    );
    let _ = writeln!(s, "|---|---|---|---:|---:|---:|---:|---|---|");
    let ours = variant_index(Variant::Ours);
    for (&(b, mix, v), f) in &figures {
        if v == ours {
            continue;
        }
        let Some(o_f) = figures.get(&(b, mix, ours)) else {
            continue;
        };
        let target = TARGETS
            .iter()
            .find(|t| backend_index(t.0) == b && t.1 == mix && variant_index(t.2) == v)
            .map(|t| t.3);
        let ratio = o_f.rps / f.rps;
        let cpu_ratio = f.total_us_per_req() / o_f.total_us_per_req();
        let met = |r: f64| match target {
            Some(t) if r >= t => "yes",
            Some(_) => "**no**",
            None => "",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
            Backend::ALL[b],
            mix.name(),
            Variant::ALL[v],
            ratio,
            f.server_us_per_req / o_f.server_us_per_req,
            cpu_ratio,
            target.map(|t| format!(">= {t}")).unwrap_or_default(),
            met(ratio),
            met(cpu_ratio),
        );
    }
    s
}
