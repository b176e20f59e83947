//! Redis Cluster with replicas: `durable` per shard, a master killed
//! (SIGKILL) under load, and a 4th master added and a third of the slots
//! moved to it under load, while 20 users keep counting in their sessions
//! through the layer.
//!
//! The fault tests' assertions are the shared driver's
//! ([`session_core::conformance::faults`]): no task panics; no request waits
//! past 2 x the op timeout + 1 s; every failure is a `503` with
//! `Retry-After`, in flight during the fault window; a request succeeds
//! within 2 s of the end of the fault; and every write answered 2xx is still
//! there afterwards (0 acknowledged increments lost).
//!
//! Each test starts its own cluster ([`common::OwnCluster`]), so killing or
//! resharding it breaks no other test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::OwnCluster;
use session_core::conformance::faults::{self, Durability, Plan};
use session_core::conformance::store::new_key;
use session_core::{Expiry, Record, SessionStore, StoreKey, record::now};
use session_redis::{RedisStore, redis};

/// When the fault hits: after 2 s of steady load.
const BEFORE_FAULT: Duration = Duration::from_secs(2);

/// A store on `cluster` with `durable` replicas confirming each write.
fn store(cluster: &OwnCluster, durable: u32) -> RedisStore {
    let store = RedisStore::cluster_builder(cluster.urls())
        .durable(durable)
        .build()
        .unwrap()
        .key_prefix("faults:");
    assert_eq!(store.durable_replicas(), durable);
    store
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

/// A fresh store key whose record lands on the master on `port` (`on`) or
/// on any other master (`!on`).
fn key_on(cluster: &OwnCluster, store: &RedisStore, port: u16, on: bool) -> StoreKey {
    loop {
        let key = new_key();
        let slot = cluster.slot(&store.record_key(&key));
        if (cluster.master_of_slot(slot) == Some(port)) == on {
            return key;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_on_cluster_counts_the_replicas_of_the_writes_shard() {
    let cluster = tokio::task::spawn_blocking(|| OwnCluster::start(Duration::from_secs(5)))
        .await
        .unwrap();
    let store = RedisStore::cluster_builder(cluster.urls())
        .durable(1)
        .durable_timeout(Duration::from_millis(50))
        .build()
        .unwrap()
        .key_prefix(common::fresh_prefix());
    let record = Record::new(now(), &Expiry::default());
    let shard = cluster.master_of_slot(0).unwrap();

    // Every shard has its replica: writes anywhere are confirmed.
    let here = key_on(&cluster, &store, shard, true);
    assert!(store.create(&here, &record).await.unwrap());
    store.delete(&here).await.unwrap();

    // One shard loses its replica: its writes fail, the others' do not.
    let replica = cluster
        .replica_of(shard)
        .unwrap_or_else(|| panic!("no replica of {shard}: {:?}", cluster.view()));
    cluster.node_on(replica).kill();
    let here = key_on(&cluster, &store, shard, true);
    let error = store.create(&here, &record).await.unwrap_err();
    let cause = not_replicated(&error).expect("the cause is NotReplicated");
    assert_eq!((cause.wanted, cause.confirmed), (1, 0), "{error}");
    // What the docs say the store may then hold: the write, on the master.
    assert!(store.load(&here).await.unwrap().is_some());
    let elsewhere = key_on(&cluster, &store, shard, false);
    assert!(store.create(&elsewhere, &record).await.unwrap());
    let mut saved = record.clone();
    saved.version += 1;
    assert_eq!(
        store
            .save(&elsewhere, &saved, record.version)
            .await
            .unwrap(),
        session_core::SaveOutcome::Saved
    );
    store.delete(&elsewhere).await.unwrap();

    // A write that changes nothing is not waited for: no failure.
    assert_eq!(
        store.save(&here, &saved, record.version + 5).await.unwrap(),
        session_core::SaveOutcome::Conflict
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_cluster_master_sigkill_durable_loses_nothing() {
    // A replica takes over about 2 s after its master dies.
    let cluster = Arc::new(
        tokio::task::spawn_blocking(|| OwnCluster::start(Duration::from_secs(1)))
            .await
            .unwrap(),
    );
    let app = faults::app(store(&cluster, 1));
    let old = cluster.master_of_slot(0).unwrap();
    let plan = Plan {
        before: BEFORE_FAULT,
        durability: Durability::AllKept,
    };
    let name = "cluster master SIGKILL, durable=1";
    let timings = Arc::new(std::sync::Mutex::new((Duration::ZERO, Duration::ZERO)));
    let report = faults::under_load_with(&app, name, plan, || async {
        let killed = Instant::now();
        cluster.node_on(old).kill();
        let (cluster, timings) = (cluster.clone(), timings.clone());
        tokio::task::spawn_blocking(move || {
            let new = cluster.wait_for_promotion(0, old, Duration::from_secs(15));
            let promoted = killed.elapsed();
            assert_ne!(new, old);
            // The shard's new master has no replica left: durable writes
            // there fail until the old master, restarted (as a supervisor
            // would), is back as its replica and in sync.
            cluster.node_on(old).start_again();
            cluster.wait_until_healthy(3, 3, Duration::from_secs(30));
            cluster.wait_until_confirms(new, Duration::from_secs(10));
            *timings.lock().unwrap() = (promoted, killed.elapsed());
        })
        .await
        .unwrap();
    })
    .await;
    let (promoted, healthy) = *timings.lock().unwrap();
    println!(
        "MEASURED {name}: promotion {promoted:?} after the kill; old master back as a replica \
         and in sync {healthy:?} after it; first success {:?} after the kill \
         ({:?} after the shard was whole); {} of {} requests answered 503; longest {:?}; lost {}",
        report.fault_to_success(),
        report.window.recovered - report.window.back,
        report.failed,
        report.requests,
        report.longest,
        report.lost,
    );
    assert_eq!(report.lost, 0, "durable=1 lost acknowledged increments");
    assert!(
        report.failed > 0,
        "a master killed with no failed request was no fault"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_cluster_reshard_under_load_loses_nothing() {
    // No failover is wanted here: the default node timeout of the scripts'
    // cluster, so that a node slow under load is not taken for dead.
    let cluster = tokio::task::spawn_blocking(|| OwnCluster::start(Duration::from_secs(5)))
        .await
        .unwrap();
    let app = faults::app(store(&cluster, 0));
    let plan = Plan {
        before: BEFORE_FAULT,
        durability: Durability::AllKept,
    };
    let name = "cluster grown by a 4th master, 5461 slots moved to it";
    let cluster = Arc::new(tokio::sync::Mutex::new(Some(cluster)));
    let took = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let report = faults::under_load_with(&app, name, plan, || async {
        let (cluster, took) = (cluster.clone(), took.clone());
        let mut own = cluster.lock().await.take().unwrap();
        let own = tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let new = own.add_master();
            own.reshard_to(new, 16384 / 3);
            own.wait_until_healthy(4, 3, Duration::from_secs(30));
            *took.lock().unwrap() = start.elapsed();
            own
        })
        .await
        .unwrap();
        *cluster.lock().await = Some(own);
    })
    .await;
    let own = cluster.lock().await.take().unwrap();
    let new_master_slots: usize = own
        .view()
        .into_iter()
        .filter(|n| n.port == own.nodes.last().unwrap().port())
        .flat_map(|n| n.slots)
        .map(|range| {
            let mut ends = range.split('-').map(|e| e.parse::<usize>().unwrap());
            let a = ends.next().unwrap();
            ends.next().unwrap_or(a) - a + 1
        })
        .sum();
    assert_eq!(new_master_slots, 16384 / 3, "the new master's slots");
    // Sessions moved with their slots while the users counted (20 records,
    // a third of the slots: all 20 staying put is a 1-in-3000 chance).
    let moved: i64 = redis::cmd("DBSIZE")
        .query(
            &mut redis::Client::open(own.nodes.last().unwrap().url())
                .unwrap()
                .get_connection()
                .unwrap(),
        )
        .unwrap();
    assert!(moved > 0, "no session record moved to the new master");
    println!(
        "MEASURED {name}: add-node + reshard took {:?}; {moved} records moved; \
         {} of {} requests failed (503), longest {:?}; {} writes answered 503; lost {}",
        *took.lock().unwrap(),
        report.failed,
        report.requests,
        report.longest,
        report.ambiguous,
        report.lost,
    );
    assert_eq!(report.lost, 0, "resharding lost acknowledged increments");
}
