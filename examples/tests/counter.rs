//! The counter example's app: the body starts with the number of earlier visits.

#![allow(clippy::unwrap_used)] // tests

use session::StoreConfig;
use session_core::conformance::http::send;

#[tokio::test]
async fn counts_visits_per_session() {
    counts_visits(StoreConfig::memory()).await;
}

/// The same app on MySQL/MariaDB, picked by a `mariadb://` URL as
/// `SESSION_STORE` would pick it.
#[tokio::test]
async fn counts_visits_per_session_on_mysql() {
    let url = std::env::var("MYSQL_URL")
        .expect("MYSQL_URL is not set: run the tests with scripts/test, which starts MariaDB");
    let fresh = session_core::conformance::store::new_key()
        .short()
        .to_ascii_lowercase()
        .replace('-', "_");
    let url = format!(
        "{}?database=counter_{fresh}",
        url.replacen("mysql://", "mariadb://", 1)
    );
    counts_visits(StoreConfig::from_url(&url).unwrap()).await;
}

async fn counts_visits(config: StoreConfig) {
    let store = config.connect().await.unwrap();
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
