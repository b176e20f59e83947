//! The session id is a secret: it comes from the OS CSPRNG and never
//! reaches a store.
#![allow(clippy::unwrap_used)] // tests

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::get;
use session_core::conformance::http::{id_of, send};
use session_core::time::OffsetDateTime;
use session_core::{
    DeleteOutcome, Id, Record, SaveOutcome, Session, SessionError, SessionInfo, SessionLayer,
    SessionStore, StoreError, StoreKey, async_trait,
};
use session_memory::MemoryStore;

#[test]
fn ids_are_128_random_bits() {
    const N: usize = 20_000;
    let ids: Vec<[u8; 16]> = (0..N)
        .map(|_| {
            let encoded = Id::random().unwrap().encode();
            let mut bytes = [0u8; 16];
            let decoded = base64_decode(&encoded);
            bytes.copy_from_slice(&decoded);
            bytes
        })
        .collect();
    let distinct: HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), N, "repeated ids");
    // Every one of the 128 bits is set in about half the ids: no bit is
    // fixed, as it would be with fewer random bits or a broken generator.
    // With 20 000 fair coins the count lies within +-4.5% of half
    // (over 12 standard deviations): this cannot fail by chance.
    for bit in 0..128 {
        let set = ids
            .iter()
            .filter(|id| id[bit / 8] & (1 << (bit % 8)) != 0)
            .count();
        let share = set as f64 / N as f64;
        assert!(
            (0.455..=0.545).contains(&share),
            "bit {bit} set in {share:.3} of ids"
        );
    }
}

fn base64_decode(encoded: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .unwrap()
}

/// Records everything the layer hands a store, as text.
struct Recording {
    inner: MemoryStore,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Recording {
    fn note(&self, key: &StoreKey, record: Option<&Record>) {
        let mut seen = self.seen.lock().unwrap();
        seen.push(key.as_str().to_owned());
        if let Some(record) = record {
            seen.push(String::from_utf8(record.encode().unwrap()).unwrap());
        }
    }
}

#[async_trait]
impl SessionStore for Recording {
    async fn create(&self, key: &StoreKey, record: &Record) -> Result<bool, StoreError> {
        self.note(key, Some(record));
        self.inner.create(key, record).await
    }
    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        self.note(key, None);
        self.inner.load(key).await
    }
    async fn load_at_least(
        &self,
        key: &StoreKey,
        floor: Option<u64>,
    ) -> Result<Option<Record>, StoreError> {
        self.note(key, None);
        self.inner.load_at_least(key, floor).await
    }
    fn reads_may_lag(&self) -> bool {
        self.inner.reads_may_lag()
    }
    async fn save(
        &self,
        key: &StoreKey,
        record: &Record,
        expected: u64,
    ) -> Result<SaveOutcome, StoreError> {
        self.note(key, Some(record));
        self.inner.save(key, record, expected).await
    }
    async fn touch(
        &self,
        key: &StoreKey,
        version: u64,
        idle: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.note(key, None);
        self.inner.touch(key, version, idle).await
    }
    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        self.note(key, None);
        self.inner.delete(key).await
    }
    async fn delete_if_unchanged(
        &self,
        key: &StoreKey,
        expected: u64,
    ) -> Result<DeleteOutcome, StoreError> {
        self.note(key, None);
        self.inner.delete_if_unchanged(key, expected).await
    }
    async fn list_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>, StoreError> {
        self.inner.list_by_principal(principal).await
    }
    async fn delete_by_principal(&self, principal: &str) -> Result<u64, StoreError> {
        self.inner.delete_by_principal(principal).await
    }
    async fn delete_expired(&self) -> Result<u64, StoreError> {
        self.inner.delete_expired().await
    }
}

async fn count(session: Session) -> Result<String, SessionError> {
    let n: u64 = session
        .update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(n.to_string())
}

async fn login(session: Session) -> Result<&'static str, SessionError> {
    session.cycle_id().await?;
    session.set_principal("ada").await?;
    Ok("in")
}

async fn logout(session: Session) -> Result<&'static str, SessionError> {
    session.destroy().await?;
    Ok("out")
}

#[tokio::test]
async fn no_store_call_ever_sees_a_raw_session_id() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = Recording {
        inner: MemoryStore::new(),
        seen: seen.clone(),
    };
    let app = Router::new()
        .route("/count", get(count))
        .route("/login", get(login))
        .route("/logout", get(logout))
        .layer(SessionLayer::new(store).touch_interval(std::time::Duration::ZERO));

    let mut ids = Vec::new();
    let first = send(&app, "/count", None).await.cookie_pair().unwrap();
    ids.push(id_of(&first).encode());
    send(&app, "/count", Some(first.as_bytes())).await;
    let cycled = send(&app, "/login", Some(first.as_bytes()))
        .await
        .cookie_pair()
        .unwrap();
    ids.push(id_of(&cycled).encode());
    send(&app, "/count", Some(cycled.as_bytes())).await;
    send(&app, "/logout", Some(cycled.as_bytes())).await;

    let seen = seen.lock().unwrap();
    assert!(
        seen.len() >= 8,
        "the store saw too little to prove anything: {seen:?}"
    );
    for text in seen.iter() {
        for id in &ids {
            assert!(
                !text.contains(id.as_str()),
                "a raw id reached the store: {text}"
            );
        }
    }
}
