//! The layer's metrics (the table is in [`observe`](crate::observe)).
//!
//! Every metric key is built once, when the layer is, with the store's
//! backend name in it: a store call then allocates nothing for its metrics,
//! and with no recorder installed it costs a look-up of the recorder and a
//! call of the no-op one.

use std::time::Duration;

use metrics::{Key, Label, Metadata};

use crate::StoreError;

/// What the metrics say of where they come from.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// A counter of the layer, by what happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Count {
    LoadHit,
    LoadMiss,
    LoadExpired,
    Created,
    CreateTaken,
    Saved,
    SaveConflict,
    SaveGone,
    Touched,
    TouchMissed,
    Deleted,
    RetireDeleted,
    RetireConflict,
    RetireGone,
    Rerun,
    Refused,
}

/// Name, `op` label (if any) and `outcome` label of each [`Count`], in order.
const COUNTERS: [(&str, Option<&str>, &str); 16] = [
    ("session_loads_total", None, "hit"),
    ("session_loads_total", None, "miss"),
    ("session_loads_total", None, "expired"),
    ("session_creates_total", None, "created"),
    ("session_creates_total", None, "taken"),
    ("session_saves_total", None, "saved"),
    ("session_saves_total", None, "conflict"),
    ("session_saves_total", None, "gone"),
    ("session_touches_total", None, "touched"),
    ("session_touches_total", None, "missed"),
    ("session_deletes_total", Some("delete"), "deleted"),
    (
        "session_deletes_total",
        Some("delete_if_unchanged"),
        "deleted",
    ),
    (
        "session_deletes_total",
        Some("delete_if_unchanged"),
        "conflict",
    ),
    ("session_deletes_total", Some("delete_if_unchanged"), "gone"),
    ("session_stale_total", None, "rerun"),
    ("session_stale_total", None, "refused"),
];

/// The store calls the layer makes, as the `op` label names them.
const OPS: [&str; 7] = [
    "create",
    "load",
    "save",
    "touch",
    "delete",
    "delete_if_unchanged",
    "delete_by_principal",
];

/// The keys of a layer's metrics, built once.
pub(crate) struct Meter {
    backend: &'static str,
    counters: Box<[Key]>,
    latency: Box<[Key]>,
    size: Key,
    revoked: Key,
}

impl Meter {
    pub(crate) fn new(backend: &'static str) -> Self {
        let counters = COUNTERS
            .iter()
            .map(|&(name, op, outcome)| {
                let mut labels = vec![Label::new("backend", backend)];
                if let Some(op) = op {
                    labels.push(Label::new("op", op));
                }
                labels.push(Label::new("outcome", outcome));
                Key::from_parts(name, labels)
            })
            .collect();
        let latency = OPS
            .iter()
            .map(|&op| {
                Key::from_parts(
                    "session_store_call_seconds",
                    vec![Label::new("backend", backend), Label::new("op", op)],
                )
            })
            .collect();
        Self {
            backend,
            counters,
            latency,
            size: Key::from_parts("session_size_bytes", vec![Label::new("backend", backend)]),
            revoked: Key::from_parts(
                "session_revoked_total",
                vec![Label::new("backend", backend)],
            ),
        }
    }

    /// Counts one `count`.
    pub(crate) fn count(&self, count: Count) {
        let key = &self.counters[count as usize];
        metrics::with_recorder(|r| r.register_counter(key, &METADATA).increment(1));
    }

    /// Counts `n` sessions deleted by principal.
    pub(crate) fn revoked(&self, n: u64) {
        metrics::with_recorder(|r| r.register_counter(&self.revoked, &METADATA).increment(n));
    }

    /// Records how long a store call `op` took (whatever it answered).
    pub(crate) fn latency(&self, op: &'static str, took: Duration) {
        if let Some(i) = OPS.iter().position(|&o| o == op) {
            let key = &self.latency[i];
            metrics::with_recorder(|r| {
                r.register_histogram(key, &METADATA)
                    .record(took.as_secs_f64());
            });
        }
    }

    /// Records the JSON size of a session's data as written.
    pub(crate) fn size(&self, bytes: usize) {
        // A session's size is far below 2^52: exact as an f64.
        #[allow(clippy::cast_precision_loss)]
        let bytes = bytes as f64;
        metrics::with_recorder(|r| r.register_histogram(&self.size, &METADATA).record(bytes));
    }

    /// Counts a failed store call (rare: its key is built here).
    pub(crate) fn error(&self, op: &'static str, error: &StoreError) {
        let kind = match error {
            StoreError::Backend(_) => "backend",
            StoreError::Timeout(_) => "timeout",
            StoreError::Encode(_) => "encode",
        };
        metrics::counter!(
            "session_store_errors_total",
            "backend" => self.backend,
            "op" => op,
            "kind" => kind,
        )
        .increment(1);
    }
}

/// What a store call's answer counts as, per call.
pub(crate) trait Observed {
    /// The counter for this answer to the call `op`, if any.
    fn count(&self, op: &'static str) -> Option<Count>;
}

impl Observed for bool {
    fn count(&self, op: &'static str) -> Option<Count> {
        match (op, *self) {
            ("create", true) => Some(Count::Created),
            ("create", false) => Some(Count::CreateTaken),
            ("touch", true) => Some(Count::Touched),
            ("touch", false) => Some(Count::TouchMissed),
            _ => None,
        }
    }
}

impl Observed for crate::LoadOutcome {
    fn count(&self, _: &'static str) -> Option<Count> {
        Some(match self {
            Self::Found(_) => Count::LoadHit,
            Self::Missing => Count::LoadMiss,
            Self::Expired { .. } => Count::LoadExpired,
        })
    }
}

impl Observed for crate::SaveOutcome {
    fn count(&self, _: &'static str) -> Option<Count> {
        Some(match self {
            Self::Saved => Count::Saved,
            Self::Conflict => Count::SaveConflict,
            Self::Gone => Count::SaveGone,
        })
    }
}

impl Observed for crate::DeleteOutcome {
    fn count(&self, _: &'static str) -> Option<Count> {
        Some(match self {
            Self::Deleted => Count::RetireDeleted,
            Self::Conflict => Count::RetireConflict,
            Self::Gone => Count::RetireGone,
        })
    }
}

impl Observed for () {
    fn count(&self, _: &'static str) -> Option<Count> {
        Some(Count::Deleted)
    }
}

impl Observed for u64 {
    fn count(&self, _: &'static str) -> Option<Count> {
        None
    }
}
