//! The counter example's app: the body starts with the number of earlier visits.

#![allow(clippy::unwrap_used)] // tests

use session::StoreConfig;
use session_core::conformance::http::send;

#[tokio::test]
async fn counts_visits_per_session() {
    let store = StoreConfig::memory().connect().await.unwrap();
    let app = examples::counter::app(store.layer().secure(false));
    let first = send(&app, "/", None).await;
    assert!(first.body.starts_with("0 "), "{}", first.body);
    let cookie = first.cookie_pair().unwrap();
    for n in 1..=3 {
        let reply = send(&app, "/", Some(cookie.as_bytes())).await;
        assert!(reply.body.starts_with(&format!("{n} ")), "{}", reply.body);
    }
    assert!(
        send(&app, "/", None).await.body.starts_with("0 "),
        "a new visitor starts at 0"
    );
}
