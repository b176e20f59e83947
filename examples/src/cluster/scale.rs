//! The scale scenario: `cargo run --example cluster -- --scenario scale`.
//!
//! For each setup (memory + sticky, memory + round-robin, and Redis,
//! Postgres and Redis Sentinel with round-robin when `REDIS_URL`,
//! `DATABASE_URL` and `REDIS_SENTINEL_URL` name them): 3 instances behind
//! nginx and `users` cookie-keeping users visiting the counter for `run`
//! (default 50 users, 60 s). One instance is added at `add_at` (20 s) and
//! the newest one removed at `remove_at` (40 s), as a StatefulSet or a
//! Deployment scales down; after `run` every instance is restarted in
//! turn (a rolling restart). Then it reports, per setup, the users whose
//! session was lost (their count started over), the failed requests, and
//! each instance's share of the requests.
//!
//! Every response names its instance and its process (`x-instance`,
//! `x-process`), so a loss can be checked against what happened: with the
//! memory store a session lives in one process, and a user whose home
//! process was stopped must lose it, while no other user may.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::{BoxError, Cluster, Routing, Stopped, http_get};

/// The scenario's timing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Users, each visiting in a loop (default 50).
    pub users: usize,
    /// How long the users visit before the rolling restart (default 60 s).
    pub run: Duration,
    /// When an instance is added (default 20 s).
    pub add_at: Duration,
    /// When the newest instance is removed (default 40 s).
    pub remove_at: Duration,
    /// A user's pause between two visits (default 100 ms).
    pub think: Duration,
    /// The pause after each instance of the rolling restart is back (default 2 s).
    pub restart_pause: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self::over(50, Duration::from_secs(60))
    }
}

impl Timing {
    /// `users` users for `run`, the instance added at a third of it and
    /// removed at two thirds.
    pub fn over(users: usize, run: Duration) -> Self {
        Self {
            users,
            run,
            add_at: run / 3,
            remove_at: run * 2 / 3,
            think: Duration::from_millis(100),
            restart_pause: Duration::from_secs(2),
        }
    }
}

/// One setup to measure.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Its name in the table, like `memory, sticky`.
    pub label: String,
    /// The `SESSION_STORE` of its instances.
    pub store: String,
    /// nginx's routing.
    pub routing: Routing,
}

/// The setups the environment allows: memory with both routings always,
/// and Redis, Postgres and Redis Sentinel (round-robin) when `REDIS_URL`,
/// `DATABASE_URL` and `REDIS_SENTINEL_URL` are set. Each shared store is
/// used under a fresh key prefix or schema. Returns the setups and the
/// names of the variables that were missing.
pub fn setups_from_env() -> (Vec<Setup>, Vec<&'static str>) {
    let tag = format!("scale{}", std::process::id());
    let mut setups = vec![
        Setup {
            label: "memory, sticky".to_owned(),
            store: "memory://".to_owned(),
            routing: Routing::Sticky,
        },
        Setup {
            label: "memory, round-robin".to_owned(),
            store: "memory://".to_owned(),
            routing: Routing::RoundRobin,
        },
    ];
    let mut missing = Vec::new();
    let with = |url: &str, option: &str| {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}{option}")
    };
    for (var, label, option) in [
        ("REDIS_URL", "Redis, round-robin", format!("prefix={tag}:")),
        (
            "DATABASE_URL",
            "Postgres, round-robin",
            format!("schema={tag}"),
        ),
        (
            "REDIS_SENTINEL_URL",
            "Redis Sentinel, round-robin",
            format!("prefix={tag}:"),
        ),
    ] {
        match std::env::var(var) {
            Ok(url) if !url.is_empty() => setups.push(Setup {
                label: label.to_owned(),
                store: with(&url, &option),
                routing: Routing::RoundRobin,
            }),
            _ => missing.push(var),
        }
    }
    (setups, missing)
}

/// What one visit got.
#[derive(Clone, Debug)]
struct Visit {
    start: Instant,
    served: Result<Served, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Served {
    count: u64,
    instance: String,
    pid: u32,
}

/// One instance's share of the requests.
#[derive(Clone, Debug, PartialEq)]
pub struct Share {
    /// The instance.
    pub instance: String,
    /// Its requests.
    pub requests: u64,
    /// Its fraction of all the requests in the span measured.
    pub fraction: f64,
}

/// The shares while a fixed set of instances ran.
#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    /// The instances running throughout.
    pub instances: Vec<String>,
    /// Each one's share of the phase's requests.
    pub shares: Vec<Share>,
    /// The widest relative deviation from an equal share (0.05 = 5 %
    /// above or below `1 / instances`).
    pub deviation: f64,
}

/// One setup's figures.
#[derive(Clone, Debug)]
pub struct Report {
    /// The setup's label.
    pub label: String,
    /// Users.
    pub users: usize,
    /// Requests sent.
    pub requests: u64,
    /// Requests that got no 200 with a count (refused, timed out, 5xx).
    pub failed: u64,
    /// The failed requests by what they got, and the phase they were sent
    /// in (`scaling` or `restart`).
    pub failures: BTreeMap<String, u64>,
    /// Users whose count started over at least once.
    pub lost_users: BTreeSet<usize>,
    /// Users whose count started over before the rolling restart (while
    /// an instance was added and one removed).
    pub lost_while_scaling: BTreeSet<usize>,
    /// Users whose home process (the process that served their previous
    /// visit) was taken out of service (removed from nginx, then stopped)
    /// before their next visit began: with the memory store and sticky
    /// routing exactly these must lose their session.
    pub exposed_users: BTreeSet<usize>,
    /// Visits whose count started over although the previous visit's
    /// process was still in service (none may happen under sticky routing).
    pub unexplained_losses: u64,
    /// Visits served by another process than the previous visit's while
    /// that one was still in service (a sticky user moved without cause).
    pub moves_without_cause: u64,
    /// Visits whose count was neither the previous one plus one nor a
    /// restart from 0 (a lost or doubled update).
    pub wrong_counts: u64,
    /// Each instance's share over the whole run before the rolling restart.
    pub shares: Vec<Share>,
    /// The shares in the three steady phases: 3, then 4, then 3 instances
    /// (the half second after each change left out).
    pub phases: Vec<Phase>,
}

/// Runs the scenario for `setup` with `exe` as the instances' binary (the
/// `cluster` example) and nginx on `listen`.
///
/// # Errors
///
/// The cluster did not start, or an instance could not be added, removed
/// or restarted.
pub async fn run_setup(
    exe: &Path,
    setup: &Setup,
    timing: &Timing,
    listen: SocketAddr,
) -> Result<Report, BoxError> {
    let mut cluster = Cluster::start(exe, &setup.store, setup.routing, 3, listen).await?;
    let result = drive(&mut cluster, setup, timing).await;
    cluster.stop().await;
    result
}

/// When the instance set changed.
struct Timeline {
    initial: Vec<String>,
    added_name: String,
    epoch: Instant,
    added: Instant,
    removing: Instant,
    removed: Instant,
    restarting: Instant,
    stopped: Vec<Stopped>,
}

async fn drive(cluster: &mut Cluster, setup: &Setup, timing: &Timing) -> Result<Report, BoxError> {
    let front = cluster.front();
    let initial: Vec<String> = cluster.instances().into_iter().map(|(n, _)| n).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let mut users = Vec::new();
    for i in 0..timing.users {
        let stop = stop.clone();
        let think = timing.think;
        // Spread the users' first visits over one think time.
        let offset =
            think * u32::try_from(i).unwrap_or(0) / u32::try_from(timing.users.max(1)).unwrap_or(1);
        users.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            visit_until(front, &stop, think).await
        }));
    }

    tokio::time::sleep_until(epoch + timing.add_at).await;
    let (added_name, _) = cluster.add().await?;
    let added = Instant::now();
    tokio::time::sleep_until(epoch + timing.remove_at).await;
    let removing = Instant::now();
    let mut stopped = vec![cluster.remove(&added_name).await?];
    let removed = Instant::now();
    tokio::time::sleep_until(epoch + timing.run).await;
    let restarting = Instant::now();
    for (name, _) in cluster.instances() {
        stopped.push(cluster.restart(&name).await?);
        tokio::time::sleep(timing.restart_pause).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut logs = Vec::new();
    for user in users {
        logs.push(user.await?);
    }
    let timeline = Timeline {
        initial,
        added_name,
        epoch,
        added,
        removing,
        removed,
        restarting,
        stopped,
    };
    Ok(analyse(setup, timing, &logs, &timeline))
}

/// One user's visits until `stop`.
async fn visit_until(front: SocketAddr, stop: &AtomicBool, think: Duration) -> Vec<Visit> {
    let mut jar: Vec<(String, String)> = Vec::new();
    let mut visits = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let cookies = (!jar.is_empty()).then(|| {
            jar.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        });
        let start = Instant::now();
        let served = match http_get(front, "/", cookies.as_deref(), Duration::from_secs(5)).await {
            Ok(reply) => {
                for (name, value) in &reply.headers {
                    if name == "set-cookie"
                        && let Some((k, v)) =
                            value.split(';').next().and_then(|p| p.split_once('='))
                    {
                        jar.retain(|(name, _)| name != k);
                        if !v.is_empty() {
                            jar.push((k.to_owned(), v.to_owned()));
                        }
                    }
                }
                served(&reply)
            }
            Err(e) => Err(e.to_string()),
        };
        visits.push(Visit { start, served });
        tokio::time::sleep(think).await;
    }
    visits
}

fn served(reply: &super::Reply) -> Result<Served, String> {
    if reply.status != 200 {
        return Err(format!("status {}", reply.status));
    }
    let header = |name: &str| {
        reply
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let count = reply
        .body
        .split(' ')
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no count in {:?}", reply.body))?;
    let instance = header("x-instance").ok_or("no x-instance")?;
    let pid = header("x-process")
        .and_then(|p| p.parse().ok())
        .ok_or("no x-process")?;
    Ok(Served {
        count,
        instance,
        pid,
    })
}

fn analyse(setup: &Setup, timing: &Timing, logs: &[Vec<Visit>], timeline: &Timeline) -> Report {
    let stopped: BTreeMap<u32, Stopped> = timeline.stopped.iter().map(|s| (s.pid, *s)).collect();
    let mut report = Report {
        label: setup.label.clone(),
        users: logs.len(),
        requests: 0,
        failed: 0,
        failures: BTreeMap::new(),
        lost_users: BTreeSet::new(),
        lost_while_scaling: BTreeSet::new(),
        exposed_users: BTreeSet::new(),
        unexplained_losses: 0,
        moves_without_cause: 0,
        wrong_counts: 0,
        shares: Vec::new(),
        phases: Vec::new(),
    };
    let end_of_run = timeline.epoch + timing.run;
    let mut overall: BTreeMap<String, u64> = BTreeMap::new();
    let settle = Duration::from_millis(500);
    let spans = [
        (timeline.epoch + settle, timeline.epoch + timing.add_at),
        (timeline.added + settle, timeline.removing),
        (timeline.removed + settle, timeline.restarting),
    ];
    // Every instance expected in a phase counts, serving or not.
    let mut per_phase: Vec<BTreeMap<String, u64>> = (0..spans.len())
        .map(|phase| {
            let mut names = timeline.initial.clone();
            if phase == 1 {
                names.push(timeline.added_name.clone());
            }
            names.into_iter().map(|n| (n, 0)).collect()
        })
        .collect();
    for (user, visits) in logs.iter().enumerate() {
        let mut previous: Option<&Served> = None;
        for visit in visits {
            report.requests += 1;
            let served = match &visit.served {
                Ok(served) => served,
                Err(what) => {
                    report.failed += 1;
                    let when = if visit.start < timeline.restarting {
                        "scaling"
                    } else {
                        "restart"
                    };
                    *report
                        .failures
                        .entry(format!("{when}: {what}"))
                        .or_default() += 1;
                    continue;
                }
            };
            if visit.start < end_of_run {
                *overall.entry(served.instance.clone()).or_default() += 1;
            }
            for (phase, (from, to)) in spans.iter().enumerate() {
                if visit.start >= *from && visit.start < *to {
                    *per_phase[phase].entry(served.instance.clone()).or_default() += 1;
                }
            }
            if let Some(before) = previous {
                // Whether the previous visit's process was taken out of
                // service (out of nginx, then stopped) before this visit began.
                let home_stopped = stopped.get(&before.pid);
                let home_stopping = home_stopped.is_some_and(|s| s.out_of_service < visit.start);
                if home_stopping {
                    report.exposed_users.insert(user);
                }
                if served.count == 0 {
                    report.lost_users.insert(user);
                    if visit.start < timeline.restarting {
                        report.lost_while_scaling.insert(user);
                    }
                    if !home_stopping {
                        report.unexplained_losses += 1;
                    }
                } else if served.count != before.count + 1 {
                    report.wrong_counts += 1;
                }
                if served.pid != before.pid && !home_stopping {
                    report.moves_without_cause += 1;
                }
            } else if served.count != 0 {
                report.wrong_counts += 1;
            }
            previous = Some(served);
        }
    }
    report.shares = shares(&overall);
    for counts in per_phase {
        let shares = shares(&counts);
        let n = shares.len().max(1) as f64;
        let deviation = shares
            .iter()
            .map(|s| (s.fraction * n - 1.0).abs())
            .fold(0.0, f64::max);
        report.phases.push(Phase {
            instances: counts.keys().cloned().collect(),
            shares,
            deviation,
        });
    }
    report
}

fn shares(counts: &BTreeMap<String, u64>) -> Vec<Share> {
    let total = counts.values().sum::<u64>().max(1) as f64;
    counts
        .iter()
        .map(|(instance, &requests)| Share {
            instance: instance.clone(),
            requests,
            fraction: requests as f64 / total,
        })
        .collect()
}

/// The reports as a markdown table.
pub fn table(reports: &[Report]) -> String {
    let mut out = String::from(
        "| setup | users who lost their session: while scaling / in all | failed requests | share of requests per instance, before the restart | widest deviation from an equal share (3, then 4, then 3 instances) |\n|---|---|---|---|---|\n",
    );
    for r in reports {
        let shares = r
            .shares
            .iter()
            .map(|s| format!("{}: {:.1}%", s.instance, s.fraction * 100.0))
            .collect::<Vec<_>>()
            .join(", ");
        let phases = r
            .phases
            .iter()
            .map(|p| format!("{:.1}%", p.deviation * 100.0))
            .collect::<Vec<_>>()
            .join(" / ");
        let _ = writeln!(
            out,
            "| {} | {} / {} of {} | {} of {} | {shares} | {phases} |",
            r.label,
            r.lost_while_scaling.len(),
            r.lost_users.len(),
            r.users,
            r.failed,
            r.requests
        );
    }
    out
}
