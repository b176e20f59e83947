//! Behaviour of the memory store beyond the shared contract: the capacity
//! bound and handing sessions to another store.

#![allow(clippy::unwrap_used)] // tests

use std::time::Duration;

use serde_json::json;
use session_core::conformance::store::{new_key, new_record, record_expiring_in};
use session_core::{SessionStore, StoreKey};
use session_memory::MemoryStore;

#[tokio::test]
async fn capacity_bounds_the_number_of_sessions() {
    let store = MemoryStore::with_capacity(100);
    for _ in 0..1_000 {
        assert!(store.create(&new_key(), &new_record()).await.unwrap());
    }
    // Eviction happens as sessions arrive: the count is exact at once.
    assert!(store.len() <= 100, "{} sessions held", store.len());
}

#[tokio::test]
async fn expired_sessions_are_reclaimed_without_a_sweeper() {
    // One shard (capacity under 4096): its expired sessions are dropped
    // every 1024 new ones, with no `delete_expired` call.
    let store = MemoryStore::with_capacity(4000);
    for _ in 0..10 {
        let record = record_expiring_in(Duration::from_millis(20));
        assert!(store.create(&new_key(), &record).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(store.len(), 10, "reclaimed before a sweep was due");
    for _ in 0..1_014 {
        assert!(store.create(&new_key(), &new_record()).await.unwrap());
    }
    assert_eq!(store.len(), 1_014, "the expired sessions are still held");
}

#[tokio::test]
async fn delete_expired_counts_the_sessions_it_reclaimed() {
    let store = MemoryStore::new();
    for _ in 0..7 {
        let record = record_expiring_in(Duration::from_millis(20));
        assert!(store.create(&new_key(), &record).await.unwrap());
    }
    let live = new_key();
    assert!(store.create(&live, &new_record()).await.unwrap());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(store.delete_expired().await.unwrap(), 7);
    assert_eq!(store.len(), 1);
    assert!(store.load(&live).await.unwrap().is_some());
}

#[tokio::test]
async fn drain_into_moves_every_live_session_and_its_data() {
    let (local, next) = (MemoryStore::new(), MemoryStore::new());
    let mut keys: Vec<StoreKey> = Vec::new();
    for i in 0..200 {
        let key = new_key();
        let mut record = new_record();
        record.data.insert("i".into(), json!(i));
        record.principal = Some(format!("user{}", i % 10));
        assert!(local.create(&key, &record).await.unwrap());
        keys.push(key);
    }
    let dead = new_key();
    assert!(
        local
            .create(&dead, &record_expiring_in(Duration::from_millis(50)))
            .await
            .unwrap()
    );
    // A key the target already holds, with another record: the target's
    // record stays as it is (skipped), this store's copy is dropped.
    let shared = new_key();
    let mut ours = new_record();
    ours.data.insert("side".into(), json!("memory"));
    let mut theirs = new_record();
    theirs.data.insert("side".into(), json!("target"));
    theirs.version = 5;
    assert!(local.create(&shared, &ours).await.unwrap());
    assert!(next.create(&shared, &theirs).await.unwrap());
    tokio::time::sleep(Duration::from_millis(100)).await;

    let report = local.drain_into(&next).await.unwrap();
    assert_eq!(report.moved, 200);
    assert_eq!(report.skipped, 1);
    for (i, key) in keys.iter().enumerate() {
        let record = next.load(key).await.unwrap().expect("moved");
        assert_eq!(record.data["i"], json!(i));
        // Memory no longer holds it (see the count at the end); a late
        // request through this store gets the target's record.
        assert_eq!(local.load(key).await.unwrap(), Some(record));
    }
    assert_eq!(
        next.load(&dead).await.unwrap(),
        None,
        "an expired session moved"
    );
    assert_eq!(
        next.list_by_principal("user3").await.unwrap().len(),
        20,
        "the principal index came along"
    );
    assert_eq!(
        next.load(&shared).await.unwrap(),
        Some(theirs.clone()),
        "the target's record was overwritten"
    );
    // Requests still reaching this store see the target's record too.
    assert_eq!(local.load(&shared).await.unwrap(), Some(theirs));
    // The expired session is reclaimed by `delete_expired`; the others
    // must be gone already.
    assert_eq!(
        local.len(),
        1,
        "sessions still held locally after the drain"
    );
    local.delete_expired().await.unwrap();
    assert_eq!(local.len(), 0, "the expired session was not reclaimed");
}

#[tokio::test]
async fn a_full_store_still_admits_new_sessions() {
    let store = MemoryStore::with_capacity(100);
    let mut busy = Vec::new();
    for _ in 0..100 {
        let key = new_key();
        assert!(store.create(&key, &new_record()).await.unwrap());
        busy.push(key);
    }
    // Sessions in steady use: a frequency-based cache would now refuse newcomers.
    for _ in 0..3 {
        for key in &busy {
            assert!(store.load(key).await.unwrap().is_some());
        }
    }
    store.delete_expired().await.unwrap();
    for _ in 0..50 {
        let key = new_key();
        assert!(store.create(&key, &new_record()).await.unwrap());
        store.delete_expired().await.unwrap();
        assert!(
            store.load(&key).await.unwrap().is_some(),
            "a new login was dropped by a full store"
        );
    }
}
