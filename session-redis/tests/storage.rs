//! What the store leaves in Redis: the documented hash layout and TTLs, no
//! raw session id anywhere, undecodable values treated as absent, and the
//! principal index cleaned lazily.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http::StatusCode;
use serde_json::json;
use session_core::conformance::http::{id_of, send};
use session_core::record::{now, to_unix_ms};
use session_core::{
    Expiry, Id, Record, SaveOutcome, Session, SessionError, SessionLayer, SessionStore,
};
use session_redis::redis::{self, AsyncCommands as _, AsyncIter};

use common::{fresh_prefix, raw_connection, standalone_store};

async fn count(session: Session) -> Result<String, SessionError> {
    let n: u64 = session
        .update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(n.to_string())
}

async fn login(session: Session) -> Result<&'static str, SessionError> {
    session.set_principal("ada").await?;
    session.insert("device", "laptop").await?;
    session.cycle_id().await?;
    Ok("logged in")
}

async fn cycle(session: Session) -> Result<&'static str, SessionError> {
    session.cycle_id().await?;
    Ok("cycled")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stored_key_or_value_contains_a_raw_session_id() {
    let store = standalone_store().await;
    let prefix = fresh_prefix();
    let store = store.key_prefix(prefix.clone());
    let app = Router::new()
        .route("/count", get(count))
        .route("/login", get(login))
        .route("/cycle", get(cycle))
        .layer(SessionLayer::new(store));

    // Every id any cookie carried: new sessions, a login (cycles the id and
    // sets a principal), a plain cycle.
    let mut ids: Vec<Id> = Vec::new();
    let mut remember = |reply: &session_core::conformance::http::Reply| {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let pair = reply.cookie_pair().expect("a cookie");
        ids.push(id_of(&pair));
        pair
    };
    let first = remember(&send(&app, "/count", None).await);
    let logged_in = remember(&send(&app, "/login", Some(first.as_bytes())).await);
    let cycled = remember(&send(&app, "/cycle", Some(logged_in.as_bytes())).await);
    assert_eq!(
        send(&app, "/count", Some(cycled.as_bytes())).await.body,
        "2"
    );
    remember(&send(&app, "/count", None).await);

    let needles: Vec<String> = ids
        .iter()
        .flat_map(|id| {
            let url_safe = id.encode();
            let standard = url_safe.replace('-', "+").replace('_', "/");
            [url_safe, standard]
        })
        .collect();
    let check = |what: &str, bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        for needle in &needles {
            assert!(
                !text.contains(needle.as_str()),
                "{what} contains a raw session id: {text}"
            );
        }
    };

    let mut conn = raw_connection().await;
    let mut keys: Vec<Vec<u8>> = Vec::new();
    {
        let mut iter: AsyncIter<'_, Vec<u8>> = conn.scan_match(format!("{prefix}*")).await.unwrap();
        while let Some(key) = iter.next_item().await {
            keys.push(key.unwrap());
        }
    }
    let mut hashes = 0;
    let mut sets = 0;
    for key in &keys {
        check("a key", key);
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        match kind.as_str() {
            "hash" => {
                hashes += 1;
                let hash: HashMap<Vec<u8>, Vec<u8>> = conn.hgetall(key).await.unwrap();
                for (field, value) in &hash {
                    check("a hash field", field);
                    check("a hash value", value);
                }
            }
            "set" => {
                sets += 1;
                let members: Vec<Vec<u8>> = conn.smembers(key).await.unwrap();
                for member in &members {
                    check("a set member", member);
                }
            }
            other => panic!("unexpected key type {other}"),
        }
    }
    // The two live sessions, and ada's index: the checks above saw real data.
    assert_eq!(hashes, 2, "live session records under the prefix");
    assert_eq!(sets, 1, "principal sets under the prefix");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_layout_and_ttls_match_the_docs() {
    let store = standalone_store().await;
    let mut conn = raw_connection().await;
    let key = Id::random().unwrap().store_key();
    let expiry = Expiry::new(Duration::from_secs(600), Duration::from_secs(3600)).persistent(true);
    let mut record = Record::new(now(), &expiry);
    record.data.insert("cart".into(), json!([1, 2]));
    record.principal = Some("ada".into());
    assert!(store.create(&key, &record).await.unwrap());

    let record_key = store.record_key(&key);
    assert!(
        record_key.ends_with(&format!("s:{}", key.as_str())),
        "{record_key}"
    );
    let hash: HashMap<String, String> = conn.hgetall(&record_key).await.unwrap();
    let ms = |t| to_unix_ms(t).to_string();
    let expected: HashMap<String, String> = [
        ("f", "1".to_owned()),
        ("v", "0".to_owned()),
        ("c", ms(record.created_at)),
        ("a", ms(record.last_access)),
        ("i", ms(record.idle_deadline)),
        ("x", ms(record.absolute_deadline)),
        ("t", "600000".to_owned()),
        ("p", "1".to_owned()),
        ("u", "ada".to_owned()),
        ("d", r#"{"cart":[1,2]}"#.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(hash, expected);

    // The record's TTL is its time to live; the index outlives it.
    let pttl: i64 = conn.pttl(&record_key).await.unwrap();
    assert!((598_000..=600_000).contains(&pttl), "record PTTL {pttl}");
    let set_key = store.principal_key("ada");
    let members: Vec<String> = conn.smembers(&set_key).await.unwrap();
    assert_eq!(members, vec![key.as_str().to_owned()]);
    let set_pttl: i64 = conn.pttl(&set_key).await.unwrap();
    assert!(
        (3_598_000..=3_600_000).contains(&set_pttl),
        "set PTTL {set_pttl}"
    );

    // A touch rewrites `a` and `i` and the TTL, nothing else.
    let idle = now() + Duration::from_secs(1200);
    assert!(store.touch(&key, idle).await.unwrap());
    let touched: HashMap<String, String> = conn.hgetall(&record_key).await.unwrap();
    assert_eq!(touched["i"], ms(idle));
    assert!(touched["a"] >= hash["a"]);
    for field in ["f", "v", "c", "x", "t", "p", "u", "d"] {
        assert_eq!(touched[field], hash[field], "touch changed `{field}`");
    }
    let pttl: i64 = conn.pttl(&record_key).await.unwrap();
    assert!(
        (1_198_000..=1_200_000).contains(&pttl),
        "touched PTTL {pttl}"
    );

    // Without a principal there is no `u` field.
    let plain = Id::random().unwrap().store_key();
    assert!(
        store
            .create(&plain, &Record::new(now(), &expiry))
            .await
            .unwrap()
    );
    let exists: bool = conn.hexists(store.record_key(&plain), "u").await.unwrap();
    assert!(!exists);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_values_are_absent() {
    let store = standalone_store().await;
    let mut conn = raw_connection().await;
    let record = Record::new(now(), &Expiry::default());

    // A hash of an unknown format, and a value that is not a hash at all.
    let foreign_hash = Id::random().unwrap().store_key();
    let _: () = conn
        .hset_multiple(
            store.record_key(&foreign_hash),
            &[
                ("f", "9"),
                ("v", "0"),
                ("i", "99999999999999"),
                ("x", "99999999999999"),
            ],
        )
        .await
        .unwrap();
    let string = Id::random().unwrap().store_key();
    let _: () = conn
        .set(store.record_key(&string), "not a session")
        .await
        .unwrap();

    for key in [&foreign_hash, &string] {
        assert_eq!(store.load(key).await.unwrap(), None, "load");
    }
    let mut next = record.clone();
    next.version = 1;
    assert_eq!(
        store.save(&string, &next, 0).await.unwrap(),
        SaveOutcome::Gone
    );
    assert!(
        !store
            .touch(&string, now() + Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(
        store.create(&string, &record).await.unwrap(),
        "a foreign value does not block create"
    );
    assert_eq!(store.load(&string).await.unwrap(), Some(record));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principal_index_forgets_dead_sessions_when_listed() {
    let store = standalone_store().await;
    let mut conn = raw_connection().await;
    let mut record = Record::new(now(), &Expiry::default());
    record.principal = Some("ada".into());
    let (gone, live) = (
        Id::random().unwrap().store_key(),
        Id::random().unwrap().store_key(),
    );
    assert!(store.create(&gone, &record).await.unwrap());
    assert!(store.create(&live, &record).await.unwrap());
    store.delete(&gone).await.unwrap();

    let set_key = store.principal_key("ada");
    let before: Vec<String> = conn.smembers(&set_key).await.unwrap();
    assert_eq!(before.len(), 2, "delete leaves the index to lazy cleanup");

    let listed = store.list_by_principal("ada").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, live);
    let after: Vec<String> = conn.smembers(&set_key).await.unwrap();
    assert_eq!(
        after,
        vec![live.as_str().to_owned()],
        "the dead member was removed"
    );
}
