//! N instances of the counter behind a real nginx: stateful and stateless side by side.
//!
//! `cargo run --example cluster -- --instances 3 --routing round-robin` starts
//! three counter processes on free loopback ports and nginx in front of them
//! on `ADDR` (default `127.0.0.1:8080`). Every instance uses the store
//! `SESSION_STORE` names, so:
//!
//! - `memory://` (the default) gives each instance its own sessions: a user's
//!   session only survives while nginx keeps sending them to the same
//!   instance (`--routing sticky`), and dies with that instance;
//! - `redis://...` or `postgres://...` share the sessions: any instance
//!   serves any request (`--routing round-robin`) and instances can die.
//!
//! Each response names the instance that served it, in an `x-instance`
//! header and at the end of the body (which still starts with the count).
//! To kill an instance while the demo runs, POST to its `/admin/crash` on its
//! own port (printed at start; nginx does not forward `/admin/`): it exits
//! at once, like a crash, without handing its sessions anywhere.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::http::HeaderValue;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use session::{Session, SessionError, SessionLayer};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// How nginx spreads requests over the instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routing {
    /// Each request to the next instance in turn.
    RoundRobin,
    /// By a consistent hash of a routing cookie that nginx sets on a
    /// client's first response: all of a client's requests go to one
    /// instance while it lives (see [`nginx_config`] for why not the session cookie).
    Sticky,
}

/// The demo's command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// How many instances (default 3).
    pub instances: usize,
    /// Routing (default round-robin).
    pub routing: Routing,
}

/// The usage text.
pub const USAGE: &str = "usage: cluster [--instances N] [--routing round-robin|sticky]\n\
    env: SESSION_STORE (default memory://), ADDR for nginx (default 127.0.0.1:8080)";

/// Parses the command line (without the program name).
///
/// # Errors
///
/// A message naming the bad argument.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        instances: 3,
        routing: Routing::RoundRobin,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--instances" => {
                let value = args.next().ok_or("--instances needs a number")?;
                options.instances = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or_else(|| format!("--instances {value}: expected 1 to 64"))?;
            }
            "--routing" => {
                options.routing = match args.next().as_deref() {
                    Some("round-robin") => Routing::RoundRobin,
                    Some("sticky") => Routing::Sticky,
                    other => {
                        return Err(format!(
                            "--routing {}: expected round-robin or sticky",
                            other.unwrap_or("")
                        ));
                    }
                }
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(options)
}

/// The counter app of one instance: says which instance served each
/// response, and has the `/admin/crash` route.
pub fn instance_app(name: &str, layer: SessionLayer) -> Router {
    let header = HeaderValue::from_str(name).unwrap_or(HeaderValue::from_static("?"));
    let body_name = name.to_owned();
    Router::new()
        .route(
            "/",
            get(move |session: Session| async move {
                let visits: u64 = session
                    .update("visits", |n: Option<u64>| n.unwrap_or(0) + 1)
                    .await?;
                let body = format!(
                    "{} earlier visits in this session (served by instance {body_name})\n",
                    visits - 1
                );
                Ok::<_, SessionError>(([("x-instance", header)], body).into_response())
            }),
        )
        .route(
            "/admin/crash",
            post(|| async {
                // Answer first, then die as a crash would: no graceful
                // shutdown, no drain, memory sessions gone.
                tokio::spawn(async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    std::process::exit(1);
                });
                "crashing\n"
            }),
        )
        .layer(layer)
}

/// Runs one instance (the child process): serves [`instance_app`] (and
/// `GET /metrics`, see [`with_metrics`](crate::with_metrics)) on a free
/// loopback port, prints `instance NAME listening on URL`, and exits when
/// its standard input closes (the demo that started it is gone) or on a signal.
///
/// # Errors
///
/// The store or the listener could not be set up.
pub async fn run_instance(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let store = crate::store_from_env().await?;
    let app = crate::with_metrics(instance_app(name, store.layer().secure(false)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!(
        "instance {name} listening on http://{}",
        listener.local_addr()?
    );
    let parent_gone = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            tokio::select! {
                () = parent_gone => {},
                () = crate::shutdown_signal() => {},
            }
        })
        .await?;
    Ok(())
}

/// The nginx configuration for the demo.
///
/// Sticky routing hashes a `route` cookie, not the session cookie. Hashing
/// the session cookie cannot work for a new session: its first request has
/// no cookie (so it lands on the instance that `hash("")` picks, which creates
/// the session), and later requests land on the instance that hashes the new
/// id, usually another one, which does not know the session. nginx instead
/// hashes `$request_id` for a client without a `route` cookie and hands that
/// same value back as the cookie, so the first request and all later ones
/// hash alike: cookie-insertion stickiness, as cloud load balancers do it.
pub fn nginx_config(
    routing: Routing,
    listen: SocketAddr,
    upstreams: &[SocketAddr],
    dir: &Path,
) -> String {
    let dir = dir.display();
    let mut servers = String::new();
    for upstream in upstreams {
        // A dead instance is skipped for 5 s after one failure.
        let _ = writeln!(
            servers,
            "        server {upstream} max_fails=1 fail_timeout=5s;"
        );
    }
    let (maps, balance, set_cookie) = match routing {
        Routing::RoundRobin => ("", "", ""),
        Routing::Sticky => (
            "    map $cookie_route $route { \"\" $request_id; default $cookie_route; }
    map $cookie_route $set_route { \"\" \"route=$request_id; Path=/; HttpOnly; SameSite=Lax\"; default \"\"; }
",
            "        hash $route consistent;\n",
            "            add_header Set-Cookie $set_route;\n",
        ),
    };
    format!(
        "worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{maps}    upstream instances {{
{balance}{servers}    }}
    server {{
        listen {listen};
        location /admin/ {{ return 404; }}
        location / {{
            proxy_pass http://instances;
            proxy_next_upstream error timeout;
            proxy_connect_timeout 1s;
{set_cookie}        }}
    }}
}}
"
    )
}

/// A started instance.
struct Instance {
    name: String,
    url: String,
    child: Child,
}

/// Runs the demo until Ctrl-C or SIGTERM, then stops everything it started.
///
/// # Errors
///
/// nginx is missing or fails to start, or an instance fails to start.
pub async fn run(options: Options, listen: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let nginx = nginx_binary()?;
    let dir = std::env::temp_dir().join(format!("session-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(&options, listen, &nginx, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(
    options: &Options,
    listen: SocketAddr,
    nginx: &Path,
    dir: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let mut instances = Vec::new();
    for i in 1..=options.instances {
        instances.push(start_instance(&exe, &i.to_string()).await?);
    }
    let upstreams: Vec<SocketAddr> = instances
        .iter()
        .filter_map(|i| i.url.trim_start_matches("http://").parse().ok())
        .collect();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        nginx_config(options.routing, listen, &upstreams, dir),
    )?;
    let mut front = Command::new(nginx)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("error.log"))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("could not start nginx: {e}"))?;
    if !wait_for_port(listen, Duration::from_secs(10)).await {
        let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
        stop_nginx(nginx, dir, &conf, &mut front).await;
        return Err(format!("nginx did not start listening on {listen}:\n{log}").into());
    }

    let store = std::env::var("SESSION_STORE").unwrap_or_else(|_| "memory://".to_owned());
    println!("front (nginx): http://{listen}");
    println!(
        "routing: {}, sessions: {store}",
        match options.routing {
            Routing::RoundRobin => "round-robin",
            Routing::Sticky => "sticky (consistent hash of a routing cookie)",
        }
    );
    for instance in &instances {
        println!(
            "instance {} at {} (kill it: curl -X POST {}/admin/crash)",
            instance.name, instance.url, instance.url
        );
    }
    println!("ready");

    tokio::select! {
        () = crate::shutdown_signal() => {},
        status = front.wait() => println!("nginx exited: {status:?}"),
    }
    stop_nginx(nginx, dir, &conf, &mut front).await;
    for mut instance in instances {
        // Closing its stdin (dropping the handle) ends it gracefully; kill if it lingers.
        drop(instance.child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(5), instance.child.wait())
            .await
            .is_err()
        {
            let _ = instance.child.kill().await;
        }
    }
    println!("stopped");
    Ok(())
}

async fn start_instance(exe: &Path, name: &str) -> Result<Instance, Box<dyn std::error::Error>> {
    let mut child = Command::new(exe)
        .args(["--instance", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| format!("instance {name} did not start within 30 s"))??
        .ok_or_else(|| format!("instance {name} exited at start (is SESSION_STORE reachable?)"))?;
    let url = first
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with("http://"))
        .ok_or_else(|| format!("instance {name} said {first:?}"))?
        .to_owned();
    let prefix = format!("[instance {name}] ");
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            println!("{prefix}{line}");
        }
    });
    Ok(Instance {
        name: name.to_owned(),
        url,
        child,
    })
}

fn nginx_binary() -> Result<PathBuf, String> {
    let candidates = [
        "/usr/sbin/nginx",
        "/usr/local/sbin/nginx",
        "/usr/local/bin/nginx",
        "/usr/bin/nginx",
    ];
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("nginx"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(candidates.iter().map(PathBuf::from))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "nginx not found: install it (Debian/Ubuntu: `sudo apt-get install nginx`; \
             macOS: `brew install nginx`)"
                .to_owned()
        })
}

async fn stop_nginx(nginx: &Path, dir: &Path, conf: &Path, front: &mut Child) {
    let _ = Command::new(nginx)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(conf)
        .arg("-e")
        .arg(dir.join("error.log"))
        .args(["-s", "stop"])
        .stderr(Stdio::null())
        .status()
        .await;
    if tokio::time::timeout(Duration::from_secs(5), front.wait())
        .await
        .is_err()
    {
        let _ = front.kill().await;
    }
}

async fn wait_for_port(addr: SocketAddr, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_the_command_line() {
        assert_eq!(
            parse_args(args("")),
            Ok(Options {
                instances: 3,
                routing: Routing::RoundRobin
            })
        );
        assert_eq!(
            parse_args(args("--instances 5 --routing sticky")),
            Ok(Options {
                instances: 5,
                routing: Routing::Sticky
            })
        );
        assert!(parse_args(args("--instances 0")).is_err());
        assert!(parse_args(args("--routing random")).is_err());
        assert!(parse_args(args("--verbose")).is_err());
    }

    #[test]
    fn sticky_config_hashes_the_session_cookie() {
        let ups: Vec<SocketAddr> = vec![
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        ];
        let listen = "127.0.0.1:8080".parse().unwrap();
        let sticky = nginx_config(Routing::Sticky, listen, &ups, Path::new("/tmp/x"));
        assert!(sticky.contains("hash $route consistent;"));
        assert!(sticky.contains("add_header Set-Cookie $set_route;"));
        assert!(sticky.contains("server 127.0.0.1:2 max_fails=1"));
        let rr = nginx_config(Routing::RoundRobin, listen, &ups, Path::new("/tmp/x"));
        assert!(!rr.contains("hash "));
    }
}
