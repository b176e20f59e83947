//! Replica reads that never go back in time: the per-client version floor.
//!
//! A replicated store (Postgres with streaming replicas, Redis with
//! replicas) may serve loads from a replica, which lags behind the primary
//! by some amount of time nobody bounds. Left alone, a client that has just
//! written its session could read an older version of it through another
//! app instance, or see a session it just created as missing. So every
//! client carries, in its session cookie, the highest version of its
//! record it has seen or written: its *floor*.
//!
//! - The layer sends the floor with every load, to
//!   [`SessionStore::load_at_least`](crate::SessionStore::load_at_least),
//!   but only to a store whose
//!   [`reads_may_lag`](crate::SessionStore::reads_may_lag). Other stores'
//!   cookies carry no floor and their loads are plain `load`s.
//! - The store asks a replica first. A replica's record at or above the
//!   floor is the answer. A record below the floor, or no record while the
//!   client has a floor (it has seen the record, so the record existed), is
//!   asked of the primary instead: [`read_your_writes`] is that decision, in
//!   one place for every replicated store. A replica that fails is not an
//!   outage either: the primary answers.
//! - After the response, the layer sends the cookie again when the request
//!   saw or wrote a version above the cookie's floor: after a save, the
//!   version saved; after a create, the new record's version (0); after a
//!   load that saw a higher version (written by another of the client's
//!   tabs, say), that version. A request that saw nothing newer sets no
//!   cookie, so most reads still cost no `Set-Cookie`.
//! - A save stays compare-and-set on the primary, so a stale view can never
//!   become a lost write. When a save conflicts, the record's version has
//!   moved past the one the request read; the reload after the conflict is
//!   made with a floor one above the version that conflicted, so a lagging
//!   replica cannot hand the re-run the same stale record again and again:
//!   the primary answers instead.
//!
//! # The cookie
//!
//! The cookie's value is `ID` (no floor) or `ID.V` (floor `V`, a decimal
//! `u64`); versions start at 0 for a new record, so `ID.0` is a floor and
//! `ID` is none. When cookies are signed, the signature covers the whole
//! value, floor included. A cookie without a floor (one set before the
//! store had replicas) keeps working: the session is found, and the
//! response carries the floor from then on. A floor part that does not
//! parse (`ID.`, `ID.x`, more than 20 digits) is ignored and the id still
//! counts: a floor only ever protects the client that carries it (a
//! forged, huge floor only sends that client's own loads to the primary).
//!
//! # What it does not promise
//!
//! The floor is per client: a client sees its own writes and never goes
//! back, but another client may see the session (if it shares it) as a
//! replica has it. Without a floor (an old cookie) the replica's answer is
//! taken as it is, including "no such session": asking the primary for
//! every unknown id would let anyone send the primary a load per made-up
//! cookie. A session deleted on the primary (a logout elsewhere, "log out
//! everywhere") may still be read from a replica until the replica replays
//! the delete; a write to it fails on the primary as `Gone`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Key, Label, Metadata};

use crate::{LoadOutcome, Record, StoreError};

/// Which server answered a load made through [`read_your_writes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// A replica's answer was at or above the client's floor.
    Replica,
    /// The primary answered: the replica's answer was below the floor,
    /// missing while the client had a floor, or the replica failed.
    Primary,
}

/// A store's answer to a load, as [`read_your_writes`] weighs it:
/// `Option<Record>` (from [`load`](crate::SessionStore::load)) or
/// [`LoadOutcome`] (from
/// [`load_observed`](crate::SessionStore::load_observed)).
pub trait LoadAnswer {
    /// The live record answered, if any.
    fn live(&self) -> Option<&Record>;
}

impl LoadAnswer for Option<Record> {
    fn live(&self) -> Option<&Record> {
        self.as_ref()
    }
}

impl LoadAnswer for LoadOutcome {
    fn live(&self) -> Option<&Record> {
        self.record()
    }
}

/// Whether a replica's answer to a load may be given to a client whose
/// floor is `floor`: a record at or above the floor, or no record when
/// the client has no floor.
pub fn replica_answer_suffices(floor: Option<u64>, answer: Option<&Record>) -> bool {
    match (floor, answer) {
        (None, _) => true,
        (Some(floor), Some(record)) => record.version >= floor,
        (Some(_), None) => false,
    }
}

/// Why the answer of a load through [`read_your_writes`] came from where it
/// did: the outcomes of `session_replica_reads_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Why {
    /// A replica's answer sufficed.
    Replica,
    /// The replica answered, but behind the client's floor: the primary
    /// answered.
    Behind,
    /// The replica failed (or none was there to ask): the primary answered.
    Primary,
}

impl Why {
    fn served(self) -> Served {
        match self {
            Self::Replica => Served::Replica,
            Self::Behind | Self::Primary => Served::Primary,
        }
    }
}

async fn decide<T, R, P, F>(
    floor: Option<u64>,
    replica: R,
    primary: P,
) -> Result<(T, Why), StoreError>
where
    T: LoadAnswer,
    R: Future<Output = Result<T, StoreError>>,
    P: FnOnce() -> F,
    F: Future<Output = Result<T, StoreError>>,
{
    match replica.await {
        Ok(answer) if replica_answer_suffices(floor, answer.live()) => Ok((answer, Why::Replica)),
        Ok(_) => Ok((primary().await?, Why::Behind)),
        Err(error) => {
            tracing::debug!(
                error = &error as &dyn std::error::Error,
                "replica load failed; asking the primary"
            );
            Ok((primary().await?, Why::Primary))
        }
    }
}

/// Loads a record for a client whose floor is `floor`: `replica`'s answer
/// if it [suffices](replica_answer_suffices), otherwise (or if the replica
/// failed) the answer of `primary`, which is only called then.
///
/// The primary's answer is returned as it is, even below the floor (a
/// floor the client forged, or a record deleted meanwhile): nothing is more
/// current than the primary. An answer is an `Option<Record>` or a
/// [`LoadOutcome`]: a replica's [`Expired`](LoadOutcome::Expired) weighs
/// like [`Missing`](LoadOutcome::Missing) (no live record), and the
/// primary's is returned as it is.
///
/// # Errors
///
/// The primary's error, when the primary is asked and fails.
pub async fn read_your_writes<T, R, P, F>(
    floor: Option<u64>,
    replica: R,
    primary: P,
) -> Result<(T, Served), StoreError>
where
    T: LoadAnswer,
    R: Future<Output = Result<T, StoreError>>,
    P: FnOnce() -> F,
    F: Future<Output = Result<T, StoreError>>,
{
    let (answer, why) = decide(floor, replica, primary).await?;
    Ok((answer, why.served()))
}

/// How the loads of a replicated store were answered so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadCounts {
    /// Loads a replica answered.
    pub replica: u64,
    /// Loads sent to the primary (the replica's answer did not suffice, it
    /// failed, or no replica was there to ask).
    pub primary: u64,
}

impl ReadCounts {
    /// The share of loads a replica answered, from 0 to 1 (0 with no loads).
    pub fn replica_share(&self) -> f64 {
        let total = self.replica + self.primary;
        if total == 0 {
            return 0.0;
        }
        #[allow(clippy::cast_precision_loss)]
        let share = self.replica as f64 / total as f64;
        share
    }
}

/// What the replica-read metric says of where it comes from.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// The counters behind [`ReadCounts`], kept by a replicated store and
/// shared by its clones.
///
/// Each load it counts is also recorded through the [`metrics`] facade, as
/// `session_replica_reads_total` with the store's `backend` name and an
/// `outcome` (see the [table](crate::observe#metrics)): `replica` (a
/// replica answered: [`ReadCounts::replica`]), `behind` (the replica's
/// answer was below the client's floor, or missing while the client had
/// one, and the primary answered) and `primary` (the primary answered
/// without a replica's answer to weigh: the replica failed or was late, or
/// none was there to ask). `behind` and `primary` together are
/// [`ReadCounts::primary`].
#[derive(Debug)]
pub struct ReadCounters {
    replica: AtomicU64,
    primary: AtomicU64,
    /// The metric's keys, by [`Why`].
    keys: [Key; 3],
}

impl Default for ReadCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl ReadCounters {
    /// Counters at zero, whose metric is labelled `backend="custom"`
    /// (see [`for_backend`](Self::for_backend)).
    pub fn new() -> Self {
        Self::for_backend("custom")
    }

    /// Counters at zero for the store whose
    /// [`backend`](crate::SessionStore::backend) name is `backend`: the
    /// label of their metric.
    pub fn for_backend(backend: &'static str) -> Self {
        let key = |outcome: &'static str| {
            Key::from_parts(
                "session_replica_reads_total",
                vec![
                    Label::new("backend", backend),
                    Label::new("outcome", outcome),
                ],
            )
        };
        Self {
            replica: AtomicU64::new(0),
            primary: AtomicU64::new(0),
            keys: [key("replica"), key("behind"), key("primary")],
        }
    }

    /// Counts one load answered by `served` (a [`Served::Primary`] counted
    /// here is one that had no replica's answer to weigh: `primary` in the
    /// metric).
    pub fn count(&self, served: Served) {
        self.count_why(match served {
            Served::Replica => Why::Replica,
            Served::Primary => Why::Primary,
        });
    }

    fn count_why(&self, why: Why) {
        let counter = match why.served() {
            Served::Replica => &self.replica,
            Served::Primary => &self.primary,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let key = &self.keys[why as usize];
        metrics::with_recorder(|r| r.register_counter(key, &METADATA).increment(1));
    }

    /// The counts so far.
    pub fn counts(&self) -> ReadCounts {
        ReadCounts {
            replica: self.replica.load(Ordering::Relaxed),
            primary: self.primary.load(Ordering::Relaxed),
        }
    }

    /// [`read_your_writes`], counting who answered and why.
    ///
    /// # Errors
    ///
    /// As [`read_your_writes`].
    pub async fn load<T, R, P, F>(
        &self,
        floor: Option<u64>,
        replica: R,
        primary: P,
    ) -> Result<T, StoreError>
    where
        T: LoadAnswer,
        R: Future<Output = Result<T, StoreError>>,
        P: FnOnce() -> F,
        F: Future<Output = Result<T, StoreError>>,
    {
        let (answer, why) = decide(floor, replica, primary).await?;
        self.count_why(why);
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::Expiry;
    use crate::record::now;

    fn at(version: u64) -> Record {
        let mut record = Record::new(now(), &Expiry::default());
        record.version = version;
        record
    }

    async fn decide(
        floor: Option<u64>,
        replica: Result<Option<Record>, StoreError>,
        primary: Option<Record>,
    ) -> (Option<u64>, Served, bool) {
        let asked = AtomicBool::new(false);
        let (record, served) = read_your_writes(floor, async { replica }, || async {
            asked.store(true, Ordering::SeqCst);
            Ok(primary)
        })
        .await
        .expect("no error");
        (
            record.map(|r| r.version),
            served,
            asked.load(Ordering::SeqCst),
        )
    }

    #[tokio::test]
    async fn replica_at_or_above_the_floor_answers_without_the_primary() {
        for (floor, version) in [
            (None, 0),
            (None, 7),
            (Some(0), 0),
            (Some(3), 3),
            (Some(3), 9),
        ] {
            let got = decide(floor, Ok(Some(at(version))), Some(at(99))).await;
            assert_eq!(
                got,
                (Some(version), Served::Replica, false),
                "{floor:?} {version}"
            );
        }
    }

    #[tokio::test]
    async fn replica_below_the_floor_is_replaced_by_the_primary() {
        let got = decide(Some(5), Ok(Some(at(4))), Some(at(6))).await;
        assert_eq!(got, (Some(6), Served::Primary, true));
    }

    #[tokio::test]
    async fn missing_on_the_replica_with_a_floor_asks_the_primary() {
        let got = decide(Some(0), Ok(None), Some(at(0))).await;
        assert_eq!(got, (Some(0), Served::Primary, true));
        // Gone on the primary too: gone.
        let got = decide(Some(2), Ok(None), None).await;
        assert_eq!(got, (None, Served::Primary, true));
    }

    #[tokio::test]
    async fn missing_without_a_floor_is_believed() {
        let got = decide(None, Ok(None), Some(at(1))).await;
        assert_eq!(got, (None, Served::Replica, false));
    }

    #[tokio::test]
    async fn failed_replica_falls_back_to_the_primary() {
        let failed = Err(StoreError::backend("replica down"));
        let got = decide(None, failed, Some(at(2))).await;
        assert_eq!(got, (Some(2), Served::Primary, true));
    }

    #[tokio::test]
    async fn primary_below_a_forged_floor_is_still_the_answer() {
        let got = decide(Some(u64::MAX), Ok(Some(at(3))), Some(at(3))).await;
        assert_eq!(got, (Some(3), Served::Primary, true));
    }

    #[tokio::test]
    async fn primary_error_is_the_error() {
        let result = read_your_writes(Some(1), async { Ok(None) }, || async {
            Err(StoreError::backend("primary down"))
        })
        .await;
        assert!(result.is_err());
    }

    #[tokio::test]
    async fn an_expired_answer_weighs_as_missing() {
        let expired = || LoadOutcome::Expired {
            principal: Some("bob".to_owned()),
        };
        // With a floor the primary is asked, and its `Expired` is the answer.
        let (answer, why) =
            super::decide(Some(0), async { Ok(expired()) }, || async { Ok(expired()) })
                .await
                .expect("no error");
        assert_eq!((answer, why), (expired(), Why::Behind));
        // Without one the replica's answer is believed as it is.
        let (answer, why) = super::decide(None, async { Ok(expired()) }, || async {
            Ok(LoadOutcome::Found(at(1)))
        })
        .await
        .expect("no error");
        assert_eq!((answer, why), (expired(), Why::Replica));
        let (answer, why) =
            super::decide(Some(1), async { Ok(LoadOutcome::Found(at(1))) }, || async {
                Ok(LoadOutcome::Missing)
            })
            .await
            .expect("no error");
        assert_eq!(
            (answer.live().map(|r| r.version), why),
            (Some(1), Why::Replica)
        );
    }

    #[tokio::test]
    async fn a_failed_replica_is_primary_and_a_lagging_one_behind() {
        let (_, why): (Option<Record>, _) = super::decide(
            None,
            async { Err(StoreError::backend("replica down")) },
            || async { Ok(None) },
        )
        .await
        .expect("no error");
        assert_eq!(why, Why::Primary);
        let (_, why) = super::decide(Some(5), async { Ok(Some(at(4))) }, || async {
            Ok(Some(at(5)))
        })
        .await
        .expect("no error");
        assert_eq!(why, Why::Behind);
        assert_eq!(Why::Behind.served(), Served::Primary);
        assert_eq!(Why::Primary.served(), Served::Primary);
    }

    #[tokio::test]
    async fn counters_count_who_answered() {
        let counters = ReadCounters::new();
        let primary = || async { Ok(Some(at(5))) };
        counters
            .load(None, async { Ok(Some(at(1))) }, primary)
            .await
            .unwrap();
        counters
            .load(Some(5), async { Ok(Some(at(1))) }, primary)
            .await
            .unwrap();
        counters
            .load(Some(1), async { Ok(Some(at(1))) }, primary)
            .await
            .unwrap();
        let counts = counters.counts();
        assert_eq!(
            counts,
            ReadCounts {
                replica: 2,
                primary: 1
            }
        );
        assert!((counts.replica_share() - 2.0 / 3.0).abs() < 1e-9);
        assert!(ReadCounts::default().replica_share().abs() < f64::EPSILON);
    }
}
