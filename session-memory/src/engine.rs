//! The map the memory store keeps its sessions in: hash-map shards, each
//! under its own short `std` mutex, with lazy expiry and a capacity bound
//! that evicts the least recently used sessions of a full shard.
//!
//! Why not a general-purpose concurrent cache: a session store needs little
//! of one. Store keys are SHA-256 hashes drawn by the server (a client can
//! only name keys, never make us insert one of its choosing), so the first
//! bytes of a key are already a uniform hash and no hasher has to run over
//! its 43 characters. Expiry is checked on every read against the record's
//! own deadlines, so it needs no timer wheel: expired entries are only
//! reclaimed later (when their shard fills up, every [`SWEEP_EVERY`] inserts
//! into a shard, and on [`Engine::purge_expired`]). And every change of a
//! key is one short critical section on its shard: the store decides and
//! writes under the same lock, so create-if-absent and compare-and-set need
//! no per-entry machinery. Measured against the moka future cache it
//! replaced in BENCHMARKS.md ("The memory store's own engine").

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use session_core::StoreKey;
use session_core::record::now;
use session_core::time::OffsetDateTime;

use crate::Stored;

/// Length of a store key (43 characters of base64url).
const KEY_LEN: usize = 43;

/// A shard of a full store evicts this fraction (1/32) of its sessions,
/// least recently used first, when a new one arrives.
const EVICT_SHARE: usize = 32;

/// Every this many inserts of a new key into a shard, its expired sessions
/// are dropped.
pub(crate) const SWEEP_EVERY: u32 = 1024;

/// Sessions per shard that the shard count aims at; at most [`MAX_SHARDS`].
const SESSIONS_PER_SHARD: u64 = 4096;

/// Shards of the largest stores.
const MAX_SHARDS: u64 = 256;

/// A store key held inline, without an allocation of its own.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key([u8; KEY_LEN]);

impl Key {
    fn of(key: &StoreKey) -> Option<Self> {
        key.as_str().as_bytes().try_into().ok().map(Self)
    }

    fn store_key(&self) -> Option<StoreKey> {
        std::str::from_utf8(&self.0).ok().and_then(StoreKey::parse)
    }

    /// Bytes 8..16 of the key, for the shard (the map's own hash takes 0..8).
    fn shard_bits(&self) -> u64 {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&self.0[8..16]);
        u64::from_le_bytes(bytes).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

impl Hash for Key {
    /// The first 8 characters: the key is a SHA-256 hash already.
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(bytes));
    }
}

/// Hashes a [`Key`]'s one `u64` by a multiplication (its characters carry 6
/// bits each, so they are spread over the whole word first).
#[derive(Clone, Copy, Default)]
struct KeyHash;

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached for `Key`; a fallback that still hashes every byte.
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        self.0 ^= self.0 >> 32;
    }
}

/// A session in a shard, with the shard's clock reading at its last use.
struct Slot {
    stored: Arc<Stored>,
    used: u64,
}

/// One shard: a map and its clock (one tick per use, for eviction order).
#[derive(Default)]
struct Shard {
    map: HashMap<Key, Slot, KeyHash>,
    clock: u64,
    /// Inserts of a new key since the last sweep of expired sessions.
    inserts: u32,
}

impl Shard {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Drops every expired session; returns how many.
    fn purge_expired(&mut self, now: OffsetDateTime) -> u64 {
        let before = self.map.len();
        self.map.retain(|_, slot| !slot.stored.is_expired(now));
        self.inserts = 0;
        (before - self.map.len()) as u64
    }

    /// Makes room for one more session in this shard when `full` (given
    /// the shard and how many sessions this call removed so far): expired
    /// sessions first, then (if still `full`) the least recently used
    /// thirty-second of the shard (at least one session).
    fn make_room(&mut self, full: impl Fn(&Self, u64) -> bool) {
        if !full(self, 0) {
            return;
        }
        let purged = self.purge_expired(now());
        if !full(self, purged) || self.map.is_empty() {
            return;
        }
        let evict = (self.map.len() / EVICT_SHARE).max(1);
        let mut stamps: Vec<u64> = self.map.values().map(|s| s.used).collect();
        // Stamps are unique per shard (one tick per use), so exactly
        // `evict` sessions are at or below the threshold.
        let (_, threshold, _) = stamps.select_nth_unstable(evict - 1);
        let threshold = *threshold;
        self.map.retain(|_, slot| slot.used > threshold);
    }
}

/// A shard padded to its own cache lines, so that two cores working on two
/// shards do not contend for one line.
#[repr(align(128))]
#[derive(Default)]
struct Padded(Mutex<Shard>);

/// What to do with a key, decided under its shard's lock (see
/// [`Engine::compute`]).
pub(crate) enum Op {
    /// Leave the key as it is.
    Nop,
    /// Store this record under the key.
    Put(Arc<Stored>),
    /// Remove the key.
    Remove,
}

/// What [`Engine::compute`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Nothing changed.
    Nothing,
    /// The record was stored.
    Put,
    /// The key was removed.
    Removed,
}

/// The sharded map. Cheap to share behind an `Arc`.
pub(crate) struct Engine {
    shards: Box<[Padded]>,
    /// Sessions all shards hold at most together.
    capacity: u64,
    /// Sessions one shard holds at most: twice its share, so that the
    /// uneven spread of keys over shards does not make a shard evict
    /// before the store is full.
    shard_capacity: usize,
    /// `shards.len() - 1` (the count is a power of two).
    mask: u64,
    /// Entries held in all shards: changed under a shard's lock whenever
    /// its map grows or shrinks, read without any.
    held: AtomicU64,
}

impl Engine {
    /// An engine holding at most `capacity` sessions. A new session arriving
    /// when the store is full makes room in its own shard; a shard also
    /// makes room once it holds twice its share (keys spread evenly over
    /// the shards, so that bound only matters for small stores).
    pub(crate) fn with_capacity(capacity: u64) -> Self {
        let capacity = capacity.max(1);
        let shards = (capacity / SESSIONS_PER_SHARD)
            .clamp(1, MAX_SHARDS)
            .next_power_of_two()
            .min(MAX_SHARDS);
        let shard_capacity =
            usize::try_from(capacity.div_ceil(shards).saturating_mul(2)).unwrap_or(usize::MAX);
        Self {
            capacity,
            shards: (0..shards).map(|_| Padded::default()).collect(),
            shard_capacity,
            mask: shards - 1,
            held: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &Key) -> MutexGuard<'_, Shard> {
        let index = usize::try_from((key.shard_bits() >> 32) & self.mask).unwrap_or(0);
        // A shard's critical sections cannot panic halfway (no user code
        // runs under it but the store's own decisions); poison carries no
        // broken invariant.
        self.shards[index]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry under `key`, expired or not, marked as just used.
    pub(crate) fn get(&self, key: &StoreKey) -> Option<Arc<Stored>> {
        let key = Key::of(key)?;
        let mut shard = self.shard(&key);
        let now = shard.tick();
        let slot = shard.map.get_mut(&key)?;
        slot.used = now;
        Some(Arc::clone(&slot.stored))
    }

    /// Whether an entry, expired or not, is held under `key`.
    pub(crate) fn contains(&self, key: &StoreKey) -> bool {
        Key::of(key).is_some_and(|key| self.shard(&key).map.contains_key(&key))
    }

    /// Decides what to do with `key`'s entry (`None` when absent; expired
    /// entries are given as they are) and does it, all under the key's
    /// shard lock: a decision and its write are atomic. `decide` must be
    /// short and must not call back into this engine.
    pub(crate) fn compute(
        &self,
        key: &StoreKey,
        decide: impl FnOnce(Option<&Arc<Stored>>) -> Op,
    ) -> Applied {
        let Some(k) = Key::of(key) else {
            // Not the shape of a store key: never stored, so absent.
            return match decide(None) {
                Op::Nop | Op::Remove => Applied::Nothing,
                // Cannot happen for keys made by `Id::store_key`; refused
                // rather than stored under a key nothing could find.
                Op::Put(_) => Applied::Nothing,
            };
        };
        let mut shard = self.shard(&k);
        let op = decide(shard.map.get(&k).map(|slot| &slot.stored));
        let before = shard.map.len();
        let applied = match op {
            Op::Nop => Applied::Nothing,
            Op::Put(stored) => {
                let used = shard.tick();
                if let Some(slot) = shard.map.get_mut(&k) {
                    *slot = Slot { stored, used };
                } else {
                    let (capacity, shard_capacity) = (self.capacity, self.shard_capacity);
                    let held = &self.held;
                    // `held` changes under other shards' locks meanwhile;
                    // read again after each step, it only errs by the few
                    // inserts racing this one.
                    shard.make_room(|shard, removed| {
                        held.load(Ordering::Relaxed).saturating_sub(removed) >= capacity
                            || shard.map.len() >= shard_capacity
                    });
                    shard.inserts += 1;
                    if shard.inserts >= SWEEP_EVERY {
                        shard.purge_expired(now());
                    }
                    shard.map.insert(k, Slot { stored, used });
                }
                Applied::Put
            }
            Op::Remove => {
                if shard.map.remove(&k).is_some() {
                    Applied::Removed
                } else {
                    Applied::Nothing
                }
            }
        };
        self.count(before, shard.map.len());
        applied
    }

    /// Keeps [`held`](Self::held) in step with a shard whose map went from
    /// `before` to `after` entries (called under that shard's lock).
    fn count(&self, before: usize, after: usize) {
        if after > before {
            self.held
                .fetch_add((after - before) as u64, Ordering::Relaxed);
        } else if before > after {
            self.held
                .fetch_sub((before - after) as u64, Ordering::Relaxed);
        }
    }

    /// Removes `key`'s entry, if any.
    pub(crate) fn remove(&self, key: &StoreKey) {
        if let Some(k) = Key::of(key) {
            let mut shard = self.shard(&k);
            if shard.map.remove(&k).is_some() {
                self.count(1, 0);
            }
        }
    }

    /// Every key held, expired or not (a snapshot, one shard at a time).
    pub(crate) fn keys(&self) -> Vec<StoreKey> {
        let mut keys = Vec::new();
        for shard in &self.shards {
            let shard = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
            keys.extend(shard.map.keys().filter_map(Key::store_key));
        }
        keys
    }

    /// Entries held, expired ones not yet dropped included.
    pub(crate) fn len(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Drops every expired entry; returns how many.
    pub(crate) fn purge_expired(&self, now: OffsetDateTime) -> u64 {
        self.shards
            .iter()
            .map(|shard| {
                let mut shard = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
                let dropped = shard.purge_expired(now);
                self.count(usize::try_from(dropped).unwrap_or(0), 0);
                dropped
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::conformance::store::{new_key, new_record, record_expiring_in};
    use std::time::Duration;

    fn put(engine: &Engine, key: &StoreKey, record: &session_core::Record) -> Applied {
        let stored = Arc::new(Stored::new(record));
        engine.compute(key, |_| Op::Put(stored))
    }

    #[test]
    fn shard_counts_and_capacities() {
        let small = Engine::with_capacity(100);
        assert_eq!((small.shards.len(), small.shard_capacity), (1, 200));
        let large = Engine::with_capacity(1_000_000);
        assert_eq!(large.shards.len(), 256);
        assert_eq!(large.shard_capacity, 2 * 3907);
        let zero = Engine::with_capacity(0);
        assert_eq!((zero.shards.len(), zero.capacity), (1, 1));
    }

    #[test]
    fn a_full_shard_evicts_its_least_recently_used_first() {
        let engine = Engine::with_capacity(64);
        let keys: Vec<StoreKey> = (0..64).map(|_| new_key()).collect();
        for key in &keys {
            assert_eq!(put(&engine, key, &new_record()), Applied::Put);
        }
        // Use all but the first four again: those are now the oldest.
        for key in &keys[4..] {
            assert!(engine.get(key).is_some());
        }
        let newcomer = new_key();
        assert_eq!(put(&engine, &newcomer, &new_record()), Applied::Put);
        // 64 / 32 = 2 evicted, the two least recently used.
        assert_eq!(engine.len(), 63);
        assert!(engine.get(&keys[0]).is_none());
        assert!(engine.get(&keys[1]).is_none());
        for key in &keys[2..] {
            assert!(
                engine.get(key).is_some(),
                "a recently used session was evicted"
            );
        }
        assert!(engine.get(&newcomer).is_some());
    }

    #[test]
    fn a_sharded_store_holds_its_whole_capacity_before_evicting() {
        let engine = Engine::with_capacity(20_000);
        assert_eq!(engine.shards.len(), 4);
        for _ in 0..20_000 {
            assert_eq!(put(&engine, &new_key(), &new_record()), Applied::Put);
        }
        assert_eq!(engine.len(), 20_000, "evicted before the store was full");
        put(&engine, &new_key(), &new_record());
        let held = engine.len();
        // One shard (about 5 000 sessions) gave up a thirty-second.
        assert!((19_800..20_000).contains(&held), "{held} held");
    }

    #[test]
    fn expired_sessions_make_room_before_live_ones() {
        let engine = Engine::with_capacity(8);
        let dead = new_key();
        put(&engine, &dead, &record_expiring_in(Duration::ZERO));
        let live: Vec<StoreKey> = (0..7).map(|_| new_key()).collect();
        for key in &live {
            put(&engine, key, &new_record());
        }
        put(&engine, &new_key(), &new_record());
        assert_eq!(engine.len(), 8);
        assert!(!engine.contains(&dead));
        assert!(live.iter().all(|key| engine.contains(key)));
    }

    #[test]
    fn purge_counts_what_it_dropped_and_keys_round_trip() {
        let engine = Engine::with_capacity(1000);
        for _ in 0..5 {
            put(&engine, &new_key(), &record_expiring_in(Duration::ZERO));
        }
        let kept = new_key();
        put(&engine, &kept, &new_record());
        assert_eq!(engine.len(), 6);
        assert_eq!(engine.purge_expired(now()), 5);
        assert_eq!(engine.keys(), vec![kept]);
    }
}
