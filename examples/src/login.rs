//! Log in, see your active sessions, log out this device or everywhere.
//!
//! A demo of `cycle_id` (a new id at login), the principal index
//! (`list_by_principal`, and `delete_by_principal` through
//! `SessionLayer::revoke_principal`), `destroy`, and the layer's lifecycle
//! events: an [`Audit`] log of the users' session events, kept in memory
//! (the latest [`AUDIT_LEN`]) and shown on each user's sessions page. There
//! are no passwords: any name logs in. Forms are plain POSTs protected by
//! the cookie's `SameSite=Lax`; a real app adds CSRF tokens.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header::USER_AGENT};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use session::time::OffsetDateTime;
use session::{
    AnyStore, Session, SessionError, SessionEvents, SessionLayer, SessionStore, StoreKey,
};

/// How many audit entries the app keeps (the oldest go first).
pub const AUDIT_LEN: usize = 1000;

/// The users' session events, latest last: what the layer reported after
/// each login, logout and "log out everywhere" (anonymous sessions are not
/// users' events and are left out). Cheap to clone; clones share the log.
#[derive(Clone, Default)]
pub struct Audit(Arc<Mutex<VecDeque<AuditEntry>>>);

/// One entry of the [`Audit`] log.
#[derive(Clone, Debug)]
pub struct AuditEntry {
    /// When the layer reported it.
    pub at: OffsetDateTime,
    /// The user.
    pub user: String,
    /// What happened, with the store keys' short prefixes (never an id).
    pub what: String,
}

impl Audit {
    fn push(&self, user: &str, what: String) {
        let mut log = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if log.len() == AUDIT_LEN {
            log.pop_front();
        }
        log.push_back(AuditEntry {
            at: OffsetDateTime::now_utc(),
            user: user.to_owned(),
            what,
        });
    }

    /// The entries of `user`, latest first.
    pub fn of(&self, user: &str) -> Vec<AuditEntry> {
        let log = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        log.iter()
            .rev()
            .filter(|e| e.user == user)
            .cloned()
            .collect()
    }
}

impl SessionEvents for Audit {
    fn created(&self, key: &StoreKey, principal: Option<&str>) {
        // A session born with a principal: a login without an earlier session.
        if let Some(user) = principal {
            self.push(user, format!("logged in: session {}", key.short()));
        }
    }

    fn id_cycled(&self, old: &StoreKey, new: &StoreKey, principal: Option<&str>) {
        if let Some(user) = principal {
            let (old, new) = (old.short(), new.short());
            self.push(user, format!("logged in: session {new} (was {old})"));
        }
    }

    fn destroyed(&self, key: &StoreKey, principal: Option<&str>) {
        if let Some(user) = principal {
            self.push(user, format!("logged out: session {}", key.short()));
        }
    }

    fn revoked(&self, principal: &str, count: u64) {
        self.push(
            principal,
            format!("logged out everywhere: {count} sessions"),
        );
    }

    fn expired(&self, key: &StoreKey, principal: Option<&str>) {
        // Only from stores that observe expiry (memory, Postgres, MySQL).
        if let Some(user) = principal {
            self.push(user, format!("session expired: {}", key.short()));
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
struct App {
    store: AnyStore,
    layer: SessionLayer,
    audit: Audit,
}

/// The login app: `store` answers the principal queries, `layer` must wrap
/// the same store. The app gives `layer` its [`Audit`] log as events hook.
pub fn app(store: AnyStore, layer: SessionLayer) -> Router {
    let audit = Audit::default();
    let layer = layer.with_events(audit.clone());
    let state = App {
        store,
        layer: layer.clone(),
        audit,
    };
    Router::new()
        .route("/", get(home))
        .route("/login", post(login))
        .route("/sessions", get(sessions))
        .route("/sessions/revoke", post(revoke))
        .route("/logout", post(logout))
        .route("/logout-everywhere", post(logout_everywhere))
        .with_state(state)
        .layer(layer)
}

/// A store or session failure, answered as the session error would be.
#[derive(Debug)]
struct AppError(SessionError);

impl From<SessionError> for AppError {
    fn from(error: SessionError) -> Self {
        Self(error)
    }
}

impl From<session::StoreError> for AppError {
    fn from(error: session::StoreError) -> Self {
        Self(error.into())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

async fn home(session: Session) -> Result<Html<String>, AppError> {
    let body = match session.principal().await? {
        Some(user) => format!(
            "<h1>Hello, {user}</h1>\
             <p><a href=\"/sessions\">Your active sessions</a></p>\
             <form method=post action=/logout><button>Log out this device</button></form>\
             <form method=post action=/logout-everywhere><button>Log out everywhere</button></form>",
            user = escape(&user)
        ),
        None => "<h1>Not logged in</h1>\
                 <form method=post action=/login>\
                 <input name=user placeholder=name required> <button>Log in</button></form>"
            .to_owned(),
    };
    Ok(Html(body))
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
}

async fn login(
    session: Session,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, AppError> {
    let user = form.user.trim();
    if user.is_empty() || user.len() > 64 {
        return Ok((
            StatusCode::BAD_REQUEST,
            "a name of 1 to 64 characters, please",
        )
            .into_response());
    }
    // A new id at login: an id planted before it is useless afterwards.
    session.cycle_id().await?;
    session.set_principal(user).await?;
    let device = headers
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown device");
    session
        .insert("device", device.chars().take(120).collect::<String>())
        .await?;
    Ok(Redirect::to("/").into_response())
}

async fn sessions(State(app): State<App>, session: Session) -> Result<Response, AppError> {
    let Some(user) = session.principal().await? else {
        return Ok(Redirect::to("/").into_response());
    };
    let this = session.store_key().await?;
    let mut rows = String::new();
    for info in app.store.list_by_principal(&user).await? {
        let device = info
            .data
            .get("device")
            .and_then(|d| d.as_str())
            .unwrap_or("?");
        let marker = if Some(&info.key) == this.as_ref() {
            " (this device)"
        } else {
            ""
        };
        rows.push_str(&format!(
            "<li>{device}{marker}: since {created}, last seen {seen} \
             <form method=post action=/sessions/revoke style=display:inline>\
             <input type=hidden name=key value=\"{key}\"><button>Log out</button></form></li>",
            device = escape(device),
            created = info.created_at,
            seen = info.last_access,
            key = info.key,
        ));
    }
    let mut audit = String::new();
    for entry in app.audit.of(&user) {
        audit.push_str(&format!(
            "<li>{at}: {what}</li>",
            at = entry.at,
            what = escape(&entry.what)
        ));
    }
    Ok(Html(format!(
        "<h1>Sessions of {}</h1><ul>{rows}</ul>\
         <h2>Session events</h2><ul id=audit>{audit}</ul><a href=/>back</a>",
        escape(&user)
    ))
    .into_response())
}

#[derive(Deserialize)]
struct RevokeForm {
    key: String,
}

/// Logs out one of the user's sessions, found by its store key (not a secret).
async fn revoke(
    State(app): State<App>,
    session: Session,
    Form(form): Form<RevokeForm>,
) -> Result<Response, AppError> {
    let Some(user) = session.principal().await? else {
        return Ok(Redirect::to("/").into_response());
    };
    // Only a session of this user: the key comes from the client.
    let theirs = app.store.list_by_principal(&user).await?;
    if let Some(info) = theirs.iter().find(|s| s.key.as_str() == form.key) {
        if session.store_key().await?.as_ref() == Some(&info.key) {
            session.destroy().await?;
        } else {
            // A direct store call: the layer reports nothing, the app does.
            app.store.delete(&info.key).await?;
            let what = format!("logged out session {} from another", info.key.short());
            app.audit.push(&user, what);
        }
    }
    Ok(Redirect::to("/sessions").into_response())
}

async fn logout(session: Session) -> Result<Redirect, AppError> {
    // Read first, so that the layer's `destroyed` event knows the user.
    session.principal().await?;
    session.destroy().await?;
    Ok(Redirect::to("/"))
}

async fn logout_everywhere(State(app): State<App>, session: Session) -> Result<Redirect, AppError> {
    if let Some(user) = session.principal().await? {
        // Through the layer: counted, and reported to the audit log.
        app.layer.revoke_principal(&user).await?;
    }
    session.destroy().await?;
    Ok(Redirect::to("/"))
}
