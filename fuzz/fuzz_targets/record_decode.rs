//! `Record::decode` on arbitrary bytes: what a store hands back may be
//! corrupt, truncated or written by something else entirely.
//!
//! Properties:
//! - decoding never panics (a bad value must read as "absent", never a 500);
//! - a record that decodes re-encodes, and that encoding decodes to an equal
//!   record: a session that goes through the store twice is unchanged.
//!   (This found that floats came back an ulp off without serde_json's
//!   `float_roundtrip` feature, which the workspace now enables.)

#![no_main]

use libfuzzer_sys::fuzz_target;
use session_core::Record;

fuzz_target!(|bytes: &[u8]| {
    // Errors are the expected answer for garbage; only a panic is a failure.
    let Ok(record) = Record::decode(bytes) else {
        return;
    };

    // Every field of a decoded record came out of JSON (the data is a map of
    // JSON values, the principal a JSON string), so JSON can write it back.
    let encoded = match record.encode() {
        Ok(encoded) => encoded,
        Err(error) => panic!("a decoded record does not re-encode: {error}"),
    };

    // `encode` writes exactly the fields `decode` reads, in the current
    // format; timestamps were already clamped to whole, in-range
    // milliseconds by the first decode, so they survive unchanged.
    let again = match Record::decode(&encoded) {
        Ok(again) => again,
        Err(error) => panic!(
            "re-encoded record does not decode: {error}\nencoded: {}",
            String::from_utf8_lossy(&encoded)
        ),
    };
    assert_eq!(
        record,
        again,
        "record changed across encode/decode\nencoded: {}",
        String::from_utf8_lossy(&encoded)
    );
});
