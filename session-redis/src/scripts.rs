//! The Lua scripts. Each touches exactly one key (`KEYS[1]`), so each runs on
//! the node owning that key's slot in a cluster, and each is atomic there.
//!
//! Liveness is decided by the application's clock, which every script
//! receives as `ARGV[1]` (Unix ms): a record is live while
//! `now < min(i, x)`. Redis's own TTL, set in the same script, only reclaims
//! the memory; it fires at the same instant give or take the network delay,
//! and the explicit check closes that gap. A key that is not a hash, or a
//! hash without readable deadlines, counts as absent (the "undecodable is
//! absent" rule).

use std::sync::LazyLock;

use deadpool_redis::redis::Script;

/// Shared prologue: `live(key, now)` gives the stored fields asked for when
/// the record under `key` is live, or nil.
const LIVE: &str = r"
local function live(key, now, ...)
  if redis.call('TYPE', key).ok ~= 'hash' then return nil end
  local fields = redis.call('HMGET', key, 'i', 'x', ...)
  local i, x = tonumber(fields[1]), tonumber(fields[2])
  if i and x and math.min(i, x) > now then return fields end
  return nil
end
";

fn script(body: &str) -> Script {
    Script::new(&format!("{LIVE}{body}"))
}

/// `create`: ARGV = now, ttl ms, field/value pairs.
/// Returns 1 if inserted (or, with ttl <= 0, if it would have been), 0 if a
/// live record is there. A dead or foreign value under the key is replaced.
pub(crate) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local key, now, ttl = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
if live(key, now) then return 0 end
redis.call('DEL', key)
if ttl > 0 then
  redis.call('HSET', key, unpack(ARGV, 3))
  redis.call('PEXPIRE', key, ARGV[2])
end
return 1
",
    )
});

/// `save`: ARGV = now, expected version, ttl ms, field/value pairs.
/// Returns 0 (gone), 1 (conflict) or 2 (saved). Versions are compared as
/// the decimal strings they are stored as, so every `u64` compares exactly.
pub(crate) static SAVE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local key, now, ttl = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[3])
local fields = live(key, now, 'v')
if not fields or not fields[3] then return 0 end
if fields[3] ~= ARGV[2] then return 1 end
redis.call('DEL', key)
if ttl > 0 then
  redis.call('HSET', key, unpack(ARGV, 4))
  redis.call('PEXPIRE', key, ARGV[3])
end
return 2
",
    )
});

/// `touch`: ARGV = now, requested idle deadline (Unix ms).
/// Sets `a` to now and `i` to the requested deadline, but never earlier than
/// the stored one (a parallel save may have given the session a longer idle
/// timeout than the toucher knew) and never past `x`; sets the TTL to match.
/// Returns 1 if the record was live, 0 if not.
pub(crate) static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local key, now = KEYS[1], tonumber(ARGV[1])
local fields = live(key, now)
if not fields then return 0 end
local idle, stored = tonumber(ARGV[2]), ARGV[2]
if idle < tonumber(fields[1]) then idle, stored = tonumber(fields[1]), fields[1] end
if idle > tonumber(fields[2]) then idle, stored = tonumber(fields[2]), fields[2] end
redis.call('HSET', key, 'a', ARGV[1], 'i', stored)
redis.call('PEXPIRE', key, string.format('%d', idle - now))
return 1
",
    )
});

/// `delete_by_principal`, per key: ARGV = now, principal.
/// Returns 1 if a live record of that principal was deleted, 0 if no live
/// record is there, 2 if a live record of another principal is there (kept).
pub(crate) static DELETE_OWNED: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local key, now = KEYS[1], tonumber(ARGV[1])
local fields = live(key, now, 'u')
if not fields then return 0 end
if fields[3] ~= ARGV[2] then return 2 end
redis.call('DEL', key)
return 1
",
    )
});

/// The principal index, on the principal's set (`KEYS[1]`): ARGV = member,
/// ttl ms. Adds the member and extends the set's TTL to at least `ttl`, never
/// shortening it, so the set outlives its longest-lived member.
pub(crate) static INDEX: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
",
    )
});
