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
//! - `redis://...`, `redis+sentinel://...` or `postgres://...` share the
//!   sessions: any instance serves any request (`--routing round-robin`)
//!   and instances can die (behind Sentinel, the Redis primary too).
//!
//! Each response names the instance that served it, in an `x-instance`
//! header and at the end of the body (which still starts with the count).
//! To kill an instance while the demo runs, POST to its `/admin/crash` on its
//! own port (printed at start; nginx does not forward `/admin/`): it exits
//! at once, like a crash, without handing its sessions anywhere.
//!
//! The demo's own admin interface (on `ADMIN_ADDR`, default a free loopback
//! port, printed at start) changes the instances while it runs: see [`run`].
//! `--scenario scale` measures what adding, removing and restarting
//! instances costs under load on each store: see [`scale`].

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

pub mod scale;

/// How nginx spreads requests over the instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routing {
    /// Each request to the next instance in turn.
    RoundRobin,
    /// By a `route` cookie naming the instance, which nginx sets on a
    /// client's first response: all of a client's requests go to that
    /// instance while it is in service (see [`nginx_config`] for why not a
    /// hash of the session cookie).
    Sticky,
}

/// The demo's command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// How many instances (default 3).
    pub instances: usize,
    /// Routing (default round-robin).
    pub routing: Routing,
    /// `--scenario scale`: run [`scale`]'s scenario instead of serving.
    pub scenario: Option<scale::Timing>,
}

/// The usage text.
pub const USAGE: &str = "usage: cluster [--instances N] [--routing round-robin|sticky]\n\
    \x20      cluster --scenario scale [--users N] [--seconds S]\n\
    env: SESSION_STORE (default memory://), ADDR for nginx (default 127.0.0.1:8080),\n\
    ADMIN_ADDR for the admin interface (default a free loopback port);\n\
    the scenario: REDIS_URL, DATABASE_URL, REDIS_SENTINEL_URL for the shared stores";

/// Parses the command line (without the program name).
///
/// # Errors
///
/// A message naming the bad argument.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        instances: 3,
        routing: Routing::RoundRobin,
        scenario: None,
    };
    let (mut users, mut seconds) = (50, 60);
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
            "--scenario" => match args.next().as_deref() {
                Some("scale") => options.scenario = Some(scale::Timing::default()),
                other => {
                    return Err(format!(
                        "--scenario {}: expected scale",
                        other.unwrap_or("")
                    ));
                }
            },
            "--users" | "--seconds" => {
                let value = args.next().ok_or(format!("{arg} needs a number"))?;
                let n = value
                    .parse()
                    .ok()
                    .filter(|n| (3..=10_000).contains(n))
                    .ok_or_else(|| format!("{arg} {value}: expected 3 to 10000"))?;
                if arg == "--users" {
                    users = n;
                } else {
                    seconds = n;
                }
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if let Some(timing) = &mut options.scenario {
        *timing = scale::Timing::over(users, Duration::from_secs(seconds as u64));
    } else if (users, seconds) != (50, 60) {
        return Err("--users and --seconds go with --scenario scale".to_owned());
    }
    Ok(options)
}

/// The counter app of one instance: says which instance served each
/// response (`x-instance: NAME`, and `x-process: PID` to tell a restarted
/// instance from its previous process), and has the `/slow` and
/// `/admin/crash` routes.
///
/// `GET /slow?ms=N` waits N ms (at most 10 000) and then counts a visit
/// like `/`: a request that is still in flight when the instance is told
/// to stop, to show that a graceful shutdown finishes it, save included.
pub fn instance_app(name: &str, layer: SessionLayer) -> Router {
    let header = HeaderValue::from_str(name).unwrap_or(HeaderValue::from_static("?"));
    let count = {
        let name = name.to_owned();
        move |session: Session| {
            let (name, header) = (name.clone(), header.clone());
            async move {
                let visits: u64 = session
                    .update("visits", |n: Option<u64>| n.unwrap_or(0) + 1)
                    .await?;
                let body = format!(
                    "{} earlier visits in this session (served by instance {name})\n",
                    visits - 1
                );
                let process = HeaderValue::from(std::process::id());
                Ok::<_, SessionError>(
                    ([("x-instance", header), ("x-process", process)], body).into_response(),
                )
            }
        }
    };
    let slow_count = count.clone();
    Router::new()
        .route("/", get(count))
        .route(
            "/slow",
            get(move |uri: axum::http::Uri, session: Session| async move {
                let ms = uri
                    .query()
                    .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("ms=")))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1000)
                    .min(10_000);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                slow_count(session).await
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

/// Runs one instance (the child process): serves [`instance_app`] and
/// `GET /metrics` (see [`with_metrics`](crate::with_metrics)) on
/// `127.0.0.1:PORT` (a free port for 0) through [`crate::serve_on`] (so
/// with `/healthz`, `/readyz` and the graceful shutdown), prints `instance
/// NAME listening on URL`, and stops gracefully when its standard input
/// closes (the demo that started it is gone) or on Ctrl-C or SIGTERM.
///
/// # Errors
///
/// The store or the listener could not be set up, or serving failed.
pub async fn run_instance(name: &str, port: u16) -> Result<(), Box<dyn std::error::Error>> {
    let store = crate::store_from_env().await?;
    let app = crate::with_metrics(instance_app(name, store.layer().secure(false)));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "instance {name} listening on http://{}",
        listener.local_addr()?
    );
    let parent_gone = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    crate::serve_on(listener, app, &store, async {
        tokio::select! {
            () = parent_gone => {},
            () = crate::shutdown_signal() => {},
        }
    })
    .await
}

/// The nginx configuration for the demo: `upstreams` are the instances'
/// names and addresses.
///
/// Sticky routing names the instance in a `route` cookie, the way
/// ingress-nginx's `affinity: cookie` with `affinity-mode: persistent` and
/// most cloud load balancers do it: a client without the cookie (or with one
/// naming an instance that is gone or refuses connections) is sent
/// round-robin to any instance, and the response sets `route` to the name of
/// the instance that served it (from its `x-instance` header); a client with
/// the cookie goes to that instance alone. So adding an instance moves no
/// existing user, and removing or restarting one moves exactly its users.
/// Not a hash of the session cookie: a new session's first request has no
/// cookie and its later ones carry the new id, which would hash elsewhere;
/// and not a consistent hash of a routing cookie either, which moves some
/// users of every instance to a new one when it is added.
pub fn nginx_config(
    routing: Routing,
    listen: SocketAddr,
    upstreams: &[(String, SocketAddr)],
    dir: &Path,
) -> String {
    let dir = dir.display();
    let mut servers = String::new();
    for (_, upstream) in upstreams {
        // A dead instance is skipped for 5 s after one failure.
        let _ = writeln!(
            servers,
            "        server {upstream} max_fails=1 fail_timeout=5s;"
        );
    }
    let (maps, location) = match routing {
        Routing::RoundRobin => (
            String::new(),
            "            proxy_pass http://instances;\n".to_owned(),
        ),
        Routing::Sticky => {
            let mut maps =
                String::from("    map $cookie_route $sticky {\n        default instances;\n");
            let mut singles = String::new();
            for (name, upstream) in upstreams {
                let _ = writeln!(maps, "        \"{name}\" instance_{name};");
                let _ = writeln!(
                    singles,
                    "    upstream instance_{name} {{ server {upstream}; }}"
                );
            }
            maps.push_str("    }\n");
            maps.push_str(
                "    map $upstream_http_x_instance $set_route {\n        \"\" \"\";\n        default \"route=$upstream_http_x_instance; Path=/; HttpOnly; SameSite=Lax\";\n    }\n",
            );
            maps.push_str(&singles);
            (
                maps,
                "            proxy_pass http://$sticky;\n            error_page 502 504 = @any;\n            add_header Set-Cookie $set_route;\n"
                    .to_owned(),
            )
        }
    };
    let any = match routing {
        Routing::RoundRobin => "",
        Routing::Sticky => {
            "        location @any {
            proxy_pass http://instances;
            proxy_next_upstream error timeout;
            proxy_connect_timeout 1s;
            add_header Set-Cookie $set_route;
        }
"
        }
    };
    format!(
        "worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{maps}    upstream instances {{
{servers}    }}
    server {{
        listen {listen};
        location /admin/ {{ return 404; }}
        location / {{
{location}            proxy_next_upstream error timeout;
            proxy_connect_timeout 1s;
        }}
{any}    }}
}}
"
    )
}

/// A started instance.
struct Instance {
    name: String,
    port: u16,
    child: Child,
}

impl Instance {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Stops it gracefully (its standard input closed: it stops accepting
    /// and finishes its requests in flight), killing it after 10 s.
    async fn stop(mut self, out_of_service: tokio::time::Instant) -> Stopped {
        let pid = self.child.id().unwrap_or(0);
        drop(self.child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        Stopped {
            pid,
            out_of_service,
            exited: tokio::time::Instant::now(),
        }
    }
}

/// An instance's process that [`Cluster::remove`] or [`Cluster::restart`] stopped.
#[derive(Clone, Copy, Debug)]
pub struct Stopped {
    /// Its process id (what its responses carried in `x-process`).
    pub pid: u32,
    /// When it was taken out of service: out of nginx's configuration
    /// (then stopped), or told to stop.
    pub out_of_service: tokio::time::Instant,
    /// When it had exited.
    pub exited: tokio::time::Instant,
}

/// The boxed error of the demo's functions.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The demo's running parts: nginx in front of N instances that can be
/// added, removed and restarted while it runs (each change rewrites the
/// nginx configuration and reloads it).
pub struct Cluster {
    exe: PathBuf,
    store: String,
    routing: Routing,
    listen: SocketAddr,
    nginx: PathBuf,
    dir: PathBuf,
    conf: PathBuf,
    /// nginx, once started.
    front: Option<Child>,
    instances: Vec<Instance>,
    next: usize,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("routing", &self.routing)
            .field("listen", &self.listen)
            .field("instances", &self.instances())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Starts `instances` instances of `exe` (the `cluster` binary, run as
    /// `--instance NAME --port PORT`) on `store`, and nginx on `listen`,
    /// with its files in a fresh temp dir.
    ///
    /// # Errors
    ///
    /// nginx is missing or does not start, or an instance does not start.
    pub async fn start(
        exe: &Path,
        store: &str,
        routing: Routing,
        instances: usize,
        listen: SocketAddr,
    ) -> Result<Self, BoxError> {
        let nginx = nginx_binary()?;
        let dir = std::env::temp_dir().join(format!(
            "session-cluster-{}-{}",
            std::process::id(),
            listen.port()
        ));
        std::fs::create_dir_all(&dir)?;
        let mut started = Vec::new();
        for i in 1..=instances {
            started.push(start_instance(exe, store, &i.to_string(), 0).await?);
        }
        let conf = dir.join("nginx.conf");
        let mut cluster = Cluster {
            exe: exe.to_owned(),
            store: store.to_owned(),
            routing,
            listen,
            front: None,
            nginx,
            dir,
            conf,
            instances: started,
            next: instances + 1,
        };
        cluster.write_config()?;
        cluster.front = Some(
            cluster
                .nginx_command()
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("could not start nginx: {e}"))?,
        );
        if !wait_for_port(listen, Duration::from_secs(10)).await {
            let log = std::fs::read_to_string(cluster.dir.join("error.log")).unwrap_or_default();
            cluster.stop().await;
            return Err(format!("nginx did not start listening on {listen}:\n{log}").into());
        }
        Ok(cluster)
    }

    /// nginx's address.
    pub fn front(&self) -> SocketAddr {
        self.listen
    }

    /// The running instances: (name, URL).
    pub fn instances(&self) -> Vec<(String, String)> {
        self.instances
            .iter()
            .map(|i| (i.name.clone(), i.url()))
            .collect()
    }

    /// Starts one more instance (named by the next number), then reloads
    /// nginx with it. Returns its name and URL.
    ///
    /// # Errors
    ///
    /// The instance did not start or nginx did not reload.
    pub async fn add(&mut self) -> Result<(String, String), BoxError> {
        let name = self.next.to_string();
        let instance = start_instance(&self.exe, &self.store, &name, 0).await?;
        wait_ready(instance.addr()).await?;
        self.next += 1;
        let url = instance.url();
        self.instances.push(instance);
        self.reload().await?;
        Ok((name, url))
    }

    /// Takes instance `name` out of nginx (reload), then stops it
    /// gracefully: its requests in flight finish, saves included.
    ///
    /// # Errors
    ///
    /// No such instance, it is the last one, or nginx did not reload.
    pub async fn remove(&mut self, name: &str) -> Result<Stopped, BoxError> {
        let at = self
            .instances
            .iter()
            .position(|i| i.name == name)
            .ok_or_else(|| format!("no instance {name}"))?;
        if self.instances.len() == 1 {
            return Err("the last instance cannot be removed".into());
        }
        let instance = self.instances.remove(at);
        let out = tokio::time::Instant::now();
        self.reload().await?;
        // The old nginx worker finishes what it had sent there; new
        // requests already go elsewhere.
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(instance.stop(out).await)
    }

    /// Restarts instance `name` in place, as a rolling restart does with a
    /// pod: takes it out of nginx (reload), stops it gracefully (its
    /// requests in flight finish), starts it again on the same port, waits
    /// until its `/readyz` answers 200 and puts it back (reload). With the
    /// memory store its sessions are gone.
    ///
    /// # Errors
    ///
    /// No such instance, or it did not come back.
    pub async fn restart(&mut self, name: &str) -> Result<Stopped, BoxError> {
        let at = self
            .instances
            .iter()
            .position(|i| i.name == name)
            .ok_or_else(|| format!("no instance {name}"))?;
        let old = self.instances.remove(at);
        let out = tokio::time::Instant::now();
        self.reload().await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let port = old.port;
        let stopped = old.stop(out).await;
        let instance = start_instance(&self.exe, &self.store, name, port).await?;
        wait_ready(instance.addr()).await?;
        self.instances.insert(at, instance);
        self.reload().await?;
        Ok(stopped)
    }

    /// Stops nginx and every instance (gracefully), and removes the temp dir.
    pub async fn stop(mut self) {
        let _ = self
            .nginx_command()
            .args(["-s", "stop"])
            .stderr(Stdio::null())
            .status()
            .await;
        if let Some(front) = &mut self.front
            && tokio::time::timeout(Duration::from_secs(5), front.wait())
                .await
                .is_err()
        {
            let _ = front.kill().await;
        }
        for instance in std::mem::take(&mut self.instances) {
            let _ = instance.stop(tokio::time::Instant::now()).await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    fn nginx_command(&self) -> Command {
        let mut command = Command::new(&self.nginx);
        command
            .arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(&self.conf)
            .arg("-e")
            .arg(self.dir.join("error.log"));
        command
    }

    fn write_config(&self) -> std::io::Result<()> {
        let upstreams: Vec<(String, SocketAddr)> = self
            .instances
            .iter()
            .map(|i| (i.name.clone(), i.addr()))
            .collect();
        std::fs::write(
            &self.conf,
            nginx_config(self.routing, self.listen, &upstreams, &self.dir),
        )
    }

    /// Rewrites the configuration and has nginx reload it (new workers
    /// with it; the old ones finish their requests and exit).
    async fn reload(&self) -> Result<(), BoxError> {
        self.write_config()?;
        let status = self
            .nginx_command()
            .args(["-s", "reload"])
            .stderr(Stdio::null())
            .status()
            .await?;
        if !status.success() {
            let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
            return Err(format!("nginx -s reload failed: {status}\n{log}").into());
        }
        // The master starts new workers asynchronously.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(())
    }
}

/// Runs the demo until Ctrl-C or SIGTERM, then stops everything it started.
///
/// Besides nginx on `listen` it serves its admin interface on `ADMIN_ADDR`
/// (default: a free loopback port, printed at start):
///
/// - `GET /instances`: one line per instance, `NAME URL`;
/// - `POST /instances`: starts one more instance and reloads nginx with it;
/// - `DELETE /instances/NAME`: takes the instance out of nginx, then stops it gracefully;
/// - `POST /instances/NAME/restart`: stops it gracefully and starts it again on its port.
///
/// # Errors
///
/// nginx is missing or fails to start, an instance fails to start, or
/// `ADMIN_ADDR` cannot be bound.
pub async fn run(options: Options, listen: SocketAddr) -> Result<(), BoxError> {
    let exe = std::env::current_exe()?;
    let store = std::env::var("SESSION_STORE").unwrap_or_else(|_| "memory://".to_owned());
    let admin_addr: SocketAddr = std::env::var("ADMIN_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:0".to_owned())
        .parse()
        .map_err(|e| format!("ADMIN_ADDR: {e}"))?;
    let admin = tokio::net::TcpListener::bind(admin_addr).await?;
    let cluster = Cluster::start(&exe, &store, options.routing, options.instances, listen).await?;
    println!("front (nginx): http://{listen}");
    println!(
        "routing: {}, sessions: {store}",
        match options.routing {
            Routing::RoundRobin => "round-robin",
            Routing::Sticky => "sticky (a cookie naming the instance)",
        }
    );
    for (name, url) in cluster.instances() {
        println!("instance {name} at {url} (kill it: curl -X POST {url}/admin/crash)");
    }
    println!(
        "admin at http://{} (GET/POST /instances, DELETE /instances/NAME, POST /instances/NAME/restart)",
        admin.local_addr()?
    );
    println!("ready");

    let cluster = std::sync::Arc::new(tokio::sync::Mutex::new(cluster));
    let admin_app = admin_app(cluster.clone());
    let admin_task = tokio::spawn(async move {
        let _ = axum::serve(admin, admin_app).await;
    });
    let front_exited = {
        let cluster = cluster.clone();
        async move {
            // Polled under the lock only briefly, so that admin calls go on.
            loop {
                {
                    let mut cluster = cluster.lock().await;
                    if let Some(front) = &mut cluster.front
                        && let Ok(Some(status)) = front.try_wait()
                    {
                        return status;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    tokio::select! {
        () = crate::shutdown_signal() => {},
        status = front_exited => println!("nginx exited: {status:?}"),
    }
    admin_task.abort();
    // Its end drops the admin app and its handle on the cluster.
    let _ = admin_task.await;
    let cluster = std::sync::Arc::try_unwrap(cluster)
        .map_err(|_| "the admin interface still holds the cluster")?
        .into_inner();
    cluster.stop().await;
    println!("stopped");
    Ok(())
}

fn admin_app(cluster: std::sync::Arc<tokio::sync::Mutex<Cluster>>) -> Router {
    use axum::extract::{Path as UrlPath, State};
    use axum::http::StatusCode;

    type Shared = std::sync::Arc<tokio::sync::Mutex<Cluster>>;
    fn failed(e: &BoxError) -> (StatusCode, String) {
        (StatusCode::CONFLICT, format!("{e}\n"))
    }
    Router::new()
        .route(
            "/instances",
            get(|State(cluster): State<Shared>| async move {
                let mut out = String::new();
                for (name, url) in cluster.lock().await.instances() {
                    let _ = writeln!(out, "{name} {url}");
                }
                out
            })
            .post(|State(cluster): State<Shared>| async move {
                match cluster.lock().await.add().await {
                    Ok((name, url)) => Ok(format!("added {name} {url}\n")),
                    Err(e) => Err(failed(&e)),
                }
            }),
        )
        .route(
            "/instances/{name}",
            axum::routing::delete(
                |State(cluster): State<Shared>, UrlPath(name): UrlPath<String>| async move {
                    match cluster.lock().await.remove(&name).await {
                        Ok(_) => Ok(format!("removed {name}\n")),
                        Err(e) => Err(failed(&e)),
                    }
                },
            ),
        )
        .route(
            "/instances/{name}/restart",
            post(
                |State(cluster): State<Shared>, UrlPath(name): UrlPath<String>| async move {
                    match cluster.lock().await.restart(&name).await {
                        Ok(_) => Ok(format!("restarted {name}\n")),
                        Err(e) => Err(failed(&e)),
                    }
                },
            ),
        )
        .with_state(cluster)
}

async fn start_instance(
    exe: &Path,
    store: &str,
    name: &str,
    port: u16,
) -> Result<Instance, BoxError> {
    let mut child = Command::new(exe)
        .args(["--instance", name, "--port", &port.to_string()])
        .env("SESSION_STORE", store)
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
    let port = first
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|_| first.starts_with(&format!("instance {name} listening on http://")))
        .ok_or_else(|| format!("instance {name} said {first:?}"))?;
    let prefix = format!("[instance {name}] ");
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            println!("{prefix}{line}");
        }
    });
    Ok(Instance {
        name: name.to_owned(),
        port,
        child,
    })
}

/// Waits (up to 30 s) until the instance's `/readyz` answers 200.
async fn wait_ready(addr: SocketAddr) -> Result<(), BoxError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(reply) = http_get(addr, "/readyz", None, Duration::from_secs(2)).await
            && reply.status == 200
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{addr} not ready within 30 s").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A response to [`http_get`].
#[derive(Clone, Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

/// One `GET` on a fresh HTTP/1.1 connection, with `Cookie: cookies` if
/// given, all of it within `limit`.
///
/// # Errors
///
/// Connecting, writing or reading failed, the time ran out, or the answer
/// is not HTTP.
pub async fn http_get(
    addr: SocketAddr,
    path: &str,
    cookies: Option<&str>,
    limit: Duration,
) -> Result<Reply, BoxError> {
    use tokio::io::AsyncWriteExt as _;
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let cookie = cookies
            .map(|c| format!("Cookie: {c}\r\n"))
            .unwrap_or_default();
        let head =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{cookie}Connection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| format!("no answer from {addr} within {limit:?}"))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP head")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("no HTTP status")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: body.to_owned(),
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
                routing: Routing::RoundRobin,
                scenario: None,
            })
        );
        assert_eq!(
            parse_args(args("--instances 5 --routing sticky")),
            Ok(Options {
                instances: 5,
                routing: Routing::Sticky,
                scenario: None,
            })
        );
        assert_eq!(
            parse_args(args("--scenario scale")).unwrap().scenario,
            Some(scale::Timing::default())
        );
        let short = parse_args(args("--scenario scale --users 10 --seconds 9"))
            .unwrap()
            .scenario
            .unwrap();
        assert_eq!(
            (short.users, short.run, short.add_at, short.remove_at),
            (
                10,
                Duration::from_secs(9),
                Duration::from_secs(3),
                Duration::from_secs(6)
            )
        );
        assert!(parse_args(args("--users 10")).is_err());
        assert!(parse_args(args("--scenario other")).is_err());
        assert!(parse_args(args("--instances 0")).is_err());
        assert!(parse_args(args("--routing random")).is_err());
        assert!(parse_args(args("--verbose")).is_err());
    }

    #[test]
    fn sticky_config_routes_by_a_cookie_naming_the_instance() {
        let ups: Vec<(String, SocketAddr)> = vec![
            ("1".to_owned(), "127.0.0.1:1".parse().unwrap()),
            ("2".to_owned(), "127.0.0.1:2".parse().unwrap()),
        ];
        let listen = "127.0.0.1:8080".parse().unwrap();
        let sticky = nginx_config(Routing::Sticky, listen, &ups, Path::new("/tmp/x"));
        assert!(sticky.contains("\"2\" instance_2;"));
        assert!(sticky.contains("upstream instance_2 { server 127.0.0.1:2; }"));
        assert!(sticky.contains("proxy_pass http://$sticky;"));
        assert!(sticky.contains("error_page 502 504 = @any;"));
        assert!(sticky.contains("add_header Set-Cookie $set_route;"));
        assert!(sticky.contains("server 127.0.0.1:2 max_fails=1"));
        let rr = nginx_config(Routing::RoundRobin, listen, &ups, Path::new("/tmp/x"));
        assert!(!rr.contains("$sticky") && !rr.contains("hash "));
        assert!(rr.contains("proxy_pass http://instances;"));
    }
}
