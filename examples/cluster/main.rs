//! N instances of the counter behind nginx: do you need sticky sessions?
//!
//! ```text
//! cargo run --example cluster -- --instances 3 --routing round-robin
//! SESSION_STORE=redis://127.0.0.1:6379 cargo run --example cluster -- --routing round-robin
//! ```
//!
//! See the `examples::cluster` module and the README section "Stateful or stateless?".

#[tokio::main]
async fn main() -> Result<(), examples::Failure> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--instance") {
        // A child started by the demo itself.
        let name = args.nth(1).unwrap_or_else(|| "?".to_owned());
        return Ok(examples::cluster::run_instance(&name).await?);
    }
    let options = examples::cluster::parse_args(args)?;
    let listen = examples::listen_addr("127.0.0.1:8080")?;
    Ok(examples::cluster::run(options, listen).await?)
}
