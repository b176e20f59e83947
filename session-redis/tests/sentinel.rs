//! Redis Sentinel under load: the primary killed (SIGKILL) and frozen
//! (SIGSTOP 3 s), a replica frozen or killed, while 20 users keep counting
//! in their sessions through the layer, through a store that found the
//! primary by asking the sentinels.
//!
//! The assertions are the shared driver's
//! ([`session_core::conformance::faults`]): no task panics; no request waits
//! past 2 x the op timeout + 1 s; every failure is a `503` with
//! `Retry-After`, in flight during the fault window; a request succeeds
//! within 2 s of the promotion (or of the primary resuming, or of the
//! sentinels flagging a lost replica); and, with the default `durable=all`,
//! every write answered 2xx is still there afterwards. With `durable=1` or
//! without `durable`, acknowledged writes may be lost in a failover: those
//! tests count them and print the count.
//!
//! Each test starts its own primary, 2 replicas and 3 sentinels, so killing
//! a primary breaks no other test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use common::{OwnRedis, OwnSentinels};
use futures_util::FutureExt as _;
use session_core::conformance::faults::{self, Durability, Plan, Report};
use session_core::{SessionStore, StoreKey};
use session_redis::{DEFAULT_SENTINEL_DURABLE, Durable, RedisStore, redis};

/// When the fault hits: after 2 s of steady load.
const BEFORE_FAULT: Duration = Duration::from_secs(2);

/// A store of the fault tests on the group's primary, with `durable`
/// replicas confirming each write (`None`: the default, every replica
/// Sentinel may promote). The connection's own timeouts are shorter than
/// the layer's op timeout (500 ms), so that the store itself notices a
/// primary that stopped answering, drops its connections and asks the
/// sentinels again, rather than being cut off by the layer each time.
fn fault_store(group: &OwnSentinels, durable: Option<Durable>) -> RedisStore {
    let mut builder = RedisStore::builder(group.url())
        .connect_timeout(Duration::from_millis(300))
        .response_timeout(Duration::from_millis(400));
    if let Some(durable) = durable {
        builder = builder.durable(durable);
    }
    let store = builder.build().unwrap().key_prefix("faults:");
    assert_eq!(store.durable(), durable.unwrap_or(DEFAULT_SENTINEL_DURABLE));
    store
}

/// The app of the fault tests on [`fault_store`].
fn app(group: &OwnSentinels, durable: Option<Durable>) -> Router {
    faults::app(fault_store(group, durable))
}

/// What one replica held the moment the primary died, and what the
/// sentinels had last read of it: the offsets a failover compares.
#[derive(Debug)]
struct AtKill {
    port: u16,
    /// `slave_repl_offset` of its `INFO replication`, read right after the kill.
    offset: Option<u64>,
    /// Per sentinel: the `slave-repl-offset` it last read from the replica,
    /// and how long before the kill it read it (`info-refresh`, ms).
    seen_by_sentinels: Vec<(Option<u64>, Option<u64>)>,
    /// Each session's count on the replica, by record key.
    counts: HashMap<String, u64>,
}

/// `name:value` of an `INFO` answer, as a number.
fn info_number(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// Each session's count in the store on `port` (any server of the group,
/// a replica too), by record key.
async fn counts_on(port: u16) -> HashMap<String, u64> {
    let keys: Vec<String> =
        common::sentinel_query(port, redis::cmd("KEYS").arg("faults:s:*")).unwrap_or_default();
    let store = RedisStore::from_url(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .key_prefix("faults:");
    let mut counts = HashMap::new();
    for record_key in keys {
        let Some(key) = record_key
            .strip_prefix("faults:s:")
            .and_then(StoreKey::parse)
        else {
            continue;
        };
        if let Ok(Some(record)) = store.load(&key).await
            && let Some(n) = record.data.get("n").and_then(serde_json::Value::as_u64)
        {
            counts.insert(record_key, n);
        }
    }
    counts
}

/// Both replicas as they are right after the kill (they get nothing more
/// until a failover), and as the sentinels last saw them.
async fn at_kill(group: &OwnSentinels) -> Vec<AtKill> {
    let sentinels = group.sentinel_ports();
    let mut replicas = Vec::new();
    for replica in &group.replicas {
        let port = replica.port();
        let offset = common::sentinel_query::<String>(port, redis::cmd("INFO").arg("replication"))
            .and_then(|info| info_number(&info, "slave_repl_offset"));
        let seen_by_sentinels = sentinels
            .iter()
            .map(|&sentinel| {
                let listed: Vec<HashMap<String, String>> = common::sentinel_query(
                    sentinel,
                    redis::cmd("SENTINEL")
                        .arg("REPLICAS")
                        .arg(OwnSentinels::MASTER),
                )
                .unwrap_or_default();
                let mine = listed
                    .iter()
                    .find(|r| r.get("port").and_then(|p| p.parse().ok()) == Some(port));
                let number = |name: &str| mine.and_then(|r| r.get(name)?.parse().ok());
                (number("slave-repl-offset"), number("info-refresh"))
            })
            .collect();
        replicas.push(AtKill {
            port,
            offset,
            seen_by_sentinels,
            counts: HashMap::new(),
        });
    }
    for replica in &mut replicas {
        replica.counts = counts_on(replica.port).await;
    }
    replicas
}

/// Prints what the failover did with the replicas' copies: which replica
/// was promoted against the offsets at the kill, and, for the sessions
/// whose count went back, whether the other replica had confirmed the
/// increments the promoted one lacked. Counts only, no session ids.
async fn explain_loss(
    name: &str,
    group: &OwnSentinels,
    replicas: &[AtKill],
    new: u16,
    lost: Option<u64>,
) {
    let finals = counts_on(new).await;
    let Some(promoted) = replicas.iter().find(|r| r.port == new) else {
        println!("{name}: EXPLAIN the sentinels promoted port {new}, not a first replica");
        return;
    };
    let other = replicas.iter().find(|r| r.port != new);
    let (mut lacked, mut lost_held_by_other, mut lost_held_by_promoted, mut lost_keys) =
        (0u64, 0u64, 0u64, 0usize);
    for (key, &n) in other.map(|o| &o.counts).into_iter().flatten() {
        lacked += n.saturating_sub(promoted.counts.get(key).copied().unwrap_or(0));
    }
    let keys: std::collections::HashSet<&String> =
        replicas.iter().flat_map(|r| r.counts.keys()).collect();
    for key in keys {
        let last = finals.get(key).copied().unwrap_or(0);
        let on = |r: Option<&AtKill>| r.and_then(|r| r.counts.get(key)).copied().unwrap_or(0);
        let gone_other = on(other).saturating_sub(last);
        let gone_promoted = on(Some(promoted)).saturating_sub(last);
        lost_held_by_other += gone_other;
        lost_held_by_promoted += gone_promoted;
        if gone_other > 0 || gone_promoted > 0 {
            lost_keys += 1;
        }
    }
    let describe = |r: &AtKill| {
        format!(
            "port {} offset {:?}, sentinels last read {:?} (offset, ms before)",
            r.port, r.offset, r.seen_by_sentinels
        )
    };
    let highest = replicas.iter().filter_map(|r| r.offset).max();
    println!(
        "{name}: EXPLAIN promoted {} ({}); other {}; the promoted replica had the highest \
         offset at the kill: {}; it lacked {lacked} increments the other held; after the \
         failover {lost_keys} sessions are below a replica's count at the kill: \
         {lost_held_by_other} increments held (confirmed) by the other replica are gone, \
         {lost_held_by_promoted} held by the promoted one are gone; the test counted {lost:?} lost (None: its assertions failed)",
        new,
        describe(promoted),
        other.map_or_else(|| "none".to_owned(), describe),
        promoted.offset.is_some() && promoted.offset == highest,
    );
    for line in group.failover_log() {
        println!("{name}: EXPLAIN {line}");
    }
}

/// SIGKILL of the primary at 2 s; the fault is over once the sentinels name
/// a promoted replica.
async fn failover(durable: Option<Durable>, durability: Durability) -> Report {
    failover_with(durable, durability, false).await.0
}

/// How long the preferred replica's replication is paused in
/// [`failover_with`] with `lagging`: from [`LAG_BEFORE_KILL`] before the
/// kill until after Sentinel has selected it.
const LAG: Duration = Duration::from_millis(2500);
/// How long before the kill the preferred replica stops taking the
/// replication stream.
const LAG_BEFORE_KILL: Duration = Duration::from_millis(500);

/// [`failover`]; with `lagging`, replica 0 is the one Sentinel prefers
/// (`replica-priority 10`, the other 100) and lags at the kill: the fault
/// begins with `CLIENT PAUSE WRITE` on it (its replication stalls, it
/// still answers the sentinels' PING and INFO), and the primary is killed
/// [`LAG_BEFORE_KILL`] later. Sentinel ranks priority before the offset, so
/// it usually promotes the lagging replica (not always: the second value
/// says whether it did).
async fn failover_with(
    durable: Option<Durable>,
    durability: Durability,
    lagging: bool,
) -> (Report, bool) {
    let group = Arc::new(
        tokio::task::spawn_blocking(move || {
            if lagging {
                OwnSentinels::start_with(&[&["--replica-priority", "10"], &[]])
            } else {
                OwnSentinels::start()
            }
        })
        .await
        .unwrap(),
    );
    let app = app(&group, durable);
    let old = group.primary.port();
    assert_eq!(group.primary_port(), Some(old));
    let plan = Plan {
        before: BEFORE_FAULT,
        durability,
    };
    let durable = durable.unwrap_or(DEFAULT_SENTINEL_DURABLE);
    let lag = if lagging {
        ", preferred replica lagging"
    } else {
        ""
    };
    let name = format!("sentinel failover, SIGKILL of the primary{lag}, durable={durable}");
    let seen = std::sync::Mutex::new(None);
    // A failed assertion in the driver still gets the failover explained.
    let run = std::panic::AssertUnwindSafe(faults::under_load_with(&app, &name, plan, || async {
        if lagging {
            let pause = redis::cmd("CLIENT")
                .arg("PAUSE")
                .arg(LAG.as_millis() as u64)
                .arg("WRITE")
                .clone();
            let _: () = common::query_port(group.replicas[0].port(), &pause);
            tokio::time::sleep(LAG_BEFORE_KILL).await;
        }
        group.primary.kill();
        let replicas = at_kill(&group).await;
        let watch = group.clone();
        let new = tokio::task::spawn_blocking(move || {
            watch.wait_for_promotion(old, Duration::from_secs(15))
        })
        .await
        .unwrap();
        assert_ne!(new, old);
        *seen.lock().unwrap() = Some((replicas, new));
    }))
    .catch_unwind()
    .await;
    let explain = async |lost| {
        let taken = seen.lock().unwrap().take();
        if let Some((replicas, new)) = taken {
            explain_loss(&name, &group, &replicas, new, lost).await;
        }
    };
    let report = match run {
        Ok(report) => report,
        Err(panic) => {
            explain(None).await;
            std::panic::resume_unwind(panic);
        }
    };
    println!(
        "{name}: promotion {:?} after the kill; first success {:?} after the kill \
         ({:?} after the promotion); {} of {} requests answered 503; lost {}",
        report.window.back - report.window.injected,
        report.fault_to_success(),
        report.window.recovered - report.window.back,
        report.failed,
        report.requests,
        report.lost,
    );
    let promoted = seen.lock().unwrap().as_ref().map(|(_, new)| *new);
    let promoted_first = promoted == Some(group.replicas[0].port());
    explain(Some(report.lost)).await;
    (report, promoted_first)
}

/// The default, `durable=all`: every replica Sentinel may promote holds
/// each acknowledged write, so the failover loses none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_sentinel_failover_durable_loses_nothing() {
    let report = failover(None, Durability::AllKept).await;
    assert_eq!(report.lost, 0, "durable=all lost acknowledged increments");
    assert!(
        report.failed > 0,
        "a failover with no failed request was no failover"
    );
}

/// `durable=1` with 2 replicas: one replica held each acknowledged write,
/// not necessarily the one Sentinel promotes. The loss is a measurement,
/// not a promise: counted and printed, every other assertion holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_sentinel_failover_durable_1_loss_is_counted() {
    let report = failover(Some(Durable::Replicas(1)), Durability::CountLost).await;
    println!(
        "MEASURED: durable=1 failover lost {} acknowledged increments ({} requests)",
        report.lost, report.requests
    );
    assert!(
        report.failed > 0,
        "a failover with no failed request was no failover"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_sentinel_failover_without_durable_loss_is_counted() {
    let report = failover(Some(Durable::Replicas(0)), Durability::CountLost).await;
    // The loss is a measurement, not a promise: reported above and here.
    println!(
        "MEASURED: durable=0 failover lost {} acknowledged increments ({} requests)",
        report.lost, report.requests
    );
    assert!(
        report.failed > 0,
        "a failover with no failed request was no failover"
    );
}

/// The preferred replica lagging at the kill, with the default
/// `durable=all`: while it lags, writes wait for it and fall short (503),
/// so nothing is acknowledged that it lacks, and promoting it loses none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_sentinel_failover_lagging_preferred_replica_durable_loses_nothing() {
    let (report, promoted_lagging) = failover_with(None, Durability::AllKept, true).await;
    println!(
        "MEASURED: durable=all, preferred replica lagging: lost {} ({} requests, {} answered \
         503); Sentinel promoted the lagging replica: {promoted_lagging}",
        report.lost, report.requests, report.failed
    );
    assert_eq!(report.lost, 0, "durable=all lost acknowledged increments");
}

/// The preferred replica lagging at the kill, with `durable=1`: the other
/// replica confirms the writes meanwhile, Sentinel promotes the lagging one
/// by priority, and the other is resynced from it. The loss is measured,
/// not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_sentinel_failover_lagging_preferred_replica_durable_1_loss_is_counted() {
    let (report, promoted_lagging) =
        failover_with(Some(Durable::Replicas(1)), Durability::CountLost, true).await;
    println!(
        "MEASURED: durable=1, preferred replica lagging: the failover lost {} acknowledged \
         increments ({} requests, {} answered 503); Sentinel promoted the lagging replica: \
         {promoted_lagging}",
        report.lost, report.requests, report.failed
    );
}

/// One replica of two lost under load (`fault` freezes or kills it), with
/// the default `durable=all`. Until the sentinels flag it down, writes wait
/// for it and fall short: 503 with `Retry-After`, each within the op
/// timeout (the driver's assertions, the failures counted). Once they do,
/// the store waits for the one replica left, and writes succeed again
/// within the driver's recovery bound while the replica stays down; no
/// acknowledged write is lost.
async fn replica_down(fault: &str, stop: impl FnOnce(&OwnRedis)) -> Report {
    let group = Arc::new(
        tokio::task::spawn_blocking(OwnSentinels::start)
            .await
            .unwrap(),
    );
    let store = fault_store(&group, None);
    let app = faults::app(store.clone());
    let plan = Plan {
        before: BEFORE_FAULT,
        durability: Durability::AllKept,
    };
    let name = format!("sentinel replica {fault}, durable=all");
    let mut flagged = Duration::ZERO;
    let report = faults::under_load_with(&app, &name, plan, || async {
        assert_eq!(store.durable_replicas(), 2, "both replicas are promotable");
        let down = std::time::Instant::now();
        stop(&group.replicas[0]);
        let port = group.replicas[0].port();
        let watch = group.clone();
        tokio::task::spawn_blocking(move || {
            watch.wait_for_replica_down(port, Duration::from_secs(10))
        })
        .await
        .unwrap();
        flagged = down.elapsed();
    })
    .await;
    // The load went on with the replica still down after recovery.
    assert_eq!(
        store.durable_replicas(),
        1,
        "the replica left is waited for"
    );
    println!(
        "MEASURED {name}: flagged down {flagged:?} after the fault; {} of {} requests \
         answered 503 (longest {:?}); first success {:?} after the fault ({:?} after the flag)",
        report.failed,
        report.requests,
        report.longest,
        report.fault_to_success(),
        report.window.recovered - report.window.back,
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_sentinel_replica_sigstop_durable_all_keeps_writing() {
    let report = replica_down("SIGSTOP", OwnRedis::freeze).await;
    assert!(report.longest <= faults::LONGEST, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_sentinel_replica_sigkill_durable_all_keeps_writing() {
    let report = replica_down("SIGKILL", OwnRedis::kill).await;
    assert!(report.longest <= faults::LONGEST, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_sentinel_primary_sigstop_3s_under_load() {
    let group = Arc::new(
        tokio::task::spawn_blocking(OwnSentinels::start)
            .await
            .unwrap(),
    );
    let app = app(&group, None);
    let plan = Plan {
        before: BEFORE_FAULT,
        durability: Durability::AllKept,
    };
    let report = faults::under_load_with(&app, "sentinel primary SIGSTOP 3 s", plan, || async {
        group.primary.freeze();
        tokio::time::sleep(Duration::from_secs(3)).await;
        group.primary.thaw();
        // The freeze outlasts `down-after-milliseconds`, so the sentinels
        // fail over meanwhile, and the failover may end only after SIGCONT;
        // until the promoted primary has a replica online again, durable
        // writes are refused (503). The fault is over once the group is
        // whole again, which without a failover is right after SIGCONT.
        let thawed = std::time::Instant::now();
        let healthy = group.clone();
        tokio::task::spawn_blocking(move || healthy.wait_until_healthy(Duration::from_secs(20)))
            .await
            .unwrap();
        println!(
            "sentinel primary SIGSTOP 3 s: the group was whole again {:?} after SIGCONT",
            thawed.elapsed()
        );
    })
    .await;
    // A hung primary never hangs a request: each store phase ends at the
    // layer's op timeout at the latest.
    assert!(report.longest <= faults::LONGEST, "{report:?}");
    println!(
        "sentinel primary SIGSTOP 3 s: {} of {} requests answered 503, longest {:?}, \
         first success {:?} after the freeze began",
        report.failed,
        report.requests,
        report.longest,
        report.fault_to_success()
    );
}

/// The source chain of `error`, for matching a typed cause.
fn not_replicated(error: &session_core::StoreError) -> Option<&session_redis::NotReplicated> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref() {
            return Some(found);
        }
        source = e.source();
    }
    None
}

/// A store on the shared group (`REDIS_SENTINEL_URL`) under a fresh prefix,
/// asking `durable` replicas, waiting at most 50 ms for them.
fn shared_store(durable: u32) -> RedisStore {
    RedisStore::builder(common::sentinel_url())
        .durable(durable)
        .durable_timeout(Duration::from_millis(50))
        .build()
        .unwrap()
        .key_prefix(common::fresh_prefix())
}

#[tokio::test]
async fn durable_write_fails_when_fewer_replicas_confirm() {
    use session_core::conformance::store::new_key;
    use session_core::{Expiry, Record, SessionStore, record::now};

    // The shared group has 2 replicas: asking 3 can never be confirmed.
    let store = shared_store(3);
    let key = new_key();
    let record = Record::new(now(), &Expiry::default());
    let error = store.create(&key, &record).await.unwrap_err();
    let cause = not_replicated(&error).expect("the cause is NotReplicated");
    assert_eq!((cause.wanted, cause.confirmed), (3, 2), "{error}");
    // What the docs say the store may then hold: the write, on the primary.
    assert!(store.load(&key).await.unwrap().is_some());
    let error = store.delete(&key).await.unwrap_err();
    assert!(not_replicated(&error).is_some(), "{error}");
    assert!(store.load(&key).await.unwrap().is_none());

    // Two can: the same calls succeed.
    let store = shared_store(2);
    assert!(store.create(&key, &record).await.unwrap());
    store.delete(&key).await.unwrap();
}

#[tokio::test]
async fn durable_shortfall_is_a_503_with_retry_after() {
    use http::StatusCode;
    use http::header::RETRY_AFTER;

    let store = shared_store(3);
    let reply = session_core::conformance::http::send(&faults::app(store), "/count", None).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.headers.get(RETRY_AFTER).unwrap(), "1");
}

#[test]
fn malformed_sentinel_urls_are_build_errors() {
    for url in [
        "redis+sentinel://127.0.0.1:26379",
        "redis+sentinel://127.0.0.1:26379/",
        "redis+sentinel://127.0.0.1:26379/a/b",
        "redis+sentinel://127.0.0.1:26379,/m",
        "redis+sentinel://127.0.0.1:26379/m?durable=1",
        "redis+sentinel://user:pw@127.0.0.1:26379/m",
    ] {
        let error = RedisStore::builder(url).build().unwrap_err();
        assert!(
            matches!(error, session_redis::BuildError::SentinelUrl(_)),
            "{url}: {error:?}"
        );
    }
    let store = RedisStore::builder("REDIS+SENTINEL://127.0.0.1:1,127.0.0.1:2/m")
        .build()
        .unwrap();
    assert_eq!(store.durable(), DEFAULT_SENTINEL_DURABLE);
    assert_eq!(store.durable(), Durable::All);
    let store = RedisStore::builder("redis+sentinel://127.0.0.1:1/m")
        .durable(0)
        .build()
        .unwrap();
    assert_eq!(store.durable_replicas(), 0);
    let store = RedisStore::builder("redis://127.0.0.1:1").build().unwrap();
    assert_eq!(store.durable_replicas(), 0);
    let store = RedisStore::cluster_builder(["redis://127.0.0.1:1"])
        .durable(1)
        .build()
        .unwrap();
    assert_eq!(store.durable_replicas(), 1);
    // `all` is counted through the sentinels: nowhere else.
    for builder in [
        RedisStore::builder("redis://127.0.0.1:1"),
        RedisStore::cluster_builder(["redis://127.0.0.1:1"]),
    ] {
        let error = builder.durable(Durable::All).build().unwrap_err();
        assert!(
            matches!(error, session_redis::BuildError::DurableAllNeedsSentinel),
            "{error:?}"
        );
    }
}

/// `durable=all` on the shared group: a write waits for both replicas (all
/// promotable), and the store says so.
#[tokio::test]
async fn durable_all_waits_for_every_promotable_replica() {
    use session_core::conformance::store::new_key;
    use session_core::{Expiry, Record, record::now};

    let store = RedisStore::builder(common::sentinel_url())
        .durable(Durable::All)
        .build()
        .unwrap()
        .key_prefix(common::fresh_prefix());
    let key = new_key();
    assert!(
        store
            .create(&key, &Record::new(now(), &Expiry::default()))
            .await
            .unwrap()
    );
    assert_eq!(store.durable_replicas(), 2);
    store.delete(&key).await.unwrap();
}

/// The write cost of `durable=all` and `durable=1` against none, on the
/// primary behind `REDIS_SENTINEL_URL`: a measurement, not a test (ignored;
/// run by hand, see BENCHMARKS.md, "Redis Sentinel"). Sequential saves
/// (latency) and 16 tasks saving at once (throughput), the three stores
/// alternating over 5 rounds so that a noisy neighbour hits all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand (BENCHMARKS.md)"]
async fn measure_durable_write_cost() {
    use session_core::conformance::store::new_key;
    use session_core::{Expiry, Record, SaveOutcome, SessionStore, record::now};
    use std::time::Instant;

    const SEQUENTIAL: u64 = 2000;
    const TASKS: u64 = 16;
    const PER_TASK: u64 = 250;

    /// One session saved `n` times in a row: each save's latency.
    async fn saves(store: &RedisStore, n: u64) -> Vec<Duration> {
        let key = new_key();
        let mut record = Record::new(now(), &Expiry::default());
        assert!(store.create(&key, &record).await.unwrap());
        let mut took = Vec::with_capacity(n as usize);
        for i in 0..n {
            let expected = record.version;
            record.version += 1;
            record.data.insert("n".into(), i.into());
            let start = Instant::now();
            let saved = store.save(&key, &record, expected).await.unwrap();
            took.push(start.elapsed());
            assert_eq!(saved, SaveOutcome::Saved);
        }
        store.delete(&key).await.unwrap();
        took
    }

    let store = |durable: Durable| {
        RedisStore::builder(common::sentinel_url())
            .durable(durable)
            .build()
            .unwrap()
            .key_prefix(common::fresh_prefix())
    };
    let stores = [Durable::Replicas(0), Durable::Replicas(1), Durable::All].map(|d| (d, store(d)));
    let mut latency: [Vec<Duration>; 3] = Default::default();
    let mut rate: [Vec<f64>; 3] = Default::default();
    for _round in 0..5 {
        for (i, (_, store)) in stores.iter().enumerate() {
            latency[i].extend(saves(store, SEQUENTIAL / 5).await);
            let start = Instant::now();
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    let store = store.clone();
                    tokio::spawn(async move { saves(&store, PER_TASK).await })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            rate[i].push((TASKS * PER_TASK) as f64 / start.elapsed().as_secs_f64());
        }
    }
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() - 1) as f64 * p) as usize]
    };
    let mut rows = Vec::new();
    for (i, (durable, _)) in stores.iter().enumerate() {
        let mean = latency[i].iter().sum::<Duration>() / latency[i].len() as u32;
        let (p50, p99) = (pct(&mut latency[i], 0.5), pct(&mut latency[i], 0.99));
        let mut r = rate[i].clone();
        r.sort_by(f64::total_cmp);
        let median_rate = r[r.len() / 2];
        println!(
            "MEASURED durable={durable}: sequential save mean {mean:?} p50 {p50:?} p99 {p99:?}; \
             {TASKS} tasks: median {median_rate:.0} saves/s over 5 rounds {r:.0?}"
        );
        rows.push((mean, p50, median_rate));
    }
    for (i, (durable, _)) in stores.iter().enumerate().skip(1) {
        println!(
            "MEASURED ratio durable={durable} / durable=0: mean latency x{:.2}, p50 x{:.2}, \
             throughput x{:.2}",
            rows[i].0.as_secs_f64() / rows[0].0.as_secs_f64(),
            rows[i].1.as_secs_f64() / rows[0].1.as_secs_f64(),
            rows[i].2 / rows[0].2,
        );
    }
    assert_eq!(
        stores[2].1.durable_replicas(),
        2,
        "durable=all waited for both replicas"
    );
}

/// A store of one app instance on `group`'s primary, its loads answered by
/// the replicas (`read_from_replicas`). `durable(0)`: the tests below
/// pause or freeze the replicas, and they are about reads.
fn replica_store(group: &OwnSentinels) -> RedisStore {
    RedisStore::builder(group.url())
        .connect_timeout(Duration::from_millis(300))
        .response_timeout(Duration::from_millis(400))
        .durable(0)
        .read_from_replicas(true)
        .build()
        .unwrap()
        .key_prefix("replicas:")
}

/// A user of the replica tests: its cookie, and the last count it saw.
struct Reader {
    cookie: String,
    last: u64,
}

/// Sends `path` as `user` to `app`; the count in the answer (which must be
/// 2xx), the time it took, and the user's cookie replaced by any new one.
async fn visit(app: &Router, user: &mut Reader, path: &str) -> (u64, Duration) {
    let start = std::time::Instant::now();
    let reply =
        session_core::conformance::http::send(app, path, Some(user.cookie.as_bytes())).await;
    let took = start.elapsed();
    assert!(
        reply.status.is_success(),
        "{path}: {} after {took:?}",
        reply.status
    );
    if let Some(pair) = reply.cookie_pair() {
        user.cookie = pair;
    }
    (reply.body.parse().expect("a count"), took)
}

/// `users` users, each with a session made by one `/count` on `app`.
async fn new_users(app: &Router, users: usize) -> Vec<Reader> {
    let mut made = Vec::with_capacity(users);
    for _ in 0..users {
        let reply = session_core::conformance::http::send(app, "/count", None).await;
        assert_eq!(reply.body, "1");
        made.push(Reader {
            cookie: reply.cookie_pair().unwrap(),
            last: 1,
        });
    }
    made
}

/// Reads through `app` until its store has answered a load from a replica
/// (its replica set is looked up in the background on first use).
async fn until_replicas_serve(app: &Router, store: &RedisStore, user: &mut Reader) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.replica_reads().replica == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no load was answered by a replica within 10 s: {:?}",
            store.replica_reads()
        );
        visit(app, user, "/read").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Replica lag injected (`CLIENT PAUSE 4000 WRITE` on both replicas: they
/// keep answering reads, with what they had, and apply nothing new): 5
/// users write through instance A and read at once through instance B,
/// and never see an older count; 5 users only read through B, and those
/// loads keep being answered by the replicas (the share is measured).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_replica_lag_client_never_reads_an_older_value() {
    let group = tokio::task::spawn_blocking(OwnSentinels::start)
        .await
        .unwrap();
    let (a, b) = (replica_store(&group), replica_store(&group));
    let (app_a, app_b) = (faults::app(a.clone()), faults::app(b.clone()));
    let mut writers = new_users(&app_a, 5).await;
    let mut readers = new_users(&app_a, 5).await;
    until_replicas_serve(&app_b, &b, &mut readers[0]).await;
    until_replicas_serve(&app_a, &a, &mut writers[0]).await;

    for replica in &group.replicas {
        let paused: String = common::query_port(
            replica.port(),
            redis::cmd("CLIENT").arg("PAUSE").arg(4000).arg("WRITE"),
        );
        assert_eq!(paused, "OK");
    }
    let before = b.replica_reads();
    let (mut writer_reads, mut reader_reads, mut stale_on_replica) = (0u64, 0u64, 0u64);
    let lag = std::time::Instant::now();
    while lag.elapsed() < Duration::from_secs(3) {
        for user in &mut writers {
            let (n, _) = visit(&app_a, user, "/count").await;
            assert_eq!(n, user.last + 1, "a write counted on an older value");
            user.last = n;
            let (seen, _) = visit(&app_b, user, "/read").await;
            assert_eq!(seen, n, "read through another instance right after writing");
            writer_reads += 1;
        }
        for user in &mut readers {
            let (seen, _) = visit(&app_b, user, "/read").await;
            assert_eq!(seen, user.last, "a reader's count changed or went back");
            reader_reads += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The lag was real: a replica still has an older count of a writer.
    let key = session_core::conformance::http::id_of(&writers[0].cookie).store_key();
    let record_key = a.record_key(&key);
    for replica in &group.replicas {
        let value: Option<Vec<u8>> =
            common::query_port(replica.port(), redis::cmd("GET").arg(&record_key));
        let primary: Option<Vec<u8>> =
            common::query_port(group.primary.port(), redis::cmd("GET").arg(&record_key));
        if value != primary {
            stale_on_replica += 1;
        }
    }
    let after = b.replica_reads();
    let (replica, primary) = (
        after.replica - before.replica,
        after.primary - before.primary,
    );
    let share = replica as f64 / (replica + primary) as f64;
    println!(
        "MEASURED replica lag (CLIENT PAUSE WRITE on both replicas, 3 s): instance B answered \
         {replica} loads from a replica and {primary} from the primary (replica share {share:.2}); \
         {writer_reads} reads right after a write (all current), {reader_reads} reads of \
         read-only users; {stale_on_replica} of 2 replicas behind at the end"
    );
    assert_eq!(stale_on_replica, 2, "the injected lag was not real");
    // Every read right after a write was below the replicas' copy: the
    // primary answered it. The read-only users' loads the replicas served.
    assert!(primary >= writer_reads, "{after:?}");
    assert!(
        replica >= reader_reads * 9 / 10,
        "the replicas served {replica} of {reader_reads} read-only loads"
    );
}

/// Both replicas frozen (SIGSTOP) for 3 s while users write through A and
/// read through B: every read still answers, current, within the layer's
/// operation timeout (the replica is given up after its timeout and the
/// primary answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_replicas_sigstop_reads_answer_within_op_timeout() {
    let group = tokio::task::spawn_blocking(OwnSentinels::start)
        .await
        .unwrap();
    let (a, b) = (replica_store(&group), replica_store(&group));
    let (app_a, app_b) = (faults::app(a.clone()), faults::app(b.clone()));
    let mut writers = new_users(&app_a, 5).await;
    let mut readers = new_users(&app_a, 5).await;
    until_replicas_serve(&app_b, &b, &mut readers[0]).await;

    for replica in &group.replicas {
        replica.freeze();
    }
    let frozen = std::time::Instant::now();
    let mut longest = Duration::ZERO;
    let mut reads = 0u64;
    while frozen.elapsed() < Duration::from_secs(3) {
        for user in &mut writers {
            let (n, _) = visit(&app_a, user, "/count").await;
            assert_eq!(n, user.last + 1);
            user.last = n;
            let (seen, took) = visit(&app_b, user, "/read").await;
            assert_eq!(seen, n);
            longest = longest.max(took);
            reads += 1;
        }
        for user in &mut readers {
            let (seen, took) = visit(&app_b, user, "/read").await;
            assert_eq!(seen, user.last);
            longest = longest.max(took);
            reads += 1;
        }
    }
    for replica in &group.replicas {
        replica.thaw();
    }
    println!(
        "MEASURED replicas frozen 3 s: {reads} reads through B, all current, longest {longest:?}; \
         loads {:?}",
        b.replica_reads()
    );
    assert!(
        longest <= faults::OP_TIMEOUT,
        "a read took {longest:?}, past the op timeout"
    );
}

/// Read throughput with `read_from_replicas` against primary-only, on the
/// group behind `REDIS_SENTINEL_URL`: a measurement, not a test (ignored;
/// run by hand, see BENCHMARKS.md, "Redis Sentinel"). 16 tasks loading 100
/// sessions with the floor a client would carry, the two stores
/// alternating over 5 rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand (BENCHMARKS.md)"]
async fn measure_replica_read_throughput() {
    use session_core::conformance::store::new_key;
    use session_core::{Expiry, Record, SessionStore, record::now};
    use std::time::Instant;

    const TASKS: usize = 16;
    const PER_TASK: usize = 2000;

    let store = |replicas| {
        RedisStore::builder(common::sentinel_url())
            .read_from_replicas(replicas)
            .build()
            .unwrap()
            .key_prefix(common::fresh_prefix())
    };
    let stores = [(false, store(false)), (true, store(true))];
    let mut keys = Vec::new();
    for (_, store) in &stores {
        let mut mine = Vec::new();
        for _ in 0..100 {
            let key = new_key();
            assert!(
                store
                    .create(&key, &Record::new(now(), &Expiry::default()))
                    .await
                    .unwrap()
            );
            mine.push(key);
        }
        keys.push(Arc::new(mine));
    }
    // The replica set is looked up in the background on first use.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stores[1].1.replica_reads().replica == 0 {
        assert!(Instant::now() < deadline, "no replica answered");
        stores[1]
            .1
            .load_at_least(&keys[1][0], Some(0))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut rate: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let before = stores[1].1.replica_reads();
    for _round in 0..5 {
        for (i, (_, store)) in stores.iter().enumerate() {
            let start = Instant::now();
            let tasks: Vec<_> = (0..TASKS)
                .map(|t| {
                    let (store, keys) = (store.clone(), keys[i].clone());
                    tokio::spawn(async move {
                        for n in 0..PER_TASK {
                            let key = &keys[(t * 7 + n) % keys.len()];
                            let record = store.load_at_least(key, Some(0)).await.unwrap();
                            assert!(record.is_some());
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            rate[i].push((TASKS * PER_TASK) as f64 / start.elapsed().as_secs_f64());
        }
    }
    let after = stores[1].1.replica_reads();
    let mut medians = Vec::new();
    for (i, (replicas, _)) in stores.iter().enumerate() {
        let mut r = rate[i].clone();
        r.sort_by(f64::total_cmp);
        medians.push(r[r.len() / 2]);
        println!(
            "MEASURED read_from_replicas={replicas}: {TASKS} tasks: median {:.0} loads/s over 5 rounds {r:.0?}",
            r[r.len() / 2]
        );
    }
    println!(
        "MEASURED ratio replicas / primary-only: x{:.2}; replica share {:.3} ({} replica, {} primary)",
        medians[1] / medians[0],
        (after.replica - before.replica) as f64
            / ((after.replica - before.replica) + (after.primary - before.primary)) as f64,
        after.replica - before.replica,
        after.primary - before.primary,
    );
}
