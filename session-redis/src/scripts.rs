//! The Lua scripts. Each touches exactly one key (`KEYS[1]`), so each runs on
//! the node owning that key's slot in a cluster, and each is atomic there.
//!
//! Liveness is decided by the application's clock, which every script
//! receives as `ARGV[1]` (Unix ms): a record is live while
//! `now < min(i, x)`. Redis's own TTL, set in the same script, only reclaims
//! the memory; it fires at the same instant give or take the network delay,
//! and the explicit check closes that gap. A key that is not a string, or a
//! string whose header does not parse, counts as absent (the "undecodable is
//! absent" rule).
//!
//! A record key may also hold a *tombstone* ([`TOMBSTONE`], with a TTL): the
//! principal index's cleanup puts one there before it removes the key from a
//! principal's set, and "log out everywhere" leaves one in place of each
//! session it deletes (see `RedisStore::forget`). A tombstone is absent to
//! every read, and it is *taken* to a `create`: no record can be written
//! under the key until it expires.

use std::sync::LazyLock;

use deadpool_redis::redis::Script;

/// What a tombstone holds: not a record (no format tag), so every script's
/// header pattern and `encoding::decode` reject it.
pub const TOMBSTONE: &str = "tombstone";

/// Shared prologue.
///
/// `parse(s, now)`: when `s` (a `GET` reply) is a live record, returns `s`,
/// then the header's version, idle and absolute deadlines (as the decimal
/// strings stored), the principal (`false` when none), the position where
/// the idle deadline starts and the position right after the last access;
/// otherwise nil.
///
/// `live(key, now)`: `parse` of the value under `key`.
///
/// `bury(key)`: puts a tombstone under `key`, for `ARGV[#ARGV]` ms (the
/// scripts that bury take the tombstone's TTL as their last argument).
///
/// The header is `2:v:i:x:a:c:t:p:n:` followed by the `n`-byte principal
/// (an empty `n`: none) and the data's JSON object (see `encoding.rs`). One
/// anchored `string.match` reads it; `GET` through `pcall` turns a key of
/// another type (`WRONGTYPE`) into a non-string, hence absent, without a
/// `TYPE` call. A missing key reads as `false`.
const LIVE: &str = r"
local function parse(s, now)
  if type(s) ~= 'string' then return nil end
  local v, pi, i, x, pa, n, pu = string.match(s,
    '^2:(%d+):()(%-?%d+):(%-?%d+):%-?%d+():%-?%d+:%d+:[01]:(%d*):()')
  if not v or math.min(tonumber(i), tonumber(x)) <= now then return nil end
  local u = false
  if n ~= '' then
    local e = pu + tonumber(n)
    u = string.sub(s, pu, e - 1)
    pu = e
  end
  if string.byte(s, pu) ~= 123 then return nil end
  return s, v, i, x, u, pi, pa
end
local function live(key, now)
  return parse(redis.pcall('GET', key), now)
end
local function bury(key)
  redis.call('SET', key, TOMBSTONE, 'PX', ARGV[#ARGV])
end
";

/// What every script starts with: the tombstone's value as `TOMBSTONE`, then
/// [`LIVE`].
pub(crate) fn prologue() -> String {
    format!("local TOMBSTONE = '{TOMBSTONE}'\n{LIVE}")
}

fn script(body: &str) -> Script {
    Script::new(&format!("{}{body}", prologue()))
}

/// `create`, when `SET NX` found the key taken (or the record is already
/// expired): ARGV = now, ttl ms, value.
/// Returns 1 if inserted (or, with ttl <= 0, if it would have been: then a
/// dead or foreign value is only deleted), 0 if a live record or a tombstone
/// is there. A dead or foreign value under the key is replaced; a tombstone
/// is not (it guards the principal index, see `RedisStore::forget`).
pub(crate) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local key, now = KEYS[1], tonumber(ARGV[1])
local s = redis.pcall('GET', key)
if s == TOMBSTONE or parse(s, now) then return 0 end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', key, ARGV[3], 'PX', ARGV[2])
else
  redis.call('DEL', key)
end
return 1
",
    )
});

/// `save`: ARGV = now, expected version, ttl ms, value, and, only when the
/// new record has a principal that may not be indexed yet, that principal
/// and the new absolute deadline (Unix ms).
///
/// Returns 0 (gone), 1 (conflict), 2 (saved) or 3 (not written: index
/// first). Versions are compared as the decimal strings they are stored as,
/// so every `u64` compares exactly. With `ARGV[5]` given, the record is
/// written only if the stored record has that same principal and an
/// absolute deadline no earlier than the new one: then the index already
/// holds this key for long enough (see `RedisStore::save`); otherwise the
/// script answers 3 and the caller indexes the key and saves again without
/// `ARGV[5]`. With ttl <= 0 a matching record is deleted.
pub(crate) static SAVE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local key, now = KEYS[1], tonumber(ARGV[1])
local s, v, i, x, u = live(key, now)
if not s then return 0 end
if v ~= ARGV[2] then return 1 end
if ARGV[5] and (u ~= ARGV[5] or tonumber(ARGV[6]) > tonumber(x)) then return 3 end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', key, ARGV[4], 'PX', ARGV[3])
else
  redis.call('DEL', key)
end
return 2
",
    )
});

/// `touch`: ARGV = now, requested idle deadline (Unix ms), expected version.
/// Only when the live record has the expected version (compared as decimal
/// strings, as in `save`): sets `a` to now and `i` to the requested
/// deadline, never earlier than the stored one and never past `x`; sets the
/// TTL to match. The header's `i:x:a` run is spliced; the rest of the value
/// is copied as it is. Returns 1 if touched, 0 if no live record of that
/// version is there.
pub(crate) static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local key, now = KEYS[1], tonumber(ARGV[1])
local s, v, i, x, u, pi, pa = live(key, now)
if not s or v ~= ARGV[3] then return 0 end
local idle, stored = tonumber(ARGV[2]), ARGV[2]
if idle < tonumber(i) then idle, stored = tonumber(i), i end
if idle > tonumber(x) then idle, stored = tonumber(x), x end
redis.call('SET', key, string.sub(s, 1, pi - 1) .. stored .. ':' .. x .. ':' .. ARGV[1] .. string.sub(s, pa),
  'PX', string.format('%d', idle - now))
return 1
",
    )
});

/// `delete_if_unchanged`: ARGV = now, expected version.
/// Returns 0 (no live record), 1 (a live record of another version, kept)
/// or 2 (deleted). Versions compare as decimal strings, as in `save`.
pub(crate) static DELETE_IF_UNCHANGED: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local key, now = KEYS[1], tonumber(ARGV[1])
local s, v = live(key, now)
if not s then return 0 end
if v ~= ARGV[2] then return 1 end
redis.call('DEL', key)
return 2
",
    )
});

/// `delete_by_principal`, per key: ARGV = now, principal, tombstone ttl ms.
/// Returns 1 if a live record of that principal was there: it is replaced
/// by a tombstone (deleted). Returns 0 if the key is empty or holds a
/// tombstone: a tombstone is put (or renewed) there. Either way the member
/// may leave the principal's set. Returns 2 if a live record of another
/// principal (or of none) is there, 3 if a value that is not live but that
/// a `create` may replace is there (a dead record, a foreign value): both
/// kept, and so is the member.
pub(crate) static DELETE_OWNED: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local key, now = KEYS[1], tonumber(ARGV[1])
local s = redis.pcall('GET', key)
if s == false or s == TOMBSTONE then
  bury(key)
  return 0
end
local s, v, i, x, u = parse(s, now)
if not s then return 3 end
if u ~= ARGV[2] then return 2 end
bury(key)
return 1
",
    )
});

/// The principal index's cleanup, per member whose record looked absent:
/// ARGV = tombstone ttl ms. Returns 1 if the key is empty or holds a
/// tombstone: a tombstone is put (or renewed) there, and the member may
/// leave the set. Returns 0 if anything else is there (a live record that
/// landed since, a dead record or a foreign value that a `create` may
/// replace): nothing written, and the member stays.
pub(crate) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local key = KEYS[1]
local s = redis.pcall('GET', key)
if s == false or s == TOMBSTONE then
  bury(key)
  return 1
end
return 0
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
