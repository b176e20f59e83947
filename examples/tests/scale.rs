//! The seed's claims under load (`cluster --scenario scale`, shortened):
//! 3 instances behind nginx, 20 users, one instance added at 3 s and the
//! newest removed at 6 s, then a rolling restart of every instance.
//!
//! - memory + sticky loses exactly the users of the processes stopped
//!   (removed or restarted), counted from which process served each user,
//!   and moves no other user;
//! - shared stores (Redis, Postgres, Redis Sentinel) with round-robin lose
//!   no session and fail no request;
//! - round-robin gives every instance an equal share within ±10 % in each
//!   steady phase; sticky's shares are measured and printed with their skew.
//!
//! Needs nginx and, for the shared stores, the servers `scripts/test` starts.
//! Each test runs alone (.config/nextest.toml): 4 processes and 20 users.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{env_or_fail, example_binary, free_port};
use examples::cluster::Routing;
use examples::cluster::scale::{Report, Setup, Timing, run_setup, table};

fn timing() -> Timing {
    Timing {
        think: Duration::from_millis(50),
        restart_pause: Duration::from_secs(1),
        ..Timing::over(20, Duration::from_secs(9))
    }
}

async fn run(label: &str, store: String, routing: Routing) -> Report {
    let setup = Setup {
        label: label.to_owned(),
        store,
        routing,
    };
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let report = run_setup(&example_binary("cluster"), &setup, &timing(), listen)
        .await
        .unwrap();
    println!("{}", table(std::slice::from_ref(&report)));
    println!("{report:?}");
    assert!(
        report.requests > 500,
        "too few requests: {}",
        report.requests
    );
    assert_eq!(report.wrong_counts, 0, "a count moved by other than one");
    report
}

/// Round-robin: in each steady phase every instance within ±10 % of an equal share.
fn assert_equal_shares(report: &Report) {
    assert_eq!(report.phases.len(), 3);
    for (phase, n) in report.phases.iter().zip([3, 4, 3]) {
        assert_eq!(phase.shares.len(), n, "{phase:?}");
        assert!(
            phase.deviation <= 0.10,
            "round-robin share off by {:.1}% (> 10%) with {n} instances: {phase:?}",
            phase.deviation * 100.0
        );
    }
}

async fn shared_store_loses_no_session(label: &str, store: String) {
    let report = run(label, store, Routing::RoundRobin).await;
    assert_eq!(
        report.failed, 0,
        "requests failed while instances came and went: {:?}",
        report.failures
    );
    assert!(
        report.lost_users.is_empty(),
        "{} users lost their session on a shared store: {:?}",
        report.lost_users.len(),
        report.lost_users
    );
    // Users whose previous request was served by a process that then
    // stopped: the store, not luck, kept their sessions.
    assert!(
        !report.exposed_users.is_empty(),
        "no user's process was stopped under them"
    );
    assert_equal_shares(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_sticky_loses_exactly_the_users_of_the_stopped_instances() {
    let report = run("memory, sticky", "memory://".to_owned(), Routing::Sticky).await;
    assert_eq!(report.failed, 0, "requests failed");
    assert_eq!(
        report.moves_without_cause, 0,
        "a sticky user moved to another process while theirs ran"
    );
    assert_eq!(
        report.unexplained_losses, 0,
        "a session was lost although its process still ran"
    );
    assert_eq!(
        report.lost_users, report.exposed_users,
        "the users who lost their session are not exactly those whose instance was stopped"
    );
    // The rolling restart stops every instance: every user is exposed once at least.
    assert_eq!(report.lost_users.len(), report.users);
    // The instance added at 3 s got no user (sticky never moves one), so
    // removing it cost nobody: no loss before the restart.
    assert!(
        report.lost_while_scaling.is_empty(),
        "{:?}",
        report.lost_while_scaling
    );
    // Sticky's shares follow where the users first landed: measured and
    // printed, and the new instance's share is zero.
    let with_four = &report.phases[1];
    assert_eq!(with_four.shares.len(), 4);
    assert_eq!(with_four.shares[3].requests, 0, "{with_four:?}");
    println!(
        "sticky skew per phase: {:?}",
        report
            .phases
            .iter()
            .map(|p| format!("{:.1}%", p.deviation * 100.0))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_round_robin_loses_every_session_and_shares_equally() {
    let report = run(
        "memory, round-robin",
        "memory://".to_owned(),
        Routing::RoundRobin,
    )
    .await;
    assert_eq!(report.failed, 0, "requests failed");
    assert_eq!(report.lost_users.len(), report.users);
    assert_equal_shares(&report);
}

fn with(url: &str, option: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{option}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_round_robin_loses_no_session_while_scaling_and_restarting() {
    let store = with(
        &env_or_fail("REDIS_URL"),
        &format!("prefix=scale-test-{}:", free_port()),
    );
    shared_store_loses_no_session("Redis, round-robin", store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_round_robin_loses_no_session_while_scaling_and_restarting() {
    let store = with(
        &env_or_fail("DATABASE_URL"),
        &format!("schema=scale_test_{}", free_port()),
    );
    shared_store_loses_no_session("Postgres, round-robin", store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_round_robin_loses_no_session_while_scaling_and_restarting() {
    let store = with(
        &env_or_fail("REDIS_SENTINEL_URL"),
        &format!("prefix=scale-test-{}:", free_port()),
    );
    shared_store_loses_no_session("Redis Sentinel, round-robin", store).await;
}
