//! The two column types the store converts itself: `timestamptz` (as
//! Postgres' binary form, microseconds since 2000-01-01 UTC) and `json` (as
//! its text). Converting on the client keeps the statements free of
//! per-row conversions on the server (`extract(epoch ..)`, `::text`), and
//! converting with checked arithmetic means a row holding an out-of-range
//! instant (`infinity`, a hand edit) is an undecodable row, never a panic.

use session_core::record::to_unix_ms;
use session_core::time::OffsetDateTime;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueFormat, PgValueRef, Postgres};
use sqlx::{Decode, Encode, Type};

/// The `timestamptz` type (`pg_type.oid`).
const TIMESTAMPTZ_OID: u32 = 1184;
/// The `json` type (`pg_type.oid`).
const JSON_OID: u32 = 114;

/// Postgres' epoch, 2000-01-01T00:00:00Z, in Unix milliseconds.
const PG_EPOCH_UNIX_MS: i64 = 946_684_800_000;

/// A `timestamptz` value: microseconds since 2000-01-01 UTC, the form
/// Postgres sends and receives it in (binary protocol, `integer_datetimes`,
/// the only form since Postgres 10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PgTimestamp(i64);

impl PgTimestamp {
    /// `t` at the millisecond precision records keep.
    pub(crate) fn of(t: OffsetDateTime) -> Self {
        let ms = to_unix_ms(t).saturating_sub(PG_EPOCH_UNIX_MS);
        Self(ms.saturating_mul(1000))
    }

    /// The instant, rounded to the millisecond (half away from zero, as the
    /// store always read it), or `None` for `infinity`, `-infinity` and
    /// instants beyond `time`'s range.
    pub(crate) fn instant(self) -> Option<OffsetDateTime> {
        if self.0 == i64::MAX || self.0 == i64::MIN {
            return None;
        }
        let (whole, rest) = (self.0 / 1000, self.0 % 1000);
        let ms = match rest {
            500.. => whole + 1,
            ..=-500 => whole - 1,
            _ => whole,
        };
        let unix_ms = ms.checked_add(PG_EPOCH_UNIX_MS)?;
        session_core::record::checked_from_unix_ms(unix_ms)
    }
}

/// The store's reading of a binary `timestamptz`, for the fuzz targets
/// (`session_postgres::__fuzz`): `bytes` as Postgres sends them (big-endian
/// microseconds since 2000-01-01 UTC) to `PgTimestamp::instant`.
pub fn fuzz_decode_timestamptz(bytes: [u8; 8]) -> Option<OffsetDateTime> {
    PgTimestamp(i64::from_be_bytes(bytes)).instant()
}

/// The microseconds the store writes for `t` (`PgTimestamp::of`), for the
/// fuzz targets.
pub fn fuzz_encode_timestamptz(t: OffsetDateTime) -> i64 {
    PgTimestamp::of(t).0
}

impl Type<Postgres> for PgTimestamp {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(TIMESTAMPTZ_OID))
    }
}

impl Encode<'_, Postgres> for PgTimestamp {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <i64 as Encode<'_, Postgres>>::encode_by_ref(&self.0, buf)
    }

    fn size_hint(&self) -> usize {
        size_of::<i64>()
    }
}

impl<'r> Decode<'r, Postgres> for PgTimestamp {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        match value.format() {
            PgValueFormat::Binary => Ok(Self(<i64 as Decode<'r, Postgres>>::decode(value)?)),
            PgValueFormat::Text => Err("timestamptz in text format; the store reads binary".into()),
        }
    }
}

/// A `json` value as its text, exactly as stored (`json`, unlike `jsonb`,
/// keeps the text it was given; its binary form is that text).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Json<'a>(pub(crate) &'a str);

impl Type<Postgres> for Json<'_> {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(JSON_OID))
    }
}

impl Encode<'_, Postgres> for Json<'_> {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <&str as Encode<'_, Postgres>>::encode_by_ref(&self.0, buf)
    }

    fn size_hint(&self) -> usize {
        self.0.len()
    }
}

impl<'r> Decode<'r, Postgres> for Json<'r> {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self(value.as_str()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::record::from_unix_ms;

    #[test]
    fn instants_round_trip_at_millisecond_precision() {
        for ms in [
            0,
            1,
            -1,
            PG_EPOCH_UNIX_MS,
            PG_EPOCH_UNIX_MS - 1,
            1_764_150_000_123,
            253_402_300_799_999, // 9999-12-31T23:59:59.999Z
            -62_135_596_800_000, // 0001-01-01T00:00:00Z
        ] {
            let t = from_unix_ms(ms);
            assert_eq!(PgTimestamp::of(t).instant(), Some(t), "{ms}");
        }
    }

    #[test]
    fn the_postgres_epoch_is_zero() {
        assert_eq!(PgTimestamp::of(from_unix_ms(PG_EPOCH_UNIX_MS)).0, 0);
        assert_eq!(PgTimestamp::of(from_unix_ms(PG_EPOCH_UNIX_MS + 1)).0, 1000);
    }

    #[test]
    fn microseconds_round_half_away_from_zero() {
        let at = |us: i64| PgTimestamp(us).instant().map(to_unix_ms);
        assert_eq!(at(1_499), Some(PG_EPOCH_UNIX_MS + 1));
        assert_eq!(at(1_500), Some(PG_EPOCH_UNIX_MS + 2));
        assert_eq!(at(-1_499), Some(PG_EPOCH_UNIX_MS - 1));
        assert_eq!(at(-1_500), Some(PG_EPOCH_UNIX_MS - 2));
    }

    #[test]
    fn infinities_are_none() {
        assert_eq!(PgTimestamp(i64::MAX).instant(), None);
        assert_eq!(PgTimestamp(i64::MIN).instant(), None);
    }
}
