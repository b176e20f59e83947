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

use std::any::Any;

use bytes::Bytes;
use http::{Extensions, HeaderMap, Method, Request, Uri, Version};

use crate::Session;

/// The parts of a request needed to make it again.
pub(crate) struct Template<B> {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    extensions: Extensions,
    body: B,
}

impl<B: 'static> Template<B> {
    /// The template of `request`, if it may be run again.
    pub(crate) fn of(request: &Request<B>) -> Option<Self> {
        if !repeatable(request.method()) {
            return None;
        }
        let body = twin(request.body())?;
        Some(Self {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
            extensions: request.extensions().clone(),
            body,
        })
    }

    /// The request again, carrying `session`.
    pub(crate) fn request(&self, session: Session) -> Option<Request<B>> {
        let mut request = Request::new(twin(&self.body)?);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        *request.extensions_mut() = self.extensions.clone();
        request.extensions_mut().insert(session);
        Some(request)
    }
}

fn repeatable(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// A second body equal to `body`, if its type is one the layer can make
/// again without consuming it.
fn twin<B: 'static>(body: &B) -> Option<B> {
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
    fn repeatable_requests_have_templates() {
        let get = Request::get("/a?b=c")
            .header("x-test", "1")
            .body(String::from("payload"))
            .unwrap();
        let template = Template::of(&get).expect("a GET with a buffered body");
        let session = Session::new(
            std::sync::Arc::new(crate::layer::Config::for_tests()),
            Vec::new(),
        );
        let again = template.request(session).unwrap();
        assert_eq!(again.method(), Method::GET);
        assert_eq!(again.uri(), "/a?b=c");
        assert_eq!(again.headers()["x-test"], "1");
        assert_eq!(again.body(), "payload");
        assert!(again.extensions().get::<Session>().is_some());

        let post = Request::post("/").body(String::new()).unwrap();
        assert!(Template::of(&post).is_none(), "POST is not repeated");
        let put = Request::put("/").body(Bytes::from_static(b"x")).unwrap();
        assert!(Template::of(&put).is_some(), "PUT is idempotent");
    }

    #[test]
    fn streamed_bodies_are_not_repeated() {
        struct Streamed;
        let get = Request::get("/").body(Streamed).unwrap();
        assert!(Template::of(&get).is_none());
    }

    #[cfg(feature = "axum")]
    #[test]
    fn only_empty_axum_bodies_are_repeated() {
        use axum_core::body::Body;
        let empty = Request::get("/").body(Body::empty()).unwrap();
        assert!(Template::of(&empty).is_some());
        let full = Request::put("/").body(Body::from("data")).unwrap();
        assert!(Template::of(&full).is_none());
    }
}
