use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{HeaderValue, RETRY_AFTER, SET_COOKIE};
use http::{Request, Response, StatusCode};
use tower_service::Service;

use super::{Config, FailurePolicy};
use crate::Session;
use crate::session::{CookieChange, Finish};

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
        let session = Session::new(config.clone(), cookie_ids);
        request.extensions_mut().insert(session.clone());

        Box::pin(async move {
            let mut response = inner.call(request).await?;
            if session.close_if_idle() {
                // Most requests (untouched, or read with no touch due): no
                // store call, no cookie, no task to spawn.
                return Ok(response);
            }
            // Its own task: a client that hangs up (dropping this future)
            // must not cut a logout's delete or a login's id change in half.
            let finish = match tokio::spawn(async move { session.finish().await }).await {
                Ok(finish) => finish,
                Err(_) => Finish {
                    cookie: CookieChange::Keep,
                    store_failed: true,
                },
            };
            if finish.store_failed && config.failure_policy == FailurePolicy::Reject {
                return Ok(unavailable());
            }
            let header = match finish.cookie {
                CookieChange::Keep => None,
                CookieChange::Set { id, max_age } => {
                    Some(config.cookie.set(&config.wire_name, &id, max_age))
                }
                CookieChange::Remove => Some(config.cookie.removal(&config.wire_name)),
            };
            if let Some(header) = header {
                response.headers_mut().append(SET_COOKIE, header);
            }
            Ok(response)
        })
    }
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
