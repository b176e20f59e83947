//! Redis's own cost per store call, from its `INFO commandstats`, and the
//! memory one session takes (`MEMORY USAGE`).
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release -p session-redis --example redis_cost [-- REQUESTS CLIENTS]
//! ```
//!
//! `CLIENTS` concurrent tasks (default 16) make `REQUESTS` session requests
//! in all (default 100 000), each a `load` then a compare-and-set `save` of
//! a session whose data is `{"n": <counter>}`: once for sessions without a
//! principal, once for sessions with one. For each run it prints, per Redis
//! command, the calls per request and Redis's `usec_per_call` over the run
//! (the difference of two `INFO commandstats` snapshots, so the server's
//! counters are not reset). Commands a script runs are counted under their
//! own name too, and their time is included in the script's. It also prints
//! the server's CPU time (user + system, from `INFO cpu`) per request, which
//! includes reading, parsing and answering the commands.
//!
//! Writes only keys under a random `cost-…:` prefix and deletes them at the
//! end. Use an otherwise idle server: other clients' commands would be
//! counted too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;
use session_core::record::now;
use session_core::{Expiry, Id, Record, SaveOutcome, SessionStore, StoreKey};
use session_redis::RedisStore;
use session_redis::redis::{self, aio::MultiplexedConnection};

#[tokio::main]
async fn main() {
    let url = std::env::var("REDIS_URL").expect("set REDIS_URL, e.g. redis://127.0.0.1:6379");
    let mut args = std::env::args().skip(1);
    let requests: u64 = args
        .next()
        .map_or(100_000, |s| s.parse().expect("REQUESTS"));
    let clients: usize = args.next().map_or(16, |s| s.parse().expect("CLIENTS"));
    let prefix = format!("cost-{}:", Id::random().unwrap().store_key().short());
    let store = RedisStore::from_url(url.clone())
        .unwrap()
        .key_prefix(prefix.clone());
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();

    // One session with data {"n": 42}, as `create` wrote it and after a `save`.
    let key = Id::random().unwrap().store_key();
    let mut record = Record::new(now(), &Expiry::default());
    record.data.insert("n".into(), json!(42));
    assert!(store.create(&key, &record).await.unwrap());
    let created = memory_usage(&mut conn, &store.record_key(&key)).await;
    record.version = 1;
    assert_eq!(
        store.save(&key, &record, 0).await.unwrap(),
        SaveOutcome::Saved
    );
    let saved = memory_usage(&mut conn, &store.record_key(&key)).await;
    println!(
        "MEMORY USAGE of one session with data {{\"n\":42}}: {created} B after create, {saved} B after save"
    );
    store.delete(&key).await.unwrap();
    // A logged-in session: a principal, and some 120 bytes of data.
    let key = Id::random().unwrap().store_key();
    let mut record = Record::new(now(), &Expiry::default());
    record.principal = Some("user-1234".into());
    record
        .data
        .insert("device".into(), json!("Firefox on Linux"));
    record.data.insert(
        "csrf".into(),
        json!(Id::random().unwrap().store_key().as_str()),
    );
    record.data.insert("cart".into(), json!([1001, 1002, 1003]));
    record.data.insert("theme".into(), json!("dark"));
    let size = serde_json::to_string(&record.data).unwrap().len();
    assert!(store.create(&key, &record).await.unwrap());
    let login = memory_usage(&mut conn, &store.record_key(&key)).await;
    println!("MEMORY USAGE of one session with a principal and {size} B of data JSON: {login} B");
    store.delete(&key).await.unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(store.principal_key("user-1234"))
        .query_async(&mut conn)
        .await
        .unwrap();

    for principal in [false, true] {
        let sessions: Arc<Vec<StoreKey>> = Arc::new(
            (0..clients)
                .map(|_| Id::random().unwrap().store_key())
                .collect(),
        );
        for (i, key) in sessions.iter().enumerate() {
            let mut record = Record::new(now(), &Expiry::default());
            record.data.insert("n".into(), json!(0));
            record.principal = principal.then(|| format!("user-{i}"));
            assert!(store.create(key, &record).await.unwrap());
        }
        let (before, cpu_before) = (commandstats(&mut conn).await, cpu(&mut conn).await);
        let left = Arc::new(AtomicU64::new(requests));
        let tasks: Vec<_> = (0..clients)
            .map(|client| {
                let (store, sessions, left) = (store.clone(), sessions.clone(), left.clone());
                tokio::spawn(async move {
                    let key = &sessions[client];
                    while left
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        let mut record = store.load(key).await.unwrap().expect("live");
                        let expected = record.version;
                        record.version += 1;
                        record.data.insert("n".into(), expected.into());
                        assert_eq!(
                            store.save(key, &record, expected).await.unwrap(),
                            SaveOutcome::Saved
                        );
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let (after, cpu_after) = (commandstats(&mut conn).await, cpu(&mut conn).await);
        println!(
            "\n{requests} requests (load + save), {clients} clients, sessions {} a principal: \
             Redis CPU {:.2} us per request (user + sys)",
            if principal { "with" } else { "without" },
            (cpu_after - cpu_before) * 1e6 / requests as f64
        );
        println!(
            "{:<10} {:>14} {:>15}",
            "command", "calls/request", "usec_per_call"
        );
        for (command, &(calls, usec)) in &after {
            let (calls_before, usec_before) = before.get(command).copied().unwrap_or((0, 0));
            let calls = calls - calls_before;
            if calls == 0 || command == "info" {
                continue;
            }
            println!(
                "{command:<10} {:>14.2} {:>15.2}",
                calls as f64 / requests as f64,
                (usec - usec_before) as f64 / calls as f64
            );
        }
        for key in sessions.iter() {
            store.delete(key).await.unwrap();
        }
        if principal {
            let sets: Vec<String> = (0..clients)
                .map(|i| store.principal_key(&format!("user-{i}")))
                .collect();
            let _: i64 = redis::cmd("DEL")
                .arg(&sets)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
}

async fn memory_usage(conn: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query_async(conn)
        .await
        .unwrap()
}

/// Seconds of CPU the server used so far (`used_cpu_user` + `used_cpu_sys`).
async fn cpu(conn: &mut MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| matches!(*name, "used_cpu_user" | "used_cpu_sys"))
        .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
        .sum()
}

/// Calls and total microseconds per command, from `INFO commandstats`.
async fn commandstats(conn: &mut MultiplexedConnection) -> BTreeMap<String, (u64, u64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    let mut stats = BTreeMap::new();
    for line in info.lines() {
        let Some((name, fields)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let field = |wanted: &str| {
            fields
                .split(',')
                .find_map(|f| f.strip_prefix(wanted)?.strip_prefix('='))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        stats.insert(name.to_owned(), (field("calls"), field("usec")));
    }
    stats
}
