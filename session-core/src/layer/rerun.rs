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

use std::any::Any;

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

/// A spare body for running `request` again, if it may run again: a
/// repeatable method and a body the layer can make anew. Cheap (no copy of
/// headers); the rest of the request is only copied once a handler takes
/// the session ([`Template::of`]).
pub(crate) fn spare_body<B: 'static>(request: &Request<B>) -> Option<B> {
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

/// A second body equal to `body`, if its type is one the layer can make
/// again without consuming it.
pub(crate) fn twin<B: 'static>(body: &B) -> Option<B> {
    let any = body as &dyn Any;
    #[cfg(feature = "axum")]
    if let Some(body) = any.downcast_ref::<axum_core::body::Body>() {
        use http_body::Body as _;
        let empty = body.is_end_stream() || body.size_hint().exact() == Some(0);
        return empty.then(axum_core::body::Body::empty).and_then(cast);
    }
    if any.is::<http_body_util::Empty<Bytes>>() {
        return cast(http_body_util::Empty::<Bytes>::new());
    }
    macro_rules! clone_of {
        ($($ty:ty),*) => {$(
            if let Some(body) = any.downcast_ref::<$ty>() {
                return cast(body.clone());
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
            .body(String::from("payload"))
            .unwrap();
        let body = spare_body(&get).expect("a GET with a buffered body");
        let (parts, _) = get.into_parts();
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
        assert!(spare_body(&empty).is_some());
        let full = Request::put("/").body(Body::from("data")).unwrap();
        assert!(spare_body(&full).is_none());
    }
}
