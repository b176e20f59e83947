//! Reading the session cookie from a request and writing `Set-Cookie`.
//!
//! Reading never fails: a missing, malformed, oversized, badly signed or
//! non-UTF-8 cookie simply means "no session", and the request goes on with a
//! fresh one. When several cookies of our name arrive (a stale one from
//! another path, say), the well-formed ones are tried in order (browsers send
//! the most specific path first) and the first that names a live session wins.

use std::fmt::Write as _;
use std::time::Duration;

use cookie::{Cookie, CookieJar, Key, SameSite};
use http::header::{COOKIE, HeaderMap, HeaderValue};

use crate::Id;
use crate::id::ENCODED_ID_LEN;

/// At most this many session cookies of our name are tried, in order, per
/// request (each may cost a store lookup).
pub(crate) const MAX_CANDIDATES: usize = 3;

/// Length of the base64 HMAC-SHA256 tag the cookie crate prepends to a signed value.
const SIGNATURE_LEN: usize = 44;

/// The longest floor part of a cookie value: `.` and the 20 digits of `u64::MAX`.
const MAX_FLOOR_LEN: usize = 21;

/// A session id read from a cookie, with the version floor the cookie
/// carries, if any (see [`replica`](crate::replica)): the value is `ID` or
/// `ID.V`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CookieId {
    pub(crate) id: Id,
    pub(crate) floor: Option<u64>,
}

impl CookieId {
    /// Parses a cookie value (after any signature is checked): an id,
    /// then optionally `.` and a floor. A floor that does not parse is
    /// ignored; the id still counts.
    fn parse(value: &str) -> Option<Self> {
        let (id, floor) = match value.split_once('.') {
            Some((id, floor)) => (id, parse_floor(floor)),
            None => (value, None),
        };
        Some(Self {
            id: Id::decode(id)?,
            floor,
        })
    }
}

fn parse_floor(floor: &str) -> Option<u64> {
    if floor.is_empty()
        || floor.len() > MAX_FLOOR_LEN - 1
        || !floor.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    floor.parse().ok()
}

/// The cookie value for `id` with `floor`: `ID` or `ID.V`.
fn plain_value(id: &Id, floor: Option<u64>) -> String {
    let mut value = id.encode();
    if let Some(floor) = floor {
        // Writing to a `String` cannot fail.
        let _ = write!(value, ".{floor}");
    }
    value
}

/// The `__Host-` prefix: the browser only accepts such a cookie if it is
/// Secure, has `Path=/` and no `Domain`, so no subdomain can plant or read it.
pub(crate) const HOST_PREFIX: &str = "__Host-";

#[derive(Clone, Debug)]
pub(crate) struct CookieConfig {
    pub(crate) name: String,
    pub(crate) domain: Option<String>,
    pub(crate) path: String,
    pub(crate) secure: bool,
    pub(crate) http_only: bool,
    pub(crate) same_site: SameSite,
    pub(crate) host_prefix: bool,
    /// Signing keys: the first signs, all verify. Empty: cookies are unsigned.
    pub(crate) keys: Vec<Key>,
    /// The settings above rendered as `Set-Cookie` attributes (see
    /// [`render_attributes`](Self::render_attributes)); made again by the
    /// layer whenever a setting changes.
    pub(crate) attributes: String,
}

impl Default for CookieConfig {
    fn default() -> Self {
        let mut config = Self {
            name: crate::layer::DEFAULT_COOKIE_NAME.to_owned(),
            domain: None,
            path: "/".to_owned(),
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            host_prefix: false,
            keys: Vec::new(),
            attributes: String::new(),
        };
        config.attributes = config.render_attributes();
        config
    }
}

impl CookieConfig {
    /// The name on the wire, with the `__Host-` prefix when enabled.
    pub(crate) fn wire_name(&self) -> String {
        if self.host_prefix {
            format!("{HOST_PREFIX}{}", self.name)
        } else {
            self.name.clone()
        }
    }

    /// The session ids named by the request's cookies, in order: every
    /// well-formed cookie of our name (that verifies under one of the keys,
    /// when signing), at most [`MAX_CANDIDATES`], without repeats (an id
    /// sent twice keeps the higher floor).
    ///
    /// Parsing is on bytes: another cookie with raw UTF-8 or other non-ASCII
    /// bytes in the same header (browsers send those as they are) must not
    /// hide ours.
    pub(crate) fn read(&self, headers: &HeaderMap, wire_name: &str) -> Vec<CookieId> {
        let mut ids = Vec::new();
        let pairs = headers
            .get_all(COOKIE)
            .iter()
            .flat_map(|header| header.as_bytes().split(|&b| b == b';'));
        for pair in pairs {
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if pair[..eq].trim_ascii() != wire_name.as_bytes() {
                continue;
            }
            let Ok(value) = std::str::from_utf8(pair[eq + 1..].trim_ascii()) else {
                continue;
            };
            let Some(read) = self.verify(wire_name, strip_quotes(value)) else {
                continue;
            };
            if let Some(seen) = ids
                .iter_mut()
                .find(|seen: &&mut CookieId| seen.id == read.id)
            {
                seen.floor = seen.floor.max(read.floor);
                continue;
            }
            ids.push(read);
            if ids.len() == MAX_CANDIDATES {
                break;
            }
        }
        ids
    }

    fn verify(&self, wire_name: &str, value: &str) -> Option<CookieId> {
        if self.keys.is_empty() {
            return CookieId::parse(value);
        }
        let bare = SIGNATURE_LEN + ENCODED_ID_LEN;
        if value.len() < bare || value.len() > bare + MAX_FLOOR_LEN {
            return None;
        }
        let jar = CookieJar::new();
        self.keys.iter().find_map(|key| {
            let cookie = Cookie::new(wire_name.to_owned(), value.to_owned());
            // The signature covers the whole value, floor included.
            let verified = jar.signed(key).verify(cookie)?;
            CookieId::parse(verified.value())
        })
    }

    /// `Set-Cookie` for `id`, with the version floor `floor` when `Some`
    /// (see [`replica`](crate::replica)); `max_age` makes it persistent.
    pub(crate) fn set(
        &self,
        wire_name: &str,
        id: &Id,
        floor: Option<u64>,
        max_age: Option<Duration>,
    ) -> HeaderValue {
        let value = match self.keys.first() {
            None => plain_value(id, floor),
            Some(key) => {
                let mut jar = CookieJar::new();
                jar.signed_mut(key)
                    .add(Cookie::new(wire_name.to_owned(), plain_value(id, floor)));
                jar.get(wire_name)
                    .map(|c| c.value().to_owned())
                    .unwrap_or_default()
            }
        };
        // `name=value`, then the attributes as the cookie crate renders them
        // (`attributes`), then `Max-Age`, which it renders last: the same
        // header, without building a `Cookie` per response.
        let attributes = &self.attributes;
        let mut header =
            String::with_capacity(wire_name.len() + value.len() + attributes.len() + 24);
        header.push_str(wire_name);
        header.push('=');
        header.push_str(&value);
        header.push_str(attributes);
        if let Some(max_age) = max_age {
            let seconds = time::Duration::try_from(max_age)
                .unwrap_or(time::Duration::MAX)
                .whole_seconds();
            // Writing to a `String` cannot fail.
            let _ = write!(header, "; Max-Age={seconds}");
        }
        HeaderValue::try_from(header).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The attributes of every `Set-Cookie` that sets the session cookie,
    /// as the cookie crate renders them after `name=value`.
    pub(crate) fn render_attributes(&self) -> String {
        let rendered = self.build("x", String::new()).to_string();
        rendered.strip_prefix("x=").unwrap_or_default().to_owned()
    }

    /// `Set-Cookie` that makes the browser drop the session cookie.
    pub(crate) fn removal(&self, wire_name: &str) -> HeaderValue {
        let mut cookie = self.build(wire_name, String::new());
        cookie.make_removal();
        header_value(&cookie)
    }

    fn build(&self, wire_name: &str, value: String) -> Cookie<'static> {
        let mut cookie = Cookie::new(wire_name.to_owned(), value);
        cookie.set_http_only(self.http_only);
        cookie.set_same_site(self.same_site);
        if self.host_prefix {
            cookie.set_secure(true);
            cookie.set_path("/");
        } else {
            cookie.set_secure(self.secure);
            cookie.set_path(self.path.clone());
            if let Some(domain) = &self.domain {
                cookie.set_domain(domain.clone());
            }
        }
        cookie
    }
}

/// A cookie setting that cannot travel in a `Set-Cookie` header. The layer
/// refuses it when it is configured, rather than sending an empty header
/// that would log the user out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CookieConfigError {
    /// The name is empty or not an RFC 6265 token (letters, digits and
    /// ``!#$%&'*+-.^_`|~``).
    #[error("cookie name {0:?} is not an RFC 6265 token")]
    Name(String),
    /// The domain is empty or holds a character other than ASCII letters,
    /// digits, `-` and `.`.
    #[error("cookie domain {0:?} is not a host name")]
    Domain(String),
    /// The path does not start with `/`, or holds `;`, a control character
    /// or a non-ASCII one.
    #[error("cookie path {0:?} is not a valid cookie path")]
    Path(String),
}

pub(crate) fn check_name(name: &str) -> Result<(), CookieConfigError> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(tchar) {
        return Err(CookieConfigError::Name(name.to_owned()));
    }
    Ok(())
}

pub(crate) fn check_domain(domain: &str) -> Result<(), CookieConfigError> {
    let host = domain.strip_prefix('.').unwrap_or(domain);
    let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.';
    if host.is_empty() || !host.bytes().all(ok) {
        return Err(CookieConfigError::Domain(domain.to_owned()));
    }
    Ok(())
}

pub(crate) fn check_path(path: &str) -> Result<(), CookieConfigError> {
    let ok = |b: u8| (0x20..0x7f).contains(&b) && b != b';';
    if !path.starts_with('/') || !path.bytes().all(ok) {
        return Err(CookieConfigError::Path(path.to_owned()));
    }
    Ok(())
}

fn strip_quotes(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

fn header_value(cookie: &Cookie<'_>) -> HeaderValue {
    // The name, domain and path were checked when the layer was configured
    // (`check_name` and friends), values are base64: the cookie crate's
    // rendering is always a valid header value. The fallback only keeps
    // this free of panics.
    HeaderValue::try_from(cookie.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `Set-Cookie` header made by hand is the one the cookie crate
    /// renders, for every combination of settings.
    #[test]
    fn set_cookie_header_is_the_cookie_crates() {
        let id = Id::random().unwrap();
        for same_site in [SameSite::Lax, SameSite::Strict, SameSite::None] {
            for (secure, http_only, host_prefix) in [
                (true, true, false),
                (false, false, false),
                (true, true, true),
                (false, true, false),
            ] {
                for domain in [None, Some("example.com".to_owned())] {
                    let mut config = CookieConfig {
                        secure,
                        http_only,
                        same_site,
                        host_prefix,
                        domain: domain.clone(),
                        path: "/app".to_owned(),
                        ..CookieConfig::default()
                    };
                    config.attributes = config.render_attributes();
                    let name = config.wire_name();
                    for max_age in [None, Some(Duration::from_secs(90 * 86_400))] {
                        let mut cookie = config.build(&name, id.encode());
                        if let Some(max_age) = max_age {
                            cookie.set_max_age(time::Duration::try_from(max_age).unwrap());
                        }
                        assert_eq!(
                            config.set(&name, &id, None, max_age),
                            header_value(&cookie),
                            "{same_site:?} {secure} {http_only} {host_prefix} {domain:?} {max_age:?}"
                        );
                    }
                }
            }
        }
    }

    /// The ids of what `read` found.
    fn ids(read: Vec<CookieId>) -> Vec<Id> {
        read.into_iter().map(|c| c.id).collect()
    }

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(COOKIE, HeaderValue::from_bytes(v).unwrap());
        }
        map
    }

    #[test]
    fn cookie_settings_are_checked() {
        for name in ["session", "sid", "__Host-x", "a.b-c_d"] {
            assert_eq!(check_name(name), Ok(()), "{name}");
        }
        for name in ["", "my session", "a;b", "a=b", "caf\u{e9}", "a\"b", "(x)"] {
            assert!(check_name(name).is_err(), "{name:?}");
        }
        for domain in ["example.com", ".example.com", "a-b.c1.test", "localhost"] {
            assert_eq!(check_domain(domain), Ok(()), "{domain}");
        }
        for domain in [
            "",
            ".",
            "exa mple.com",
            "a;b",
            "example.com\r\n",
            "b\u{fc}cher.de",
        ] {
            assert!(check_domain(domain).is_err(), "{domain:?}");
        }
        for path in ["/", "/app", "/a/b-c"] {
            assert_eq!(check_path(path), Ok(()), "{path}");
        }
        for path in ["", "app", "/a;b", "/a\nb", "/\u{e9}"] {
            assert!(check_path(path).is_err(), "{path:?}");
        }
    }

    #[test]
    fn reads_our_cookie_among_others() {
        let config = CookieConfig::default();
        let id = Id::random().unwrap();
        let header = format!("a=b; session={}; c=d", id.encode());
        let got = ids(config.read(&headers(&[header.as_bytes()]), "session"));
        assert_eq!(got, vec![id]);
    }

    #[test]
    fn non_ascii_neighbours_do_not_hide_our_cookie() {
        let config = CookieConfig::default();
        let (a, b) = (Id::random().unwrap(), Id::random().unwrap());
        let raw = format!("name=Jos\u{e9}; session={}; x=\u{1F36A}", a.encode());
        let mut raw = raw.into_bytes();
        raw.extend_from_slice(b"; junk=\xff\xfe");
        let second = format!("session={}; session={}", b.encode(), a.encode());
        let got = ids(config.read(&headers(&[&raw, second.as_bytes()]), "session"));
        assert_eq!(got, vec![a, b], "in order, without repeats");
    }

    #[test]
    fn garbage_reads_as_no_session() {
        let config = CookieConfig::default();
        let big = format!("session={}", "A".repeat(8192));
        for raw in [
            &b"session="[..],
            b"session",
            b"session=not base64!!",
            b"session=AAAAAAAAAAAAAAAAAAAAA",
            b"session=AAAAAAAAAAAAAAAAAAAAAAA",
            b"session=\xff\xfe\xfdAAAAAAAAAAAAAAAAAAA",
            big.as_bytes(),
            b";;;==;=",
        ] {
            assert_eq!(config.read(&headers(&[raw]), "session"), vec![], "{raw:?}");
        }
    }

    #[test]
    fn signed_cookie_verifies_with_any_listed_key() {
        let old = Key::generate();
        let new = Key::generate();
        let id = Id::random().unwrap();
        let signer = CookieConfig {
            keys: vec![old.clone()],
            ..CookieConfig::default()
        };
        let set = signer.set("session", &id, None, None);
        let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
        let rotated = CookieConfig {
            keys: vec![new.clone(), old],
            ..CookieConfig::default()
        };
        assert_eq!(
            ids(rotated.read(&headers(&[pair.as_bytes()]), "session")),
            vec![id]
        );
        let dropped = CookieConfig {
            keys: vec![new],
            ..CookieConfig::default()
        };
        assert_eq!(
            dropped.read(&headers(&[pair.as_bytes()]), "session"),
            vec![]
        );
        // The unsigned id alone does not pass a signing configuration.
        let bare = format!("session={}", id.encode());
        assert_eq!(
            rotated.read(&headers(&[bare.as_bytes()]), "session"),
            vec![]
        );
    }

    #[test]
    fn default_flags_are_secure_httponly_lax() {
        let config = CookieConfig::default();
        let id = Id::random().unwrap();
        let set = config.set("session", &id, None, None);
        let set = set.to_str().unwrap();
        assert!(set.contains("Secure"), "{set}");
        assert!(set.contains("HttpOnly"), "{set}");
        assert!(set.contains("SameSite=Lax"), "{set}");
        assert!(set.contains("Path=/"), "{set}");
        assert!(!set.contains("Max-Age"), "{set}");
    }
    /// The value `set` puts in a `Set-Cookie`, as a `Cookie` header pair.
    fn pair_of(config: &CookieConfig, id: &Id, floor: Option<u64>) -> String {
        let set = config.set("session", id, floor, None);
        set.to_str().unwrap().split(';').next().unwrap().to_owned()
    }

    /// `ID` carries no floor, `ID.V` floor `V` (0 included), signed or not.
    #[test]
    fn floor_round_trips_and_zero_is_not_none() {
        let id = Id::random().unwrap();
        let signed = CookieConfig {
            keys: vec![Key::generate()],
            ..CookieConfig::default()
        };
        for config in [CookieConfig::default(), signed] {
            for floor in [None, Some(0), Some(7), Some(u64::MAX)] {
                let pair = pair_of(&config, &id, floor);
                let got = config.read(&headers(&[pair.as_bytes()]), "session");
                assert_eq!(got, vec![CookieId { id, floor }], "{pair}");
            }
        }
        let plain = CookieConfig::default();
        assert_eq!(
            pair_of(&plain, &id, None),
            format!("session={}", id.encode())
        );
        assert_eq!(
            pair_of(&plain, &id, Some(0)),
            format!("session={}.0", id.encode())
        );
    }

    /// A floor that does not parse is ignored; the id still counts.
    #[test]
    fn malformed_floor_keeps_the_id_and_drops_the_floor() {
        let config = CookieConfig::default();
        let id = Id::random().unwrap();
        let e = id.encode();
        for value in [
            format!("{e}."),
            format!("{e}.x"),
            format!("{e}.-1"),
            format!("{e}.+1"),
            format!("{e}.1.2"),
            format!("{e}. 1"),
            format!("{e}.18446744073709551616"),
            format!("{e}.{}", "9".repeat(400)),
        ] {
            let raw = format!("session={value}");
            let got = config.read(&headers(&[raw.as_bytes()]), "session");
            assert_eq!(got, vec![CookieId { id, floor: None }], "{value}");
        }
        // A bad id is no session, whatever the floor.
        for raw in [
            "session=AAAA.3",
            "session=.3",
            "session=AAAAAAAAAAAAAAAAAAAAAAA.3",
        ] {
            assert_eq!(
                config.read(&headers(&[raw.as_bytes()]), "session"),
                vec![],
                "{raw}"
            );
        }
    }

    /// The signature covers the floor: a signed cookie whose floor was
    /// changed, added or removed is no session at all.
    #[test]
    fn signed_floor_cannot_be_changed() {
        let config = CookieConfig {
            keys: vec![Key::generate()],
            ..CookieConfig::default()
        };
        let id = Id::random().unwrap();
        let pair = pair_of(&config, &id, Some(4));
        let tampered = [
            pair.replace(".4", ".5"),
            pair.replace(".4", ""),
            format!("{pair}1"),
        ];
        for raw in tampered {
            assert_eq!(
                config.read(&headers(&[raw.as_bytes()]), "session"),
                vec![],
                "{raw}"
            );
        }
        let bare = pair_of(&config, &id, None);
        assert_eq!(
            config.read(&headers(&[format!("{bare}.4").as_bytes()]), "session"),
            vec![],
            "a floor appended to a signed value without one"
        );
    }

    /// One id sent twice with different floors is one candidate with the higher floor.
    #[test]
    fn repeated_id_keeps_the_higher_floor() {
        let config = CookieConfig::default();
        let id = Id::random().unwrap();
        let e = id.encode();
        let raw = format!("session={e}.2; session={e}.9; session={e}");
        let got = config.read(&headers(&[raw.as_bytes()]), "session");
        assert_eq!(got, vec![CookieId { id, floor: Some(9) }]);
    }
}
