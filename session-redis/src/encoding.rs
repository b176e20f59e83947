//! A record as the fields of a Redis hash (see the crate docs for the layout).

use std::collections::HashMap;
use std::time::Duration;

use session_core::record::{from_unix_ms, to_unix_ms};
use session_core::{Data, Record, StoreError};

/// The format tag this crate writes in field `f`.
pub(crate) const FORMAT: &str = "1";

/// The hash fields of `record`, as field/value pairs ready to be passed to
/// `HSET` (a record without principal has no `u` field).
pub(crate) fn fields(record: &Record) -> Result<Vec<(&'static str, String)>, StoreError> {
    let data = serde_json::to_string(&record.data).map_err(StoreError::Encode)?;
    let mut fields = vec![
        ("f", FORMAT.to_owned()),
        ("v", record.version.to_string()),
        ("c", to_unix_ms(record.created_at).to_string()),
        ("a", to_unix_ms(record.last_access).to_string()),
        ("i", to_unix_ms(record.idle_deadline).to_string()),
        ("x", to_unix_ms(record.absolute_deadline).to_string()),
        ("t", millis(record.idle_timeout).to_string()),
        ("p", if record.persistent { "1" } else { "0" }.to_owned()),
        ("d", data),
    ];
    if let Some(principal) = &record.principal {
        fields.push(("u", principal.clone()));
    }
    Ok(fields)
}

/// Whole milliseconds of `d`, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Why a hash is not a record.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("field `{0}` is missing")]
    Missing(&'static str),
    #[error("field `{0}` is malformed")]
    Malformed(&'static str),
    #[error("unknown format tag")]
    UnknownFormat,
    #[error("field `d` is not a JSON object")]
    Data(#[source] serde_json::Error),
}

/// Decodes the fields of a hash read with `HGETALL`.
pub(crate) fn decode(hash: &HashMap<Vec<u8>, Vec<u8>>) -> Result<Record, DecodeError> {
    let field = |name: &'static str| {
        hash.get(name.as_bytes())
            .map(Vec::as_slice)
            .ok_or(DecodeError::Missing(name))
    };
    let text = |name: &'static str| {
        field(name)
            .and_then(|bytes| std::str::from_utf8(bytes).map_err(|_| DecodeError::Malformed(name)))
    };
    let int = |name: &'static str| {
        text(name).and_then(|s| s.parse::<i64>().map_err(|_| DecodeError::Malformed(name)))
    };
    let uint = |name: &'static str| {
        text(name).and_then(|s| s.parse::<u64>().map_err(|_| DecodeError::Malformed(name)))
    };

    if field("f")? != FORMAT.as_bytes() {
        return Err(DecodeError::UnknownFormat);
    }
    let mut record = Record::default();
    record.version = uint("v")?;
    record.created_at = from_unix_ms(int("c")?);
    record.last_access = from_unix_ms(int("a")?);
    record.idle_deadline = from_unix_ms(int("i")?);
    record.absolute_deadline = from_unix_ms(int("x")?);
    record.idle_timeout = Duration::from_millis(uint("t")?);
    record.persistent = match field("p")? {
        b"1" => true,
        b"0" => false,
        _ => return Err(DecodeError::Malformed("p")),
    };
    record.principal = match hash.get(&b"u"[..]) {
        None => None,
        Some(_) => Some(text("u")?.to_owned()),
    };
    record.data = serde_json::from_slice::<Data>(field("d")?).map_err(DecodeError::Data)?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use session_core::{Expiry, record::now};

    use super::*;

    fn hash_of(record: &Record) -> HashMap<Vec<u8>, Vec<u8>> {
        fields(record)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes()))
            .collect()
    }

    #[test]
    fn fields_round_trip() {
        let mut record = Record::new(now(), &Expiry::default().persistent(true));
        record
            .data
            .insert("n".into(), serde_json::json!({"deep": [1, 2]}));
        record.version = u64::MAX;
        record.principal = Some("ada".into());
        assert_eq!(decode(&hash_of(&record)).unwrap(), record);

        record.principal = None;
        record.persistent = false;
        let hash = hash_of(&record);
        assert!(!hash.contains_key(&b"u"[..]), "no principal, no `u` field");
        assert_eq!(decode(&hash).unwrap(), record);
    }

    #[test]
    fn broken_hashes_do_not_decode() {
        let good = hash_of(&Record::new(now(), &Expiry::default()));
        let broken = |field: &str, value: Option<&[u8]>| {
            let mut hash = good.clone();
            match value {
                Some(v) => hash.insert(field.as_bytes().to_vec(), v.to_vec()),
                None => hash.remove(field.as_bytes()),
            };
            hash
        };
        for (what, hash) in [
            ("empty", HashMap::new()),
            ("format 2", broken("f", Some(b"2"))),
            ("no version", broken("v", None)),
            ("negative version", broken("v", Some(b"-1"))),
            ("text deadline", broken("i", Some(b"soon"))),
            ("non-UTF-8 deadline", broken("x", Some(b"\xff"))),
            ("bad flag", broken("p", Some(b"yes"))),
            ("data not JSON", broken("d", Some(b"{"))),
            ("data an array", broken("d", Some(b"[1]"))),
            ("principal not UTF-8", broken("u", Some(b"\xfe"))),
        ] {
            assert!(decode(&hash).is_err(), "{what} decoded");
        }
    }
}
