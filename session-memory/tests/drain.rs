//! `MemoryStore::drain_into` while requests are still running, one forced
//! interleaving per test: the target is wrapped in a
//! [`FaultStore`](session_core::conformance::support::FaultStore) that holds the
//! drain's copy of a session (after the target stored it, before the drain
//! goes on), and the test makes a request's store call right then.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use session_core::conformance::store::{new_key, new_record};
use session_core::conformance::support::{At, Call, FaultStore, Pause};
use session_core::record::now;
use session_core::{DeleteOutcome, Record, SaveOutcome, SessionStore, StoreKey};
use session_memory::{DrainReport, MemoryStore};
use support::{finish, release_then_finish};
use tokio::task::JoinHandle;

type Target = Arc<FaultStore<MemoryStore>>;

fn stores() -> (MemoryStore, Target) {
    (
        MemoryStore::new(),
        Arc::new(FaultStore::new(MemoryStore::new())),
    )
}

/// `record` as its next version, with `n` in its data.
fn next(record: &Record, n: u64) -> Record {
    let mut next = record.clone();
    next.version += 1;
    next.data.insert("n".into(), json!(n));
    next
}

/// Sessions the memory store still holds (exact: housekeeping runs first).
async fn held(store: &MemoryStore) -> u64 {
    store.delete_expired().await.unwrap();
    store.len()
}

async fn one_session(store: &MemoryStore) -> (StoreKey, Record) {
    let (key, record) = (new_key(), new_record());
    assert!(store.create(&key, &record).await.unwrap());
    (key, record)
}

/// A drain of `local` into `target`, held at its first copy: the target
/// has stored the session, the drain has not gone on.
struct HeldDrain {
    local: MemoryStore,
    copied: Pause,
    drain: JoinHandle<DrainReport>,
}

async fn held_drain(local: &MemoryStore, target: &Target) -> HeldDrain {
    let copied = target.pause_at(Call::Create, At::After);
    let drain = {
        let (local, target) = (local.clone(), target.clone());
        tokio::spawn(async move { local.drain_into(&target).await.unwrap() })
    };
    copied.reached().await;
    HeldDrain {
        local: local.clone(),
        copied,
        drain,
    }
}

impl HeldDrain {
    /// Lets the drain go on; its report.
    async fn finish(self) -> DrainReport {
        self.copied.release();
        finish(self.drain).await
    }

    /// Makes `call` (a request's store call on the memory store, for
    /// `key`) while the copy is held, lets the drain go on once `call` is
    /// done or waiting for it; the call's answer and the drain's report.
    async fn during<T, F>(
        self,
        key: &StoreKey,
        call: impl FnOnce(MemoryStore, StoreKey) -> F,
    ) -> (T, DrainReport)
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let call = tokio::spawn(call(self.local.clone(), key.clone()));
        let answer = release_then_finish(call, || self.copied.release()).await;
        (answer, finish(self.drain).await)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_during_the_copy_is_not_undone() {
    let (local, target) = stores();
    let (key, _) = one_session(&local).await;
    let drain = held_drain(&local, &target).await;

    let logout = |local: MemoryStore, key| async move { local.delete(&key).await.unwrap() };
    let ((), report) = drain.during(&key, logout).await;

    assert_eq!(
        target.inner().load(&key).await.unwrap(),
        None,
        "the drain brought a logged-out session back in the target"
    );
    assert_eq!(local.load(&key).await.unwrap(), None);
    assert_eq!(report.moved, 1, "{report:?}");
}

/// One session, saved (its next version, `n` = 1) while the drain holds
/// its copy: the session, the save's outcome and the drain's report.
async fn a_save_during_the_copy(
    local: &MemoryStore,
    target: &Target,
) -> (StoreKey, SaveOutcome, DrainReport) {
    let (key, record) = one_session(local).await;
    let drain = held_drain(local, target).await;
    let saved = next(&record, 1);
    let save = |local: MemoryStore, key| async move { local.save(&key, &saved, 0).await.unwrap() };
    let (outcome, report) = drain.during(&key, save).await;
    (key, outcome, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_during_the_copy_reaches_the_target() {
    let (local, target) = stores();
    let (key, outcome, _) = a_save_during_the_copy(&local, &target).await;

    assert_eq!(outcome, SaveOutcome::Saved);
    let there = target.inner().load(&key).await.unwrap();
    assert_eq!(
        there.as_ref().map(|r| (r.version, r.data["n"].clone())),
        Some((1, json!(1))),
        "an acknowledged save was lost by the drain"
    );
    assert_eq!(held(&local).await, 0, "left in memory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_during_the_copy_retires_the_id_in_the_target() {
    let (local, target) = stores();
    let (key, _) = one_session(&local).await;
    let drain = held_drain(&local, &target).await;

    // A login retiring the old id (the layer's compare-and-delete).
    let retire =
        |local: MemoryStore, key| async move { local.delete_if_unchanged(&key, 0).await.unwrap() };
    let (outcome, _) = drain.during(&key, retire).await;

    assert_eq!(outcome, DeleteOutcome::Deleted);
    assert_eq!(
        target.inner().load(&key).await.unwrap(),
        None,
        "the retired id lives on in the target"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_touch_during_the_copy_reaches_the_target() {
    let (local, target) = stores();
    let (key, record) = one_session(&local).await;
    let drain = held_drain(&local, &target).await;

    let later = record.idle_deadline + Duration::from_secs(3600);
    let touch = |local: MemoryStore, key| async move { local.touch(&key, 0, later).await.unwrap() };
    assert!(drain.during(&key, touch).await.0);

    let there = target.inner().load(&key).await.unwrap().expect("moved");
    assert_eq!(
        there.idle_deadline, later,
        "an acknowledged touch was lost by the drain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_created_during_the_drain_lands_in_the_target() {
    let (local, target) = stores();
    one_session(&local).await;
    let drain = held_drain(&local, &target).await;

    // A new visitor while the drain is under way.
    let (key, record) = (new_key(), new_record());
    let created = record.clone();
    let create =
        |local: MemoryStore, key| async move { local.create(&key, &created).await.unwrap() };
    assert!(drain.during(&key, create).await.0);

    assert_eq!(
        target.inner().load(&key).await.unwrap(),
        Some(record),
        "a session created during the drain is not in the target"
    );
    assert_eq!(held(&local).await, 0, "left in memory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_session_the_drain_has_not_reached_moves_it_first() {
    let (local, target) = stores();
    let (a, _) = one_session(&local).await;
    let (b, record_b) = one_session(&local).await;
    let (c, record_c) = one_session(&local).await;
    // Hold the drain's first copy, whichever session it is.
    let drain = held_drain(&local, &target).await;

    // Save every session the drain has not copied yet, while it still
    // holds its first copy.
    let mut expected = Vec::new();
    for (key, record) in [(&b, &record_b), (&c, &record_c)] {
        let copying = target.inner().load(key).await.unwrap().is_some();
        if copying {
            continue;
        }
        let saved = next(record, 7);
        let save = tokio::spawn({
            let (local, key, saved) = (local.clone(), key.clone(), saved.clone());
            async move { local.save(&key, &saved, 0).await.unwrap() }
        });
        let outcome = tokio::time::timeout(Duration::from_secs(5), save)
            .await
            .expect("a save of a session the drain is not copying waited for the drain")
            .unwrap();
        assert_eq!(outcome, SaveOutcome::Saved);
        expected.push((key.clone(), saved));
    }
    let report = drain.finish().await;

    for (key, saved) in &expected {
        assert_eq!(
            target.inner().load(key).await.unwrap().map(|r| r.version),
            Some(saved.version),
            "an acknowledged save was lost by the drain"
        );
    }
    assert!(target.inner().load(&a).await.unwrap().is_some());
    assert_eq!(report.moved, 3, "{report:?}");
    assert_eq!(held(&local).await, 0, "left in memory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_counts_only_sessions_that_left_memory() {
    let (local, target) = stores();
    let (key, _, report) = a_save_during_the_copy(&local, &target).await;

    // Moved: gone from memory, and in the target.
    let left_memory = held(&local).await == 0;
    let in_target = target.inner().load(&key).await.unwrap().is_some();
    let really_moved = u64::from(left_memory && in_target);
    assert_eq!(
        report.moved, really_moved,
        "the report counts a session as moved that was not: {report:?}"
    );
    assert_eq!((report.moved, report.skipped), (1, 0), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_during_and_after_the_drain_find_moved_sessions() {
    let (local, target) = stores();
    let (moved, record) = one_session(&local).await;
    let drain = held_drain(&local, &target).await;
    // Mid-copy, the session is still served (from memory or the target).
    assert_eq!(
        local.load(&moved).await.unwrap().map(|r| r.version),
        Some(record.version)
    );
    drain.finish().await;

    assert_eq!(
        local.load(&moved).await.unwrap(),
        Some(record),
        "a request after the drain does not find its moved session"
    );
    // A session made in the target by another instance is found as well.
    let elsewhere = new_key();
    assert!(
        target
            .inner()
            .create(&elsewhere, &new_record())
            .await
            .unwrap()
    );
    assert!(local.load(&elsewhere).await.unwrap().is_some());
    assert!(local.touch(&elsewhere, 0, now()).await.unwrap());
}

/// A target that answers `create` with `false` for chosen keys without
/// holding them, as a store blocking a key for a while does (the Redis
/// store after a principal cleanup).
struct Refusing {
    inner: MemoryStore,
    refused: std::sync::Mutex<Vec<StoreKey>>,
}

#[session_core::async_trait]
impl SessionStore for Refusing {
    async fn create(
        &self,
        key: &StoreKey,
        record: &Record,
    ) -> Result<bool, session_core::StoreError> {
        if self.refused.lock().unwrap().contains(key) {
            return Ok(false);
        }
        self.inner.create(key, record).await
    }
    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, session_core::StoreError> {
        self.inner.load(key).await
    }
    async fn save(
        &self,
        key: &StoreKey,
        record: &Record,
        expected: u64,
    ) -> Result<SaveOutcome, session_core::StoreError> {
        self.inner.save(key, record, expected).await
    }
    async fn touch(
        &self,
        key: &StoreKey,
        expected_version: u64,
        idle: session_core::time::OffsetDateTime,
    ) -> Result<bool, session_core::StoreError> {
        self.inner.touch(key, expected_version, idle).await
    }
    async fn delete(&self, key: &StoreKey) -> Result<(), session_core::StoreError> {
        self.inner.delete(key).await
    }
    async fn delete_if_unchanged(
        &self,
        key: &StoreKey,
        expected: u64,
    ) -> Result<DeleteOutcome, session_core::StoreError> {
        self.inner.delete_if_unchanged(key, expected).await
    }
    async fn list_by_principal(
        &self,
        principal: &str,
    ) -> Result<Vec<session_core::SessionInfo>, session_core::StoreError> {
        self.inner.list_by_principal(principal).await
    }
    async fn delete_by_principal(&self, principal: &str) -> Result<u64, session_core::StoreError> {
        self.inner.delete_by_principal(principal).await
    }
    async fn delete_expired(&self) -> Result<u64, session_core::StoreError> {
        self.inner.delete_expired().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_target_refuses_stays_here_and_keeps_working() {
    let local = MemoryStore::new();
    let (saved, created, logout, retired) = (new_key(), new_key(), new_key(), new_key());
    let everywhere = new_key();
    let mut records = std::collections::HashMap::new();
    for key in [&saved, &created, &logout, &retired, &everywhere] {
        let mut record = new_record();
        if key == &everywhere {
            record.principal = Some("p".into());
        }
        assert!(local.create(key, &record).await.unwrap());
        records.insert(key.clone(), record);
    }
    let fine = new_key();
    assert!(local.create(&fine, &new_record()).await.unwrap());
    let target = Arc::new(Refusing {
        inner: MemoryStore::new(),
        refused: std::sync::Mutex::new(vec![
            saved.clone(),
            created.clone(),
            logout.clone(),
            retired.clone(),
            everywhere.clone(),
        ]),
    });

    let report = local.drain_into(&target).await.unwrap();
    assert_eq!(
        (report.moved, report.skipped, report.kept),
        (1, 0, 5),
        "{report:?}"
    );
    // Still served, from here; never dropped.
    assert_eq!(
        local.load(&saved).await.unwrap().as_ref(),
        records.get(&saved)
    );
    assert_eq!(target.inner.load(&saved).await.unwrap(), None);
    // A write fails (to be retried) rather than go where the session is not.
    assert!(
        local
            .save(&saved, &next(&records[&saved], 1), 0)
            .await
            .is_err()
    );
    assert_eq!(
        local.load(&saved).await.unwrap().map(|r| r.version),
        Some(0)
    );
    // Its key is taken.
    assert!(!local.create(&created, &new_record()).await.unwrap());
    // Logouts work.
    local.delete(&logout).await.unwrap();
    assert_eq!(local.load(&logout).await.unwrap(), None);
    assert_eq!(
        local.delete_if_unchanged(&retired, 0).await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert_eq!(local.load(&retired).await.unwrap(), None);
    assert_eq!(local.delete_by_principal("p").await.unwrap(), 1);
    assert_eq!(local.load(&everywhere).await.unwrap(), None);

    // Once the target takes them again, the next write moves the session.
    target.refused.lock().unwrap().clear();
    assert_eq!(
        local
            .save(&saved, &next(&records[&saved], 1), 0)
            .await
            .unwrap(),
        SaveOutcome::Saved
    );
    assert_eq!(
        target.inner.load(&saved).await.unwrap().map(|r| r.version),
        Some(1)
    );
    let report = local.drain_into(&target).await.unwrap();
    assert_eq!((report.moved, report.kept), (3, 0), "{report:?}");
    assert_eq!(held(&local).await, 0, "left in memory");
    for key in [&logout, &retired, &everywhere] {
        assert_eq!(
            target.inner.load(key).await.unwrap(),
            None,
            "a logout was undone"
        );
    }
}
