//! The example applications' code, shared by their `main`s, the tests and
//! the multi-instance demo.
//!
//! - [`counter`]: `cargo run --example counter`
//! - [`login`]: `cargo run --example login`
//! - [`cluster`]: `cargo run --example cluster -- --instances 3 --routing sticky`,
//!   and `cargo run --example cluster -- --scenario scale` ([`cluster::scale`])
//!
//! Every example reads its store from `SESSION_STORE` (default `memory://`,
//! see [`session::StoreConfig::from_url`]) and its address from `ADDR`, and
//! serves the session layer's metrics as Prometheus text at `GET /metrics`
//! ([`with_metrics`]).

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use session::{AnyStore, StoreConfig};

pub mod cluster;
pub mod counter;
pub mod login;

/// Why an example did not start or stopped: an error shown as the chain of
/// its causes, one per line, instead of a `Debug` dump. Each example's
/// `main` returns it, so a failed start reads like
///
/// ```text
/// Error: could not connect the postgres session store
///   caused by: could not connect to Postgres
///   caused by: error communicating with database: Connection refused (os error 111)
/// ```
pub struct Failure(Box<dyn std::error::Error>);

impl<E: Into<Box<dyn std::error::Error>>> From<E> for Failure {
    fn from(error: E) -> Self {
        Self(error.into())
    }
}

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `main` prints the `Debug` of the error it returns, after `Error: `.
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, "\n  caused by: {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// The address to listen on: `ADDR` if set, else `default`.
///
/// # Errors
///
/// A message naming the bad value if `ADDR` is not a socket address.
pub fn listen_addr(default: &str) -> Result<SocketAddr, String> {
    let raw = std::env::var("ADDR").unwrap_or_else(|_| default.to_owned());
    raw.parse()
        .map_err(|e| format!("ADDR={raw:?} is not an address like 127.0.0.1:3000: {e}"))
}

/// Connects the store `SESSION_STORE` names (default `memory://`).
///
/// # Errors
///
/// The URL does not parse, or the store cannot be reached.
pub async fn store_from_env() -> Result<AnyStore, Box<dyn std::error::Error>> {
    let url = std::env::var("SESSION_STORE").unwrap_or_else(|_| "memory://".to_owned());
    let store = StoreConfig::from_url(&url)
        .map_err(|e| format!("SESSION_STORE={url:?}: {e}"))?
        .connect()
        .await?;
    Ok(store)
}

/// The process's Prometheus recorder, installed as the global `metrics`
/// recorder on first use (with the session metrics' descriptions).
///
/// # Panics
///
/// If another global `metrics` recorder was installed first.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .install_recorder()
            .expect("no other metrics recorder is installed");
        session::observe::describe();
        handle
    })
}

/// `app` with `GET /metrics`: the session layer's metrics (and any other
/// the process records) as Prometheus text. The route sits outside the
/// app's session layer, so a scrape touches no session.
///
/// Installs the recorder ([`prometheus`]) now, so that the metrics of the
/// first requests are kept.
pub fn with_metrics(app: axum::Router) -> axum::Router {
    let handle = prometheus();
    app.route(
        "/metrics",
        get(move || async move {
            handle.run_upkeep();
            handle.render()
        }),
    )
}

/// Serves `app` until Ctrl-C or SIGTERM, with `GET /metrics`
/// ([`with_metrics`]) and [`health_routes`] beside it. Then, if the
/// sessions lived in this process's memory and `SESSION_DRAIN_TO` names
/// another store, hands every live session to it so nobody is logged out by
/// the restart.
///
/// `SESSION_DRAIN_TO` is read and connected at startup, so that a bad value
/// shows at once rather than at shutdown; see [`serve_then_drain`] for the
/// shutdown order.
///
/// # Errors
///
/// Binding, the drain target's URL or connection, serving, or the drain failed.
pub async fn serve(
    name: &str,
    addr: SocketAddr,
    app: axum::Router,
    store: &AnyStore,
) -> Result<(), Box<dyn std::error::Error>> {
    let app = with_metrics(app);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!(
        "{name} listening on http://{} (sessions: {})",
        listener.local_addr()?,
        store.backend()
    );
    serve_on(listener, app, store, shutdown_signal()).await
}

/// [`serve`] on a listener already bound, until `shutdown` completes: the
/// drain target from `SESSION_DRAIN_TO`, [`serve_then_drain`], and the
/// drain's report printed.
///
/// # Errors
///
/// The drain target's URL or connection, serving, or the drain failed.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    store: &AnyStore,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error>> {
    let drain_to = match (store.memory(), std::env::var("SESSION_DRAIN_TO")) {
        (Some(_), Ok(url)) if !url.is_empty() => Some(
            StoreConfig::from_url(&url)
                .map_err(|e| format!("SESSION_DRAIN_TO={url:?}: {e}"))?
                .connect()
                .await?,
        ),
        _ => None,
    };
    if let Some(report) =
        serve_then_drain(listener, app, store, drain_to.as_ref(), shutdown).await?
        && let Some(target) = &drain_to
    {
        println!(
            "handed {} live sessions to the {} store ({} it already had were left as it had them)",
            report.moved,
            target.backend(),
            report.skipped
        );
        if report.kept > 0 {
            eprintln!(
                "{} sessions were refused by the {} store for now and are lost at exit",
                report.kept,
                target.backend()
            );
        }
    }
    Ok(())
}

/// `GET /healthz` and `GET /readyz`, for a load balancer's or Kubernetes'
/// probes. Merge them into an app outside its session layer (as
/// [`serve_then_drain`] does): they never touch a session.
///
/// - `/healthz` answers `200 ok` while the process serves at all (a
///   liveness probe: restart the process when it stops answering).
/// - `/readyz` answers `200 ready` when one [`ping`](session::SessionStore::ping)
///   of `store` succeeds within the store's operation timeout
///   ([`AnyStore::op_timeout`]), else `503` with `Retry-After: 1` (a
///   readiness probe: send no traffic to an instance whose requests would
///   all get 503 anyway). The memory store always answers.
pub fn health_routes(store: &AnyStore) -> axum::Router {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::get;

    let store = store.clone();
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || async move {
                match tokio::time::timeout(store.op_timeout(), session::SessionStore::ping(&store))
                    .await
                {
                    Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
                    Ok(Err(error)) => {
                        eprintln!("readyz: the {} store failed: {error}", store.backend());
                        not_ready("the session store failed\n")
                    }
                    Err(_) => {
                        eprintln!(
                            "readyz: the {} store did not answer within {:?}",
                            store.backend(),
                            store.op_timeout()
                        );
                        not_ready("the session store did not answer in time\n")
                    }
                }
            }),
        )
}

fn not_ready(body: &'static str) -> axum::response::Response {
    use axum::http::{StatusCode, header::RETRY_AFTER};
    use axum::response::IntoResponse;
    (StatusCode::SERVICE_UNAVAILABLE, [(RETRY_AFTER, "1")], body).into_response()
}

/// Serves `app` and [`health_routes`] on `listener` until `shutdown`
/// completes; then, if `store` is the memory store and `drain_to` is given,
/// drains every session into `drain_to`
/// ([`MemoryStore::drain_into`](session::MemoryStore::drain_into)) and
/// returns its report.
///
/// The order at shutdown: the listener stops accepting, every request
/// already being served finishes and its connection closes, and only then
/// does the drain start. A request's session save is part of its response
/// (the layer commits before it answers), so a request that finished has
/// its write in the store. One kind of work can still be running by then:
/// the session layer runs an id change or a delete (login, logout) in a
/// task of its own, so that a client hanging up cannot cut it in half, and
/// a client that hung up no longer holds a connection open for that task.
/// The memory store handles it: from the moment a drain starts it forwards
/// every call to the drain's target, so such a late write lands there too.
/// For a shared store nothing needs handing over, and the process exits
/// once serving stops.
///
/// # Errors
///
/// Serving or the drain failed.
pub async fn serve_then_drain(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    store: &AnyStore,
    drain_to: Option<&AnyStore>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Option<session::memory::DrainReport>, Box<dyn std::error::Error>> {
    let app = health_routes(store).merge(app);
    // Returns once the listener is closed and every connection is done.
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    match (store.memory(), drain_to) {
        (Some(memory), Some(target)) => Ok(Some(memory.drain_into(target).await?)),
        _ => Ok(None),
    }
}

/// Completes on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        // If the handler cannot be installed, never complete rather than stop at once.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// The root README's code, compiled and run as a doc test so it stays true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
