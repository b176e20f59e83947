//! The stored form of a session: data, version, deadlines, principal.
//!
//! # Encoding (format 1)
//!
//! Stores that keep bytes use [`Record::encode`] / [`Record::decode`]. The
//! encoding is one JSON object; its `f` field is the format tag, so a later
//! format can be told apart and read alongside this one:
//!
//! | field | meaning                                         | JSON type          |
//! |-------|-------------------------------------------------|--------------------|
//! | `f`   | format tag, `1`                                 | number             |
//! | `v`   | version (compare-and-set counter)               | number (u64)       |
//! | `c`   | created at, Unix milliseconds                   | number (i64)       |
//! | `a`   | last access, Unix milliseconds                  | number (i64)       |
//! | `i`   | idle deadline, Unix milliseconds                | number (i64)       |
//! | `x`   | absolute deadline, Unix milliseconds            | number (i64)       |
//! | `t`   | idle timeout, milliseconds                      | number (u64)       |
//! | `p`   | persistent cookie (remember me)                 | boolean            |
//! | `u`   | principal, or `null`                            | string or null     |
//! | `d`   | the session data: string keys to JSON values    | object             |
//!
//! A record that does not decode is treated by every store as absent (and
//! logged with its store key's short prefix): a corrupt or foreign value never
//! becomes a 500 or a panic. See [`decode_or_log`].

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::StoreKey;

/// Session data: string keys to JSON values.
pub type Data = serde_json::Map<String, serde_json::Value>;

/// The current format tag written by [`Record::encode`].
pub const FORMAT: u8 = 1;

/// How long a session lives: an idle timeout and an absolute lifetime together
/// (OWASP), and whether the cookie outlives the browser session.
///
/// A session expires at whichever comes first: `idle_timeout` after its last
/// use, or `absolute_lifetime` after it was created. A persistent ("remember
/// me") session's cookie carries a `Max-Age` reaching to the absolute deadline;
/// otherwise the cookie is a browser-session cookie.
///
/// ```
/// use std::time::Duration;
/// use session_core::Expiry;
///
/// let remember_me = Expiry::new(Duration::from_secs(30 * 86_400), Duration::from_secs(90 * 86_400))
///     .persistent(true);
/// assert!(remember_me.is_persistent());
/// assert_eq!(Expiry::default().idle_timeout(), Expiry::DEFAULT_IDLE_TIMEOUT);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiry {
    idle_timeout: Duration,
    absolute_lifetime: Duration,
    persistent: bool,
}

impl Expiry {
    /// Default idle timeout: 24 hours without a request ends the session.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
    /// Default absolute lifetime: 7 days after creation the session ends, however active.
    pub const DEFAULT_ABSOLUTE_LIFETIME: Duration = Duration::from_secs(7 * 24 * 60 * 60);

    /// An expiry with the given idle timeout and absolute lifetime and a
    /// browser-session cookie.
    pub const fn new(idle_timeout: Duration, absolute_lifetime: Duration) -> Self {
        Self {
            idle_timeout,
            absolute_lifetime,
            persistent: false,
        }
    }

    /// Whether the cookie persists across browser restarts (until the absolute deadline).
    #[must_use]
    pub const fn persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// The idle timeout.
    pub const fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// The absolute lifetime.
    pub const fn absolute_lifetime(&self) -> Duration {
        self.absolute_lifetime
    }

    /// Whether the cookie is persistent.
    pub const fn is_persistent(&self) -> bool {
        self.persistent
    }
}

impl Default for Expiry {
    fn default() -> Self {
        Self::new(Self::DEFAULT_IDLE_TIMEOUT, Self::DEFAULT_ABSOLUTE_LIFETIME)
    }
}

/// A session as a store keeps it.
///
/// Stores copy records in and out: a handler never mutates a stored value in
/// place. `version` is the compare-and-set counter: every successful save
/// writes `expected_version + 1`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Record {
    /// The session data.
    pub data: Data,
    /// Compare-and-set counter; `0` for a record that was never saved over.
    pub version: u64,
    /// When the session was created.
    pub created_at: OffsetDateTime,
    /// When the session was last saved or touched.
    pub last_access: OffsetDateTime,
    /// The session ends at this instant unless it is used again (touch or save).
    pub idle_deadline: OffsetDateTime,
    /// The session ends at this instant however active it is.
    pub absolute_deadline: OffsetDateTime,
    /// The user this session belongs to, for the principal index.
    pub principal: Option<String>,
    /// This session's idle timeout (the layer's default, or one set by `set_expiry`).
    pub idle_timeout: Duration,
    /// Whether this session's cookie is persistent.
    pub persistent: bool,
}

/// An empty record at the Unix epoch (so: expired), version 0. Backends that
/// decode a record from their own fields start from this and fill every field.
impl Default for Record {
    fn default() -> Self {
        Self {
            data: Data::new(),
            version: 0,
            created_at: OffsetDateTime::UNIX_EPOCH,
            last_access: OffsetDateTime::UNIX_EPOCH,
            idle_deadline: OffsetDateTime::UNIX_EPOCH,
            absolute_deadline: OffsetDateTime::UNIX_EPOCH,
            principal: None,
            idle_timeout: Duration::ZERO,
            persistent: false,
        }
    }
}

/// The current time truncated to whole milliseconds, the precision records keep.
pub fn now() -> OffsetDateTime {
    // One calendar conversion, from the system clock's milliseconds (a
    // clock before 1970 reads as the epoch).
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        });
    from_unix_ms(ms)
}

fn truncate_ms(t: OffsetDateTime) -> OffsetDateTime {
    if t.nanosecond().is_multiple_of(1_000_000) {
        // Already whole milliseconds (every time `now` gives).
        return t;
    }
    from_unix_ms(to_unix_ms(t))
}

/// Unix milliseconds of `t`, rounded down to the millisecond, the
/// precision records keep (for backends that store timestamps as
/// integers).
///
/// ```
/// use session_core::record::{from_unix_ms, to_unix_ms};
///
/// assert_eq!(to_unix_ms(from_unix_ms(1_767_225_600_123)), 1_767_225_600_123);
/// assert_eq!(to_unix_ms(from_unix_ms(-1)), -1);
/// ```
pub fn to_unix_ms(t: OffsetDateTime) -> i64 {
    // Seconds and the millisecond within them: i64 arithmetic only (the
    // nanosecond route goes through i128 division, which is far slower).
    t.unix_timestamp() * 1000 + i64::from(t.millisecond())
}

/// The instant `ms` Unix milliseconds (the epoch if out of range).
pub fn from_unix_ms(ms: i64) -> OffsetDateTime {
    checked_from_unix_ms(ms).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The instant `ms` Unix milliseconds, or `None` if no `OffsetDateTime`
/// can hold it (for decoders, which treat that as malformed).
///
/// ```
/// use session_core::record::checked_from_unix_ms;
///
/// let t = checked_from_unix_ms(1_767_225_600_123).unwrap();
/// assert_eq!(t.millisecond(), 123);
/// assert!(checked_from_unix_ms(i64::MAX).is_none());
/// ```
pub fn checked_from_unix_ms(ms: i64) -> Option<OffsetDateTime> {
    // Whole seconds, then the millisecond set directly: one calendar
    // conversion and no i128 arithmetic.
    let millisecond = u16::try_from(ms.rem_euclid(1000)).ok()?;
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()?
        .replace_millisecond(millisecond)
        .ok()
}

/// `t + d`, saturating instead of overflowing for absurd durations.
pub(crate) fn add(t: OffsetDateTime, d: Duration) -> OffsetDateTime {
    t.checked_add(time::Duration::try_from(d).unwrap_or(time::Duration::MAX))
        .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc())
}

impl Record {
    /// A fresh, empty record created at `now` with the given expiry.
    ///
    /// ```
    /// use session_core::{Expiry, Record, record::now};
    ///
    /// let record = Record::new(now(), &Expiry::default());
    /// assert_eq!(record.version, 0);
    /// assert!(record.data.is_empty());
    /// assert!(!record.is_expired(now()));
    /// ```
    pub fn new(now: OffsetDateTime, expiry: &Expiry) -> Self {
        let now = truncate_ms(now);
        let mut record = Self {
            data: Data::new(),
            version: 0,
            created_at: now,
            last_access: now,
            idle_deadline: now,
            absolute_deadline: now,
            principal: None,
            idle_timeout: expiry.idle_timeout,
            persistent: expiry.persistent,
        };
        record.set_expiry(now, expiry);
        record
    }

    /// The instant this record expires: the earlier of its two deadlines.
    pub fn expires_at(&self) -> OffsetDateTime {
        self.idle_deadline.min(self.absolute_deadline)
    }

    /// Whether the record has expired at `now`. Stores never return such a record.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at() <= now
    }

    /// Time left until expiry at `now` (zero when expired); what a store with
    /// native TTLs uses as the TTL.
    pub fn ttl(&self, now: OffsetDateTime) -> Duration {
        Duration::try_from(self.expires_at() - now).unwrap_or(Duration::ZERO)
    }

    /// Applies an expiry policy: the idle deadline restarts at `now`, the
    /// absolute deadline is counted from creation.
    pub fn set_expiry(&mut self, now: OffsetDateTime, expiry: &Expiry) {
        self.idle_timeout = expiry.idle_timeout;
        self.persistent = expiry.persistent;
        self.absolute_deadline = add(self.created_at, expiry.absolute_lifetime);
        self.mark_used(now);
    }

    /// Records a use at `now`: last access is `now` and the idle deadline moves
    /// to `now + idle_timeout`, never past the absolute deadline.
    pub fn mark_used(&mut self, now: OffsetDateTime) {
        let now = truncate_ms(now);
        self.last_access = now;
        self.idle_deadline = truncate_ms(add(now, self.idle_timeout)).min(self.absolute_deadline);
    }

    /// Encodes the record in the current format (see the [module docs](self)).
    ///
    /// # Errors
    ///
    /// A value in the data that JSON cannot represent (practically never: the
    /// data already consists of JSON values).
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&WireRef {
            f: FORMAT,
            v: self.version,
            c: to_unix_ms(self.created_at),
            a: to_unix_ms(self.last_access),
            i: to_unix_ms(self.idle_deadline),
            x: to_unix_ms(self.absolute_deadline),
            t: u64::try_from(self.idle_timeout.as_millis()).unwrap_or(u64::MAX),
            p: self.persistent,
            u: self.principal.as_deref(),
            d: &self.data,
        })
    }

    /// Decodes a record written by [`Record::encode`].
    ///
    /// # Errors
    ///
    /// [`DecodeError`] when the bytes are not a record of a known format.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let wire: Wire = serde_json::from_slice(bytes).map_err(DecodeError::Malformed)?;
        if wire.f != FORMAT {
            return Err(DecodeError::UnknownFormat(wire.f));
        }
        Ok(Self {
            data: wire.d,
            version: wire.v,
            created_at: from_unix_ms(wire.c),
            last_access: from_unix_ms(wire.a),
            idle_deadline: from_unix_ms(wire.i),
            absolute_deadline: from_unix_ms(wire.x),
            principal: wire.u,
            idle_timeout: Duration::from_millis(wire.t),
            persistent: wire.p,
        })
    }
}

/// Decodes a stored record, or logs why it could not and gives `None`: the
/// contract every store follows for undecodable values ("absent, and logged").
pub fn decode_or_log(key: &StoreKey, bytes: &[u8]) -> Option<Record> {
    match Record::decode(bytes) {
        Ok(record) => Some(record),
        Err(error) => {
            tracing::warn!(key = key.short(), %error, "session record does not decode; treated as absent");
            None
        }
    }
}

/// Why stored bytes are not a record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not a JSON object with the fields of a record.
    #[error("session record is malformed")]
    Malformed(#[source] serde_json::Error),
    /// A format tag this version of the crate does not know.
    #[error("session record has unknown format tag {0}")]
    UnknownFormat(u8),
}

#[derive(Serialize)]
struct WireRef<'a> {
    f: u8,
    v: u64,
    c: i64,
    a: i64,
    i: i64,
    x: i64,
    t: u64,
    p: bool,
    u: Option<&'a str>,
    d: &'a Data,
}

#[derive(Deserialize)]
struct Wire {
    f: u8,
    v: u64,
    c: i64,
    a: i64,
    i: i64,
    x: i64,
    t: u64,
    p: bool,
    u: Option<String>,
    d: Data,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_ms_conversions_agree_with_the_nanosecond_route() {
        let min = time::PrimitiveDateTime::MIN.assume_utc();
        let max = time::PrimitiveDateTime::MAX.assume_utc();
        let mut samples = vec![
            0,
            1,
            -1,
            999,
            -999,
            1000,
            -1000,
            -1001,
            1_767_225_600_123,
            -62_135_596_800_000,
            to_unix_ms(min),
            to_unix_ms(max),
            i64::MAX,
            i64::MIN,
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            samples.push((x as i64) % 400_000_000_000_000);
        }
        for ms in samples {
            let slow = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok();
            assert_eq!(checked_from_unix_ms(ms), slow, "{ms}");
            if let Some(t) = slow {
                assert_eq!(to_unix_ms(t), ms, "{ms}");
                assert_eq!(from_unix_ms(ms), t);
            } else {
                assert_eq!(from_unix_ms(ms), OffsetDateTime::UNIX_EPOCH);
            }
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let mut record = Record::new(now(), &Expiry::default().persistent(true));
        record.data.insert("n".into(), serde_json::json!(3));
        record
            .data
            .insert("name".into(), serde_json::json!({"first": "Ada"}));
        record.version = 7;
        record.principal = Some("ada".into());
        let bytes = record.encode().unwrap();
        assert_eq!(Record::decode(&bytes).unwrap(), record);
    }

    #[test]
    fn floats_round_trip_exactly() {
        // Found by the record_decode fuzz target: without serde_json's
        // float_roundtrip, some doubles came back an ulp off.
        let mut record = Record::new(now(), &Expiry::default());
        for (i, x) in [
            389.852_924_982_166_37,
            1.797_693_134_862_316e302,
            0.1,
            -2.5e-300,
        ]
        .into_iter()
        .enumerate()
        {
            record.data.insert(format!("x{i}"), serde_json::json!(x));
        }
        let again = Record::decode(&record.encode().unwrap()).unwrap();
        assert_eq!(again, record);
        let twice = Record::decode(&again.encode().unwrap()).unwrap();
        assert_eq!(twice, record);
    }

    #[test]
    fn garbage_does_not_decode() {
        for bad in [
            &b""[..],
            b"{}",
            b"\xff\xfe",
            b"[1,2,3]",
            br#"{"f":2,"v":0,"c":0,"a":0,"i":0,"x":0,"t":0,"p":false,"u":null,"d":{}}"#,
            br#"{"f":1,"v":-1,"c":0,"a":0,"i":0,"x":0,"t":0,"p":false,"u":null,"d":{}}"#,
        ] {
            assert!(Record::decode(bad).is_err(), "{bad:?} decoded");
        }
        let key = crate::Id::random().unwrap().store_key();
        assert!(decode_or_log(&key, b"nonsense").is_none());
    }

    #[test]
    fn deadlines_follow_the_expiry() {
        let start = now();
        let expiry = Expiry::new(Duration::from_secs(10), Duration::from_secs(25));
        let mut record = Record::new(start, &expiry);
        assert_eq!(record.idle_deadline, add(start, Duration::from_secs(10)));
        assert_eq!(
            record.absolute_deadline,
            add(start, Duration::from_secs(25))
        );
        record.mark_used(add(start, Duration::from_secs(20)));
        // The idle deadline never passes the absolute one.
        assert_eq!(record.idle_deadline, record.absolute_deadline);
        assert!(!record.is_expired(add(start, Duration::from_secs(24))));
        assert!(record.is_expired(add(start, Duration::from_secs(25))));
        assert_eq!(
            record.ttl(add(start, Duration::from_secs(30))),
            Duration::ZERO
        );
    }
}
