//! Store-level conformance: the [`SessionStore`] contract, call by call.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::record::now;
use crate::{DeleteOutcome, Expiry, Id, LoadOutcome, Record, SaveOutcome, SessionStore, StoreKey};

/// A fresh, random store key.
pub fn new_key() -> StoreKey {
    Id::random().expect("OS RNG").store_key()
}

/// A fresh record with a long expiry and `n = 0` in its data.
pub fn new_record() -> Record {
    let mut record = Record::new(now(), &Expiry::default());
    record.data.insert("n".into(), json!(0));
    record
}

/// A record that expires `ttl` from now.
pub fn record_expiring_in(ttl: Duration) -> Record {
    let expiry = Expiry::new(ttl, Duration::from_secs(3600));
    Record::new(now(), &expiry)
}

/// `record` as the next version after `expected`.
fn next(mut record: Record, expected: u64) -> Record {
    record.version = expected + 1;
    record
}

/// `create` inserts only if absent: a second create under the same key
/// reports `false` and leaves the first record untouched.
pub async fn create_collision<S: SessionStore>(store: S) {
    let key = new_key();
    let mut first = new_record();
    first.data.insert("who".into(), json!("first"));
    let mut second = new_record();
    second.data.insert("who".into(), json!("second"));

    assert!(
        store.create(&key, &first).await.expect("create"),
        "first create must insert"
    );
    assert!(
        !store.create(&key, &second).await.expect("create"),
        "second create under the same key must report a collision"
    );
    let loaded = store
        .load(&key)
        .await
        .expect("load")
        .expect("record present");
    assert_eq!(
        loaded.data["who"],
        json!("first"),
        "a collision must not overwrite"
    );
    assert_eq!(loaded, first, "the stored record round-trips exactly");
}

/// `load` never returns an expired record, whether it was expired when
/// written or expired while stored; an expired key can be created again.
pub async fn expired_record_never_returned<S: SessionStore>(store: S) {
    let key = new_key();
    let mut dead = new_record();
    dead.idle_deadline = now() - time::Duration::seconds(1);
    // Written already expired: must not be visible.
    let _ = store.create(&key, &dead).await.expect("create");
    assert_eq!(
        store.load(&key).await.expect("load"),
        None,
        "expired at write time"
    );

    let key = new_key();
    let short = record_expiring_in(Duration::from_millis(300));
    assert!(store.create(&key, &short).await.expect("create"));
    assert!(
        store.load(&key).await.expect("load").is_some(),
        "live before its deadline"
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        store.load(&key).await.expect("load"),
        None,
        "expired while stored"
    );
    assert!(
        store.create(&key, &new_record()).await.expect("create"),
        "an expired record does not block a create"
    );
}

/// `load_observed` says what `load` says, and tells an expired record apart
/// only where the store declares it can
/// ([`observes_expiry`](SessionStore::observes_expiry)): a live record is
/// `Found` as `load` returns it, a key never written is `Missing`, and of
/// eight parallel loads of a record (principal `bob`) that expired while
/// stored exactly one answers `Expired` with its principal on such a store
/// (none on another), every other one and every later one `Missing`. The
/// key can be created again.
pub async fn expired_record_observed_once<S: SessionStore>(store: S) {
    const LOADERS: usize = 8;
    let observes = store.observes_expiry();
    let store = Arc::new(store);
    assert_eq!(
        store.load_observed(&new_key()).await.expect("load"),
        LoadOutcome::Missing,
        "never written"
    );
    let key = new_key();
    let mut short = record_expiring_in(Duration::from_millis(300));
    short.principal = Some("bob".to_owned());
    assert!(store.create(&key, &short).await.expect("create"));
    let live = store.load(&key).await.expect("load").expect("live");
    assert_eq!(
        store.load_observed(&key).await.expect("load"),
        LoadOutcome::Found(live),
        "live before its deadline"
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    let loads: Vec<_> = (0..LOADERS)
        .map(|_| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move { store.load_observed(&key).await.expect("load") })
        })
        .collect();
    let mut expired = 0;
    for load in loads {
        match load.await.expect("load task") {
            LoadOutcome::Expired { principal } => {
                assert_eq!(principal.as_deref(), Some("bob"));
                expired += 1;
            }
            LoadOutcome::Missing => {}
            LoadOutcome::Found(record) => panic!("an expired record was found: {record:?}"),
        }
    }
    assert_eq!(
        expired,
        usize::from(observes),
        "loads that reported the expiry (observes_expiry: {observes})"
    );
    assert_eq!(
        store.load_observed(&key).await.expect("load"),
        LoadOutcome::Missing,
        "reported once"
    );
    assert!(
        store.create(&key, &new_record()).await.expect("create"),
        "an expired record does not block a create"
    );
}

/// `save` is compare-and-set on the version: a save against a stale version
/// is a `Conflict` and writes nothing.
pub async fn cas_conflict<S: SessionStore>(store: S) {
    let key = new_key();
    let record = new_record();
    assert!(store.create(&key, &record).await.expect("create"));

    let mut a = record.clone();
    a.data.insert("n".into(), json!(1));
    assert_eq!(
        store.save(&key, &next(a, 0), 0).await.expect("save"),
        SaveOutcome::Saved
    );

    let mut b = record.clone();
    b.data.insert("n".into(), json!(99));
    assert_eq!(
        store.save(&key, &next(b, 0), 0).await.expect("save"),
        SaveOutcome::Conflict,
        "a save against a stale version must conflict"
    );
    let loaded = store.load(&key).await.expect("load").expect("present");
    assert_eq!(loaded.version, 1);
    assert_eq!(
        loaded.data["n"],
        json!(1),
        "the conflicting save wrote nothing"
    );
}

/// After `delete`, `save` reports `Gone` and does not bring the record back;
/// `touch` reports `false`.
pub async fn gone_after_delete<S: SessionStore>(store: S) {
    let key = new_key();
    let record = new_record();
    assert!(store.create(&key, &record).await.expect("create"));
    store.delete(&key).await.expect("delete");
    store
        .delete(&key)
        .await
        .expect("deleting an absent key is not an error");

    assert_eq!(
        store.save(&key, &next(record, 0), 0).await.expect("save"),
        SaveOutcome::Gone
    );
    assert_eq!(
        store.load(&key).await.expect("load"),
        None,
        "a save must never resurrect"
    );
    let deadline = now() + time::Duration::hours(1);
    assert!(
        !store.touch(&key, 0, deadline).await.expect("touch"),
        "touch of a deleted record"
    );
    assert_eq!(
        store.load(&key).await.expect("load"),
        None,
        "a touch must never resurrect"
    );
}

/// `delete_if_unchanged` deletes only the version it names: a record saved
/// since is kept (`Conflict`), an absent or expired one is `Gone`, and a
/// delete of the right version leaves nothing a save or touch could revive.
pub async fn delete_if_unchanged_compares_version<S: SessionStore>(store: S) {
    let key = new_key();
    let record = new_record();
    assert!(store.create(&key, &record).await.expect("create"));
    let mut saved = record.clone();
    saved.data.insert("n".into(), json!(1));
    assert_eq!(
        store.save(&key, &next(saved, 0), 0).await.expect("save"),
        SaveOutcome::Saved
    );
    assert_eq!(
        store.delete_if_unchanged(&key, 0).await.expect("delete"),
        DeleteOutcome::Conflict,
        "version 0 is no longer there"
    );
    let kept = store.load(&key).await.expect("load").expect("kept");
    assert_eq!((kept.version, &kept.data["n"]), (1, &json!(1)));
    assert_eq!(
        store.delete_if_unchanged(&key, 1).await.expect("delete"),
        DeleteOutcome::Deleted
    );
    assert_eq!(store.load(&key).await.expect("load"), None);
    assert_eq!(
        store.delete_if_unchanged(&key, 1).await.expect("delete"),
        DeleteOutcome::Gone,
        "deleted already"
    );
    assert_eq!(
        store.save(&key, &next(kept, 1), 1).await.expect("save"),
        SaveOutcome::Gone,
        "a save must not revive it"
    );
    assert!(store.load(&key).await.expect("load").is_none());

    let key = new_key();
    let short = record_expiring_in(Duration::from_millis(200));
    assert!(store.create(&key, &short).await.expect("create"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.delete_if_unchanged(&key, 0).await.expect("delete"),
        DeleteOutcome::Gone,
        "an expired record is absent"
    );
}

/// A touch names the version its caller read: once a save has written
/// another version (which restarted the idle deadline with the session's
/// idle timeout of now, perhaps a shorter one), a touch computed from the
/// older version changes nothing and answers `false`.
pub async fn touch_of_an_older_version_changes_nothing<S: SessionStore>(store: S) {
    let key = new_key();
    let record = new_record();
    assert!(store.create(&key, &record).await.expect("create"));
    let mut shorter = record.clone();
    shorter.idle_deadline = now() + time::Duration::minutes(15);
    assert_eq!(
        store.save(&key, &next(shorter, 0), 0).await.expect("save"),
        SaveOutcome::Saved
    );
    let saved = store.load(&key).await.expect("load").expect("present");
    let long = now() + time::Duration::hours(24);
    assert!(
        !store.touch(&key, 0, long).await.expect("touch"),
        "a touch of version 0 after version 1 was saved"
    );
    let after = store.load(&key).await.expect("load").expect("present");
    assert_eq!(after, saved, "the stale touch changed the record");
    assert!(store.touch(&key, 1, long).await.expect("touch"));
    let touched = store.load(&key).await.expect("load").expect("present");
    assert_eq!(touched.idle_deadline, long.min(touched.absolute_deadline));
}

/// `touch` extends the idle deadline without changing data or version, never
/// moves it earlier, and never past the absolute deadline.
pub async fn touch_extends<S: SessionStore>(store: S) {
    let key = new_key();
    let mut record = record_expiring_in(Duration::from_millis(400));
    record.data.insert("kept".into(), json!(true));
    assert!(store.create(&key, &record).await.expect("create"));

    tokio::time::sleep(Duration::from_millis(150)).await;
    let extended = now() + time::Duration::seconds(30);
    assert!(
        store.touch(&key, 0, extended).await.expect("touch"),
        "touch of a live record"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;

    let loaded = store
        .load(&key)
        .await
        .expect("load")
        .expect("a touched record outlives its original idle deadline");
    assert_eq!(loaded.version, record.version, "touch keeps the version");
    assert_eq!(loaded.data, record.data, "touch keeps the data");
    assert_eq!(loaded.idle_deadline, extended);
    assert!(
        loaded.last_access > record.last_access,
        "touch records the access"
    );

    // A touch never moves the idle deadline earlier (a parallel save may
    // have given the session a longer idle timeout than the toucher knew).
    let earlier = now() + time::Duration::seconds(5);
    assert!(store.touch(&key, 0, earlier).await.expect("touch"));
    let loaded = store.load(&key).await.expect("load").expect("present");
    assert_eq!(
        loaded.idle_deadline, extended,
        "a touch shortened the idle deadline"
    );

    // The absolute deadline still rules.
    let key = new_key();
    let mut capped = new_record();
    capped.absolute_deadline = now() + time::Duration::milliseconds(300);
    assert!(store.create(&key, &capped).await.expect("create"));
    assert!(
        store
            .touch(&key, 0, now() + time::Duration::hours(1))
            .await
            .expect("touch")
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        store.load(&key).await.expect("load"),
        None,
        "touch cannot pass the absolute deadline"
    );
}

/// The principal index lists and deletes a principal's sessions, follows
/// principal changes, and ignores other principals and expired sessions.
pub async fn principal_index<S: SessionStore>(store: S) {
    // Principal names unique to this run, so a shared backend cannot interfere.
    let tag = new_key();
    let alice = format!("alice-{}", tag.short());
    let bob = format!("bob-{}", tag.short());
    let carol = format!("carol-{}", tag.short());

    let with = |p: &str| {
        let mut r = new_record();
        r.principal = Some(p.to_owned());
        r
    };
    let (a1, a2, a3, b1) = (new_key(), new_key(), new_key(), new_key());
    for (key, record) in [
        (&a1, with(&alice)),
        (&a2, with(&alice)),
        (&a3, with(&alice)),
        (&b1, with(&bob)),
    ] {
        assert!(store.create(key, &record).await.expect("create"));
    }
    // An expired session of alice's is not listed.
    let mut dead = with(&alice);
    dead.idle_deadline = now() - time::Duration::seconds(1);
    let _ = store.create(&new_key(), &dead).await.expect("create");

    let mut listed: Vec<StoreKey> = store
        .list_by_principal(&alice)
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.key)
        .collect();
    listed.sort();
    let mut expected = vec![a1.clone(), a2.clone(), a3.clone()];
    expected.sort();
    assert_eq!(listed, expected, "alice's live sessions");

    // a3 changes hands: it leaves alice's list and joins carol's.
    let mut moved = store.load(&a3).await.expect("load").expect("present");
    moved.principal = Some(carol.clone());
    let version = moved.version;
    assert_eq!(
        store
            .save(&a3, &next(moved, version), version)
            .await
            .expect("save"),
        SaveOutcome::Saved
    );
    assert_eq!(
        store.list_by_principal(&alice).await.expect("list").len(),
        2
    );
    let carols = store.list_by_principal(&carol).await.expect("list");
    assert_eq!(carols.len(), 1);
    assert_eq!(carols[0].key, a3);

    assert_eq!(
        store.delete_by_principal(&alice).await.expect("delete"),
        2,
        "log out everywhere"
    );
    assert_eq!(store.load(&a1).await.expect("load"), None);
    assert_eq!(store.load(&a2).await.expect("load"), None);
    assert!(
        store
            .list_by_principal(&alice)
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        store.load(&a3).await.expect("load").is_some(),
        "carol's session stays"
    );
    assert!(
        store.load(&b1).await.expect("load").is_some(),
        "bob's session stays"
    );
    assert_eq!(store.list_by_principal(&bob).await.expect("list").len(), 1);
}

/// Load, add one, compare-and-set, retry on conflict: 100 tasks doing so in
/// parallel on one record end at exactly +100.
pub async fn parallel_updates_lose_nothing<S: SessionStore>(store: S) {
    const TASKS: u64 = 100;
    let store = Arc::new(store);
    let key = new_key();
    assert!(store.create(&key, &new_record()).await.expect("create"));

    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move {
                loop {
                    let mut record = store.load(&key).await.expect("load").expect("present");
                    let n = record.data["n"].as_u64().expect("n is a number");
                    record.data.insert("n".into(), json!(n + 1));
                    let expected = record.version;
                    match store
                        .save(&key, &next(record, expected), expected)
                        .await
                        .expect("save")
                    {
                        SaveOutcome::Saved => break,
                        SaveOutcome::Conflict => tokio::task::yield_now().await,
                        SaveOutcome::Gone => panic!("record vanished"),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let record = store.load(&key).await.expect("load").expect("present");
    assert_eq!(record.data["n"], json!(TASKS), "every increment kept");
    assert_eq!(record.version, TASKS, "one version per successful save");
}

/// 50 tasks each add their own key to one record in parallel: all 50 keys are kept.
pub async fn parallel_distinct_keys_all_kept<S: SessionStore>(store: S) {
    const TASKS: usize = 50;
    let store = Arc::new(store);
    let key = new_key();
    assert!(store.create(&key, &new_record()).await.expect("create"));

    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move {
                loop {
                    let mut record = store.load(&key).await.expect("load").expect("present");
                    record.data.insert(format!("k{i}"), json!(i));
                    let expected = record.version;
                    match store
                        .save(&key, &next(record, expected), expected)
                        .await
                        .expect("save")
                    {
                        SaveOutcome::Saved => break,
                        SaveOutcome::Conflict => tokio::task::yield_now().await,
                        SaveOutcome::Gone => panic!("record vanished"),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let record = store.load(&key).await.expect("load").expect("present");
    for i in 0..TASKS {
        assert_eq!(
            record.data.get(&format!("k{i}")),
            Some(&json!(i)),
            "key k{i} lost"
        );
    }
}

/// `delete_expired` removes nothing live, and expired records stay invisible.
pub async fn delete_expired_keeps_live<S: SessionStore>(store: S) {
    let (live, dying) = (new_key(), new_key());
    assert!(store.create(&live, &new_record()).await.expect("create"));
    assert!(
        store
            .create(&dying, &record_expiring_in(Duration::from_millis(100)))
            .await
            .expect("create")
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _removed = store.delete_expired().await.expect("delete_expired");
    assert!(
        store.load(&live).await.expect("load").is_some(),
        "a live record survives"
    );
    assert_eq!(store.load(&dying).await.expect("load"), None);
}

/// Records are copies: changing one the store returned, or one handed to
/// it, changes nothing stored.
pub async fn records_are_copies<S: SessionStore>(store: S) {
    let key = new_key();
    let mut record = new_record();
    assert!(store.create(&key, &record).await.expect("create"));
    record.data.insert("n".into(), json!(42));
    let mut loaded = store.load(&key).await.expect("load").expect("present");
    assert_eq!(
        loaded.data["n"],
        json!(0),
        "the record handed in was copied"
    );
    loaded.data.insert("n".into(), json!(7));
    let again = store.load(&key).await.expect("load").expect("present");
    assert_eq!(
        again.data["n"],
        json!(0),
        "the record handed out was a copy"
    );
}

/// A `delete` racing a `save` or a `touch` of the same record never leaves
/// the record alive: whichever comes first, a save or touch cannot create.
/// Each round starts both calls together (a barrier), so that they overlap
/// inside the store as often as it allows; the layer-level cases force the
/// interleavings a wrapper can force (a load, then a delete, then the save:
/// `destroy_racing_get_then_insert_never_resurrects`).
pub async fn delete_racing_writes_never_resurrects<S: SessionStore>(store: S) {
    const ROUNDS: usize = 300;
    let store = Arc::new(store);
    for round in 0..ROUNDS {
        let key = new_key();
        let record = new_record();
        assert!(store.create(&key, &record).await.expect("create"));
        let start = Arc::new(tokio::sync::Barrier::new(2));
        let writer = {
            let (store, key, record, start) =
                (store.clone(), key.clone(), record.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                if round % 2 == 0 {
                    let _ = store.save(&key, &next(record, 0), 0).await.expect("save");
                } else {
                    let deadline = now() + time::Duration::hours(2);
                    let _ = store.touch(&key, 0, deadline).await.expect("touch");
                }
            })
        };
        let deleter = {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move {
                start.wait().await;
                store.delete(&key).await.expect("delete");
            })
        };
        writer.await.expect("task");
        deleter.await.expect("task");
        assert_eq!(
            store.load(&key).await.expect("load"),
            None,
            "round {round}: a {} racing a delete brought the record back",
            if round % 2 == 0 { "save" } else { "touch" }
        );
    }
}

/// The principal index stays exact while sessions are created, saved with
/// and without the principal, listed and logged out all at once.
///
/// Every listing holds every session that was indexed (created with the
/// principal and acknowledged) before it started and whose removal had not
/// started before it ended, and nothing that never had the principal; at
/// the end the listing is exact, and "log out everywhere" ends exactly the
/// sessions that have the principal. A create that answers `false` (the key
/// is taken) is retried under a new key, as the layer does.
pub async fn principal_index_consistent_under_concurrency<S: SessionStore>(store: S) {
    use std::collections::HashSet;
    use std::sync::Mutex;

    const SEEDED: usize = 40;
    const CREATED: usize = 40;
    const UNSET: usize = 20;
    #[derive(Default)]
    struct Seen {
        /// Indexed and acknowledged.
        indexed: HashSet<StoreKey>,
        /// Every key a create with the principal was tried under.
        tried: HashSet<StoreKey>,
        /// Keys whose save without the principal has started.
        unsetting: HashSet<StoreKey>,
    }
    let lock = |seen: &Mutex<Seen>| {
        // A panicking task fails the test through its join handle.
        seen.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone_sets()
    };
    impl Seen {
        fn clone_sets(&self) -> (HashSet<StoreKey>, HashSet<StoreKey>, HashSet<StoreKey>) {
            (
                self.indexed.clone(),
                self.tried.clone(),
                self.unsetting.clone(),
            )
        }
    }
    let store = Arc::new(store);
    let user = format!("user-{}", new_key().short());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let with_user = || {
        let mut record = new_record();
        record.principal = Some(user.clone());
        record
    };
    async fn create_indexed<S: SessionStore>(
        store: &S,
        record: &Record,
        seen: &std::sync::Mutex<Seen>,
    ) -> StoreKey {
        loop {
            let key = new_key();
            seen.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .tried
                .insert(key.clone());
            if store.create(&key, record).await.expect("create") {
                seen.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .indexed
                    .insert(key.clone());
                return key;
            }
        }
    }
    let mut seeded = Vec::new();
    for _ in 0..SEEDED {
        seeded.push(create_indexed(&*store, &with_user(), &seen).await);
    }

    let creator = {
        let (store, seen, record) = (store.clone(), seen.clone(), with_user());
        tokio::spawn(async move {
            for _ in 0..CREATED {
                create_indexed(&*store, &record, &seen).await;
            }
        })
    };
    let unsetter = {
        let (store, seen, keys) = (store.clone(), seen.clone(), seeded[..UNSET].to_vec());
        tokio::spawn(async move {
            for key in keys {
                seen.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .unsetting
                    .insert(key.clone());
                let mut record = new_record();
                record.principal = None;
                let saved = store.save(&key, &next(record, 0), 0).await.expect("save");
                assert_eq!(saved, SaveOutcome::Saved);
            }
        })
    };
    let listers: Vec<_> = (0..2)
        .map(|_| {
            let (store, seen, user) = (store.clone(), seen.clone(), user.clone());
            tokio::spawn(async move {
                for _ in 0..15 {
                    let (before, _, _) = lock(&seen);
                    let listed = store.list_by_principal(&user).await.expect("list");
                    let (_, tried, unsetting) = lock(&seen);
                    let keys: HashSet<StoreKey> = listed.iter().map(|s| s.key.clone()).collect();
                    assert_eq!(keys.len(), listed.len(), "a session listed twice");
                    for key in before.difference(&unsetting) {
                        assert!(keys.contains(key), "a listing missed an indexed session");
                    }
                    assert!(
                        keys.is_subset(&tried),
                        "a listing showed a session that never had the principal"
                    );
                }
            })
        })
        .collect();
    creator.await.expect("creator");
    unsetter.await.expect("unsetter");
    for lister in listers {
        lister.await.expect("lister");
    }

    let (indexed, _, unsetting) = lock(&seen);
    let expected: HashSet<StoreKey> = indexed.difference(&unsetting).cloned().collect();
    assert_eq!(expected.len(), SEEDED + CREATED - UNSET);
    let listed: HashSet<StoreKey> = store
        .list_by_principal(&user)
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.key)
        .collect();
    assert_eq!(listed, expected, "the final listing is not exact");
    assert_eq!(
        store.delete_by_principal(&user).await.expect("delete"),
        expected.len() as u64,
        "log out everywhere did not end exactly the principal's sessions"
    );
    for key in &expected {
        assert_eq!(
            store.load(key).await.expect("load"),
            None,
            "a session survived log out everywhere"
        );
    }
    for key in &unsetting {
        assert!(
            store.load(key).await.expect("load").is_some(),
            "a session without the principal was logged out"
        );
    }
}
