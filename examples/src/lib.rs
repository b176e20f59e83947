//! Helpers shared by the example applications in this package.
//!
//! The examples themselves live beside this file's folder: `counter/main.rs`
//! (`cargo run --example counter`).

use std::net::SocketAddr;

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
