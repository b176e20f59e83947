//! In-process cost of a session layer per request, on the memory store:
//! the app of `bench::app` called with tower's `oneshot` (no network), for
//! our layer (default, and with `ConflictPolicy::Refuse`, which keeps
//! nothing of a request for a re-run), tower-sessions (moka store and its own `MemoryStore`) and no
//! layer at all. Routes: `untouched` (behind the layer, session never used),
//! `read`, `write` (counter increment) and `new` (`/write` without a cookie:
//! creates a session).
//!
//! `cargo bench -p bench --bench layer`

use axum::Router;
use axum::body::Body;
use criterion::{Criterion, criterion_group, criterion_main};
use http::header::{COOKIE, SET_COOKIE};
use http::{Request, StatusCode};
use session_memory::MemoryStore;
use tokio::runtime::Runtime;
use tower::ServiceExt as _;

async fn call(app: Router, path: &str, cookie: Option<&str>) -> StatusCode {
    let mut request = Request::get(path);
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    let request = request.body(Body::empty()).expect("request");
    let response = app.oneshot(request).await.expect("infallible");
    response.status()
}

/// Creates a session with one `/write` and returns its `name=value` cookie.
fn session_cookie(runtime: &Runtime, app: &Router) -> String {
    runtime.block_on(async {
        let request = Request::get("/write").body(Body::empty()).expect("request");
        let response = app.clone().oneshot(request).await.expect("infallible");
        let header = response
            .headers()
            .get(SET_COOKIE)
            .expect("a new session sets a cookie")
            .to_str()
            .expect("ascii cookie");
        header.split(';').next().expect("name=value").to_owned()
    })
}

fn layer(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let apps = [
        ("ours", bench::app::ours(MemoryStore::default())),
        (
            "ours-refuse",
            bench::app::ours_with(
                bench::app::ours_layer(MemoryStore::default())
                    .conflict_policy(session_core::ConflictPolicy::Refuse),
            ),
        ),
        (
            "tower-sessions-moka",
            bench::app::tower_sessions(tower_sessions_moka_store::MokaStore::new(Some(
                session_memory::DEFAULT_CAPACITY,
            ))),
        ),
        (
            "tower-sessions-memory",
            bench::app::tower_sessions(tower_sessions::MemoryStore::default()),
        ),
        ("bare", bench::app::bare()),
    ];
    let mut group = c.benchmark_group("layer");
    for (name, app) in &apps {
        let cookie = (*name != "bare").then(|| session_cookie(&runtime, app));
        let cookie = cookie.as_deref();
        for (route, path, with_cookie) in [
            ("untouched", "/untouched", true),
            ("read", "/read", true),
            ("write", "/write", true),
            ("new", "/write", false),
        ] {
            if *name == "bare" && route != "untouched" {
                continue;
            }
            let cookie = cookie.filter(|_| with_cookie);
            group.bench_function(format!("{route}/{name}"), |b| {
                b.to_async(&runtime)
                    .iter(|| call(app.clone(), path, cookie));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, layer);
criterion_main!(benches);
