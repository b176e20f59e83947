//! session-postgres's client-side `timestamptz` decoding (the store reads
//! every deadline in Postgres' binary form: 8 bytes, big-endian microseconds
//! since 2000-01-01 UTC) on arbitrary 8-byte values.
//!
//! Properties:
//! - decoding never panics: `infinity`, `-infinity` and instants past the
//!   `time` crate's range are `None` (an undecodable row), never an overflow;
//! - it agrees with a reference computed in `i128`: round to the millisecond
//!   half away from zero, shift to the Unix epoch;
//! - a decoded instant has millisecond precision, and encoding it back gives
//!   microseconds within 500 µs of the input that decode to the same instant.
//!
//! Input: the first 8 bytes (shorter inputs are skipped). Seeds in
//! `fuzz/seeds/pg_timestamptz` are 8-byte files.

#![no_main]

use libfuzzer_sys::fuzz_target;
use session_core::time::OffsetDateTime;
use session_postgres::__fuzz::{fuzz_decode_timestamptz, fuzz_encode_timestamptz};

/// 2000-01-01T00:00:00Z in Unix milliseconds.
const PG_EPOCH_UNIX_MS: i128 = 946_684_800_000;

fn reference(micros: i64) -> Option<OffsetDateTime> {
    if micros == i64::MAX || micros == i64::MIN {
        return None;
    }
    let us = i128::from(micros);
    // Integer division truncates toward zero, so this rounds half away.
    let ms = (us + if us >= 0 { 500 } else { -500 }) / 1000;
    OffsetDateTime::from_unix_timestamp_nanos((ms + PG_EPOCH_UNIX_MS) * 1_000_000).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some(&bytes) = data.first_chunk::<8>() else {
        return;
    };
    let micros = i64::from_be_bytes(bytes);
    let decoded = fuzz_decode_timestamptz(bytes);
    assert_eq!(decoded, reference(micros), "{micros} µs");

    if let Some(t) = decoded {
        assert_eq!(t.nanosecond() % 1_000_000, 0, "{t} is not whole milliseconds");
        let back = fuzz_encode_timestamptz(t);
        assert!(
            (i128::from(back) - i128::from(micros)).abs() <= 500,
            "{micros} µs read as {t}, written back as {back} µs"
        );
        assert_eq!(fuzz_decode_timestamptz(back.to_be_bytes()), Some(t));
    }
});
