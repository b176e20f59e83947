//! Log in, see your active sessions, log out this device or everywhere.
//!
//! A demo of `cycle_id` (a new id at login), the principal index
//! (`list_by_principal`, `delete_by_principal`) and `destroy`. There are no
//! passwords: any name logs in. Forms are plain POSTs protected by the
//! cookie's `SameSite=Lax`; a real app adds CSRF tokens.

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header::USER_AGENT};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use session::{AnyStore, Session, SessionError, SessionLayer, SessionStore};

/// The login app: `store` answers the principal queries, `layer` must wrap the same store.
pub fn app(store: AnyStore, layer: SessionLayer) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/login", post(login))
        .route("/sessions", get(sessions))
        .route("/sessions/revoke", post(revoke))
        .route("/logout", post(logout))
        .route("/logout-everywhere", post(logout_everywhere))
        .with_state(store)
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

async fn sessions(State(store): State<AnyStore>, session: Session) -> Result<Response, AppError> {
    let Some(user) = session.principal().await? else {
        return Ok(Redirect::to("/").into_response());
    };
    let this = session.store_key().await?;
    let mut rows = String::new();
    for info in store.list_by_principal(&user).await? {
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
    Ok(Html(format!(
        "<h1>Sessions of {}</h1><ul>{rows}</ul><a href=/>back</a>",
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
    State(store): State<AnyStore>,
    session: Session,
    Form(form): Form<RevokeForm>,
) -> Result<Response, AppError> {
    let Some(user) = session.principal().await? else {
        return Ok(Redirect::to("/").into_response());
    };
    // Only a session of this user: the key comes from the client.
    let theirs = store.list_by_principal(&user).await?;
    if let Some(info) = theirs.iter().find(|s| s.key.as_str() == form.key) {
        if session.store_key().await?.as_ref() == Some(&info.key) {
            session.destroy().await?;
        } else {
            store.delete(&info.key).await?;
        }
    }
    Ok(Redirect::to("/sessions").into_response())
}

async fn logout(session: Session) -> Result<Redirect, AppError> {
    session.destroy().await?;
    Ok(Redirect::to("/"))
}

async fn logout_everywhere(
    State(store): State<AnyStore>,
    session: Session,
) -> Result<Redirect, AppError> {
    if let Some(user) = session.principal().await? {
        store.delete_by_principal(&user).await?;
    }
    session.destroy().await?;
    Ok(Redirect::to("/"))
}
