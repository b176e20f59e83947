//! Changing backends with `MigratingStore` logs nobody out.

#![allow(clippy::unwrap_used)] // tests

use serde_json::json;
use session::{MemoryStore, MigratingStore, SessionStore, StoreKey};
use session_core::conformance::store::{new_key, new_record};

// The whole contract holds for a store in the middle of a migration, in
// both modes (with an empty old store here; `migration_races.rs` has moves
// meeting other requests).
session_core::conformance_tests!(prefix = migrating, async {
    MigratingStore::new(MemoryStore::new(), MemoryStore::new())
});
session_core::conformance_tests!(prefix = holding, async {
    MigratingStore::new(MemoryStore::new(), MemoryStore::new()).moving(false)
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_moves_every_session_on_first_use() {
    let (old, new) = (MemoryStore::new(), MemoryStore::new());
    let mut keys: Vec<StoreKey> = Vec::new();
    for i in 0..1_000 {
        let key = new_key();
        let mut record = new_record();
        record.data.insert("i".into(), json!(i));
        assert!(old.create(&key, &record).await.unwrap());
        keys.push(key);
    }
    let store = MigratingStore::new(old.clone(), new.clone());
    for (i, key) in keys.iter().enumerate() {
        let record = store.load(key).await.unwrap().expect("still resolves");
        assert_eq!(record.data["i"], json!(i), "data kept");
    }
    for key in &keys {
        assert!(
            old.load(key).await.unwrap().is_none(),
            "left in the old store"
        );
        assert!(
            new.load(key).await.unwrap().is_some(),
            "missing from the new store"
        );
    }
}
