//! The conformance suite every backend runs (feature `conformance`).
//!
//! Three suites, and a driver for fault tests:
//!
//! - [`store`]: the [`SessionStore`](crate::SessionStore) contract call by
//!   call: create collision, expiry enforced, compare-and-set conflict,
//!   `Gone` after delete, touch, the principal index, copies, and parallel
//!   tasks updating one record losing nothing.
//! - [`http`]: the layer and the store together through an axum `Router`:
//!   cookie flags, no store call for untouched sessions, no save for reads,
//!   `cycle_id`, `destroy`, no resurrection, signed cookies and key rotation,
//!   idle and absolute expiry, garbage cookies, and 100 parallel requests
//!   through `update` adding exactly 100.
//! - [`serial`]: serializability as handlers are really written: 300
//!   parallel `get`-then-`insert` requests over 3 app instances, a stale
//!   read never committed, logouts and id changes racing writes (forced
//!   interleavings), and the store calls of the non-conflicting path.
//! - [`replica`]: replica reads through two app instances: a client
//!   always sees its own writes and never goes back in versions (and a
//!   store whose reads do not lag sets cookies without a floor).
//! - [`observe`]: metrics and lifecycle events through the layer: events
//!   once, after the store confirmed, with the right keys; none for a
//!   refused, rolled-back or failed change; the counts a scripted sequence
//!   implies; no raw id in any metric label or event. Each case runs on a
//!   current-thread runtime of its own, under a recorder for its thread.
//! - [`faults`]: not a suite but the load every backend's fault tests run
//!   while they restart, kill or freeze their server, and the assertions
//!   they share (every failure a `503` in the fault window, no hang, no
//!   acknowledged write lost).
//!
//! A backend runs all of them with one macro call in a test file. The
//! argument is an expression giving a future of a fresh store; each test
//! evaluates it once. The tests need `tokio` (features `macros`,
//! `rt-multi-thread`, `time`) as a dev-dependency.
//!
//! ```
//! // session-memory/tests/conformance.rs
//! session_core::conformance_tests!(async { session_memory::MemoryStore::new() });
//! # fn main() {}
//! ```

#![allow(clippy::missing_panics_doc)]

pub mod faults;
pub mod http;
pub mod observe;
pub mod replica;
pub mod serial;
pub mod store;
pub mod support;

/// Generates one `#[tokio::test]` per conformance case for a store factory.
///
/// `$factory` is an expression evaluating to a future of a fresh store, for
/// example `async { MemoryStore::new() }`. With `prefix = name,` first, the
/// tests sit in a module `name`, so that their full names say so
/// (`cluster::create_collision`).
#[macro_export]
macro_rules! conformance_tests {
    (prefix = $prefix:ident, $factory:expr) => {
        mod $prefix {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_tests!($factory);
        }
    };
    ($factory:expr) => {
        $crate::__conformance_cases!($factory; store:
            create_collision,
            expired_record_never_returned,
            expired_record_observed_once,
            cas_conflict,
            gone_after_delete,
            delete_if_unchanged_compares_version,
            touch_extends,
            touch_of_an_older_version_changes_nothing,
            principal_index,
            parallel_updates_lose_nothing,
            parallel_distinct_keys_all_kept,
            delete_expired_keeps_live,
            records_are_copies,
            delete_racing_writes_never_resurrects,
            principal_index_consistent_under_concurrency,
        );
        $crate::__conformance_cases!($factory; http:
            new_session_sets_cookie_with_configured_flags,
            untouched_session_makes_no_store_call,
            read_only_request_does_not_save,
            reads_touch_only_after_the_touch_interval,
            cycle_id_issues_new_cookie_and_kills_old_id,
            destroy_removes_cookie_and_record,
            destroyed_session_not_resurrected_by_parallel_request,
            cycle_after_parallel_destroy_does_not_resurrect,
            tampered_signed_cookie_gets_fresh_session,
            cookie_signed_with_rotated_key_accepted,
            idle_timeout_enforced,
            absolute_lifetime_enforced,
            persistent_expiry_sets_max_age,
            bad_cookies_get_fresh_session,
            unknown_id_is_never_adopted,
            parallel_requests_update_loses_nothing,
            parallel_requests_inserting_own_key_all_kept,
            foreign_non_ascii_cookies_do_not_hide_the_session,
            stale_cookie_before_live_one_does_not_hide_it,
            oversized_session_refused_and_nothing_written,
        );
        $crate::__conformance_cases!($factory; serial:
            get_then_insert_counter_is_serializable_across_instances,
            stale_read_is_never_committed,
            path_learnt_read_only_refuses_its_first_stale_write,
            update_mixed_with_get_insert_on_other_keys,
            destroy_racing_get_then_insert_never_resurrects,
            cycle_id_racing_a_write_to_the_old_id,
            non_conflicting_commits_make_no_extra_store_calls,
            failed_handler_commits_nothing,
            size_limit_holds_when_parallel_writes_combine,
            touch_never_undoes_a_shorter_idle_timeout,
        );
        $crate::__conformance_cases!($factory; replica:
            client_sees_its_writes_across_instances,
        );
        $crate::__conformance_cases!($factory; observe (captured):
            events_fire_once_after_commit,
            no_event_for_a_stale_or_failed_change,
            metrics_count_a_scripted_sequence,
            no_raw_id_in_metrics_or_events,
            expired_load_counted_and_reported_once,
            replica_reads_counted,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($factory:expr; $module:ident (captured): $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::observe::run(|capture| async move {
                    let store = $factory.await;
                    $crate::conformance::$module::$case(store, capture).await;
                });
            }
        )*
    };
    ($factory:expr; $module:ident: $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store = $factory.await;
                $crate::conformance::$module::$case(store).await;
            }
        )*
    };
}
