//! What the layer keeps of a request to run it again on fresh session data.
//!
//! Only requests that may be repeated are run again: the safe methods
//! (`GET`, `HEAD`, `OPTIONS`, `TRACE`) and the idempotent `PUT` and
//! `DELETE`, which HTTP lets a client or proxy repeat on its own (RFC 9110,
//! 9.2.2). Their body must be one the layer can make again without reading
//! it: an empty [axum body](axum_core::body::Body), or a body type that is
//! already buffered in memory (`http_body_util::Full<Bytes>` and `Empty`,
//! `String`, `Vec<u8>`, `Bytes`, `()`). A streamed body (hyper's `Incoming`
//! in a plain hyper server, or a non-empty axum body) cannot be replayed, so
//! such a request is refused instead. The layer's service is generic over
//! the body type; the body types above are recognised at run time, so any
//! body type still works, only without re-runs.
//!
//! The copy of the request's head (headers, extensions) is taken by the
//! axum extractor, when a handler takes the session: a request that never
//! uses its session copies nothing. A handler that reads the `Session` from
//! the request's extensions by hand (no axum extractor) is refused instead
//! of run again.
//!
//! Only a request that changes its session can turn out stale, and most
//! paths only ever read it. So the layer learns, per path and method,
//! whether requests write: once a path has served [`LEARN_AFTER`] requests
//! that took the session and none of them changed it, its requests are no
//! longer copied. The first request there that does change it marks the
//! path as writing for good, and from then on its requests are copied
//! again. A request that wrote on a path still marked read-only has no
//! copy: if it also turns out stale, it is refused (`409`) instead of run
//! again. The layer learns at most [`MAX_PATHS`] paths (a bound on memory
//! whatever URLs clients send); requests on further paths are always copied.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use bytes::Bytes;
use http::request::Parts;
use http::{Extensions, HeaderMap, Method, Request, Uri, Version};

use crate::Session;

/// The parts of a request needed to make it again (its body is made by
/// [`twin`] from a spare the layer keeps).
pub(crate) struct Template {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    extensions: Extensions,
}

impl Template {
    /// What a re-run needs of `parts`. Taken by the axum extractor, so that
    /// only requests whose handler takes the session pay for the copy.
    pub(crate) fn of(parts: &Parts) -> Self {
        let mut extensions = parts.extensions.clone();
        // The session that keeps this template must not be in it: that
        // would be a reference cycle (session, template, session) and leak
        // both. A re-run gets its own session anyway.
        extensions.remove::<Session>();
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            extensions,
        }
    }

    /// The request again, with `body`, carrying `session`.
    pub(crate) fn request<B>(&self, body: B, session: Session) -> Request<B> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        *request.extensions_mut() = self.extensions.clone();
        request.extensions_mut().insert(session);
        request
    }
}

/// Requests that took their session, none of them changing it, after which
/// a route's requests are no longer copied for a re-run.
pub(crate) const LEARN_AFTER: u32 = 64;

/// Paths learnt at most; requests on paths beyond these are always copied.
const MAX_PATHS: usize = 1024;

/// What the layer has learnt of the paths it serves: which of them write
/// their session (shared by clones of one layer).
#[derive(Default)]
pub(crate) struct Routes {
    paths: RwLock<HashMap<Box<str>, Arc<Route>>>,
}

/// One path, per repeatable method.
#[derive(Default)]
pub(crate) struct Route {
    reads: [AtomicU32; METHODS],
    writes: [AtomicBool; METHODS],
}

const METHODS: usize = 6;

/// The path and method a request was served on.
#[derive(Clone)]
pub(crate) struct RouteUse {
    route: Arc<Route>,
    method: usize,
}

impl Routes {
    /// What is learnt of the path and method of `parts`, unless the method
    /// is not repeatable or the table is full and the path is new.
    pub(crate) fn of(&self, parts: &Parts) -> Option<RouteUse> {
        let method = method_index(&parts.method)?;
        let path = parts.uri.path();
        let found = self
            .paths
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
            .cloned();
        let route = match found {
            Some(route) => route,
            None => {
                let mut paths = self.paths.write().unwrap_or_else(PoisonError::into_inner);
                if paths.len() >= MAX_PATHS && !paths.contains_key(path) {
                    return None;
                }
                paths.entry(path.into()).or_default().clone()
            }
        };
        Some(RouteUse { route, method })
    }
}

impl RouteUse {
    /// Whether the route has only ever read its sessions, long enough to
    /// stop copying its requests.
    pub(crate) fn read_only(&self) -> bool {
        !self.route.writes[self.method].load(Ordering::Relaxed)
            && self.route.reads[self.method].load(Ordering::Relaxed) >= LEARN_AFTER
    }

    /// Counts a request that took its session and left it unchanged.
    pub(crate) fn note_read(&self) {
        let reads = &self.route.reads[self.method];
        if reads.load(Ordering::Relaxed) < LEARN_AFTER {
            reads.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Marks the route as one that writes: its requests are copied from now on.
    pub(crate) fn note_write(&self) {
        let writes = &self.route.writes[self.method];
        if !writes.load(Ordering::Relaxed) {
            writes.store(true, Ordering::Relaxed);
        }
    }
}

fn method_index(method: &Method) -> Option<usize> {
    Some(match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::OPTIONS => 2,
        Method::TRACE => 3,
        Method::PUT => 4,
        Method::DELETE => 5,
        _ => return None,
    })
}

/// What the layer keeps to make the body of a request again: nothing to
/// copy for an empty body (the most common kind of repeatable request).
pub(crate) enum Spare<B> {
    /// An empty axum body, made anew when needed.
    #[cfg(feature = "axum")]
    EmptyAxum,
    /// A body held in memory, copied.
    Copy(B),
}

impl<B: 'static> Spare<B> {
    /// The body for one more run, and what to keep for the run after it.
    pub(crate) fn take(self) -> Option<(B, Option<Self>)> {
        match self {
            #[cfg(feature = "axum")]
            Self::EmptyAxum => cast(axum_core::body::Body::empty()).map(|b| (b, Some(self))),
            Self::Copy(body) => {
                let next = twin(&body);
                Some((body, next))
            }
        }
    }
}

/// A spare for running `request` again, if it may run again: a repeatable
/// method and a body the layer can make anew. Cheap (no copy of headers,
/// and none of an empty body); the rest of the request is only copied once
/// a handler takes the session ([`Template::of`]).
pub(crate) fn spare_body<B: 'static>(request: &Request<B>) -> Option<Spare<B>> {
    if !repeatable(request.method()) {
        return None;
    }
    twin(request.body())
}

fn repeatable(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// What makes a second body equal to `body`, if its type is one the layer
/// can make again without consuming it.
pub(crate) fn twin<B: 'static>(body: &B) -> Option<Spare<B>> {
    let any = body as &dyn Any;
    #[cfg(feature = "axum")]
    if let Some(body) = any.downcast_ref::<axum_core::body::Body>() {
        use http_body::Body as _;
        let empty = body.is_end_stream() || body.size_hint().exact() == Some(0);
        return empty.then_some(Spare::EmptyAxum);
    }
    if any.is::<http_body_util::Empty<Bytes>>() {
        return cast(http_body_util::Empty::<Bytes>::new()).map(Spare::Copy);
    }
    macro_rules! clone_of {
        ($($ty:ty),*) => {$(
            if let Some(body) = any.downcast_ref::<$ty>() {
                return cast(body.clone()).map(Spare::Copy);
            }
        )*};
    }
    clone_of!(http_body_util::Full<Bytes>, String, Vec<u8>, Bytes, ());
    None
}

/// `value` as a `B`, when it is one.
fn cast<T: 'static, B: 'static>(value: T) -> Option<B> {
    let mut slot = Some(value);
    (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<B>>()
        .and_then(Option::take)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeatable_requests_are_made_again() {
        let get = Request::get("/a?b=c")
            .header("x-test", "1")
            .header("accept", "text/html")
            .header("x-test", "2")
            .header("cookie", "a=1")
            .body(String::from("payload"))
            .unwrap();
        let (body, again) = spare_body(&get)
            .and_then(Spare::take)
            .expect("a GET with a buffered body");
        assert!(again.is_some(), "a buffered body is made again and again");
        let (parts, _) = get.into_parts();
        let original = parts.headers.clone();
        let template = Template::of(&parts);
        let session = Session::new(
            std::sync::Arc::new(crate::layer::Config::for_tests()),
            Vec::new(),
            false,
        );
        let again = template.request(body, session);
        assert_eq!(again.method(), Method::GET);
        assert_eq!(again.uri(), "/a?b=c");
        assert_eq!(again.headers()["x-test"], "1");
        // Every value, each name's values in their order, the names in theirs.
        assert_eq!(*again.headers(), original);
        let all: Vec<_> = again.headers().iter().collect();
        let before: Vec<_> = original.iter().collect();
        assert_eq!(all, before);
        assert_eq!(again.body(), "payload");
        assert!(again.extensions().get::<Session>().is_some());

        let post = Request::post("/").body(String::new()).unwrap();
        assert!(spare_body(&post).is_none(), "POST is not repeated");
        let put = Request::put("/").body(Bytes::from_static(b"x")).unwrap();
        assert!(spare_body(&put).is_some(), "PUT is idempotent");
    }

    #[test]
    fn streamed_bodies_are_not_repeated() {
        struct Streamed;
        let get = Request::get("/").body(Streamed).unwrap();
        assert!(spare_body(&get).is_none());
    }

    #[cfg(feature = "axum")]
    #[test]
    fn only_empty_axum_bodies_are_repeated() {
        use axum_core::body::Body;
        let empty = Request::get("/").body(Body::empty()).unwrap();
        let (body, again) = spare_body(&empty).and_then(Spare::take).unwrap();
        assert!(http_body::Body::is_end_stream(&body));
        assert!(again.is_some());
        let full = Request::put("/").body(Body::from("data")).unwrap();
        assert!(spare_body(&full).is_none());
    }
}
