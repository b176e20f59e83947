//! Helpers shared by the facade's tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // test helpers; not every test uses all

use session::{AnyStore, StoreConfig};

/// An environment variable naming a test server, or a failure saying how to get one.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests with scripts/test, which starts a throwaway server, or set {name}"
        )
    })
}

/// A name no other test uses (lowercase, a valid identifier tail), so a
/// shared server is never disturbed.
pub fn fresh() -> String {
    session_core::conformance::store::new_key()
        .short()
        .to_ascii_lowercase()
        .replace('-', "_")
}

/// The store a URL names, connected.
pub async fn connect(url: &str) -> AnyStore {
    StoreConfig::from_url(url)
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// `DATABASE_URL` with extra query options.
pub fn database_url(options: &str) -> String {
    with_options(&env("DATABASE_URL"), options)
}

/// `MYSQL_URL` with extra query options, under the `mariadb://` scheme (the
/// facade takes both).
pub fn mysql_url(options: &str) -> String {
    let url = env("MYSQL_URL");
    let url = url.replacen("mysql://", "mariadb://", 1);
    with_options(&url, options)
}

fn with_options(url: &str, options: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{options}")
}
