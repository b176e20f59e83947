//! The store URLs in deploy/'s Kubernetes Secrets are ones the app accepts
//! (the manifests themselves are checked by scripts/validate-deploy).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

use session::{Backend, StoreConfig};

/// The `SESSION_STORE: "..."` values of a manifest.
fn store_urls(manifest: &str) -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/").to_owned() + manifest;
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("SESSION_STORE: \""))
        .map(|rest| rest.trim_end_matches('"').to_owned())
        .collect()
}

#[test]
fn the_redis_secret_is_a_durable_sentinel_url_over_the_statefulsets_pods() {
    let urls = store_urls("stateless-redis/app.yaml");
    assert_eq!(urls.len(), 1, "{urls:?}");
    let config = StoreConfig::from_url(&urls[0]).unwrap();
    match config.backend {
        Backend::RedisSentinel {
            sentinels,
            master,
            durable,
            ..
        } => {
            assert_eq!(
                sentinels,
                [
                    "redis://redis-0.redis:26379",
                    "redis://redis-1.redis:26379",
                    "redis://redis-2.redis:26379"
                ]
            );
            assert_eq!(
                master, "sessions",
                "redis.yaml's sentinels monitor `sessions`"
            );
            assert_eq!(durable, Some(session::Durable::All));
        }
        other => panic!("not a Sentinel URL: {other:?}"),
    }
}

#[test]
fn the_postgres_secret_points_at_the_primary_service() {
    let urls = store_urls("stateless-postgres/app.yaml");
    assert_eq!(urls.len(), 1, "{urls:?}");
    let config = StoreConfig::from_url(&urls[0]).unwrap();
    assert!(
        matches!(&config.backend, Backend::Postgres { url, .. } if url.contains("@postgres-primary:5432/")),
        "{:?}",
        config.backend
    );
}
