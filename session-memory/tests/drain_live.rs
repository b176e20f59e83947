//! `MemoryStore::drain_into` under live traffic into a second memory store:
//! store calls, and HTTP requests through the real layer, run before, during
//! (held at the first copy, held halfway) and after the drain. See
//! `support/traffic.rs`; the facade's tests run the same into Redis and Postgres.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

mod support;

use session_memory::MemoryStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_calls_during_a_drain_into_memory_lose_nothing() {
    support::traffic::store_calls_during_a_drain(MemoryStore::new(), 2_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_during_a_drain_into_memory_lose_nothing() {
    support::traffic::requests_during_a_drain(MemoryStore::new(), 400).await;
}

/// Creates racing the start of a drain (no pause: the moment the drain
/// switches to forwarding falls among them), many times over: every
/// acknowledged create ends in the target, none is left in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_racing_the_start_of_a_drain_all_land_in_the_target() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use session_core::SessionStore;
    use session_core::conformance::store::{new_key, new_record};

    let mut lost = 0;
    let mut created = 0;
    for _ in 0..200 {
        let (local, target) = (MemoryStore::new(), MemoryStore::new());
        let stop = Arc::new(AtomicBool::new(false));
        let creators: Vec<_> = (0..3)
            .map(|_| {
                let (local, stop) = (local.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        let key = new_key();
                        if local.create(&key, &new_record()).await.unwrap() {
                            acked.push(key);
                        }
                        tokio::task::yield_now().await;
                    }
                    acked
                })
            })
            .collect();
        tokio::task::yield_now().await;
        let report = local.drain_into(&target).await.unwrap();
        stop.store(true, Ordering::SeqCst);
        let mut moved_or_forwarded = 0;
        for creator in creators {
            for key in support::finish(creator).await {
                created += 1;
                match target.load(&key).await.unwrap() {
                    Some(_) => moved_or_forwarded += 1,
                    None => lost += 1,
                }
            }
        }
        local.delete_expired().await.unwrap();
        assert_eq!(local.len(), 0, "sessions left in memory after the drain");
        assert!(report.moved <= moved_or_forwarded, "{report:?}");
    }
    assert_eq!(
        lost, 0,
        "{lost} of {created} acknowledged creates are not in the target"
    );
}
