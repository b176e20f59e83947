//! A rolling deploy from one backend to another, with users active the
//! whole time and every request sent to the instances of the current phase
//! in turn (round-robin, so a user's requests alternate between instances,
//! and two requests of one user sometimes run at once on two of them):
//!
//! 1. old-store instances next to `MigratingStore::new(old, new).moving(false)`;
//! 2. those next to `MigratingStore::new(old, new)` (moving);
//! 3. once the old store is empty, moving instances next to new-store ones.
//!
//! Users keep their sessions (a count never starts over, the cookie never
//! changes but at login), no logout is undone on any instance, and no
//! acknowledged count is lost. On two memory stores, and Redis to Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

mod common;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::get;
use session::{MigratingStore, SessionLayer, SessionStore, StoreKey};
use session_core::conformance::http::{count, cycle, destroy, id_of, read, send};

const USERS: usize = 120;
const WORKERS: usize = 8;
const ROUNDS: usize = 6;

fn app(store: impl SessionStore) -> Router {
    Router::new()
        .route("/count", get(count))
        .route("/read", get(read))
        .route("/logout", get(destroy))
        .route("/login", get(cycle))
        .layer(SessionLayer::new(store))
}

/// The instance kinds a deploy goes through.
struct Instances {
    old_only: Router,
    holding: Router,
    moving: Router,
    new_only: Router,
}

fn instances<O, N>(old: &O, new: &N) -> Instances
where
    O: SessionStore + Clone,
    N: SessionStore + Clone,
{
    Instances {
        old_only: app(old.clone()),
        holding: app(MigratingStore::new(old.clone(), new.clone()).moving(false)),
        moving: app(MigratingStore::new(old.clone(), new.clone())),
        new_only: app(new.clone()),
    }
}

#[derive(Clone)]
struct User {
    cookie: String,
    counted: u64,
}

#[derive(Default)]
struct Tally {
    failures: Vec<String>,
    /// Ids ended by a logout or retired by a login.
    dead: Vec<String>,
}

/// One phase: every user, `ROUNDS` times, on the phase's instances in
/// turn; then the [`check`] on each of them.
async fn phase(
    name: &'static str,
    routers: &[&Router],
    users: &mut Vec<User>,
    tally: &Arc<Mutex<Tally>>,
) {
    let routers: Arc<Vec<Router>> = Arc::new(routers.iter().map(|&r| r.clone()).collect());
    let mut groups: Vec<Vec<User>> = (0..WORKERS).map(|_| Vec::new()).collect();
    for (i, user) in users.drain(..).enumerate() {
        groups[i % WORKERS].push(user);
    }
    let workers: Vec<_> = groups
        .into_iter()
        .enumerate()
        .map(|(w, mut mine)| {
            let (routers, tally) = (routers.clone(), tally.clone());
            tokio::spawn(async move {
                let fail = |what: String| {
                    tally
                        .lock()
                        .unwrap()
                        .failures
                        .push(format!("{name}: {what}"))
                };
                for round in 0..ROUNDS {
                    let mut kept = Vec::new();
                    for (u, mut user) in mine.drain(..).enumerate() {
                        let at = |k: usize| &routers[(w + u + round + k) % routers.len()];
                        let cookie = Some(user.cookie.as_bytes());
                        match (w * 7 + u * 3 + round) % 23 {
                            0 => {
                                let reply = send(at(0), "/logout", cookie).await;
                                if !reply.status.is_success() {
                                    fail(format!("logout: {}", reply.status));
                                }
                                tally.lock().unwrap().dead.push(user.cookie);
                                continue;
                            }
                            1 => {
                                let reply = send(at(0), "/login", cookie).await;
                                match reply.cookie_pair() {
                                    Some(fresh) if reply.status.is_success() => {
                                        tally.lock().unwrap().dead.push(user.cookie.clone());
                                        user.cookie = fresh;
                                    }
                                    _ => fail(format!(
                                        "login: {} {:?}",
                                        reply.status, reply.set_cookies
                                    )),
                                }
                            }
                            2 | 3 => {
                                // Two requests of this user at once, on two instances.
                                let (one, two) = tokio::join!(
                                    send(at(0), "/count", cookie),
                                    send(at(1), "/count", cookie)
                                );
                                // Serializable: each body is the count its handler
                                // committed (a stale one ran again on fresh data),
                                // so the two differ, and the store has both (the
                                // next count checks).
                                let fine = one.status.is_success()
                                    && two.status.is_success()
                                    && one.set_cookies.is_empty()
                                    && two.set_cookies.is_empty();
                                let bodies: Vec<u64> = [&one.body, &two.body]
                                    .iter()
                                    .filter_map(|b| b.parse().ok())
                                    .collect();
                                let plausible = bodies.len() == 2
                                    && bodies[0] != bodies[1]
                                    && bodies.iter().all(|n| (user.counted + 1..=user.counted + 2).contains(n));
                                if fine && plausible {
                                    user.counted += 2;
                                } else {
                                    fail(format!(
                                        "parallel counts {:?} {:?} ({} {}, new cookie: {} {}), after {}",
                                        one.body,
                                        two.body,
                                        one.status,
                                        two.status,
                                        !one.set_cookies.is_empty(),
                                        !two.set_cookies.is_empty(),
                                        user.counted
                                    ));
                                    // Keep going from what the store says.
                                    user.counted = recount(at(0), &user).await;
                                }
                            }
                            _ => {
                                let reply = send(at(0), "/count", cookie).await;
                                let expected = (user.counted + 1).to_string();
                                if reply.is_success_with(&expected) {
                                    user.counted += 1;
                                } else {
                                    fail(format!(
                                        "count {:?} ({}, new cookie: {}), expected {expected}",
                                        reply.body,
                                        reply.status,
                                        !reply.set_cookies.is_empty()
                                    ));
                                    match reply.cookie_pair() {
                                        // Logged out and given a new session: follow it.
                                        Some(fresh) => {
                                            user.cookie = fresh;
                                            user.counted = reply.body.parse().unwrap_or(0);
                                        }
                                        None => user.counted = recount(at(0), &user).await,
                                    }
                                }
                            }
                        }
                        kept.push(user);
                    }
                    mine = kept;
                }
                mine
            })
        })
        .collect();
    for worker in workers {
        users.extend(worker.await.unwrap());
    }
    check(name, &routers, users, tally).await;
}

async fn recount(router: &Router, user: &User) -> u64 {
    send(router, "/read", Some(user.cookie.as_bytes()))
        .await
        .body
        .parse()
        .unwrap_or(0)
}

/// Every live user reads its count on every router; every dead id reads
/// none; no request was answered wrongly.
async fn check(name: &str, routers: &[Router], users: &[User], tally: &Arc<Mutex<Tally>>) {
    let dead = tally.lock().unwrap().dead.clone();
    let mut lost = 0;
    let mut undone = 0;
    for router in routers {
        for user in users {
            let reply = send(router, "/read", Some(user.cookie.as_bytes())).await;
            if reply.body != user.counted.to_string() {
                lost += 1;
            }
        }
        for cookie in &dead {
            let reply = send(router, "/read", Some(cookie.as_bytes())).await;
            if reply.body != "none" {
                undone += 1;
            }
        }
    }
    let failures = tally.lock().unwrap().failures.clone();
    assert!(
        failures.is_empty(),
        "{} requests were answered wrongly, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(
        lost, 0,
        "after {name}: {lost} reads of a live user's count were wrong (sessions or counts lost)"
    );
    assert_eq!(
        undone, 0,
        "after {name}: {undone} reads found a session that was logged out or retired"
    );
}

async fn rolling_deploy<O, N>(old: O, new: N)
where
    O: SessionStore + Clone,
    N: SessionStore + Clone,
{
    let i = instances(&old, &new);
    let tally = Arc::new(Mutex::new(Tally::default()));
    // Before the deploy: every user has two counts, on the old store.
    let mut users = Vec::new();
    for _ in 0..USERS {
        let cookie = send(&i.old_only, "/count", None)
            .await
            .cookie_pair()
            .unwrap();
        assert_eq!(
            send(&i.old_only, "/count", Some(cookie.as_bytes()))
                .await
                .body,
            "2"
        );
        users.push(User { cookie, counted: 2 });
    }

    for (name, routers) in [
        ("phase 1 (old-only + holding)", [&i.old_only, &i.holding]),
        ("phase 2 (holding + moving)", [&i.holding, &i.moving]),
    ] {
        phase(name, &routers, &mut users, &tally).await;
    }

    // Before new-store instances join: every session out of the old store.
    for user in &users {
        let reply = send(&i.moving, "/read", Some(user.cookie.as_bytes())).await;
        assert_eq!(reply.body, user.counted.to_string());
    }
    let keys: Vec<StoreKey> = users.iter().map(|u| id_of(&u.cookie).store_key()).collect();
    none_in(&old, &keys, "a session is still in the old store").await;

    phase(
        "phase 3 (moving + new-only)",
        &[&i.moving, &i.new_only],
        &mut users,
        &tally,
    )
    .await;
    none_in(&old, &keys, "the old store was written to in phase 3").await;
}

/// `store` holds none of `keys`.
async fn none_in(store: &impl SessionStore, keys: &[StoreKey], what: &str) {
    for key in keys {
        assert!(store.load(key).await.unwrap().is_none(), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_deploy_memory_to_memory_keeps_every_session() {
    rolling_deploy(session::MemoryStore::new(), session::MemoryStore::new()).await;
}

#[cfg(all(feature = "redis", feature = "postgres"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_deploy_redis_to_postgres_keeps_every_session() {
    use common::{connect, database_url, env, fresh};
    let redis = connect(&format!("{}?prefix=rolling-{}:", env("REDIS_URL"), fresh())).await;
    let postgres = connect(&database_url(&format!(
        "schema=rolling_{}&pool=16",
        fresh()
    )))
    .await;
    rolling_deploy(redis, postgres).await;
}
