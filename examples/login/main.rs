//! Log in, list your active sessions, log out one device or everywhere.
//!
//! `cargo run --example login`, then open <http://127.0.0.1:3001> in two
//! browsers (or a browser and a private window) and log in with the same
//! name in both. The store comes from `SESSION_STORE` (default `memory://`).

#[tokio::main]
async fn main() -> Result<(), examples::Failure> {
    let addr = examples::listen_addr("127.0.0.1:3001")?;
    let store = examples::store_from_env().await?;
    // Plain http on loopback: a browser would not send back a Secure cookie.
    let app = examples::login::app(store.clone(), store.layer().secure(false));
    Ok(examples::serve("login", addr, app, &store).await?)
}
