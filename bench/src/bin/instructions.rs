//! A fixed number of in-process requests through the memory-store app, for
//! counting instructions per request with callgrind (repeatable on a busy
//! machine, unlike wall-clock time):
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/instructions ROUTE N [VARIANT]
//! ```
//!
//! ROUTE: untouched, read, write, new. VARIANT: `ours` (the default),
//! `refuse` (ours with `ConflictPolicy::Refuse`), or any other variant of
//! the memory backend (`tower-sessions-memory`, `tower-sessions`, `raw`,
//! `bare`). Subtract a run with N = 0 (set-up only) and divide by N.
//!
//! `BACKEND:VARIANT` (say `redis:ours`, `redis:raw`, `postgres:ours`) runs
//! the same requests against a real server (`REDIS_URL`, `DATABASE_URL`,
//! as for `load`), one at a time: callgrind then counts the application's
//! side of each store call (the client library and the layer), not the
//! server's.

use axum::body::Body;
use http::Request;
use http::header::{COOKIE, SET_COOKIE};
use tower::ServiceExt as _;

fn main() -> Result<(), bench::BoxError> {
    let mut args = std::env::args().skip(1);
    let route = args.next().unwrap_or_else(|| "read".to_owned());
    let n: usize = args.next().map_or(Ok(10_000), |a| a.parse())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let app = match args.next().as_deref() {
            None | Some("ours") => bench::app::ours(session_memory::MemoryStore::default()),
            Some("refuse") => bench::app::ours_with(
                bench::app::ours_layer(session_memory::MemoryStore::default())
                    .conflict_policy(session_core::ConflictPolicy::Refuse),
            ),
            Some(variant) => match variant.split_once(':') {
                Some((backend, variant)) => {
                    bench::setup::build(backend.parse()?, variant.parse()?).await?
                }
                None => {
                    bench::setup::build(bench::setup::Backend::Memory, variant.parse()?).await?
                }
            },
        };
        let first = app
            .clone()
            .oneshot(Request::get("/write").body(Body::empty())?)
            .await?;
        // `bare` sets no cookie: its requests carry one of the same size.
        let cookie = match first.headers().get(SET_COOKIE) {
            Some(set) => set.to_str()?.split(';').next().ok_or("no pair")?.to_owned(),
            None => "session=AAAAAAAAAAAAAAAAAAAAAA".to_owned(),
        };
        let (path, with_cookie) = match route.as_str() {
            "untouched" => ("/untouched", true),
            "read" => ("/read", true),
            "write" => ("/write", true),
            "new" => ("/write", false),
            other => return Err(format!("unknown route {other}").into()),
        };
        for _ in 0..n {
            let mut request = Request::get(path)
                .header("host", "localhost")
                .header("user-agent", "bench");
            if with_cookie {
                request = request.header(COOKIE, &cookie);
            }
            let response = app.clone().oneshot(request.body(Body::empty())?).await?;
            assert!(response.status().is_success());
        }
        Ok::<_, bench::BoxError>(())
    })
}
