//! The login example end to end: two logins of one user are both listed, and
//! "log out everywhere" ends both.

#![allow(clippy::unwrap_used)] // tests

use axum::Router;
use axum::body::Body;
use http::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE, USER_AGENT};
use http::{Request, StatusCode};
use session::{AnyStore, SessionStore, StoreConfig};
use tower::ServiceExt as _;

struct Reply {
    status: StatusCode,
    body: String,
    cookie: Option<String>,
    location: Option<String>,
}

async fn call(
    app: &Router,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: &str,
    agent: &str,
) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(USER_AGENT, agent)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(form.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v: &http::HeaderValue| v.to_str().unwrap().to_owned())
    };
    let cookie = header(SET_COOKIE).map(|c| c.split(';').next().unwrap().to_owned());
    let location = header(LOCATION);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    Reply {
        status,
        body: String::from_utf8(body.to_vec()).unwrap(),
        cookie,
        location,
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests with scripts/test, which starts a throwaway server"
        )
    })
}

/// The login app on every backend, each with keys or a schema of its own.
async fn apps() -> Vec<(Router, AnyStore)> {
    let fresh = session_core::conformance::store::new_key()
        .short()
        .to_ascii_lowercase()
        .replace('-', "_");
    let database = env("DATABASE_URL");
    let sep = if database.contains('?') { '&' } else { '?' };
    let urls = [
        "memory://".to_owned(),
        format!("{}?prefix=login-{fresh}:", env("REDIS_URL")),
        format!("{database}{sep}schema=login_{fresh}"),
        {
            let mysql = env("MYSQL_URL").replacen("mysql://", "mariadb://", 1);
            let sep = if mysql.contains('?') { '&' } else { '?' };
            format!("{mysql}{sep}database=login_{fresh}")
        },
    ];
    let mut apps = Vec::new();
    for url in urls {
        let store = StoreConfig::from_url(&url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let app = examples::login::app(store.clone(), store.layer().secure(false));
        apps.push((app, store));
    }
    apps
}

async fn log_in(app: &Router, user: &str, agent: &str) -> String {
    let reply = call(app, "POST", "/login", None, &format!("user={user}"), agent).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.location.as_deref(), Some("/"));
    reply.cookie.expect("a login sets a session cookie")
}

#[tokio::test]
async fn two_logins_are_listed_and_log_out_everywhere_ends_both() {
    for (app, store) in apps().await {
        two_logins_then_log_out_everywhere(&app, &store).await;
    }
}

async fn two_logins_then_log_out_everywhere(app: &Router, store: &AnyStore) {
    let app = app.clone();
    let laptop = log_in(&app, "ada", "laptop").await;
    let phone = log_in(&app, "ada", "phone").await;
    assert_ne!(laptop, phone);
    let other = log_in(&app, "grace", "desk").await;

    let page = call(&app, "GET", "/sessions", Some(&laptop), "", "laptop").await;
    assert!(page.body.contains("laptop (this device)"), "{}", page.body);
    assert!(page.body.contains("phone:"), "{}", page.body);
    assert!(
        !page.body.contains("desk"),
        "another user's session listed: {}",
        page.body
    );
    assert_eq!(
        store.list_by_principal("ada").await.unwrap().len(),
        2,
        "{}",
        store.backend()
    );

    let out = call(
        &app,
        "POST",
        "/logout-everywhere",
        Some(&phone),
        "",
        "phone",
    )
    .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(
        out.cookie.as_deref(),
        Some("session="),
        "the cookie is removed"
    );
    for cookie in [&laptop, &phone] {
        let home = call(&app, "GET", "/", Some(cookie), "", "any").await;
        assert!(home.body.contains("Not logged in"), "{}", home.body);
    }
    assert!(store.list_by_principal("ada").await.unwrap().is_empty());
    let home = call(&app, "GET", "/", Some(&other), "", "desk").await;
    assert!(
        home.body.contains("Hello, grace"),
        "another user was logged out"
    );
}

#[tokio::test]
async fn log_out_one_device_from_another() {
    for (app, store) in apps().await {
        log_out_other_device(&app, &store).await;
    }
}

async fn log_out_other_device(app: &Router, store: &AnyStore) {
    let app = app.clone();
    let laptop = log_in(&app, "ada", "laptop").await;
    let phone = log_in(&app, "ada", "phone").await;
    let sessions = store.list_by_principal("ada").await.unwrap();
    let phone_key = sessions
        .iter()
        .find(|s| s.data["device"] == "phone")
        .unwrap()
        .key
        .clone();
    let reply = call(
        &app,
        "POST",
        "/sessions/revoke",
        Some(&laptop),
        &format!("key={phone_key}"),
        "laptop",
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert!(
        call(&app, "GET", "/", Some(&phone), "", "phone")
            .await
            .body
            .contains("Not logged in")
    );
    assert!(
        call(&app, "GET", "/", Some(&laptop), "", "laptop")
            .await
            .body
            .contains("Hello, ada")
    );
}

#[tokio::test]
async fn login_issues_a_new_id_and_escapes_the_name() {
    let store = StoreConfig::memory().connect().await.unwrap();
    let app = examples::login::app(store.clone(), store.layer().secure(false));
    let before = call(&app, "GET", "/", None, "", "x").await;
    assert!(
        before.cookie.is_none(),
        "a visit that stores nothing sets no cookie"
    );
    let reply = call(&app, "POST", "/login", None, "user=%3Cscript%3E", "x").await;
    let cookie = reply.cookie.unwrap();
    let again = call(
        &app,
        "POST",
        "/login",
        Some(&cookie),
        "user=%3Cscript%3E",
        "x",
    )
    .await;
    let cycled = again.cookie.expect("login cycles the id");
    assert_ne!(cycled, cookie);
    let home = call(&app, "GET", "/", Some(&cycled), "", "x").await;
    assert!(
        home.body.contains("&lt;script&gt;") && !home.body.contains("<script>"),
        "{}",
        home.body
    );
    let stale = call(&app, "GET", "/", Some(&cookie), "", "x").await;
    assert!(
        stale.body.contains("Not logged in"),
        "the pre-login id still works"
    );
}

/// A session that expired and is used again is in its user's audit log as
/// expired (the memory store observes expiry), once, and the visitor is
/// logged out.
#[tokio::test]
async fn an_expired_session_used_again_is_in_the_audit_log() {
    let store = StoreConfig::memory().connect().await.unwrap();
    let expiry = session::Expiry::new(
        std::time::Duration::from_millis(300),
        std::time::Duration::from_secs(60),
    );
    let app = examples::login::app(store.clone(), store.layer().secure(false).expiry(expiry));
    let phone = log_in(&app, "ada", "phone").await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for _ in 0..2 {
        let home = call(&app, "GET", "/", Some(&phone), "", "phone").await;
        assert!(home.body.contains("Not logged in"), "{}", home.body);
    }
    let laptop = log_in(&app, "ada", "laptop").await;
    let page = call(&app, "GET", "/sessions", Some(&laptop), "", "laptop").await;
    let audit = page
        .body
        .split("<ul id=audit>")
        .nth(1)
        .expect("the audit log");
    let id = session::Id::decode(phone.split_once('=').unwrap().1).unwrap();
    let expired = format!("session expired: {}", id.store_key().short());
    assert_eq!(audit.matches(&expired).count(), 1, "{audit}");
}

/// The sessions page shows the user's session events as the layer reported
/// them: logins, a logout, "log out everywhere"; none of another user's.
#[tokio::test]
async fn sessions_page_shows_the_audit_log() {
    let store = StoreConfig::memory().connect().await.unwrap();
    let app = examples::login::app(store.clone(), store.layer().secure(false));
    let laptop = log_in(&app, "ada", "laptop").await;
    let phone = log_in(&app, "ada", "phone").await;
    log_in(&app, "grace", "desk").await;
    let out = call(&app, "POST", "/logout", Some(&phone), "", "phone").await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);

    let page = call(&app, "GET", "/sessions", Some(&laptop), "", "laptop").await;
    let audit = page
        .body
        .split("<ul id=audit>")
        .nth(1)
        .expect("the audit log");
    let short = |pair: &str| {
        let id = session::Id::decode(pair.split_once('=').unwrap().1).unwrap();
        id.store_key().short().to_owned()
    };
    assert_eq!(audit.matches("logged in: session").count(), 2, "{audit}");
    assert!(
        audit.contains(&format!("logged in: session {}", short(&laptop))),
        "{audit}"
    );
    assert!(
        audit.contains(&format!("logged out: session {}", short(&phone))),
        "{audit}"
    );
    assert_eq!(
        audit.matches("<li>").count(),
        3,
        "grace's events listed: {audit}"
    );
    for pair in [&laptop, &phone] {
        assert!(
            !audit.contains(pair.split_once('=').unwrap().1),
            "a raw id: {audit}"
        );
    }

    let everywhere = call(
        &app,
        "POST",
        "/logout-everywhere",
        Some(&laptop),
        "",
        "laptop",
    )
    .await;
    assert_eq!(everywhere.status, StatusCode::SEE_OTHER);
    let again = log_in(&app, "ada", "laptop").await;
    let page = call(&app, "GET", "/sessions", Some(&again), "", "laptop").await;
    assert!(
        page.body.contains("logged out everywhere: 1 sessions"),
        "{}",
        page.body
    );
}
