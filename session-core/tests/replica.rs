//! Replica reads through the layer, on a simulated replica
//! ([`LaggingStore`]): the per-client version floor in the cookie.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use session_core::conformance::http::{count, floor_of, id_of, read, send};
use session_core::conformance::store::new_record;
use session_core::conformance::support::LaggingStore;
use session_core::{Id, SessionLayer, SessionStore};
use session_memory::MemoryStore;

session_core::conformance_tests!(prefix = lagging, async {
    LaggingStore::new(MemoryStore::new(), Duration::from_millis(20))
});

type Lagging = LaggingStore<MemoryStore>;

fn app(store: &Arc<Lagging>) -> Router {
    let store: Arc<dyn SessionStore> = store.clone();
    Router::new()
        .route("/count", get(count))
        .route("/read", get(read))
        .layer(SessionLayer::from_arc(store).secure(false))
}

fn paused() -> Arc<Lagging> {
    let store = Arc::new(LaggingStore::new(MemoryStore::new(), Duration::ZERO));
    store.pause();
    store
}

/// With replay paused, a client that just wrote reads its write through
/// the other instance (from the primary), while a client that has seen
/// nothing newer than the replica is served by the replica.
#[tokio::test]
async fn paused_replica_never_hides_a_clients_own_write() {
    let store = Arc::new(LaggingStore::new(MemoryStore::new(), Duration::ZERO));
    let (a, b) = (app(&store), app(&store));
    // Two clients, each with a session the replica has replayed.
    let first = send(&a, "/count", None).await.cookie_pair().unwrap();
    let other = send(&a, "/count", None).await.cookie_pair().unwrap();
    assert_eq!(
        floor_of(&first),
        Some(0),
        "a new session's cookie carries floor 0"
    );
    assert_eq!(send(&b, "/read", Some(other.as_bytes())).await.body, "1");
    store.pause();
    let before = store.reads();
    let wrote = send(&a, "/count", Some(first.as_bytes())).await;
    assert_eq!(wrote.body, "2");
    let first = wrote.cookie_pair().expect("the floor moves with the write");
    assert_eq!(floor_of(&first), Some(1));
    for _ in 0..10 {
        let reply = send(&b, "/read", Some(first.as_bytes())).await;
        assert!(reply.is_success_with("2"), "{reply:?}");
        let reply = send(&b, "/read", Some(other.as_bytes())).await;
        assert!(reply.is_success_with("1"), "{reply:?}");
    }
    let reads = store.reads();
    // The write's own reload went to the primary: none here, it saved at once.
    assert_eq!(
        reads.primary - before.primary,
        10,
        "the writer's reads: primary"
    );
    assert_eq!(
        reads.replica - before.replica,
        1 + 10,
        "the write's load and the other client"
    );
}

/// A cookie set before the store had replicas (`ID`, no floor) still
/// names the session, and the answer carries the floor from then on.
#[tokio::test]
async fn cookie_without_a_floor_keeps_working_and_gets_one() {
    let store = Arc::new(LaggingStore::new(MemoryStore::new(), Duration::ZERO));
    let id = Id::random().unwrap();
    let mut record = new_record();
    record.data.insert("n".into(), 5.into());
    record.version = 3;
    assert!(store.create(&id.store_key(), &record).await.unwrap());
    let app = app(&store);
    let old = format!("session={}", id.encode());
    // The replica has not replayed the create: a floorless miss is believed...
    store.pause();
    assert_eq!(send(&app, "/read", Some(old.as_bytes())).await.body, "none");
    // ...and once it has, the session is found and the floor set.
    store.resume();
    let reply = send(&app, "/read", Some(old.as_bytes())).await;
    assert_eq!(reply.body, "5");
    let pair = reply.cookie_pair().expect("the floor is sent");
    assert_eq!((id_of(&pair), floor_of(&pair)), (id, Some(3)));
    // Nothing newer seen: no cookie.
    let again = send(&app, "/read", Some(pair.as_bytes())).await;
    assert!(again.is_success_with("5"), "{again:?}");
}

/// A malformed floor is ignored and the id still counts; the next answer
/// sets a well-formed floor.
#[tokio::test]
async fn malformed_floor_keeps_the_session() {
    let store = Arc::new(LaggingStore::new(MemoryStore::new(), Duration::ZERO));
    let app = app(&store);
    let pair = send(&app, "/count", None).await.cookie_pair().unwrap();
    let id = id_of(&pair);
    for bad in [".", ".x", ".-1", ".99999999999999999999999"] {
        let cookie = format!("session={}{bad}", id.encode());
        let reply = send(&app, "/count", Some(cookie.as_bytes())).await;
        assert!(reply.status.is_success(), "{bad}: {reply:?}");
        let new = reply.cookie_pair().expect("a floor");
        assert_eq!(id_of(&new), id, "{bad}: same session");
        assert!(floor_of(&new).is_some(), "{bad}");
    }
    let cookie = format!("session={}.x", id.encode());
    assert_eq!(send(&app, "/read", Some(cookie.as_bytes())).await.body, "5");
}

/// Another tab of the same client wrote through the other instance while
/// the replica is paused: this tab's request loads the stale replica copy
/// (its cookie's floor allows it), its save conflicts, and the reload after
/// the conflict must come from the primary, so the request runs again on
/// the fresh record instead of failing on the stale copy again.
#[tokio::test]
async fn conflict_reload_is_not_served_stale_by_the_replica() {
    let store = Arc::new(LaggingStore::new(MemoryStore::new(), Duration::ZERO));
    let (a, b) = (app(&store), app(&store));
    let old_tab = send(&a, "/count", None).await.cookie_pair().unwrap();
    // Replayed at version 0.
    assert_eq!(send(&b, "/read", Some(old_tab.as_bytes())).await.body, "1");
    store.pause();
    let mut new_tab = old_tab.clone();
    for n in 2..=4 {
        let reply = send(&b, "/count", Some(new_tab.as_bytes())).await;
        assert_eq!(reply.body, n.to_string());
        new_tab = reply.cookie_pair().unwrap();
    }
    let reply = send(&a, "/count", Some(old_tab.as_bytes())).await;
    assert!(reply.status.is_success(), "{reply:?}");
    assert_eq!(reply.body, "5", "ran again on the primary's record");
    let pair = reply.cookie_pair().unwrap();
    assert_eq!(floor_of(&pair), Some(4));
    let stored = store
        .load(&id_of(&pair).store_key())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.data["n"], 5);
}

/// A store whose reads do not lag sets no floor and never calls
/// `load_at_least`'s replica path: cookies are exactly as before.
#[tokio::test]
async fn store_without_lag_sets_no_floor() {
    let app = Router::new()
        .route("/count", get(count))
        .layer(SessionLayer::new(MemoryStore::new()).secure(false));
    let pair = send(&app, "/count", None).await.cookie_pair().unwrap();
    assert_eq!(floor_of(&pair), None);
    assert!(!pair.contains('.'), "{pair}");
    let again = send(&app, "/count", Some(pair.as_bytes())).await;
    assert!(again.is_success_with("2"), "{again:?}");
}

#[tokio::test]
async fn paused_helper_store_serves_stale_without_a_floor() {
    // The simulated replica really lags: without a floor its answer is old.
    let store = paused();
    let key = Id::random().unwrap().store_key();
    assert!(store.create(&key, &new_record()).await.unwrap());
    assert_eq!(store.load_at_least(&key, None).await.unwrap(), None);
    assert!(store.load_at_least(&key, Some(0)).await.unwrap().is_some());
    assert!(store.load(&key).await.unwrap().is_some());
}
