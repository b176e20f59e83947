//! Replica reads through the layer (see [`replica`](crate::replica)): a
//! client always sees its own writes and never goes back in versions,
//! across two app instances sharing the store. Every store runs it; for a
//! store whose reads do not lag it also checks that cookies carry no floor.

use axum::Router;
use axum::routing::get;

use super::http::{Reply, count, floor_of, id_of, read, send};
use crate::{SessionLayer, SessionStore};

fn instance(store: std::sync::Arc<dyn SessionStore>) -> Router {
    Router::new()
        .route("/count", get(count))
        .route("/read", get(read))
        .layer(SessionLayer::from_arc(store).secure(false))
}

/// What a browser holds: the cookie pair, replaced by every `Set-Cookie`.
struct Browser {
    pair: Option<String>,
    lags: bool,
}

impl Browser {
    async fn send(&mut self, app: &Router, path: &str) -> Reply {
        let reply = send(app, path, self.pair.as_deref().map(str::as_bytes)).await;
        if let Some(new) = reply.cookie_pair() {
            if let Some(old) = &self.pair {
                assert_eq!(
                    id_of(&new),
                    id_of(old),
                    "{path}: the session id never changes here"
                );
            }
            assert_eq!(
                floor_of(&new).is_some(),
                self.lags,
                "{path}: cookies carry a floor exactly when the store's reads may lag: {new}"
            );
            self.pair = Some(new);
        }
        reply
    }
}

/// A client counting through one instance and reading through the other
/// (and back) sees every count it made, at once, and never an older one.
/// Each write's cookie carries the version written when the store's reads
/// may lag, and no floor otherwise.
pub async fn client_sees_its_writes_across_instances<S: SessionStore>(store: S) {
    let lags = store.reads_may_lag();
    let store: std::sync::Arc<dyn SessionStore> = std::sync::Arc::new(store);
    let apps = [instance(store.clone()), instance(store.clone())];
    let mut browser = Browser { pair: None, lags };
    let mut last = 0u64;
    for round in 0..40usize {
        let (writer, reader) = (&apps[round % 2], &apps[(round + 1) % 2]);
        let wrote = browser.send(writer, "/count").await;
        assert!(wrote.status.is_success(), "round {round}: {wrote:?}");
        let n: u64 = wrote.body.parse().expect("a count");
        assert_eq!(n, last + 1, "round {round}: counted on what it had seen");
        last = n;
        if lags {
            // Version n - 1: the create was version 0 with n = 1.
            let pair = browser.pair.as_deref().expect("a cookie");
            assert_eq!(
                floor_of(pair),
                Some(n - 1),
                "round {round}: floor is the version written"
            );
        }
        for app in [reader, writer, reader] {
            let seen = browser.send(app, "/read").await;
            assert!(seen.status.is_success(), "round {round}: {seen:?}");
            assert_eq!(
                seen.body,
                n.to_string(),
                "round {round}: read its own write"
            );
        }
    }
    let final_read = browser.send(&apps[0], "/read").await;
    assert_eq!(final_read.body, last.to_string());
}
