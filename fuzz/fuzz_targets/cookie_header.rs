//! Arbitrary `Cookie` headers through a real `SessionLayer` over a
//! `MemoryStore`: whatever a client sends, garbage never reaches an existing
//! session and never makes the request fail.
//!
//! The cookie parser is `pub(crate)`, so the target drives it through the
//! public layer, as a server would.
//!
//! Input layout:
//! - byte 0: bit 0 clear → unsigned cookies, set → cookies signed with a fixed key;
//! - the rest: up to 4 `Cookie` header values separated by `\n` (a byte no
//!   header value may contain). Values `HeaderValue::from_bytes` rejects are
//!   skipped: a server's HTTP parser never lets them through.
//!
//! Seeds in `fuzz/seeds/cookie_header` are text files in this layout
//! (`0session=...` for unsigned, `1session=...` for signed).

#![no_main]

use std::sync::LazyLock;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use cookie::{Cookie, CookieJar};
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderValue, Request, Response, StatusCode};
use libfuzzer_sys::fuzz_target;
use session_core::layer::DEFAULT_COOKIE_NAME;
use session_core::{ENCODED_ID_LEN, Id, Key, Session, SessionError, SessionLayer};
use session_memory::MemoryStore;
use tokio::runtime::Runtime;
use tower::ServiceExt as _;

/// The signing key in signed mode: fixed, so that committed seeds can carry
/// validly signed cookies (64 bytes: `Key::from` panics on fewer).
const KEY_BYTES: [u8; 64] = *b"session-fuzz fixed signing key, 64 bytes long, not a secret!!!!!";

/// Length of a signed cookie value: the cookie crate's 44-character base64
/// HMAC-SHA256 tag followed by the 22-character id.
const SIGNED_LEN: usize = 44 + ENCODED_ID_LEN;

/// At most this many `Cookie` header values per request.
const MAX_HEADERS: usize = 4;

/// Created once: a current-thread runtime costs nothing between iterations.
/// The layer spawns its save task and times store calls, so it needs `time`.
static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime builds")
});

/// An app with a store that already holds one session, the victim.
///
/// Every input gets a fresh one: the outcome depends on the input alone (a
/// crash reproduces from its artifact), and all an input allocated is freed
/// when it ends, so libFuzzer's leak detection stays meaningful (the layer
/// or store keeping anything per request alive would be reported).
struct App {
    router: Router,
    signed: bool,
    /// The victim's cookie value: no fuzzed request may end up in its session.
    victim: String,
}

async fn count(session: Session) -> Result<String, SessionError> {
    let n: u64 = session
        .update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(n.to_string())
}

fn key() -> Key {
    Key::from(&KEY_BYTES[..])
}

impl App {
    fn new(signed: bool) -> Self {
        let store = MemoryStore::with_capacity(16);
        let mut layer = SessionLayer::new(store);
        if signed {
            layer = layer.signing_keys([key()]);
        }
        let router = Router::new().route("/", get(count)).layer(layer);
        let mut app = Self {
            router,
            signed,
            victim: String::new(),
        };
        // The first request has no cookie, so it creates the victim session.
        let (body, value) = app.send(Request::new(Body::empty()));
        assert_eq!(body, "1", "the first request starts a session");
        app.victim = value;
        app
    }

    /// Sends `request` and checks the response every request of this target
    /// must get: 200 and exactly one `Set-Cookie` carrying a well-formed new
    /// id. Returns the body and the cookie value.
    fn send(&self, request: Request<Body>) -> (String, String) {
        let router = self.router.clone();
        let response = RUNTIME.block_on(async move {
            let response = match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let (parts, body) = response.into_parts();
            let body = axum::body::to_bytes(body, 1024)
                .await
                .expect("the handler's body is a short string");
            Response::from_parts(parts, body)
        });

        // The memory store cannot fail, so the default failure policy never
        // answers 503; a cookie the layer cannot use means "no session", not
        // an error. Anything but 200 is a bug.
        assert_eq!(response.status(), StatusCode::OK, "{response:?}");

        // The handler changed the session, and (see the caller's checks) it
        // is a new one: the layer must hand out its cookie exactly once.
        let set_cookies: Vec<&HeaderValue> =
            response.headers().get_all(SET_COOKIE).iter().collect();
        assert_eq!(set_cookies.len(), 1, "Set-Cookie headers: {set_cookies:?}");
        let header = set_cookies[0]
            .to_str()
            .expect("Set-Cookie is ASCII: a name from the config and a base64 value");
        let pair = header.split(';').next().unwrap_or_default();
        let value = pair
            .strip_prefix(DEFAULT_COOKIE_NAME)
            .and_then(|rest| rest.strip_prefix('='))
            .unwrap_or_else(|| panic!("Set-Cookie is not for our cookie: {header}"));
        self.check_value(value, header);
        let value = value.to_owned();

        let body = String::from_utf8(response.into_body().to_vec()).expect("the body is a number");
        (body, value)
    }

    /// The cookie value is a fresh id in the configured form: 22 characters
    /// of canonical base64url, or that preceded by a valid signature.
    fn check_value(&self, value: &str, header: &str) {
        let id = if self.signed {
            assert_eq!(value.len(), SIGNED_LEN, "signed value length: {header}");
            let jar = CookieJar::new();
            let key = key();
            let verified = jar
                .signed(&key)
                .verify(Cookie::new(DEFAULT_COOKIE_NAME, value.to_owned()))
                .unwrap_or_else(|| panic!("signature does not verify: {header}"));
            Id::decode(verified.value())
        } else {
            Id::decode(value)
        };
        assert!(id.is_some(), "not a well-formed id: {header}");
    }
}

/// Splits the fuzzer's bytes into the mode and the header values.
fn parse(data: &[u8]) -> Option<(bool, Vec<&[u8]>)> {
    let (&mode, rest) = data.split_first()?;
    let values = rest.split(|&b| b == b'\n').take(MAX_HEADERS).collect();
    Some((mode & 1 == 1, values))
}

fuzz_target!(|data: &[u8]| {
    let Some((signed, values)) = parse(data) else {
        return;
    };

    let mut request = Request::new(Body::empty());
    for value in values {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            request.headers_mut().append(COOKIE, value);
        }
    }

    let app = App::new(signed);
    let (body, value) = app.send(request);

    // The only other session in the store is the victim, under a random
    // 128-bit id the fuzzer never sees (nor, in signed mode, a signature
    // for it). So whatever it sent, the handler must have started a new
    // session (counter at 1), under an id other than the victim's.
    assert_eq!(body, "1", "a fuzzed cookie reached an existing session");
    assert_ne!(
        value, app.victim,
        "a fuzzed cookie was given the victim's session"
    );
});
