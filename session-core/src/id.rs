//! Session ids (the browser's secret) and store keys (what a store sees).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};

/// Length of an encoded [`Id`]: 16 bytes as unpadded base64url.
pub const ENCODED_ID_LEN: usize = 22;

/// Length of an encoded [`StoreKey`]: 32 bytes of SHA-256 as unpadded base64url.
pub const STORE_KEY_LEN: usize = 43;

/// A session id: 128 bits from the operating system's CSPRNG.
///
/// The id is the bearer token a browser holds in its cookie. It is a secret:
/// `Id` has no `Display`, its `Debug` prints no part of it, and no store ever
/// sees it. Stores are keyed by its [`StoreKey`] (a SHA-256 hash), so a dump of
/// Redis or Postgres yields no usable session token.
///
/// ```
/// use session_core::Id;
///
/// let id = Id::random().expect("the OS RNG works");
/// let cookie_value = id.encode();
/// assert_eq!(cookie_value.len(), 22);
/// assert_eq!(Id::decode(&cookie_value), Some(id));
/// assert_eq!(format!("{id:?}"), "Id(<redacted>)");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Id([u8; 16]);

/// The operating system's random number generator failed.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed (code {code})")]
pub struct RandomnessError {
    code: u32,
}

impl Id {
    /// Draws a new id from the operating system's CSPRNG.
    ///
    /// # Errors
    ///
    /// [`RandomnessError`] if the OS generator is unavailable (it practically
    /// never is; the error exists so that the layer answers instead of panicking).
    pub fn random() -> Result<Self, RandomnessError> {
        let mut bytes = [0u8; 16];
        getrandom::getrandom(&mut bytes).map_err(|e| RandomnessError {
            code: e.code().get(),
        })?;
        Ok(Self(bytes))
    }

    /// The id as it travels in a cookie: 22 characters of unpadded base64url.
    ///
    /// This is the secret itself: never log it.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// Parses an encoded id. Anything that is not exactly 22 characters of
    /// canonical unpadded base64url gives `None`.
    pub fn decode(value: &str) -> Option<Self> {
        if value.len() != ENCODED_ID_LEN {
            return None;
        }
        let mut bytes = [0u8; 16];
        // The decoder rejects non-zero trailing bits, so each id has exactly one encoding.
        match URL_SAFE_NO_PAD.decode_slice(value, &mut bytes) {
            Ok(16) => Some(Self(bytes)),
            _ => None,
        }
    }

    /// The key under which a store keeps this session: SHA-256 of the id.
    pub fn store_key(&self) -> StoreKey {
        StoreKey(URL_SAFE_NO_PAD.encode(Sha256::digest(self.0)))
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Id(<redacted>)")
    }
}

/// The key a store keeps a session under: SHA-256 of the session [`Id`], as
/// 43 characters of unpadded base64url.
///
/// A store key cannot be turned back into an id, so it is safe to keep at rest,
/// to show on an "active sessions" page and to log (logs use [`StoreKey::short`]).
///
/// ```
/// use session_core::{Id, StoreKey};
///
/// let key = Id::random().unwrap().store_key();
/// assert_eq!(key.as_str().len(), 43);
/// assert_eq!(StoreKey::parse(key.as_str()), Some(key.clone()));
/// assert_eq!(key.short().len(), 8);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreKey(String);

impl StoreKey {
    /// Parses a store key read back from a store (for example from a principal
    /// index). Gives `None` unless `value` has the exact shape of a store key.
    pub fn parse(value: &str) -> Option<Self> {
        let well_formed = value.len() == STORE_KEY_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        well_formed.then(|| Self(value.to_owned()))
    }

    /// The key [`SessionStore::ping`](crate::SessionStore::ping) reads: 43
    /// dashes, well formed but never the digest of an id.
    pub(crate) fn probe() -> Self {
        Self("-".repeat(STORE_KEY_LEN))
    }

    /// The key as a string (43 characters of base64url).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 8 characters: enough to correlate log lines, useless to an attacker.
    pub fn short(&self) -> &str {
        &self.0[..8]
    }
}

impl fmt::Display for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreKey({}…)", self.short())
    }
}

impl AsRef<str> for StoreKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_round_trip() {
        let a = Id::random().unwrap();
        let b = Id::random().unwrap();
        assert_ne!(a, b);
        let encoded = a.encode();
        assert_eq!(encoded.len(), ENCODED_ID_LEN);
        assert!(
            encoded
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(Id::decode(&encoded), Some(a));
    }

    #[test]
    fn decode_rejects_wrong_shapes() {
        let good = Id::random().unwrap().encode();
        for bad in [
            "",
            &good[..21],
            &format!("{good}A"),
            "!!!!!!!!!!!!!!!!!!!!!!",
            "AAAAAAAAAAAAAAAAAAAAA=",
            "AAAAAAAAAAAAAAAAAAAAA/",
            // Non-canonical: the last character carries non-zero padding bits.
            "AAAAAAAAAAAAAAAAAAAAAB",
            "ÄAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(Id::decode(bad), None, "{bad:?} must not decode");
        }
    }

    #[test]
    fn debug_redacts_the_id() {
        let id = Id::random().unwrap();
        assert_eq!(format!("{id:?}"), "Id(<redacted>)");
    }

    #[test]
    fn store_key_is_sha256_of_the_id_bytes() {
        let id = Id::decode("AAAAAAAAAAAAAAAAAAAAAA").unwrap();
        // SHA-256 of sixteen zero bytes.
        assert_eq!(
            id.store_key().as_str(),
            "N0cI__dxndWXnsh11WzSKG9tPPfsMXo7JWMqqyjsN7s"
        );
        assert!(!id.store_key().as_str().contains(&id.encode()));
        assert_eq!(StoreKey::parse("short"), None);
        assert_eq!(StoreKey::parse(&"+".repeat(43)), None);
    }
}
