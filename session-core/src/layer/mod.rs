//! The tower layer: cookie in, [`Session`](crate::Session) in the request's
//! extensions, save and `Set-Cookie` after the response.
//!
//! Per request the layer
//!
//! 1. reads the session cookie. A missing, malformed, oversized or badly
//!    signed cookie is not an error: the request simply has no session yet;
//! 2. puts a lazily loading [`Session`](crate::Session) into the request's
//!    extensions and calls the inner service. A handler that never uses the
//!    session causes no store call at all;
//! 3. once the response is produced, commits a changed session with
//!    compare-and-set, touches a read one when its idle deadline is due for
//!    extension (at most once per touch interval), deletes a destroyed one,
//!    and sets or removes the cookie only when it changed. A response with a
//!    5xx status commits nothing.
//!
//! # Parallel requests on one session
//!
//! Commits are serializable per session: the outcome of parallel requests
//! equals some serial order of them, whatever mix of `get`, `insert`,
//! `remove`, `update`, `clear`, principal and expiry calls their handlers
//! make. A request whose changes meet a parallel commit is committed on the
//! fresh record if nothing it read has changed there. If something has, its
//! response came from a stale view and is never sent: under the default
//! [`ConflictPolicy::Rerun`] a request that may be repeated (`GET`, `HEAD`,
//! `OPTIONS`, `TRACE`, `PUT`, `DELETE`, with an empty or in-memory body)
//! runs again on the fresh session, and any other is answered
//! `409 Conflict` with nothing committed. A request that commits without
//! meeting a parallel one makes no store call beyond its load and save, and
//! never runs twice.
//!
//! # When the store fails
//!
//! Every store call runs under the [operation timeout](SessionLayer::op_timeout).
//! A handler sees a failing or slow store as a [`SessionError`](crate::SessionError)
//! from the session method it called. What the client gets is the
//! [`FailurePolicy`]'s choice: by default `503 Service Unavailable` with
//! `Retry-After: 1` (the request needed its session and could not have it;
//! answering as if the user were logged out would be worse), or, with
//! [`FailurePolicy::Degrade`], the handler's own response, served without a
//! session and logged.
//!
//! ```
//! use axum::{Router, routing::get};
//! use session_core::{Session, SessionLayer, SessionError};
//! use session_memory::MemoryStore;
//!
//! async fn handler(session: Session) -> Result<String, SessionError> {
//!     let n: u64 = session.update("n", |n: Option<u64>| n.unwrap_or(0) + 1).await?;
//!     Ok(n.to_string())
//! }
//!
//! let app: Router = Router::new()
//!     .route("/", get(handler))
//!     .layer(SessionLayer::new(MemoryStore::default()));
//! ```

pub(crate) mod rerun;
mod service;

use std::sync::Arc;
use std::time::Duration;

pub use ::cookie::{Key, SameSite};
pub use service::{ResponseFuture, SessionService};
use tower_layer::Layer;

use crate::cookies::CookieConfig;
pub use crate::cookies::CookieConfigError;
use crate::meter::Meter;
use crate::{Expiry, SessionEvents, SessionStore, StoreError};

/// The cookie name used unless [`SessionLayer::cookie_name`] says otherwise.
pub const DEFAULT_COOKIE_NAME: &str = "session";

/// Default for [`SessionLayer::op_timeout`].
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(2);

/// Default for [`SessionLayer::max_session_size`]: 64 KiB of JSON data.
pub const DEFAULT_MAX_SESSION_SIZE: usize = 64 * 1024;

/// Default for [`SessionLayer::save_attempts`].
pub const DEFAULT_SAVE_ATTEMPTS: u32 = 64;

/// What the client gets when the session store fails or times out during its request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Answer `503 Service Unavailable` with `Retry-After: 1` instead of the
    /// handler's response. The default: a request that needed its session is
    /// not answered as if the user had none.
    #[default]
    Reject,
    /// Serve the handler's response without a session (no cookie change), and log.
    Degrade,
}

/// What happens to a request whose view of its session was stale: it read a
/// value that a parallel request changed before it could commit.
///
/// Either way nothing derived from the stale view is stored and its
/// response is not sent. A handler author sees it as the handler running
/// again (its side effects outside the session happen twice), or the client
/// getting `409 Conflict`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConflictPolicy {
    /// Run the request again on the fresh session when HTTP allows repeating
    /// it: a safe or idempotent method (`GET`, `HEAD`, `OPTIONS`, `TRACE`,
    /// `PUT`, `DELETE`) with an empty axum body or a body type held in
    /// memory (`http_body_util::Full` or `Empty`, `String`, `Vec<u8>`,
    /// `Bytes`, `()`). The second response is the one sent, like a database
    /// retrying a transaction. Other requests (a `POST`, a streamed body)
    /// get `409 Conflict`. The default.
    ///
    /// A re-run needs a copy of the request's head, which the axum
    /// extractor keeps. The layer learns which paths write their session:
    /// once a path has served 64 requests that took their session and
    /// changed nothing, its requests are no longer copied. The first request
    /// there that writes marks the path as writing (copied again from then
    /// on); if that request also turns out stale, it gets `409`.
    #[default]
    Rerun,
    /// Never run a request twice: every stale request gets `409 Conflict`.
    /// The layer then keeps nothing of a request for a second run.
    Refuse,
}

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) store: Arc<dyn SessionStore>,
    /// The store's [`reads_may_lag`](SessionStore::reads_may_lag), asked
    /// once: cookies then carry a version floor (see [`replica`](crate::replica)).
    pub(crate) reads_may_lag: bool,
    pub(crate) cookie: CookieConfig,
    /// The cookie name on the wire (with the `__Host-` prefix if enabled).
    pub(crate) wire_name: String,
    pub(crate) expiry: Expiry,
    pub(crate) touch_interval: Option<Duration>,
    pub(crate) op_timeout: Duration,
    pub(crate) failure_policy: FailurePolicy,
    pub(crate) conflict_policy: ConflictPolicy,
    pub(crate) save_attempts: u32,
    pub(crate) max_session_size: usize,
    /// Saves of one session within this process take turns (see `locks`).
    pub(crate) key_locks: Arc<crate::locks::KeyLocks>,
    /// Which paths write their session (see `rerun`).
    pub(crate) routes: Arc<rerun::Routes>,
    /// The metrics' keys, with the store's backend name (see `observe`).
    pub(crate) meter: Arc<Meter>,
    /// The application's lifecycle hook, if it gave one.
    pub(crate) events: Option<Arc<dyn SessionEvents>>,
}

/// The session middleware: wrap a router or service with it.
///
/// Holds configuration only and is cheap to clone. Secure defaults: the
/// cookie is `Secure`, `HttpOnly`, `SameSite=Lax`, `Path=/`, a browser-session
/// cookie, named `session`; sessions end after 24 h idle or 7 days in all
/// ([`Expiry::default`]). Every setter has the default in its docs.
///
/// ```
/// use std::time::Duration;
/// use session_core::{Expiry, SessionLayer, FailurePolicy};
/// use session_memory::MemoryStore;
///
/// let layer = SessionLayer::new(MemoryStore::default())
///     .cookie_name("sid")
///     .expiry(Expiry::new(Duration::from_secs(30 * 60), Duration::from_secs(12 * 3600)))
///     .op_timeout(Duration::from_millis(500))
///     .failure_policy(FailurePolicy::Degrade);
/// ```
#[derive(Clone)]
pub struct SessionLayer {
    config: Arc<Config>,
}

impl std::fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLayer")
            .field("cookie", &self.config.wire_name)
            .field("expiry", &self.config.expiry)
            .field("op_timeout", &self.config.op_timeout)
            .field("failure_policy", &self.config.failure_policy)
            .finish_non_exhaustive()
    }
}

impl SessionLayer {
    /// A layer keeping sessions in `store`, with the secure defaults above.
    pub fn new(store: impl SessionStore) -> Self {
        Self::from_arc(Arc::new(store))
    }

    /// A layer over a store that is shared with the application (for example
    /// to list a user's sessions).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use session_core::{SessionLayer, SessionStore};
    /// use session_memory::MemoryStore;
    ///
    /// let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::default());
    /// let layer = SessionLayer::from_arc(store.clone());
    /// ```
    pub fn from_arc(store: Arc<dyn SessionStore>) -> Self {
        let cookie = CookieConfig::default();
        Self {
            config: Arc::new(Config {
                reads_may_lag: store.reads_may_lag(),
                wire_name: cookie.wire_name(),
                cookie,
                expiry: Expiry::default(),
                touch_interval: None,
                op_timeout: DEFAULT_OP_TIMEOUT,
                failure_policy: FailurePolicy::default(),
                conflict_policy: ConflictPolicy::default(),
                save_attempts: DEFAULT_SAVE_ATTEMPTS,
                max_session_size: DEFAULT_MAX_SESSION_SIZE,
                key_locks: Arc::default(),
                routes: Arc::default(),
                meter: Arc::new(Meter::new(store.backend())),
                events: None,
                store,
            }),
        }
    }

    fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        let config = Arc::make_mut(&mut self.config);
        f(config);
        config.wire_name = config.cookie.wire_name();
        config.cookie.attributes = config.cookie.render_attributes();
        self
    }

    /// The cookie's name (default `session`). It must be an RFC 6265 token:
    /// ASCII letters, digits and ``!#$%&'*+-.^_`|~``; anything else cannot
    /// travel in a `Set-Cookie` header.
    ///
    /// ```
    /// # use session_core::SessionLayer;
    /// # use session_memory::MemoryStore;
    /// let layer = SessionLayer::new(MemoryStore::default()).cookie_name("sid");
    /// ```
    ///
    /// # Panics
    ///
    /// If `name` is not a token: a misconfigured layer fails when it is
    /// built, not by logging users out. For a name from configuration use
    /// [`try_cookie_name`](Self::try_cookie_name).
    #[must_use]
    pub fn cookie_name(self, name: impl Into<String>) -> Self {
        self.try_cookie_name(name)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// [`cookie_name`](Self::cookie_name) for a name that may be invalid.
    ///
    /// ```
    /// # use session_core::{CookieConfigError, SessionLayer};
    /// # use session_memory::MemoryStore;
    /// let refused = SessionLayer::new(MemoryStore::default()).try_cookie_name("my session");
    /// assert!(matches!(refused, Err(CookieConfigError::Name(_))));
    /// ```
    ///
    /// # Errors
    ///
    /// [`CookieConfigError::Name`] if `name` is not an RFC 6265 token.
    pub fn try_cookie_name(self, name: impl Into<String>) -> Result<Self, CookieConfigError> {
        let name = name.into();
        crate::cookies::check_name(&name)?;
        Ok(self.with(|c| c.cookie.name = name))
    }

    /// The cookie's `Domain` (default none: the cookie goes to the exact host only).
    ///
    /// ```
    /// # use session_core::SessionLayer;
    /// # use session_memory::MemoryStore;
    /// let layer = SessionLayer::new(MemoryStore::default()).domain("example.com");
    /// ```
    ///
    /// # Panics
    ///
    /// If `domain` is not a host name (ASCII letters, digits, `-`, `.`);
    /// see [`try_domain`](Self::try_domain).
    #[must_use]
    pub fn domain(self, domain: impl Into<String>) -> Self {
        self.try_domain(domain)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// [`domain`](Self::domain) for a domain that may be invalid.
    ///
    /// ```
    /// # use session_core::SessionLayer;
    /// # use session_memory::MemoryStore;
    /// assert!(SessionLayer::new(MemoryStore::default()).try_domain("example.com; x").is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// [`CookieConfigError::Domain`] if `domain` is not a host name.
    pub fn try_domain(self, domain: impl Into<String>) -> Result<Self, CookieConfigError> {
        let domain = domain.into();
        crate::cookies::check_domain(&domain)?;
        Ok(self.with(|c| c.cookie.domain = Some(domain)))
    }

    /// The cookie's `Path` (default `/`).
    ///
    /// ```
    /// # use session_core::SessionLayer;
    /// # use session_memory::MemoryStore;
    /// let layer = SessionLayer::new(MemoryStore::default()).path("/app");
    /// ```
    ///
    /// # Panics
    ///
    /// If `path` does not start with `/` or holds `;`, a control or a
    /// non-ASCII character; see [`try_path`](Self::try_path).
    #[must_use]
    pub fn path(self, path: impl Into<String>) -> Self {
        self.try_path(path)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// [`path`](Self::path) for a path that may be invalid.
    ///
    /// ```
    /// # use session_core::SessionLayer;
    /// # use session_memory::MemoryStore;
    /// assert!(SessionLayer::new(MemoryStore::default()).try_path("app").is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// [`CookieConfigError::Path`] if `path` is not a cookie path.
    pub fn try_path(self, path: impl Into<String>) -> Result<Self, CookieConfigError> {
        let path = path.into();
        crate::cookies::check_path(&path)?;
        Ok(self.with(|c| c.cookie.path = path))
    }

    /// Whether the cookie is `Secure`, sent over HTTPS only (default `true`).
    /// Turn it off only for plain-http development on loopback.
    ///
    /// ```
    /// # use session_core::SessionLayer;
    /// # use session_memory::MemoryStore;
    /// let layer = SessionLayer::new(MemoryStore::default()).secure(false);
    /// ```
    #[must_use]
    pub fn secure(self, secure: bool) -> Self {
        self.with(|c| c.cookie.secure = secure)
    }

    /// Whether the cookie is `HttpOnly`, hidden from JavaScript (default `true`).
    ///
    /// ```
    /// # use session_core::SessionLayer;
    /// # use session_memory::MemoryStore;
    /// let layer = SessionLayer::new(MemoryStore::default()).http_only(true);
    /// ```
    #[must_use]
    pub fn http_only(self, http_only: bool) -> Self {
        self.with(|c| c.cookie.http_only = http_only)
    }

    /// The cookie's `SameSite` (default `Lax`).
    ///
    /// ```
    /// # use session_core::{SessionLayer, SameSite};
    /// # use session_memory::MemoryStore;
    /// let layer = SessionLayer::new(MemoryStore::default()).same_site(SameSite::Strict);
    /// ```
    #[must_use]
    pub fn same_site(self, same_site: SameSite) -> Self {
        self.with(|c| c.cookie.same_site = same_site)
    }

    /// Names the cookie `__Host-<name>` (default off). Browsers accept such a
    /// cookie only if it is Secure, has `Path=/` and no `Domain`, so the layer
    /// sends it that way whatever `secure`, `path` and `domain` say: no
    /// subdomain can then plant or overwrite the session cookie.
    ///
    /// ```
    /// # use session_core::SessionLayer;
    /// # use session_memory::MemoryStore;
    /// let layer = SessionLayer::new(MemoryStore::default()).host_prefix(true);
    /// ```
    #[must_use]
    pub fn host_prefix(self, enabled: bool) -> Self {
        self.with(|c| c.cookie.host_prefix = enabled)
    }

    /// Signs cookies with HMAC-SHA256 under `keys` (default: unsigned).
    ///
    /// The first key signs new cookies; every key verifies, so a key can be
    /// rotated out by putting a new one first and dropping the old one once
    /// its cookies have expired. Make keys with `Key::generate()`, or from 64
    /// or more secret random bytes with `Key::try_from(&bytes[..])` (the
    /// cookie crate's `Key::from` panics on fewer). The 128-bit id is unguessable either way;
    /// signing lets the layer turn away forged cookies without asking the store.
    ///
    /// ```
    /// use session_core::{SessionLayer, Key};
    /// use session_memory::MemoryStore;
    ///
    /// let (new, old) = (Key::generate(), Key::generate());
    /// let layer = SessionLayer::new(MemoryStore::default()).signing_keys([new, old]);
    /// ```
    #[must_use]
    pub fn signing_keys(self, keys: impl IntoIterator<Item = Key>) -> Self {
        let keys: Vec<Key> = keys.into_iter().collect();
        self.with(|c| c.cookie.keys = keys)
    }

    /// The default expiry of new sessions (default [`Expiry::default`]: 24 h
    /// idle, 7 days absolute, browser-session cookie). A session can choose
    /// its own with [`Session::set_expiry`](crate::Session::set_expiry).
    ///
    /// ```
    /// use std::time::Duration;
    /// # use session_core::{Expiry, SessionLayer};
    /// # use session_memory::MemoryStore;
    /// let layer = SessionLayer::new(MemoryStore::default())
    ///     .expiry(Expiry::new(Duration::from_secs(15 * 60), Duration::from_secs(8 * 3600)));
    /// ```
    #[must_use]
    pub fn expiry(self, expiry: Expiry) -> Self {
        self.with(|c| c.expiry = expiry)
    }

    /// How often a session that is only read gets its idle deadline extended
    /// with a `touch` (default: a tenth of its idle timeout, at most 60 s).
    /// Between touches a read costs one store round trip and no write.
    ///
    /// ```
    /// use std::time::Duration;
    /// # use session_core::SessionLayer;
    /// # use session_memory::MemoryStore;
    /// let layer = SessionLayer::new(MemoryStore::default()).touch_interval(Duration::from_secs(30));
    /// ```
    #[must_use]
    pub fn touch_interval(self, interval: Duration) -> Self {
        self.with(|c| c.touch_interval = Some(interval))
    }

    /// The time limit for store calls (default 2 s): a load, and all the
    /// calls that commit a request's session together, each get at most this
    /// long; so does the wait for this process's turn on the session when
    /// parallel requests of the same session queue to commit. A request
    /// past it is answered `503`; a write whose answer timed out may still
    /// have landed (see SECURITY.md).
    ///
    /// ```
    /// use std::time::Duration;
    /// # use session_core::SessionLayer;
    /// # use session_memory::MemoryStore;
    /// let layer = SessionLayer::new(MemoryStore::default()).op_timeout(Duration::from_millis(300));
    /// ```
    #[must_use]
    pub fn op_timeout(self, timeout: Duration) -> Self {
        self.with(|c| c.op_timeout = timeout)
    }

    /// What the client gets when the store fails (default [`FailurePolicy::Reject`]).
    ///
    /// ```
    /// # use session_core::{SessionLayer, FailurePolicy};
    /// # use session_memory::MemoryStore;
    /// let layer = SessionLayer::new(MemoryStore::default()).failure_policy(FailurePolicy::Degrade);
    /// ```
    #[must_use]
    pub fn failure_policy(self, policy: FailurePolicy) -> Self {
        self.with(|c| c.failure_policy = policy)
    }

    /// What a request whose view of its session was stale gets (default
    /// [`ConflictPolicy::Rerun`]).
    ///
    /// ```
    /// # use session_core::{SessionLayer, ConflictPolicy};
    /// # use session_memory::MemoryStore;
    /// let layer = SessionLayer::new(MemoryStore::default()).conflict_policy(ConflictPolicy::Refuse);
    /// ```
    #[must_use]
    pub fn conflict_policy(self, policy: ConflictPolicy) -> Self {
        self.with(|c| c.conflict_policy = policy)
    }

    /// The largest a session's data may grow, in bytes of JSON (default
    /// [`DEFAULT_MAX_SESSION_SIZE`], 64 KiB). A change that would pass it is
    /// refused with [`SessionError::TooLarge`](crate::SessionError::TooLarge)
    /// and not made: nothing half-written reaches the store. Sessions are
    /// read on every request; keep them small and put bulk data elsewhere.
    ///
    /// ```
    /// # use session_core::SessionLayer;
    /// # use session_memory::MemoryStore;
    /// let layer = SessionLayer::new(MemoryStore::default()).max_session_size(16 * 1024);
    /// ```
    #[must_use]
    pub fn max_session_size(self, bytes: usize) -> Self {
        self.with(|c| c.max_session_size = bytes)
    }

    /// How many compare-and-set attempts a commit makes when parallel
    /// requests keep saving the same session first, and how many times a
    /// stale request runs again (default 64, at least 1; all of them within
    /// the operation timeout). Between attempts the layer waits a random,
    /// growing pause (at most 8 ms).
    ///
    /// ```
    /// # use session_core::SessionLayer;
    /// # use session_memory::MemoryStore;
    /// let layer = SessionLayer::new(MemoryStore::default()).save_attempts(32);
    /// ```
    #[must_use]
    pub fn save_attempts(self, attempts: u32) -> Self {
        self.with(|c| c.save_attempts = attempts.max(1))
    }

    /// Calls `events` after each committed change of a session's life:
    /// created, id cycled, destroyed, revoked (default: none). See
    /// [`observe`](crate::observe) for what is guaranteed.
    ///
    /// ```
    /// use session_core::{SessionEvents, SessionLayer, StoreKey};
    /// # use session_memory::MemoryStore;
    ///
    /// struct Logins;
    /// impl SessionEvents for Logins {
    ///     fn id_cycled(&self, _old: &StoreKey, new: &StoreKey, principal: Option<&str>) {
    ///         println!("{principal:?} logged in as {}", new.short());
    ///     }
    /// }
    ///
    /// let layer = SessionLayer::new(MemoryStore::default()).with_events(Logins);
    /// ```
    #[must_use]
    pub fn with_events(self, events: impl SessionEvents) -> Self {
        let events: Arc<dyn SessionEvents> = Arc::new(events);
        self.with(|c| c.events = Some(events))
    }

    /// Deletes every session of `principal` ("log out everywhere", or an
    /// administrator revoking a user) through the layer's store, under its
    /// operation timeout, and returns how many live sessions went. Unlike a
    /// direct [`SessionStore::delete_by_principal`], it is counted in
    /// `session_revoked_total` and reported to the
    /// [events hook](Self::with_events) (after the store answered).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), session_core::StoreError> {
    /// # use session_core::SessionLayer;
    /// # use session_memory::MemoryStore;
    /// let layer = SessionLayer::new(MemoryStore::default());
    /// let revoked = layer.revoke_principal("alice").await?;
    /// assert_eq!(revoked, 0);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the store failed or did not answer in time (then
    /// no event is reported; some sessions may have been deleted).
    pub async fn revoke_principal(&self, principal: &str) -> Result<u64, StoreError> {
        let config = &self.config;
        let deadline = crate::commit::deadline(config);
        let delete = config.store.delete_by_principal(principal);
        let count =
            crate::commit::call_unkeyed(config, "delete_by_principal", deadline, delete).await?;
        config.meter.revoked(count);
        if let Some(events) = &config.events {
            events.revoked(principal, count);
        }
        Ok(count)
    }
}

#[cfg(test)]
impl Config {
    /// A layer's configuration over a store that holds nothing.
    pub(crate) fn for_tests() -> Self {
        struct Nothing;
        #[async_trait::async_trait]
        impl SessionStore for Nothing {
            async fn create(
                &self,
                _: &crate::StoreKey,
                _: &crate::Record,
            ) -> Result<bool, crate::StoreError> {
                Ok(true)
            }
            async fn load(
                &self,
                _: &crate::StoreKey,
            ) -> Result<Option<crate::Record>, crate::StoreError> {
                Ok(None)
            }
            async fn save(
                &self,
                _: &crate::StoreKey,
                _: &crate::Record,
                _: u64,
            ) -> Result<crate::SaveOutcome, crate::StoreError> {
                Ok(crate::SaveOutcome::Gone)
            }
            async fn touch(
                &self,
                _: &crate::StoreKey,
                _: u64,
                _: time::OffsetDateTime,
            ) -> Result<bool, crate::StoreError> {
                Ok(false)
            }
            async fn delete(&self, _: &crate::StoreKey) -> Result<(), crate::StoreError> {
                Ok(())
            }
            async fn delete_if_unchanged(
                &self,
                _: &crate::StoreKey,
                _: u64,
            ) -> Result<crate::DeleteOutcome, crate::StoreError> {
                Ok(crate::DeleteOutcome::Gone)
            }
            async fn list_by_principal(
                &self,
                _: &str,
            ) -> Result<Vec<crate::SessionInfo>, crate::StoreError> {
                Ok(Vec::new())
            }
            async fn delete_by_principal(&self, _: &str) -> Result<u64, crate::StoreError> {
                Ok(0)
            }
            async fn delete_expired(&self) -> Result<u64, crate::StoreError> {
                Ok(0)
            }
        }
        Arc::unwrap_or_clone(SessionLayer::new(Nothing).config)
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService::new(inner, self.config.clone())
    }
}
