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
/// The bytes are read from the OS in batches (see [`Id::random`]); every id
/// is 16 bytes the OS generator produced, used once.
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
    /// The OS is asked for 32 ids' worth of bytes at once, kept per thread: one `getrandom` call per 32 new sessions instead of
    /// one per session, which was a third of a new session's system calls.
    /// Each id's 16 bytes are wiped from the batch as they are handed out,
    /// so no id stays behind in it. See `os_random` for why a process that
    /// forks after drawing ids still never puts two clients in one session.
    ///
    /// # Errors
    ///
    /// [`RandomnessError`] if the OS generator is unavailable (it practically
    /// never is; the error exists so that the layer answers instead of panicking).
    pub fn random() -> Result<Self, RandomnessError> {
        os_random::take().map(Self)
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

/// Bytes from the operating system's CSPRNG, fetched a batch at a time.
///
/// Why batches are safe here:
/// - Every byte comes from the OS generator and is handed out once, then
///   zeroed in the batch.
/// - A batch is per thread, so no lock is taken and no two threads share
///   bytes.
/// - A forked child starts with a copy of its parent's batch for the
///   forking thread, so it could draw an id the parent also draws. That
///   never joins two clients in one session: a new session is stored with
///   the store's insert-if-absent `create`, which refuses a key that exists,
///   and the layer then draws again (`commit::create`). Processes that do not
///   share a store (the memory store) do not share sessions either. (Tokio's
///   worker threads do not survive a fork, so a forked server draws its ids on
///   threads it starts itself, with fresh batches.)
mod os_random {
    use std::cell::RefCell;

    use super::RandomnessError;

    /// Ids per batch.
    pub(super) const BATCH: usize = 32;

    struct Batch {
        bytes: [u8; 16 * BATCH],
        /// Ids already taken from `bytes`.
        taken: usize,
    }

    thread_local! {
        static BATCH_OF_THREAD: RefCell<Batch> = const {
            RefCell::new(Batch {
                bytes: [0; 16 * BATCH],
                taken: BATCH,
            })
        };
    }

    /// The next 16 bytes of this thread's batch, refilling it from the OS
    /// when it is used up.
    pub(super) fn take() -> Result<[u8; 16], RandomnessError> {
        BATCH_OF_THREAD.with_borrow_mut(|batch| {
            if batch.taken == BATCH {
                getrandom::getrandom(&mut batch.bytes).map_err(|e| RandomnessError {
                    code: e.code().get(),
                })?;
                batch.taken = 0;
            }
            let slot = &mut batch.bytes[16 * batch.taken..16 * (batch.taken + 1)];
            let mut id = [0u8; 16];
            id.copy_from_slice(slot);
            slot.fill(0);
            batch.taken += 1;
            Ok(id)
        })
    }

    /// This thread's batch as it stands, and how many ids were taken from it.
    #[cfg(test)]
    pub(super) fn peek() -> ([u8; 16 * BATCH], usize) {
        BATCH_OF_THREAD.with_borrow(|batch| (batch.bytes, batch.taken))
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
    fn ids_stay_distinct_across_many_batches() {
        let draws = 100 * os_random::BATCH + 7;
        let ids: std::collections::HashSet<[u8; 16]> =
            (0..draws).map(|_| Id::random().unwrap().0).collect();
        assert_eq!(ids.len(), draws, "an id was handed out twice");
    }

    #[test]
    fn a_taken_id_is_wiped_from_the_batch_and_the_rest_is_random() {
        // Start a fresh batch, then take two ids from it.
        while os_random::peek().1 != os_random::BATCH {
            Id::random().unwrap();
        }
        let first = Id::random().unwrap();
        let second = Id::random().unwrap();
        let (bytes, taken) = os_random::peek();
        assert_eq!(taken, 2);
        assert!(
            bytes[..32].iter().all(|&b| b == 0),
            "taken ids stay in the batch"
        );
        assert_ne!(first.0, [0; 16]);
        assert_ne!(second.0, [0; 16]);
        // Each untaken id is 16 bytes from the OS: all zero has odds 2^-128.
        for slot in bytes[32..].chunks(16) {
            assert_ne!(slot, [0u8; 16], "the batch was not filled");
            assert!(slot != first.0 && slot != second.0);
        }
    }

    #[test]
    fn threads_draw_from_their_own_batches() {
        let here: Vec<[u8; 16]> = (0..8).map(|_| Id::random().unwrap().0).collect();
        let there = std::thread::spawn(|| {
            (0..8)
                .map(|_| Id::random().unwrap().0)
                .collect::<Vec<[u8; 16]>>()
        })
        .join()
        .unwrap();
        assert!(here.iter().all(|id| !there.contains(id)));
    }

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
