//! The layer in a plain hyper server with no axum: tower's `ServiceBuilder`
//! around a `service_fn` that reads the `Session` from the request's
//! extensions, served over real loopback connections.
#![allow(clippy::unwrap_used)] // tests

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{COOKIE, SET_COOKIE};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use session_core::{Session, SessionLayer};
use session_memory::MemoryStore;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceBuilder;

async fn handler(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let Some(session) = request.extensions().get::<Session>().cloned() else {
        return Ok(answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no session layer",
        ));
    };
    let counted = async {
        let n: u64 = session.get("n").await?.unwrap_or_default();
        session.insert("n", n + 1).await?;
        Ok::<_, session_core::SessionError>(n + 1)
    };
    Ok(match counted.await {
        Ok(n) => answer(StatusCode::OK, &n.to_string()),
        Err(error) => answer(StatusCode::SERVICE_UNAVAILABLE, &error.to_string()),
    })
}

fn answer(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response
}

/// Serves the counter on a free loopback port until the test ends.
async fn serve() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = ServiceBuilder::new()
        .layer(SessionLayer::new(MemoryStore::new()).secure(false))
        .service_fn(handler);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// One `GET /` on its own connection: status, body and `Set-Cookie` pair.
async fn get(addr: SocketAddr, cookie: Option<&str>) -> (StatusCode, String, Option<String>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::get("/").header("host", "localhost");
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let pair = response
        .headers()
        .get(SET_COOKIE)
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap(), pair)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_hyper_app_keeps_its_session() {
    let addr = serve().await;
    let (status, body, pair) = get(addr, None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "1"));
    let pair = pair.expect("a new session sets its cookie");
    for n in 2..=3 {
        let (status, body, again) = get(addr, Some(&pair)).await;
        assert_eq!((status, body), (StatusCode::OK, n.to_string()));
        assert_eq!(again, None, "the cookie is only sent when it changes");
    }
}

/// hyper's streamed `Incoming` body cannot be replayed, so a stale request
/// is refused with `409` rather than run again; what succeeded is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_hyper_parallel_get_then_insert_is_serializable() {
    const REQUESTS: usize = 60;
    let addr = serve().await;
    let pair = get(addr, None).await.2.unwrap();
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let pair = pair.clone();
            tokio::spawn(async move { get(addr, Some(&pair)).await })
        })
        .collect();
    let mut counts = Vec::new();
    for task in tasks {
        let (status, body, _) = task.await.unwrap();
        match status {
            StatusCode::OK => counts.push(body.parse::<u64>().unwrap()),
            StatusCode::CONFLICT => {}
            other => panic!("undocumented answer {other}: {body}"),
        }
    }
    counts.sort_unstable();
    let (_, last, _) = get(addr, Some(&pair)).await;
    let last: u64 = last.parse().unwrap();
    assert_eq!(
        last,
        counts.len() as u64 + 2,
        "the counter vs the successes"
    );
    assert_eq!(counts, (2..last).collect::<Vec<_>>());
}
