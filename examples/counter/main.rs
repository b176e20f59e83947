//! A visit counter: the smallest app with server-side sessions.
//!
//! `GET /` answers with the number of earlier visits in this session, then
//! counts this one. Run it with `cargo run --example counter` and open
//! <http://127.0.0.1:3000> (or set `ADDR`).
//!
//! ```text
//! $ curl -c jar -b jar http://127.0.0.1:3000/
//! 0 earlier visits in this session
//! $ curl -c jar -b jar http://127.0.0.1:3000/
//! 1 earlier visits in this session
//! ```

use axum::{Router, routing::get};
use session_core::{Session, SessionError, SessionLayer};
use session_memory::MemoryStore;

async fn count(session: Session) -> Result<String, SessionError> {
    let visits: u64 = session
        .update("visits", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(format!("{} earlier visits in this session\n", visits - 1))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = examples::listen_addr("127.0.0.1:3000")?;

    // This example serves plain http on loopback, where a browser would never
    // send back a `Secure` cookie; the library's default stays Secure.
    let layer = SessionLayer::new(MemoryStore::new()).secure(false);
    let app = Router::new().route("/", get(count)).layer(layer);

    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("counter listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(examples::shutdown_signal())
        .await?;
    Ok(())
}
