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
        // `--instance NAME [--port PORT]`
        let name = args.nth(1).unwrap_or_else(|| "?".to_owned());
        let port = match (args.next().as_deref(), args.next()) {
            (Some("--port"), Some(port)) => port.parse()?,
            _ => 0,
        };
        return Ok(examples::cluster::run_instance(&name, port).await?);
    }
    let options = examples::cluster::parse_args(args)?;
    if let Some(timing) = &options.scenario {
        return Ok(scenario(timing).await?);
    }
    let listen = examples::listen_addr("127.0.0.1:8080")?;
    examples::cluster::run(options, listen)
        .await
        .map_err(|e| e as Box<dyn std::error::Error>)?;
    Ok(())
}

/// `--scenario scale`: every setup the environment allows, one after the
/// other, then the table.
async fn scenario(
    timing: &examples::cluster::scale::Timing,
) -> Result<(), Box<dyn std::error::Error>> {
    use examples::cluster::scale;
    let exe = std::env::current_exe()?;
    let (setups, missing) = scale::setups_from_env();
    for var in missing {
        println!("skipped: {var} is not set");
    }
    let mut reports = Vec::new();
    for setup in &setups {
        println!(
            "{}: {} users, {:?}, +1 instance at {:?}, -1 at {:?}, then a rolling restart",
            setup.label, timing.users, timing.run, timing.add_at, timing.remove_at
        );
        let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let report = scale::run_setup(&exe, setup, timing, listen)
            .await
            .map_err(|e| e as Box<dyn std::error::Error>)?;
        println!("{}", scale::table(std::slice::from_ref(&report)));
        reports.push(report);
    }
    println!("{}", scale::table(&reports));
    Ok(())
}
