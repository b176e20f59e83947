//! The memory store's gauge of sessions held, through a test recorder.

use session_core::conformance::observe::{Capture, run};
use session_core::{Expiry, Id, Record, SessionStore};
use session_memory::MemoryStore;

fn key() -> session_core::StoreKey {
    Id::random().expect("an id").store_key()
}

/// `session_memory_sessions` follows creates and deletes (exact once the
/// cache's housekeeping ran, which `delete_expired` does).
#[test]
fn gauge_counts_sessions_held() {
    run(|capture: std::sync::Arc<Capture>| async move {
        let store = MemoryStore::new();
        let record = Record::new(session_core::record::now(), &Expiry::default());
        let keys: Vec<_> = (0..3).map(|_| key()).collect();
        for key in &keys {
            assert!(store.create(key, &record).await.expect("create"));
        }
        store.delete_expired().await.expect("housekeeping");
        assert_eq!(capture.gauge("session_memory_sessions"), Some(3.0));
        store.delete(&keys[0]).await.expect("delete");
        store.delete_expired().await.expect("housekeeping");
        assert_eq!(capture.gauge("session_memory_sessions"), Some(2.0));
        assert_eq!(store.len(), 2);
    });
}
