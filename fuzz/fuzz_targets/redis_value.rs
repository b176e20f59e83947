//! session-redis's value decoder (`encoding::decode`: what `load` and
//! `list_by_principal` run on every stored value) on arbitrary bytes,
//! differentially against the header parser every Lua script runs: the
//! `parse` function of the scripts' own prologue, run here in a real Lua 5.1
//! (the version Redis embeds), at a fixed `now`.
//!
//! Properties:
//! - decoding never panics (a bad value reads as "absent", never a 500);
//! - the tombstone is neither a record nor live to the scripts;
//! - a value that decodes is live to the scripts exactly when the decoded
//!   record is live, and then the scripts read the same version, deadlines
//!   and principal, and the positions `touch` splices at frame exactly the
//!   `i:x:a` run of the header;
//! - a value that decodes re-encodes to the same header byte for byte, and
//!   that encoding decodes to an equal record;
//! - a value the scripts take as live but `decode` rejects fails only on
//!   what the scripts deliberately do not check: a number that is not
//!   canonical or not in range, a principal that is not UTF-8, JSON that is
//!   broken after its `{`.
//!
//! Seeds in `fuzz/seeds/redis_value` are raw values.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mlua::{Function, Lua, MultiValue, Value};
use session_core::record::{from_unix_ms, to_unix_ms};
use session_redis::__fuzz::{self, DecodeError};

/// The scripts' `now` (2026-01-01T00:00:00Z), in Unix ms.
const NOW: i64 = 1_767_225_600_000;

/// What `parse` returned for a live record: the version, idle and absolute
/// deadlines as stored, the principal, and the 1-based positions where the
/// idle deadline starts and right after the last access.
#[derive(Debug)]
struct Parsed {
    version: Vec<u8>,
    idle: Vec<u8>,
    absolute: Vec<u8>,
    principal: Option<Vec<u8>>,
    idle_at: usize,
    after_access: usize,
}

thread_local! {
    /// One Lua state for the process, holding the scripts' prologue.
    static PARSE: (Lua, Function) = {
        let lua = Lua::new();
        let chunk = format!("{}\nreturn parse", __fuzz::lua_prologue());
        let parse = lua
            .load(chunk)
            .eval::<Function>()
            .expect("the scripts' prologue loads");
        (lua, parse)
    };
}

fn bytes(value: &Value) -> Vec<u8> {
    match value {
        Value::String(s) => s.as_bytes().to_vec(),
        other => panic!("parse returned {other:?} where a string belongs"),
    }
}

fn position(value: &Value) -> usize {
    match value {
        Value::Integer(n) => usize::try_from(*n).expect("a position is positive"),
        Value::Number(n) if n.fract() == 0.0 && *n >= 1.0 => *n as usize,
        other => panic!("parse returned {other:?} where a position belongs"),
    }
}

/// `parse(value, NOW)` in Lua: `None` when the scripts take the value as no
/// live record.
fn lua_parse(value: &[u8]) -> Option<Parsed> {
    PARSE.with(|(lua, parse)| {
        let s = lua.create_string(value).expect("a Lua string");
        let out: MultiValue = parse.call((s, NOW)).expect("parse runs");
        let out: Vec<Value> = out.into_iter().collect();
        if out.first().is_none_or(Value::is_nil) {
            return None;
        }
        assert_eq!(out.len(), 7, "parse returns 7 values: {out:?}");
        assert_eq!(bytes(&out[0]), value, "parse returns the value first");
        Some(Parsed {
            version: bytes(&out[1]),
            idle: bytes(&out[2]),
            absolute: bytes(&out[3]),
            principal: match &out[4] {
                Value::Boolean(false) => None,
                other => Some(bytes(other)),
            },
            idle_at: position(&out[5]),
            after_access: position(&out[6]),
        })
    })
}

fn show(value: &[u8]) -> String {
    value.escape_ascii().to_string()
}

fuzz_target!(|value: &[u8]| {
    let decoded = __fuzz::decode(value);
    let parsed = lua_parse(value);

    if value == __fuzz::TOMBSTONE.as_bytes() {
        assert!(decoded.is_err(), "the tombstone decodes");
        assert!(parsed.is_none(), "the tombstone is live to the scripts");
    }

    match (decoded, parsed) {
        (Ok(record), parsed) => {
            let live = !record.is_expired(from_unix_ms(NOW));
            assert_eq!(
                parsed.is_some(),
                live,
                "scripts and decode disagree on liveness of {}: {record:?}",
                show(value)
            );
            if let Some(parsed) = parsed {
                let ms = |t| to_unix_ms(t).to_string().into_bytes();
                assert_eq!(parsed.version, record.version.to_string().into_bytes());
                assert_eq!(parsed.idle, ms(record.idle_deadline), "{}", show(value));
                assert_eq!(parsed.absolute, ms(record.absolute_deadline), "{}", show(value));
                assert_eq!(
                    parsed.principal.as_deref(),
                    record.principal.as_deref().map(str::as_bytes),
                    "{}",
                    show(value)
                );
                // `touch` rewrites exactly this run and copies the rest.
                let mut run = ms(record.idle_deadline);
                run.push(b':');
                run.extend(ms(record.absolute_deadline));
                run.push(b':');
                run.extend(ms(record.last_access));
                assert_eq!(
                    value.get(parsed.idle_at - 1..parsed.after_access - 1),
                    Some(&run[..]),
                    "the touch splice is off in {}",
                    show(value)
                );
            }

            let encoded = match __fuzz::encode(&record) {
                Ok(encoded) => encoded,
                Err(error) => panic!("a decoded record does not re-encode: {error}"),
            };
            let again = match __fuzz::decode(&encoded) {
                Ok(again) => again,
                Err(error) => panic!(
                    "a re-encoded record does not decode: {error}\nencoded: {}",
                    show(&encoded)
                ),
            };
            assert_eq!(again, record, "encoded: {}", show(&encoded));
            // Everything before the data is canonical, so byte-exact.
            let json = serde_json::to_vec(&record.data).expect("data serializes");
            let header = &encoded[..encoded.len() - json.len()];
            assert!(
                value.starts_with(header) && value.get(header.len()) == Some(&b'{'),
                "the header does not re-encode as read\nread:    {}\nencoded: {}",
                show(value),
                show(&encoded)
            );
        }
        (Err(error), Some(parsed)) => match error {
            DecodeError::Malformed(field) if field != "persistent" => {}
            DecodeError::Principal | DecodeError::Data(Some(_)) => {}
            other => panic!(
                "the scripts take {} as live ({parsed:?}), decode rejects it: {other}",
                show(value)
            ),
        },
        (Err(_), None) => {}
    }
});
