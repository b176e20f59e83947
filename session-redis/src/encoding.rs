//! A record as one Redis string: a text header, then the data's JSON (see
//! the crate docs for the layout).
//!
//! ```text
//! 2:<v>:<i>:<x>:<a>:<c>:<t>:<p>:<n>:<principal, n bytes><data JSON object>
//! ```
//!
//! The scripts (`scripts.rs`) parse the same header with one anchored Lua
//! pattern; the integration tests check that both sides agree on values
//! written by either.

use std::io::Write as _;
use std::time::Duration;

use session_core::record::to_unix_ms;
use session_core::time::OffsetDateTime;
use session_core::{Data, Record, StoreError};

/// The format tag this crate writes first in every value. (Format 1 was a
/// hash; a hash is not a string, so nothing mistakes one for the other.)
pub const FORMAT: &[u8] = b"2:";

/// Room for the header of a record without principal: the tag, four
/// timestamps of up to 20 characters, a `u64` version and idle timeout, the
/// flag and the separators. Data comes on top.
const HEADER_CAPACITY: usize = 2 + 6 * 21 + 2 + 1;

/// Room reserved for the data's JSON; a `Vec` grows past it when needed.
const DATA_CAPACITY: usize = 64;

/// The value stored for `record`: one allocation in the common case (data
/// JSON under `DATA_CAPACITY` bytes).
///
/// # Errors
///
/// [`StoreError::Encode`] when the data does not serialize.
pub fn encode(record: &Record) -> Result<Vec<u8>, StoreError> {
    let principal = record.principal.as_deref();
    let mut out =
        Vec::with_capacity(HEADER_CAPACITY + principal.map_or(0, |p| p.len() + 21) + DATA_CAPACITY);
    out.extend_from_slice(FORMAT);
    write!(
        out,
        "{}:{}:{}:{}:{}:{}:{}:",
        record.version,
        to_unix_ms(record.idle_deadline),
        to_unix_ms(record.absolute_deadline),
        to_unix_ms(record.last_access),
        to_unix_ms(record.created_at),
        millis(record.idle_timeout),
        u8::from(record.persistent),
    )
    .map_err(|e| StoreError::Encode(serde_json::Error::io(e)))?;
    match principal {
        // An empty length field: no principal (`0:` is the empty principal).
        None => out.push(b':'),
        Some(principal) => {
            write!(out, "{}:", principal.len())
                .map_err(|e| StoreError::Encode(serde_json::Error::io(e)))?;
            out.extend_from_slice(principal.as_bytes());
        }
    }
    serde_json::to_writer(&mut out, &record.data).map_err(StoreError::Encode)?;
    Ok(out)
}

/// Whole milliseconds of `d`, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Why a value is not a record.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The value does not start with [`FORMAT`].
    #[error("unknown format tag")]
    UnknownFormat,
    /// The named header field is missing, not a canonical number (or flag),
    /// or, for a timestamp, outside the instants a record can hold.
    #[error("header field `{0}` is malformed")]
    Malformed(&'static str),
    /// The principal's length runs past the end of the value.
    #[error("the principal runs past the end of the value")]
    Truncated,
    /// The principal is not UTF-8.
    #[error("the principal is not UTF-8")]
    Principal,
    /// The data does not start with `{` (`None`) or is not one JSON object.
    #[error("the data is not a JSON object")]
    Data(#[source] Option<serde_json::Error>),
}

/// Reads the header field by field.
struct Header<'a> {
    rest: &'a [u8],
}

impl<'a> Header<'a> {
    /// The bytes up to the next `:`, which is consumed.
    fn field(&mut self, name: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .rest
            .iter()
            .position(|&b| b == b':')
            .ok_or(DecodeError::Malformed(name))?;
        let (field, rest) = self.rest.split_at(end);
        self.rest = &rest[1..];
        Ok(field)
    }

    /// A non-negative decimal in canonical form: `0`, or digits without a
    /// leading zero (so the scripts' string comparison of versions agrees
    /// with a numeric one); no sign, no overflow.
    fn uint(&mut self, name: &'static str) -> Result<u64, DecodeError> {
        digits(self.field(name)?).ok_or(DecodeError::Malformed(name))
    }

    /// A decimal `i64`: canonical digits, optionally after a `-` (not `-0`).
    fn int(&mut self, name: &'static str) -> Result<i64, DecodeError> {
        let field = self.field(name)?;
        let parsed = match field.strip_prefix(b"-") {
            Some(magnitude) => digits(magnitude)
                .filter(|&m| m != 0)
                .and_then(|m| i64::try_from(-i128::from(m)).ok()),
            None => digits(field).and_then(|m| i64::try_from(m).ok()),
        };
        parsed.ok_or(DecodeError::Malformed(name))
    }

    /// A timestamp in Unix ms: an [`int`](Self::int) naming an instant a
    /// record can hold. (`encode` writes nothing else; mapping one outside
    /// that range to some other instant would make a far-future deadline
    /// read as expired here while the scripts, which compare the numbers,
    /// take it as live.)
    fn instant(&mut self, name: &'static str) -> Result<OffsetDateTime, DecodeError> {
        let ms = self.int(name)?;
        session_core::record::checked_from_unix_ms(ms).ok_or(DecodeError::Malformed(name))
    }
}

/// `bytes` as a canonical decimal `u64`, or `None`.
fn digits(bytes: &[u8]) -> Option<u64> {
    match bytes {
        [] => None,
        [b'0'] => Some(0),
        [b'0', ..] => None,
        _ => bytes.iter().try_fold(0u64, |n, &b| {
            if b.is_ascii_digit() {
                n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
            } else {
                None
            }
        }),
    }
}

/// Decodes a value written by [`encode`]. Strict: anything else (another
/// tag, a missing, signed, non-canonical or overflowing number, a timestamp
/// outside the instants a record can hold, a principal
/// running past the end or not UTF-8, data that is not one JSON object) is
/// an error.
///
/// # Errors
///
/// [`DecodeError`] saying what is wrong.
pub fn decode(value: &[u8]) -> Result<Record, DecodeError> {
    let rest = value
        .strip_prefix(FORMAT)
        .ok_or(DecodeError::UnknownFormat)?;
    let mut header = Header { rest };
    let mut record = Record::default();
    record.version = header.uint("version")?;
    record.idle_deadline = header.instant("idle deadline")?;
    record.absolute_deadline = header.instant("absolute deadline")?;
    record.last_access = header.instant("last access")?;
    record.created_at = header.instant("created at")?;
    record.idle_timeout = Duration::from_millis(header.uint("idle timeout")?);
    record.persistent = match header.field("persistent")? {
        b"1" => true,
        b"0" => false,
        _ => return Err(DecodeError::Malformed("persistent")),
    };
    let length = header.field("principal length")?;
    let mut rest = header.rest;
    if !length.is_empty() {
        let length = digits(length)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or(DecodeError::Malformed("principal length"))?;
        if length > rest.len() {
            return Err(DecodeError::Truncated);
        }
        let (principal, data) = rest.split_at(length);
        let principal = std::str::from_utf8(principal).map_err(|_| DecodeError::Principal)?;
        record.principal = Some(principal.to_owned());
        rest = data;
    }
    // The scripts look at this byte too (a value they accept starts its data
    // with `{`); serde_json alone would also skip leading whitespace.
    if rest.first() != Some(&b'{') {
        return Err(DecodeError::Data(None));
    }
    record.data = serde_json::from_slice::<Data>(rest).map_err(|e| DecodeError::Data(Some(e)))?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use session_core::Expiry;
    use session_core::record::{from_unix_ms, now};

    use super::*;

    fn round_trip(record: &Record) -> Vec<u8> {
        let value = encode(record).unwrap();
        assert_eq!(&decode(&value).unwrap(), record, "{}", value.escape_ascii());
        value
    }

    #[test]
    fn values_round_trip() {
        let mut record = Record::new(now(), &Expiry::default().persistent(true));
        record
            .data
            .insert("n".into(), serde_json::json!({"deep": [1, 2], "s": "a:b"}));
        record.version = u64::MAX;
        record.principal = Some("ada:lovelace:ünïcødé 🦀".into());
        let value = round_trip(&record);
        let header = format!(
            "2:{}:{}:{}:{}:{}:{}:1:{}:ada:lovelace:ünïcødé 🦀{{",
            u64::MAX,
            to_unix_ms(record.idle_deadline),
            to_unix_ms(record.absolute_deadline),
            to_unix_ms(record.last_access),
            to_unix_ms(record.created_at),
            Expiry::DEFAULT_IDLE_TIMEOUT.as_millis(),
            "ada:lovelace:ünïcødé 🦀".len(),
        );
        assert!(
            value.starts_with(header.as_bytes()),
            "{}",
            value.escape_ascii()
        );

        record.principal = None;
        record.persistent = false;
        record.version = 0;
        let value = round_trip(&record);
        assert!(
            value.ends_with(br#":0::{"n":{"deep":[1,2],"s":"a:b"}}"#),
            "no principal: an empty length field; {}",
            value.escape_ascii()
        );

        // The empty principal is not the absent one.
        record.principal = Some(String::new());
        record.data.clear();
        let value = round_trip(&record);
        assert!(value.ends_with(b":0:0:{}"), "{}", value.escape_ascii());

        // Timestamps before the epoch and zero durations still round-trip.
        let mut odd = Record::default();
        odd.created_at = from_unix_ms(-1);
        odd.last_access = from_unix_ms(i64::from(i32::MIN));
        round_trip(&odd);

        // So do the first and the last instant a record can hold.
        odd.idle_deadline = from_unix_ms(FIRST_MS);
        odd.absolute_deadline = from_unix_ms(LAST_MS);
        assert_eq!(to_unix_ms(odd.idle_deadline), FIRST_MS);
        assert_eq!(to_unix_ms(odd.absolute_deadline), LAST_MS);
        round_trip(&odd);
    }

    /// -9999-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z, the bounds of
    /// `time` without its `large-dates` feature, in Unix ms.
    const FIRST_MS: i64 = -377_705_116_800_000;
    const LAST_MS: i64 = 253_402_300_799_999;

    /// Found by the `redis_value` fuzz target: an idle deadline past the
    /// year 9999 decoded as the epoch (so the record read as expired) while
    /// the scripts took the value as a live record. Out-of-range timestamps
    /// now do not decode, like any other value `encode` cannot write.
    #[test]
    fn timestamps_outside_the_range_do_not_decode() {
        let value =
            |i: i64, x: i64, a: i64, c: i64| format!("2:1:{i}:{x}:{a}:{c}:0:0:0:{{}}").into_bytes();
        let far = 1_767_830_400_000;
        assert!(decode(&value(LAST_MS, LAST_MS, FIRST_MS, FIRST_MS)).is_ok());
        // The fuzzer's input, minimized by hand.
        let found = b"2:1804674407:1804674467312000000:1767830400000:-1:-2147483648:0:0:0:{}";
        assert!(matches!(
            decode(found),
            Err(DecodeError::Malformed("idle deadline"))
        ));
        for (field, bad) in [
            ("idle deadline", value(LAST_MS + 1, far, 0, 0)),
            ("absolute deadline", value(far, LAST_MS + 1, 0, 0)),
            ("last access", value(far, far, FIRST_MS - 1, 0)),
            ("created at", value(far, far, 0, i64::MIN)),
            ("created at", value(far, far, 0, i64::MAX)),
        ] {
            match decode(&bad) {
                Err(DecodeError::Malformed(name)) => assert_eq!(name, field),
                other => panic!("{}: {other:?}", bad.escape_ascii()),
            }
        }
    }

    #[test]
    fn the_capacity_covers_a_typical_value() {
        let mut record = Record::new(now(), &Expiry::default());
        record.version = u64::MAX;
        record.data.insert("n".into(), serde_json::json!(42));
        let value = encode(&record).unwrap();
        assert!(value.len() <= HEADER_CAPACITY + DATA_CAPACITY);
    }

    #[test]
    fn broken_values_do_not_decode() {
        // A good value: version 7, principal "ada", data {"n":1}.
        let good = b"2:7:2000:3000:1000:900:1000:0:3:ada{\"n\":1}";
        assert!(decode(good).is_ok());
        let cases: &[(&str, &[u8])] = &[
            ("empty", b""),
            ("format 1", b"1:7:2000:3000:1000:900:1000:0:3:ada{\"n\":1}"),
            ("format 3", b"3:7:2000:3000:1000:900:1000:0:3:ada{\"n\":1}"),
            ("tag only", b"2:"),
            ("old hash as text", b"f1v0d{}"),
            ("JSON record of session-core", br#"{"f":1,"v":0,"d":{}}"#),
            ("header cut short", b"2:7:2000:3000:1000"),
            ("no data", b"2:7:2000:3000:1000:900:1000:0:3:ada"),
            (
                "empty version",
                b"2::2000:3000:1000:900:1000:0:3:ada{\"n\":1}",
            ),
            (
                "negative version",
                b"2:-7:2000:3000:1000:900:1000:0:3:ada{\"n\":1}",
            ),
            (
                "plus sign",
                b"2:+7:2000:3000:1000:900:1000:0:3:ada{\"n\":1}",
            ),
            (
                "leading zero",
                b"2:07:2000:3000:1000:900:1000:0:3:ada{\"n\":1}",
            ),
            (
                "version overflows u64",
                b"2:18446744073709551616:2000:3000:1000:900:1000:0:3:ada{}",
            ),
            (
                "text deadline",
                b"2:7:soon:3000:1000:900:1000:0:3:ada{\"n\":1}",
            ),
            (
                "space in a deadline",
                b"2:7: 2000:3000:1000:900:1000:0:3:ada{\"n\":1}",
            ),
            (
                "deadline overflows i64",
                b"2:7:2000:9223372036854775808:1000:900:1000:0:3:ada{}",
            ),
            ("minus zero", b"2:7:2000:3000:-0:900:1000:0:3:ada{\"n\":1}"),
            ("lone minus", b"2:7:2000:3000:1000:-:1000:0:3:ada{\"n\":1}"),
            (
                "non-UTF-8 digit",
                b"2:7:2000:3000:1000:9\xff:1000:0:3:ada{\"n\":1}",
            ),
            (
                "negative idle timeout",
                b"2:7:2000:3000:1000:900:-1:0:3:ada{\"n\":1}",
            ),
            (
                "bad flag",
                b"2:7:2000:3000:1000:900:1000:yes:3:ada{\"n\":1}",
            ),
            ("flag 2", b"2:7:2000:3000:1000:900:1000:2:3:ada{\"n\":1}"),
            (
                "principal length not a number",
                b"2:7:2000:3000:1000:900:1000:0:x:ada{\"n\":1}",
            ),
            (
                "principal past the end",
                b"2:7:2000:3000:1000:900:1000:0:99:ada{\"n\":1}",
            ),
            (
                "principal length overflows",
                b"2:7:2000:3000:1000:900:1000:0:99999999999999999999:a{}",
            ),
            (
                "principal not UTF-8",
                b"2:7:2000:3000:1000:900:1000:0:3:a\xfe\xff{\"n\":1}",
            ),
            (
                "principal too short",
                b"2:7:2000:3000:1000:900:1000:0:2:ada{\"n\":1}",
            ),
            ("data not JSON", b"2:7:2000:3000:1000:900:1000:0:3:ada{"),
            ("data an array", b"2:7:2000:3000:1000:900:1000:0:3:ada[1]"),
            ("data a string", b"2:7:2000:3000:1000:900:1000:0:3:ada\"x\""),
            (
                "data after whitespace",
                b"2:7:2000:3000:1000:900:1000:0:3:ada {\"n\":1}",
            ),
            ("two objects", b"2:7:2000:3000:1000:900:1000:0:3:ada{}{}"),
            (
                "data not UTF-8",
                b"2:7:2000:3000:1000:900:1000:0:3:ada{\"\xff\":1}",
            ),
        ];
        for (what, value) in cases {
            assert!(decode(value).is_err(), "{what} decoded");
        }
    }
}
