//! N instances of the counter behind nginx: do you need sticky sessions?
//!
//! ```text
//! cargo run --example cluster -- --instances 3 --routing round-robin
//! SESSION_STORE=redis://127.0.0.1:6379 cargo run --example cluster -- --routing round-robin
//! ```
//!
//! See the `examples::cluster` module and the README section "Stateful or stateless?".

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--instance") {
        // A child started by the demo itself.
        // `--instance NAME [--port PORT]`
        let name = args.nth(1).unwrap_or_else(|| "?".to_owned());
        let port = match (args.next().as_deref(), args.next()) {
            (Some("--port"), Some(port)) => port.parse()?,
            _ => 0,
        };
        return examples::cluster::run_instance(&name, port).await;
    }
    let options = examples::cluster::parse_args(args)?;
    let listen = examples::listen_addr("127.0.0.1:8080")?;
    examples::cluster::run(options, listen).await
}
