//! What the store leaves in Redis: the documented string layout and TTLs, no
//! raw session id anywhere, foreign and old values treated as absent, the
//! principal index updated only when a save needs it, and cleaned lazily.
#![allow(clippy::unwrap_used)]

mod common;

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
    let mut strings = 0;
    let mut sets = 0;
    for key in &keys {
        check("a key", key);
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        match kind.as_str() {
            "string" => {
                strings += 1;
                let value: Vec<u8> = conn.get(key).await.unwrap();
                check("a value", &value);
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
    assert_eq!(strings, 2, "live session records under the prefix");
    assert_eq!(sets, 1, "principal sets under the prefix");
}

/// The header fields of a stored value, split at `:` (the principal and
/// data, which follow the ninth field, are left in the tenth).
fn header(value: &str) -> Vec<&str> {
    value.splitn(10, ':').collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_layout_and_ttls_match_the_docs() {
    let store = standalone_store().await;
    let mut conn = raw_connection().await;
    let key = Id::random().unwrap().store_key();
    let expiry = Expiry::new(Duration::from_secs(600), Duration::from_secs(3600)).persistent(true);
    let mut record = Record::new(now(), &expiry);
    record.data.insert("cart".into(), json!([1, 2]));
    record.principal = Some("ada:🦀".into());
    assert!(store.create(&key, &record).await.unwrap());

    let record_key = store.record_key(&key);
    assert!(
        record_key.ends_with(&format!("s:{}", key.as_str())),
        "{record_key}"
    );
    let kind: String = redis::cmd("TYPE")
        .arg(&record_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kind, "string");
    let ms = |t| to_unix_ms(t).to_string();
    let value: String = conn.get(&record_key).await.unwrap();
    let expected = format!(
        "2:0:{}:{}:{}:{}:600000:1:{}:ada:🦀{{\"cart\":[1,2]}}",
        ms(record.idle_deadline),
        ms(record.absolute_deadline),
        ms(record.last_access),
        ms(record.created_at),
        "ada:🦀".len(),
    );
    assert_eq!(value, expected);

    // The record's TTL is its time to live; the index outlives it.
    let pttl: i64 = conn.pttl(&record_key).await.unwrap();
    assert!((598_000..=600_000).contains(&pttl), "record PTTL {pttl}");
    let set_key = store.principal_key("ada:🦀");
    let members: Vec<String> = conn.smembers(&set_key).await.unwrap();
    assert_eq!(members, vec![key.as_str().to_owned()]);
    let set_pttl: i64 = conn.pttl(&set_key).await.unwrap();
    assert!(
        (3_598_000..=3_600_000).contains(&set_pttl),
        "set PTTL {set_pttl}"
    );

    // A touch rewrites `i` and `a` and the TTL, nothing else.
    let before_touch = to_unix_ms(now());
    let idle = now() + Duration::from_secs(1200);
    assert!(store.touch(&key, 0, idle).await.unwrap());
    let touched: String = conn.get(&record_key).await.unwrap();
    let (old, new) = (header(&value), header(&touched));
    assert_eq!(new[2], ms(idle), "touch sets `i`");
    let access: i64 = new[4].parse().unwrap();
    assert!(
        (before_touch..=to_unix_ms(now())).contains(&access),
        "touch sets `a` to now: {touched}"
    );
    for field in [0, 1, 3, 5, 6, 7, 8, 9] {
        assert_eq!(new[field], old[field], "touch changed field {field}");
    }
    let pttl: i64 = conn.pttl(&record_key).await.unwrap();
    assert!(
        (1_198_000..=1_200_000).contains(&pttl),
        "touched PTTL {pttl}"
    );
    // What the script spliced, the store reads back.
    let loaded = store.load(&key).await.unwrap().expect("live after touch");
    assert_eq!(ms(loaded.idle_deadline), ms(idle));
    assert_eq!(to_unix_ms(loaded.last_access), access);
    assert_eq!(loaded.data, record.data);
    assert_eq!(loaded.principal, record.principal);

    // A save writes the whole value again, with its TTL.
    let mut next = loaded.clone();
    next.version = 1;
    next.data.insert("n".into(), json!(42));
    assert_eq!(
        store.save(&key, &next, 0).await.unwrap(),
        SaveOutcome::Saved
    );
    let saved: String = conn.get(&record_key).await.unwrap();
    assert!(
        saved.starts_with("2:1:") && saved.ends_with(r#"ada:🦀{"cart":[1,2],"n":42}"#),
        "{saved}"
    );
    assert_eq!(store.load(&key).await.unwrap(), Some(next));
    let pttl: i64 = conn.pttl(&record_key).await.unwrap();
    assert!((1_195_000..=1_200_000).contains(&pttl), "saved PTTL {pttl}");

    // Without a principal the length field is empty; the empty principal is
    // length 0.
    let plain = Id::random().unwrap().store_key();
    let mut record = Record::new(now(), &expiry.persistent(false));
    assert!(store.create(&plain, &record).await.unwrap());
    let value: String = conn.get(store.record_key(&plain)).await.unwrap();
    assert!(value.ends_with(":600000:0::{}"), "{value}");
    record.principal = Some(String::new());
    record.version = 1;
    assert_eq!(
        store.save(&plain, &record, 0).await.unwrap(),
        SaveOutcome::Saved
    );
    let value: String = conn.get(store.record_key(&plain)).await.unwrap();
    assert!(value.ends_with(":600000:0:0:{}"), "{value}");
    assert_eq!(store.load(&plain).await.unwrap(), Some(record));
}

/// Versions travel as decimal strings and the save script compares them as
/// such: exact up to `u64::MAX`, where a Lua number (a double) is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_compare_exactly_up_to_u64_max() {
    let store = standalone_store().await;
    let key = Id::random().unwrap().store_key();
    let mut record = Record::new(now(), &Expiry::default());
    record.version = u64::MAX - 2;
    assert!(store.create(&key, &record).await.unwrap());
    record.version = u64::MAX - 1;
    // u64::MAX - 3 and u64::MAX - 2 are the same double.
    assert_eq!(
        store.save(&key, &record, u64::MAX - 3).await.unwrap(),
        SaveOutcome::Conflict
    );
    assert_eq!(
        store.save(&key, &record, u64::MAX - 2).await.unwrap(),
        SaveOutcome::Saved
    );
    record.version = u64::MAX;
    assert_eq!(
        store.save(&key, &record, u64::MAX - 1).await.unwrap(),
        SaveOutcome::Saved
    );
    assert_eq!(store.load(&key).await.unwrap(), Some(record));
}

/// Values under a session key that are not records of this crate: each is
/// absent to `load`, `touch`, `save` and `delete_by_principal`, and a
/// `create` replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_and_old_values_are_absent() {
    let store = standalone_store().await;
    let mut conn = raw_connection().await;
    let far = to_unix_ms(now() + Duration::from_secs(3600)).to_string();
    let past = to_unix_ms(now() - Duration::from_secs(1)).to_string();
    let mut old_record = Record::new(now(), &Expiry::default());
    old_record.principal = Some("ada".into());
    let string_values: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"not a session".to_vec()),
        ("empty", Vec::new()),
        ("session-core's JSON encoding", old_record.encode().unwrap()),
        (
            "format 1 as text",
            format!("1:0:{far}:{far}:0:0:1000:0:3:ada{{}}").into_bytes(),
        ),
        (
            "format 3",
            format!("3:0:{far}:{far}:0:0:1000:0:3:ada{{}}").into_bytes(),
        ),
        (
            "header cut short",
            format!("2:0:{far}:{far}:0").into_bytes(),
        ),
        (
            "text version",
            format!("2:x:{far}:{far}:0:0:1000:0:3:ada{{}}").into_bytes(),
        ),
        (
            "principal past the end",
            format!("2:0:{far}:{far}:0:0:1000:0:9:ada{{}}").into_bytes(),
        ),
        (
            "data not an object",
            format!("2:0:{far}:{far}:0:0:1000:0:3:ada[1]").into_bytes(),
        ),
        (
            "expired",
            format!("2:0:{past}:{far}:0:0:1000:0:3:ada{{}}").into_bytes(),
        ),
    ];

    let mut keys = Vec::new();
    // The old layout: a live-looking format 1 hash, fields as this crate
    // wrote them before.
    let old_hash = Id::random().unwrap().store_key();
    let _: () = conn
        .hset_multiple(
            store.record_key(&old_hash),
            &[
                ("f", "1"),
                ("v", "0"),
                ("c", "0"),
                ("a", "0"),
                ("i", far.as_str()),
                ("x", far.as_str()),
                ("t", "1000"),
                ("p", "0"),
                ("u", "ada"),
                ("d", "{}"),
            ],
        )
        .await
        .unwrap();
    keys.push(("old format 1 hash", old_hash));
    let list = Id::random().unwrap().store_key();
    let _: () = conn
        .rpush(store.record_key(&list), &["2:0:", "{}"])
        .await
        .unwrap();
    keys.push(("list", list));
    for (what, value) in string_values {
        let key = Id::random().unwrap().store_key();
        let _: () = conn.set(store.record_key(&key), value).await.unwrap();
        keys.push((what, key));
    }
    // Every key in ada's index, as if an old version had indexed them.
    for (_, key) in &keys {
        let _: () = conn
            .sadd(store.principal_key("ada"), key.as_str())
            .await
            .unwrap();
    }

    assert!(store.list_by_principal("ada").await.unwrap().is_empty());
    assert_eq!(store.delete_by_principal("ada").await.unwrap(), 0);
    for (what, key) in &keys {
        assert_eq!(store.load(key).await.unwrap(), None, "load of {what}");
        let mut next = old_record.clone();
        next.version = 1;
        assert_eq!(
            store.save(key, &next, 0).await.unwrap(),
            SaveOutcome::Gone,
            "save over {what}"
        );
        assert!(
            !store
                .touch(key, 0, now() + Duration::from_secs(60))
                .await
                .unwrap(),
            "touch of {what}"
        );
    }
    for (what, key) in &keys {
        let exists: bool = conn.exists(store.record_key(key)).await.unwrap();
        // `delete_by_principal` and the failed writes left them alone.
        assert!(exists, "{what} was removed");
        let mut record = Record::new(now(), &Expiry::default());
        record.data.insert("what".into(), json!(what));
        assert!(
            store.create(key, &record).await.unwrap(),
            "{what} blocks create"
        );
        assert_eq!(store.load(key).await.unwrap(), Some(record), "{what}");
        let pttl: i64 = conn.pttl(store.record_key(key)).await.unwrap();
        assert!(pttl > 0, "{what} replaced without a TTL");
    }
}

/// A save that keeps the principal (and does not extend the absolute
/// deadline) writes at once, without the index script: its key was indexed
/// by the write that gave the record that principal. A save that gives the
/// record a new principal, or a later absolute deadline, indexes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_indexes_only_when_the_principal_needs_it() {
    let store = standalone_store().await;
    let mut conn = raw_connection().await;
    let key = Id::random().unwrap().store_key();
    let member = key.as_str().to_owned();
    let (ada, bob) = (store.principal_key("ada"), store.principal_key("bob"));
    let expiry = Expiry::new(Duration::from_secs(600), Duration::from_secs(3600));
    let mut record = Record::new(now(), &expiry);
    record.principal = Some("ada".into());
    assert!(store.create(&key, &record).await.unwrap());
    let members: Vec<String> = conn.smembers(&ada).await.unwrap();
    assert_eq!(members, vec![member.clone()], "create indexes first");

    // Take the key out of the index behind the store's back: an index call
    // would put it back, so its absence shows there was none.
    let _: () = conn.sadd(&ada, "keep-the-set").await.unwrap();
    let _: () = conn.srem(&ada, &member).await.unwrap();
    let ada_pttl: i64 = conn.pttl(&ada).await.unwrap();
    for version in 1..=3 {
        record.version = version;
        record.data.insert("n".into(), json!(version));
        record.mark_used(now());
        assert_eq!(
            store.save(&key, &record, version - 1).await.unwrap(),
            SaveOutcome::Saved
        );
    }
    let is_member: bool = conn.sismember(&ada, &member).await.unwrap();
    assert!(
        !is_member,
        "a save keeping the principal ran the index script"
    );
    let pttl: i64 = conn.pttl(&ada).await.unwrap();
    assert!(pttl <= ada_pttl, "the set's TTL was raised");
    assert_eq!(store.load(&key).await.unwrap(), Some(record.clone()));

    // A later absolute deadline (remember me): indexed again, TTL raised.
    record.set_expiry(
        now(),
        &Expiry::new(Duration::from_secs(600), Duration::from_secs(7200)),
    );
    record.version = 4;
    assert_eq!(
        store.save(&key, &record, 3).await.unwrap(),
        SaveOutcome::Saved
    );
    let is_member: bool = conn.sismember(&ada, &member).await.unwrap();
    assert!(is_member, "a later absolute deadline was not indexed");
    let raised: i64 = conn.pttl(&ada).await.unwrap();
    assert!(
        (7_190_000..=7_200_000).contains(&raised),
        "set PTTL {raised}"
    );

    // A new principal: in bob's set before the record is bob's.
    record.principal = Some("bob".into());
    record.version = 5;
    assert_eq!(
        store.save(&key, &record, 4).await.unwrap(),
        SaveOutcome::Saved
    );
    let members: Vec<String> = conn.smembers(&bob).await.unwrap();
    assert_eq!(
        members,
        vec![member.clone()],
        "the new principal was not indexed"
    );
    let listed = store.list_by_principal("bob").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, key);

    // Indexing first never turns a conflict or a gone record into a write.
    record.principal = Some("cy".into());
    record.version = 6;
    assert_eq!(
        store.save(&key, &record, 4).await.unwrap(),
        SaveOutcome::Conflict
    );
    store.delete(&key).await.unwrap();
    assert_eq!(
        store.save(&key, &record, 5).await.unwrap(),
        SaveOutcome::Gone
    );
    let cy_exists: bool = conn.exists(store.principal_key("cy")).await.unwrap();
    assert!(!cy_exists, "a save that cannot write indexed the key");

    // Dropping the principal needs no index.
    let plain = Id::random().unwrap().store_key();
    let mut record = Record::new(now(), &expiry);
    record.principal = Some("dee".into());
    assert!(store.create(&plain, &record).await.unwrap());
    let _: () = conn.del(store.principal_key("dee")).await.unwrap();
    record.principal = None;
    record.version = 1;
    assert_eq!(
        store.save(&plain, &record, 0).await.unwrap(),
        SaveOutcome::Saved
    );
    let dee_exists: bool = conn.exists(store.principal_key("dee")).await.unwrap();
    assert!(!dee_exists);
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
