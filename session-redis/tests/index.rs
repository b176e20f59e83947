//! The principal index never loses a live record, whatever runs between the
//! two steps of a `create` with a principal (index the key, then write the
//! record): forced interleavings of those steps with `list_by_principal` and
//! `delete_by_principal`, then many creates racing listings and "log out
//! everywhere". Each on a standalone server and on a Redis Cluster
//! (`cluster_*`), where the principal's set and the record live in different
//! slots.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use session_core::record::now;
use session_core::{DeleteOutcome, Expiry, Id, Record, SaveOutcome, SessionStore, StoreKey};
use session_redis::RedisStore;
use session_redis::redis::aio::ConnectionLike;
use session_redis::redis::{self, AsyncCommands as _};

use common::{
    cluster_store, fresh_prefix, raw_cluster_connection, raw_connection, standalone_store,
};

/// Two tests of the case `$case` (an `async fn(RedisStore, connection)`):
/// `$standalone` on a standalone server, `$cluster` on a Redis Cluster.
macro_rules! on_both {
    ($case:ident: $standalone:ident, $cluster:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $standalone() {
            $case(standalone_store().await, raw_connection().await).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $cluster() {
            $case(cluster_store().await, raw_cluster_connection().await).await;
        }
    };
}

fn new_key() -> StoreKey {
    Id::random().unwrap().store_key()
}

fn record_of(principal: &str) -> Record {
    let mut record = Record::new(now(), &Expiry::default());
    record.principal = Some(principal.to_owned());
    record
}

/// The principal's set, as a raw `SMEMBERS` sees it.
async fn members<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    store: &RedisStore,
    principal: &str,
) -> HashSet<String> {
    conn.smembers(store.principal_key(principal)).await.unwrap()
}

/// What `create` does first for a record with a principal: the key into the
/// principal's set (the index script's `SADD`).
async fn index_by_hand<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    store: &RedisStore,
    principal: &str,
    key: &StoreKey,
) {
    let _: i64 = conn
        .sadd(store.principal_key(principal), key.as_str())
        .await
        .unwrap();
}

/// What `create` does second: `SET key value PX ttl NX`, with the exact value
/// `create` writes for `record` (taken from a create of it under a scratch
/// prefix). True if it wrote.
async fn write_by_hand<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    store: &RedisStore,
    key: &StoreKey,
    record: &Record,
) -> bool {
    let scratch = store.clone().key_prefix(fresh_prefix());
    let scratch_key = new_key();
    assert!(scratch.create(&scratch_key, record).await.unwrap());
    let value: Vec<u8> = conn.get(scratch.record_key(&scratch_key)).await.unwrap();
    let ttl = u64::try_from(record.ttl(now()).as_millis()).unwrap();
    let written: Option<()> = redis::cmd("SET")
        .arg(store.record_key(key))
        .arg(value)
        .arg("PX")
        .arg(ttl)
        .arg("NX")
        .query_async(conn)
        .await
        .unwrap();
    written.is_some()
}

/// A "log out everywhere" of `principal` deletes the record under `key`,
/// and counts it if it was `written` (`escaped` says what it means if not).
async fn next_logout_deletes(
    store: &RedisStore,
    principal: &str,
    key: &StoreKey,
    written: bool,
    escaped: &str,
) {
    let deleted = store.delete_by_principal(principal).await.unwrap();
    assert_eq!(store.load(key).await.unwrap(), None, "{escaped}");
    assert_eq!(deleted, u64::from(written), "sessions deleted");
}

/// A `list_by_principal` runs between the create's two steps: it sees the
/// member without a record. Whatever it does about that, the record must not
/// end up live outside the index: either the write is refused (then `create`
/// reports the key taken, and the layer draws another id), or a later
/// `delete_by_principal` still deletes it.
async fn listing_between_index_and_write<C: ConnectionLike + Send + Sync>(
    store: RedisStore,
    mut conn: C,
) {
    let (ada, key) = ("ada", new_key());
    let record = record_of(ada);
    index_by_hand(&mut conn, &store, ada, &key).await;
    assert!(store.list_by_principal(ada).await.unwrap().is_empty());
    let written = write_by_hand(&mut conn, &store, &key, &record).await;

    let escaped = "a record written after a listing pruned its member escaped delete_by_principal";
    next_logout_deletes(&store, ada, &key, written, escaped).await;
    assert!(
        !store.create(&key, &record).await.unwrap(),
        "create reports the pruned key taken"
    );
}

on_both!(
    listing_between_index_and_write:
    listing_between_create_index_and_write_loses_no_record,
    cluster_listing_between_create_index_and_write_loses_no_record
);

/// The same with a `delete_by_principal` between the two steps: a session
/// created while "log out everywhere" ran may survive it, but must still be
/// reached by the next one.
async fn logout_between_index_and_write<C: ConnectionLike + Send + Sync>(
    store: RedisStore,
    mut conn: C,
) {
    let (ada, key) = ("ada", new_key());
    let record = record_of(ada);
    index_by_hand(&mut conn, &store, ada, &key).await;
    assert_eq!(store.delete_by_principal(ada).await.unwrap(), 0);
    let written = write_by_hand(&mut conn, &store, &key, &record).await;

    let escaped =
        "a record written after delete_by_principal pruned its member escaped the next one";
    next_logout_deletes(&store, ada, &key, written, escaped).await;
    assert!(
        !store.create(&key, &record).await.unwrap(),
        "create reports the pruned key taken"
    );
}

on_both!(
    logout_between_index_and_write:
    logout_between_create_index_and_write_loses_no_record,
    cluster_logout_between_create_index_and_write_loses_no_record
);

/// A second create of an existing key (as `MigratingStore` does when two
/// requests copy one session at once) has indexed the key (a no-op `SADD`)
/// when "log out everywhere" deletes the first record and prunes the member;
/// its write lands afterwards. It must not leave a live record that the index
/// no longer holds.
async fn duplicate_create_after_logout<C: ConnectionLike + Send + Sync>(
    store: RedisStore,
    mut conn: C,
) {
    let (ada, key) = ("ada", new_key());
    let record = record_of(ada);
    assert!(store.create(&key, &record).await.unwrap());
    index_by_hand(&mut conn, &store, ada, &key).await;
    assert_eq!(store.delete_by_principal(ada).await.unwrap(), 1);
    assert!(members(&mut conn, &store, ada).await.is_empty());
    let written = write_by_hand(&mut conn, &store, &key, &record).await;

    let escaped = "a duplicate create landing after delete_by_principal escaped the next one";
    next_logout_deletes(&store, ada, &key, written, escaped).await;
}

on_both!(
    duplicate_create_after_logout:
    duplicate_create_landing_after_logout_loses_no_record,
    cluster_duplicate_create_landing_after_logout_loses_no_record
);

/// What a pruned member leaves under its record key: a tombstone with a TTL
/// of at most a minute, absent to every call that reads it, which refuses a
/// `create` until it expires (here: is deleted by hand).
async fn tombstone_of_a_pruned_member<C: ConnectionLike + Send + Sync>(
    store: RedisStore,
    mut conn: C,
) {
    let (ada, key) = ("ada", new_key());
    index_by_hand(&mut conn, &store, ada, &key).await;
    assert!(store.list_by_principal(ada).await.unwrap().is_empty());
    assert!(
        members(&mut conn, &store, ada).await.is_empty(),
        "the dead member was pruned"
    );

    let record_key = store.record_key(&key);
    let value: Vec<u8> = conn.get(&record_key).await.unwrap();
    assert_eq!(value, b"tombstone");
    let pttl: i64 = conn.pttl(&record_key).await.unwrap();
    assert!((1..=60_000).contains(&pttl), "tombstone PTTL {pttl}");

    let mut record = record_of(ada);
    assert_eq!(store.load(&key).await.unwrap(), None);
    record.version = 1;
    assert_eq!(
        store.save(&key, &record, 0).await.unwrap(),
        SaveOutcome::Gone
    );
    assert!(
        !store
            .touch(&key, 0, now() + Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert_eq!(
        store.delete_if_unchanged(&key, 0).await.unwrap(),
        DeleteOutcome::Gone
    );
    record.version = 0;
    assert!(
        !store.create(&key, &record).await.unwrap(),
        "create refused"
    );
    let mut expired = record.clone();
    expired.idle_deadline = now() - session_core::time::Duration::seconds(1);
    assert!(
        !store.create(&key, &expired).await.unwrap(),
        "create of an expired record refused"
    );
    let value: Vec<u8> = conn.get(&record_key).await.unwrap();
    assert_eq!(value, b"tombstone", "the refused creates left it alone");
    // The refused creates indexed the key again; the next listing prunes it.
    assert!(store.list_by_principal(ada).await.unwrap().is_empty());
    assert!(members(&mut conn, &store, ada).await.is_empty());

    // Once the tombstone is gone, the key is free again (and indexed).
    let _: () = conn.del(&record_key).await.unwrap();
    assert!(store.create(&key, &record).await.unwrap());
    assert_eq!(store.load(&key).await.unwrap(), Some(record));
    assert_eq!(
        members(&mut conn, &store, ada).await,
        HashSet::from([key.as_str().to_owned()])
    );
}

on_both!(
    tombstone_of_a_pruned_member:
    a_pruned_member_leaves_a_tombstone_absent_to_reads_that_refuses_create,
    cluster_a_pruned_member_leaves_a_tombstone_absent_to_reads_that_refuses_create
);

/// A member whose key holds something a `create` may still replace (a dead
/// record of this crate, a foreign value) is not pruned: that create may be
/// the one that indexed the key. Nothing is written over such a value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_key_holds_a_replaceable_value_is_kept() {
    let store = standalone_store().await;
    let mut conn = raw_connection().await;
    let ada = "ada";
    let mut dead = record_of(ada);
    dead.idle_deadline = now() - session_core::time::Duration::seconds(1);
    let (dead_key, foreign_key) = (new_key(), new_key());
    let dead_value = {
        // A dead record as `create` would have written it a moment earlier.
        let scratch = store.clone().key_prefix(fresh_prefix());
        let scratch_key = new_key();
        assert!(scratch.create(&scratch_key, &record_of(ada)).await.unwrap());
        let live: String = conn.get(scratch.record_key(&scratch_key)).await.unwrap();
        let mut fields: Vec<String> = live.splitn(10, ':').map(str::to_owned).collect();
        fields[2] = session_core::record::to_unix_ms(dead.idle_deadline).to_string();
        fields.join(":")
    };
    let _: () = conn
        .set(store.record_key(&dead_key), &dead_value)
        .await
        .unwrap();
    let _: () = conn
        .set(store.record_key(&foreign_key), "not a session")
        .await
        .unwrap();
    index_by_hand(&mut conn, &store, ada, &dead_key).await;
    index_by_hand(&mut conn, &store, ada, &foreign_key).await;

    assert!(store.list_by_principal(ada).await.unwrap().is_empty());
    assert_eq!(store.delete_by_principal(ada).await.unwrap(), 0);
    assert_eq!(
        members(&mut conn, &store, ada).await,
        HashSet::from([
            dead_key.as_str().to_owned(),
            foreign_key.as_str().to_owned()
        ]),
        "members a create may still fill were pruned"
    );
    let value: String = conn.get(store.record_key(&dead_key)).await.unwrap();
    assert_eq!(value, dead_value);
    let value: String = conn.get(store.record_key(&foreign_key)).await.unwrap();
    assert_eq!(value, "not a session");
}

/// Many creates with one principal (each retried under a fresh key when
/// refused, as the layer does) race listings (all along) and "log out
/// everywhere" (until three quarters of the creates are done, so that many
/// sessions live to the end). At the end every created record is either
/// deleted by one of the logouts (counted in their answers) or live and in
/// the principal's set: the counts add up exactly, and a final logout
/// deletes exactly the live ones.
async fn creates_racing_cleanup(store: RedisStore, mut conn: impl ConnectionLike + Send + Sync) {
    const CREATORS: usize = 16;
    const CREATES_EACH: usize = 60;
    const LISTERS: usize = 4;
    const LOGOUTS: usize = 2;
    let ada = "ada";
    let store = Arc::new(store);
    const TOTAL: u64 = (CREATORS * CREATES_EACH) as u64;
    let done = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let deleted = Arc::new(AtomicU64::new(0));

    let cleaners: Vec<_> = (0..LISTERS + LOGOUTS)
        .map(|i| {
            let (store, done, progress, deleted) = (
                store.clone(),
                done.clone(),
                progress.clone(),
                deleted.clone(),
            );
            tokio::spawn(async move {
                let mut rounds = 0u64;
                while !done.load(Ordering::Relaxed) {
                    if i < LISTERS {
                        store.list_by_principal(ada).await.unwrap();
                    } else if progress.load(Ordering::Relaxed) < TOTAL * 3 / 4 {
                        let n = store.delete_by_principal(ada).await.unwrap();
                        deleted.fetch_add(n, Ordering::Relaxed);
                    } else {
                        break;
                    }
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    let creators: Vec<_> = (0..CREATORS)
        .map(|_| {
            let (store, progress) = (store.clone(), progress.clone());
            tokio::spawn(async move {
                let (mut created, mut refused) = (Vec::new(), Vec::new());
                for _ in 0..CREATES_EACH {
                    loop {
                        let key = new_key();
                        if store.create(&key, &record_of(ada)).await.unwrap() {
                            created.push(key);
                            break;
                        }
                        refused.push(key);
                    }
                    progress.fetch_add(1, Ordering::Relaxed);
                }
                (created, refused)
            })
        })
        .collect();
    let (mut created, mut refused) = (Vec::new(), Vec::new());
    for task in creators {
        let (c, r) = task.await.unwrap();
        created.extend(c);
        refused.extend(r);
    }
    done.store(true, Ordering::Relaxed);
    let mut rounds = 0;
    for task in cleaners {
        rounds += task.await.unwrap();
    }
    assert!(rounds > 0, "the cleanup ran");
    assert_eq!(created.len() as u64, TOTAL);

    let indexed = members(&mut conn, &store, ada).await;
    let mut live = Vec::new();
    let mut unindexed = Vec::new();
    for key in &created {
        if let Some(record) = store.load(key).await.unwrap() {
            assert_eq!(record.principal.as_deref(), Some(ada));
            if !indexed.contains(key.as_str()) {
                unindexed.push(key.short().to_owned());
            }
            live.push(key);
        }
    }
    for key in &refused {
        assert_eq!(
            store.load(key).await.unwrap(),
            None,
            "a refused create left a record"
        );
    }
    assert_eq!(
        unindexed,
        Vec::<String>::new(),
        "live records missing from the index (of {} live, {} created, {} refused)",
        live.len(),
        created.len(),
        refused.len()
    );
    let deleted = deleted.load(Ordering::Relaxed);
    // What the race did, for whoever reads the test's output.
    eprintln!(
        "{} created ({} creates refused on a tombstone), {deleted} deleted by {rounds} \
         listings and logouts, {} live at the end",
        created.len(),
        refused.len(),
        live.len()
    );
    assert_eq!(
        deleted + live.len() as u64,
        created.len() as u64,
        "every created record was deleted by a logout or is still live"
    );
    assert_eq!(
        store.delete_by_principal(ada).await.unwrap(),
        live.len() as u64,
        "the final logout deletes every live record"
    );
    for key in &created {
        assert_eq!(store.load(key).await.unwrap(), None);
    }
}

on_both!(
    creates_racing_cleanup:
    creates_racing_listings_and_logouts_leave_every_live_record_indexed,
    cluster_creates_racing_listings_and_logouts_leave_every_live_record_indexed
);
