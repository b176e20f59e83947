use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{HeaderValue, RETRY_AFTER, SET_COOKIE};
use http::{Request, Response, StatusCode};
use tower_service::Service;

use super::rerun::{self, Spare};
use super::{Config, ConflictPolicy, FailurePolicy};
use crate::Session;
use crate::commit::{CookieChange, Outcome, Stale};
use crate::meter::Count;

/// The service [`SessionLayer`](super::SessionLayer) wraps around an inner service.
#[derive(Clone)]
pub struct SessionService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> std::fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionService")
            .field("cookie", &self.config.wire_name)
            .finish_non_exhaustive()
    }
}

impl<S> SessionService<S> {
    pub(super) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }
}

/// The response future of [`SessionService`].
pub type ResponseFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The clone is not ready; the instance that was polled ready serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        let cookie_ids = config.cookie.read(request.headers(), &config.wire_name);
        // A spare body only for requests that may run again (see `rerun`),
        // and only when a cookie names a session: without one, the request
        // can only create a session, which never conflicts. The head of the
        // request is copied later, if the handler takes the session.
        let spare = match config.conflict_policy {
            ConflictPolicy::Rerun if !cookie_ids.is_empty() => rerun::spare_body(&request),
            _ => None,
        };
        let session = Session::new(config.clone(), cookie_ids, spare.is_some());
        request.extensions_mut().insert(session.clone());

        Box::pin(async move {
            let response = inner.call(request).await?;
            if response.status().is_server_error() {
                // The handler failed: none of what it did is committed.
                session.abandon().await;
                return Ok(response);
            }
            if session.close_if_idle() {
                // Most requests (untouched, or read with no touch due): no
                // store call, no cookie, nothing more in this future.
                return Ok(response);
            }
            // Boxed: what a commit and a re-run keep across their awaits
            // would otherwise make every request's future larger.
            Box::pin(commit(inner, config, session, spare, response)).await
        })
    }
}

/// Commits the session of a request whose handler produced `response`, and
/// runs the request again while its view turns out stale (or refuses it).
async fn commit<S, ReqBody, ResBody>(
    mut inner: S,
    config: Arc<Config>,
    mut session: Session,
    mut spare: Option<Spare<ReqBody>>,
    mut response: Response<ResBody>,
) -> Result<Response<ResBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: 'static,
    ResBody: Default,
{
    let mut turn = None;
    let mut runs = 1;
    loop {
        let held = turn.take();
        let outcome = if session.identity_changes() {
            // Its own task: a client that hangs up (dropping this future)
            // must not cut a logout's delete or a login's id change in half.
            let finishing = session.clone();
            let outcome = tokio::spawn(async move { finishing.finish(held).await });
            outcome.await.unwrap_or(Outcome::Failed { identity: true })
        } else {
            // A save, create or touch is one store call (and after a
            // conflict, a load and another save): cut short by a client
            // that hung up, it either happened or did not, and that client
            // gets no answer either way.
            session.finish(held).await
        };
        let stale = match outcome {
            Outcome::Done {
                cookie,
                store_failed,
            } => {
                if store_failed && config.failure_policy == FailurePolicy::Reject {
                    return Ok(unavailable());
                }
                set_cookie(&config, &mut response, cookie);
                return Ok(response);
            }
            Outcome::Failed { identity } => {
                if identity || config.failure_policy == FailurePolicy::Reject {
                    return Ok(unavailable());
                }
                return Ok(response);
            }
            Outcome::Stale(stale) => stale,
        };
        // The response came from a stale view: it is never sent. Run the
        // request again on the fresh session, in this process's turn, or
        // refuse it.
        let Stale { fresh, turn: held } = *stale;
        let again = match (
            session.template(),
            spare.take().and_then(Spare::take),
            fresh,
        ) {
            (Some(template), Some((body, next)), Some((loaded, record)))
                if runs <= config.save_attempts =>
            {
                spare = next;
                let next = session.rerun(loaded, record, template.clone());
                Some((next.clone(), template.request(body, next)))
            }
            _ => None,
        };
        let Some((next, request)) = again else {
            config.meter.count(Count::Refused);
            return Ok(conflict());
        };
        config.meter.count(Count::Rerun);
        turn = Some(held);
        session = next;
        runs += 1;
        poll_fn(|cx| inner.poll_ready(cx)).await?;
        response = inner.call(request).await?;
        if response.status().is_server_error() {
            session.abandon().await;
            return Ok(response);
        }
        if session.close_if_idle() {
            return Ok(response);
        }
    }
}

fn set_cookie<B>(config: &Config, response: &mut Response<B>, cookie: CookieChange) {
    let header = match cookie {
        CookieChange::Keep => return,
        CookieChange::Set { id, max_age, floor } => {
            config.cookie.set(&config.wire_name, &id, floor, max_age)
        }
        CookieChange::Remove => config.cookie.removal(&config.wire_name),
    };
    response.headers_mut().append(SET_COOKIE, header);
}

/// `503 Service Unavailable` with `Retry-After: 1`.
fn unavailable<B: Default>() -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// `409 Conflict`: the request read session data that a parallel request
/// changed before it could commit, and it could not be run again. Nothing
/// it changed was stored; sending it again is safe as far as the session
/// is concerned.
fn conflict<B: Default>() -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = StatusCode::CONFLICT;
    response
}
