//! `MigratingStore` when requests meet a session in the middle of its move,
//! one forced interleaving at a time: both stores are wrapped in a
//! `FaultStore` (session-core's conformance support) that holds chosen
//! calls (the copy into the new store, before or after it happened) while
//! the test runs other requests. On two memory stores, and from Redis to
//! Postgres on the running servers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

mod common;
#[path = "../../session-memory/tests/support/mod.rs"]
mod support;

use std::sync::Arc;

use serde_json::json;
use session::{DeleteOutcome, MigratingStore, Record, SaveOutcome, SessionStore, StoreKey};
use session_core::conformance::store::{new_key, new_record};
use session_core::conformance::support::{At, Call, FaultStore, Pause};
use support::finish;
use tokio::task::JoinHandle;

type Migrating<O, N> = Arc<MigratingStore<Arc<FaultStore<O>>, Arc<FaultStore<N>>>>;

struct Stores<O, N> {
    old: Arc<FaultStore<O>>,
    new: Arc<FaultStore<N>>,
    store: Migrating<O, N>,
}

fn stores<O: SessionStore, N: SessionStore>(old: O, new: N) -> Stores<O, N> {
    let (old, new) = (
        Arc::new(FaultStore::new(old)),
        Arc::new(FaultStore::new(new)),
    );
    let store = Arc::new(MigratingStore::new(old.clone(), new.clone()));
    Stores { old, new, store }
}

/// A session that lives in the old store only, not moved yet.
async fn in_old<O: SessionStore, N: SessionStore>(s: &Stores<O, N>) -> (StoreKey, Record) {
    let (key, mut record) = (new_key(), new_record());
    record.principal = Some(format!("user-{}", key.short()));
    assert!(s.old.inner().create(&key, &record).await.unwrap());
    (key, record)
}

fn load<O: SessionStore, N: SessionStore>(
    s: &Stores<O, N>,
    key: &StoreKey,
) -> JoinHandle<Option<Record>> {
    let (store, key) = (s.store.clone(), key.clone());
    tokio::spawn(async move { store.load(&key).await.unwrap() })
}

/// `record` as its next version, with `n` in its data.
fn next(record: &Record, n: u64) -> Record {
    let mut next = record.clone();
    next.version += 1;
    next.data.insert("n".into(), json!(n));
    next
}

/// Where the session under `key` is, looking at each store directly.
async fn found<O: SessionStore, N: SessionStore>(
    s: &Stores<O, N>,
    key: &StoreKey,
) -> (Option<Record>, Option<Record>) {
    (
        s.old.inner().load(key).await.unwrap(),
        s.new.inner().load(key).await.unwrap(),
    )
}

/// A request moving a session (a load through the migrating store), held
/// at its copy into the new store.
struct Mover {
    copy: Pause,
    task: JoinHandle<Option<Record>>,
}

impl Mover {
    /// Lets the move go on; what the request loaded.
    async fn finish(self) -> Option<Record> {
        self.copy.release();
        finish(self.task).await
    }
}

/// Starts a load of `key` and holds it `at` its copy into the new store.
async fn moving<O: SessionStore, N: SessionStore>(
    s: &Stores<O, N>,
    key: &StoreKey,
    at: At,
) -> Mover {
    let copy = s.new.pause_at(Call::Create, at);
    let task = load(s, key);
    copy.reached().await;
    Mover { copy, task }
}

/// Two loads of `key` at once, both past the old store before either
/// copied: A copies first and is held after its copy, then B's copy meets
/// A's and B finishes. What B loaded, and A, still held.
async fn two_moves<O: SessionStore, N: SessionStore>(
    s: &Stores<O, N>,
    key: &StoreKey,
) -> (Option<Record>, Mover) {
    let a_copies = s.new.pause_at(Call::Create, At::Before);
    let a_copied = s.new.pause_at(Call::Create, At::After);
    let b_copies = s.new.pause_at(Call::Create, At::Before);
    let a = load(s, key);
    a_copies.reached().await;
    let b = load(s, key);
    b_copies.reached().await;
    a_copies.release();
    a_copied.reached().await;
    b_copies.release();
    let b = finish(b).await;
    let a = Mover {
        copy: a_copied,
        task: a,
    };
    (b, a)
}

/// Saves the next version of what a request loaded (`seen`) with `n` in
/// its data, through the migrating store; what was saved.
async fn save_next<O: SessionStore, N: SessionStore>(
    s: &Stores<O, N>,
    key: &StoreKey,
    seen: &Record,
    n: u64,
) -> Record {
    let saved = next(seen, n);
    assert_eq!(
        s.store.save(key, &saved, seen.version).await.unwrap(),
        SaveOutcome::Saved
    );
    saved
}

/// The session under `key` is `saved` (with `n` in its data), and it is in
/// the new store alone.
async fn saved_in_new_alone<O: SessionStore, N: SessionStore>(
    s: &Stores<O, N>,
    key: &StoreKey,
    saved: &Record,
    n: u64,
    lost: &str,
) {
    let after = s.store.load(key).await.unwrap();
    assert_eq!(
        after.map(|r| (r.version, r.data["n"].clone())),
        Some((saved.version, json!(n))),
        "{lost}"
    );
    let (old, new) = found(s, key).await;
    assert!(
        old.is_none() && new.is_some_and(|r| r.version == saved.version),
        "the save did not end in the new store alone"
    );
}

/// A login retiring the id `key` at `version` (the layer's
/// compare-and-delete), through the migrating store.
async fn retire<O: SessionStore, N: SessionStore>(s: &Stores<O, N>, key: &StoreKey, version: u64) {
    assert_eq!(
        s.store.delete_if_unchanged(key, version).await.unwrap(),
        DeleteOutcome::Deleted
    );
}

/// Two first requests of one user at once (a page and its assets): both
/// read the old store before either copied; the second one's copy finds the
/// first one's. Both must get the session, and it must survive.
async fn two_first_requests_at_once_both_keep_the_session<O: SessionStore, N: SessionStore>(
    old: O,
    new: N,
) {
    let s = stores(old, new);
    let (key, record) = in_old(&s).await;
    let (b, a) = two_moves(&s, &key).await;
    let a = a.finish().await;

    assert_eq!(
        a.as_ref(),
        Some(&record),
        "the first request lost the session"
    );
    assert_eq!(
        b.as_ref(),
        Some(&record),
        "the second request lost the session"
    );
    assert_eq!(
        s.store.load(&key).await.unwrap(),
        Some(record),
        "the user was logged out by two requests at once"
    );
    let (old, new) = found(&s, &key).await;
    assert!(
        new.is_some() && old.is_none(),
        "not moved: old {old:?}, new {new:?}"
    );
}

/// A save made while another request is moving the session, in the two
/// ways a request can meet a move: it read the old store before the copy
/// was made, or after. The save must be kept, and the old copy must not win.
async fn a_save_during_a_move_is_kept<O: SessionStore, N: SessionStore>(old: O, new: N) {
    let s = stores(old, new);

    // Read before the copy was made.
    let (key, _) = in_old(&s).await;
    let (seen, a) = two_moves(&s, &key).await;
    let seen = seen.expect("the second request lost the session");
    let saved = save_next(&s, &key, &seen, 1).await;
    a.finish().await;
    let lost = "a save acknowledged during the move was lost";
    saved_in_new_alone(&s, &key, &saved, 1, lost).await;

    // Read after the copy was made.
    let (key, _) = in_old(&s).await;
    let a = moving(&s, &key, At::After).await;
    let seen = s
        .store
        .load(&key)
        .await
        .unwrap()
        .expect("the session is gone mid-move");
    let saved = save_next(&s, &key, &seen, 2).await;
    a.finish().await;
    let lost = "a save acknowledged during the move was lost, or the old copy won";
    saved_in_new_alone(&s, &key, &saved, 2, lost).await;
}

/// A logout while the session is being moved, at each point of the move:
/// the session must survive in neither store.
async fn a_logout_during_a_move_is_not_undone<O: SessionStore, N: SessionStore>(old: O, new: N) {
    let s = stores(old, new);

    // After the copy, before the mover looks at the old store again; and
    // after the mover read the old store, before its copy (the copy comes
    // after the whole logout).
    for (at, when) in [(At::After, "after"), (At::Before, "before")] {
        let (key, _) = in_old(&s).await;
        let mover = moving(&s, &key, at).await;
        s.store.delete(&key).await.unwrap();
        mover.finish().await;
        assert_eq!(
            found(&s, &key).await,
            (None, None),
            "a logout was undone by a move ({when} the copy)"
        );
        assert_eq!(s.store.load(&key).await.unwrap(), None);
    }

    // "Log out everywhere" after the copy.
    let (key, record) = in_old(&s).await;
    let mover = moving(&s, &key, At::After).await;
    let principal = record.principal.clone().unwrap();
    assert!(s.store.delete_by_principal(&principal).await.unwrap() >= 1);
    mover.finish().await;
    assert_eq!(
        found(&s, &key).await,
        (None, None),
        "log out everywhere was undone by a move"
    );

    // A login retiring the id (compare-and-delete) after the copy.
    let (key, record) = in_old(&s).await;
    let mover = moving(&s, &key, At::After).await;
    retire(&s, &key, record.version).await;
    mover.finish().await;
    assert_eq!(
        found(&s, &key).await,
        (None, None),
        "a retired id was brought back by a move"
    );
}

/// A move cut short after the copy (the process died, or the request was
/// dropped), then a login retires the id: it must stay retired, in both stores.
async fn a_retired_id_stays_retired_after_an_interrupted_move<O: SessionStore, N: SessionStore>(
    old: O,
    new: N,
) {
    let s = stores(old, new);

    // The process died between the copy and the old store's delete.
    let (key, record) = in_old(&s).await;
    assert!(s.new.inner().create(&key, &record).await.unwrap());
    let seen = s.store.load(&key).await.unwrap().expect("the session");
    retire(&s, &key, seen.version).await;
    assert_eq!(
        s.store.load(&key).await.unwrap(),
        None,
        "a retired id came back from the old store"
    );
    assert_eq!(found(&s, &key).await, (None, None));

    // The request that was moving it was dropped after the copy.
    let (key, record) = in_old(&s).await;
    let Mover { copy, task } = moving(&s, &key, At::After).await;
    task.abort();
    let _ = task.await;
    retire(&s, &key, record.version).await;
    copy.release();
    // Whatever was still running of the move has ended: a load settles it.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        s.store.load(&key).await.unwrap(),
        None,
        "a retired id came back after a dropped move"
    );
    assert_eq!(found(&s, &key).await, (None, None));
}

/// One test per case on the pair of stores `$stores` (a future of
/// `(old, new)`), in a module `$pair`.
macro_rules! races {
    ($pair:ident, $stores:expr) => {
        mod $pair {
            #[allow(unused_imports)]
            use super::*;

            races!(@cases $stores;
                two_first_requests_at_once_both_keep_the_session,
                a_save_during_a_move_is_kept,
                a_logout_during_a_move_is_not_undone,
                a_retired_id_stays_retired_after_an_interrupted_move,
            );
        }
    };
    (@cases $stores:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (old, new) = $stores.await;
                super::$case(old, new).await;
            }
        )*
    };
}

races!(memory_to_memory, async {
    (session::MemoryStore::new(), session::MemoryStore::new())
});

#[cfg(all(feature = "redis", feature = "postgres"))]
races!(redis_to_postgres, async {
    use common::{connect, database_url, env, fresh};
    let redis = connect(&format!("{}?prefix=races-{}:", env("REDIS_URL"), fresh())).await;
    let postgres = connect(&database_url(&format!("schema=races_{}&pool=8", fresh()))).await;
    (redis, postgres)
});
