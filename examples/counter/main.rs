//! A visit counter: the smallest app with server-side sessions.
//!
//! `GET /` answers with the number of earlier visits in this session, then
//! counts this one. Run it with `cargo run --example counter` and open
//! <http://127.0.0.1:3000> (or set `ADDR`). The store comes from
//! `SESSION_STORE` (default `memory://`):
//!
//! ```text
//! $ curl -c jar -b jar http://127.0.0.1:3000/
//! 0 earlier visits in this session
//! $ curl -c jar -b jar http://127.0.0.1:3000/
//! 1 earlier visits in this session
//! ```

#[tokio::main]
async fn main() -> Result<(), examples::Failure> {
    let addr = examples::listen_addr("127.0.0.1:3000")?;
    let store = examples::store_from_env().await?;
    // This example serves plain http on loopback, where a browser would never
    // send back a `Secure` cookie; the library's default stays Secure.
    let app = examples::counter::app(store.layer().secure(false));
    Ok(examples::serve("counter", addr, app, &store).await?)
}
