//! The keyspace: string keys to string values, each with an optional expiry time.
//!
//! Time is the caller's monotonic clock in milliseconds, passed to every call that looks at
//! expiry; the store never reads a clock itself. Expiry times in [`Effect`]s are on that clock
//! too, so a log kept across reboots must record them against a clock that survives the reboot
//! (or rebase them when replaying).
//!
//! # One way in: [`Effect`]
//!
//! The store changes only through [`Store::apply`], which takes an [`Effect`]: `Set`, `Del`,
//! `Expire`, `Persist` or `Flush`. The command engine turns each command into effects and
//! applies them, and hands the same effects to its caller, so a durable layer can log exactly
//! what changed; replaying the logged effects in order on an empty store rebuilds the same
//! state. Expiry is recorded as a `Del` too (when a read finds a key expired, or
//! [`Store::expire_some`] sweeps it).
//!
//! # Layout and memory
//!
//! Entries live in a slab (`Vec<Option<Entry>>`, freed slots reused); the hash index is a
//! `hashbrown::HashTable<u32>` of slab positions, so each key is stored once. Per key the index
//! costs: 56 bytes of slab slot (key `Box<[u8]>` 16, value 24, expiry 8, the value's place in
//! the log 8), 4 bytes of table entry plus 1 control byte at a load factor of at most 7/8
//! (about 6 bytes), that is about 62 bytes, plus the key's own heap block and, while the value
//! is in memory, the value's (their bytes and the allocator's rounding). A slot's position
//! never changes while its key lives, which is what makes [`Store::scan`]'s cursor safe across
//! inserts and deletes.
//!
//! # Values on disk
//!
//! A durable caller records where each value's log record is ([`Store::apply_at`]); once that
//! record is on disk the value may be dropped from memory ([`Store::evict_some`]) and only its
//! length kept. A command that reads such a value must have it brought back first
//! ([`Store::missing`], [`Store::load`]): the engine asks before it runs the command.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::hash::{BuildHasher, Hasher};
use hashbrown::HashTable;

/// The index's hash: SipHash-2-4 under a 128-bit key, so that clients who do not know the key
/// cannot pick keys that collide (hash flooding). A unikernel has no address-space
/// randomization to seed a hasher from, so the key comes from the caller
/// ([`Store::with_hash_key`]); [`Store::new`] uses a fixed key, fine for tests only.
#[derive(Debug, Clone, Copy, Default)]
pub struct HashKey(pub u64, pub u64);

impl BuildHasher for HashKey {
    type Hasher = Sip;
    fn build_hasher(&self) -> Sip {
        #[allow(deprecated)]
        Sip(core::hash::SipHasher::new_with_keys(self.0, self.1))
    }
}

/// [`HashKey`]'s hasher (core's SipHash-2-4).
#[allow(deprecated)]
#[derive(Debug, Clone)]
pub struct Sip(core::hash::SipHasher);

impl Hasher for Sip {
    fn finish(&self) -> u64 {
        self.0.finish()
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes)
    }
}

/// One change to the keyspace. Replaying a command sequence's effects on an empty store gives
/// the same keyspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Set `key` to `value`, with this expiry (absolute ms on the caller's clock) or none.
    Set {
        /// The key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
        /// When the key expires, or `None` for never.
        expire_at_ms: Option<u64>,
    },
    /// Remove `key` (no-op if absent).
    Del {
        /// The key.
        key: Vec<u8>,
    },
    /// Make an existing `key` expire at `at` ms (no-op if absent).
    Expire {
        /// The key.
        key: Vec<u8>,
        /// Absolute expiry time, ms on the caller's clock.
        at: u64,
    },
    /// Remove `key`'s expiry (no-op if absent).
    Persist {
        /// The key.
        key: Vec<u8>,
    },
    /// Remove every key.
    Flush,
}

/// `expire_at` of a key that never expires.
const NEVER: u64 = u64::MAX;

/// `loc` of a value that has no log record (no durable caller, or not logged yet).
pub const NO_LOC: u64 = u64::MAX;

#[derive(Debug, Clone)]
enum Value {
    /// In memory.
    Mem(Vec<u8>),
    /// Only on disk (in the log record at the entry's `loc`): its length.
    Disk(u32),
}

impl Value {
    fn len(&self) -> usize {
        match self {
            Value::Mem(v) => v.len(),
            Value::Disk(n) => *n as usize,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    key: Box<[u8]>,
    value: Value,
    expire_at: u64,
    loc: u64,
}

/// A live key's value and expiry, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View<'a> {
    /// The value (empty if it is on disk: see [`View::resident`]).
    pub value: &'a [u8],
    /// The value's length (also when it is on disk).
    pub len: usize,
    /// False if the value is only on disk.
    pub resident: bool,
    /// When it expires (absolute ms), or `None`.
    pub expire_at_ms: Option<u64>,
}

/// Where a value that is only on disk is: what [`Store::missing`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnDisk {
    /// The log record's byte offset on the disk.
    pub loc: u64,
    /// The key's length.
    pub key_len: usize,
    /// The value's length.
    pub value_len: usize,
}

/// The keyspace. See the module documentation.
#[derive(Debug, Default)]
pub struct Store {
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    index: HashTable<u32>,
    hasher: HashKey,
    len: usize,
    expires: usize,
    sweep: usize,
    /// Bytes of values held in memory.
    resident: usize,
    /// Where [`Store::evict_some`] goes on from.
    clock: usize,
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Store::default()
    }

    /// An empty store whose index hashes under `key` (pick it at random at boot).
    pub fn with_hash_key(key: HashKey) -> Self {
        Store {
            hasher: key,
            ..Store::default()
        }
    }

    /// Number of keys, including expired ones not yet removed (as Redis's DBSIZE).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of keys with an expiry.
    pub fn expires(&self) -> usize {
        self.expires
    }

    fn find(&self, key: &[u8]) -> Option<usize> {
        let hash = self.hasher.hash_one(key);
        let slots = &self.slots;
        self.index
            .find(hash, |&i| {
                slots[i as usize].as_ref().is_some_and(|e| &*e.key == key)
            })
            .map(|&i| i as usize)
    }

    /// `key`'s entry if present, expired or not.
    pub fn get_raw(&self, key: &[u8]) -> Option<View<'_>> {
        let e = self.slots[self.find(key)?].as_ref()?;
        Some(view(e))
    }

    /// Bytes of values held in memory.
    pub fn resident_bytes(&self) -> usize {
        self.resident
    }

    /// Where `key`'s value record is in the log, if it has one.
    pub fn loc(&self, key: &[u8]) -> Option<u64> {
        let e = self.slots[self.find(key)?].as_ref()?;
        (e.loc != NO_LOC).then_some(e.loc)
    }

    /// Compaction copied `key`'s value record from `from` to `to`. A value in memory points at
    /// the copy at once (it is evicted only once the copy is on disk); one only on disk keeps
    /// reading the old record, which stays until the copy is on disk: then the caller says
    /// [`Store::relocate`]. Returns false in that second case.
    pub fn moved(&mut self, key: &[u8], from: u64, to: u64) -> bool {
        let Some(i) = self.find(key) else {
            return true;
        };
        let e = self.slots[i].as_mut().expect("indexed slot is live");
        if e.loc != from {
            return true;
        }
        match e.value {
            Value::Mem(_) => {
                e.loc = to;
                true
            }
            Value::Disk(_) => false,
        }
    }

    /// `key`'s value record moves from `from` to `to` (see [`Store::moved`]), unless the key
    /// changed meanwhile.
    pub fn relocate(&mut self, key: &[u8], from: u64, to: u64) {
        if let Some(i) = self.find(key) {
            let e = self.slots[i].as_mut().expect("indexed slot is live");
            if e.loc == from {
                e.loc = to;
            }
        }
    }

    /// If `key` is live at `now` and its value is only on disk: where.
    pub fn missing(&self, key: &[u8], now: u64) -> Option<OnDisk> {
        let e = self.slots[self.find(key)?].as_ref()?;
        if is_expired((e.expire_at != NEVER).then_some(e.expire_at), now) {
            return None;
        }
        match e.value {
            Value::Disk(n) => Some(OnDisk {
                loc: e.loc,
                key_len: e.key.len(),
                value_len: n as usize,
            }),
            Value::Mem(_) => None,
        }
    }

    /// Puts a value read back from the log record at `loc` into memory; false (and nothing
    /// changed) if `key`'s value is no longer the one at `loc` or is already in memory.
    pub fn load(&mut self, key: &[u8], loc: u64, value: &[u8]) -> bool {
        let Some(i) = self.find(key) else {
            return false;
        };
        let e = self.slots[i].as_mut().expect("indexed slot is live");
        match e.value {
            Value::Disk(n) if e.loc == loc && n as usize == value.len() => {
                e.value = Value::Mem(value.to_vec());
                self.resident += value.len();
                true
            }
            _ => false,
        }
    }

    /// Drops values from memory (keeping their lengths) until at most `target` bytes of values
    /// are resident, visiting at most `budget` slots from where the last call stopped; only
    /// values whose log record `durable(loc)` says is on disk. Returns the bytes dropped.
    pub fn evict_some(
        &mut self,
        target: usize,
        budget: usize,
        durable: impl Fn(u64) -> bool,
    ) -> usize {
        let mut dropped = 0;
        for _ in 0..budget.min(self.slots.len()) {
            if self.resident <= target {
                break;
            }
            if self.clock >= self.slots.len() {
                self.clock = 0;
            }
            if let Some(e) = self.slots[self.clock].as_mut() {
                if let Value::Mem(v) = &e.value {
                    if e.loc != NO_LOC && durable(e.loc) {
                        let n = v.len();
                        e.value = Value::Disk(n as u32);
                        self.resident -= n;
                        dropped += n;
                    }
                }
            }
            self.clock += 1;
        }
        dropped
    }

    /// `key`'s entry if present and not expired at `now`.
    pub fn get(&self, key: &[u8], now: u64) -> Option<View<'_>> {
        self.get_raw(key)
            .filter(|v| !is_expired(v.expire_at_ms, now))
    }

    /// True if `key` is present but expired at `now` (a read should then apply a `Del`).
    pub fn is_expired(&self, key: &[u8], now: u64) -> bool {
        self.get_raw(key)
            .is_some_and(|v| is_expired(v.expire_at_ms, now))
    }

    /// Applies one effect: the only way the keyspace changes.
    pub fn apply(&mut self, effect: &Effect) {
        self.apply_at(effect, NO_LOC, |_| {});
    }

    /// [`Store::apply_at`] taking the effect: a `Set`'s value moves into the store instead of
    /// being copied (a big value is then held once, not twice).
    pub fn apply_owned(&mut self, effect: Effect, loc: u64, released: impl FnMut(OnDisk)) {
        match effect {
            Effect::Set {
                key,
                value,
                expire_at_ms,
            } if self.find(&key).is_none() => {
                self.resident += value.len();
                self.insert(Entry {
                    key: key.into_boxed_slice(),
                    value: Value::Mem(value),
                    expire_at: expire_at_ms.unwrap_or(NEVER),
                    loc,
                });
            }
            Effect::Set {
                key,
                value,
                expire_at_ms,
            } => {
                // Replace in place, releasing the old record, then hand over the new bytes.
                let empty = Effect::Set {
                    key,
                    value: Vec::new(),
                    expire_at_ms,
                };
                self.apply_at(&empty, loc, released);
                let Effect::Set { key, .. } = empty else {
                    unreachable!()
                };
                let i = self.find(&key).expect("just set");
                let e = self.slots[i].as_mut().expect("indexed slot is live");
                self.resident += value.len();
                e.value = Value::Mem(value);
            }
            other => self.apply_at(&other, loc, released),
        }
    }

    /// [`Store::apply`] for a durable caller: a `Set`'s value record is at `loc` in the log,
    /// and `released` is told of every value record the effect makes dead (the replaced or
    /// deleted entry's), so the log can count its live bytes.
    pub fn apply_at(&mut self, effect: &Effect, loc: u64, mut released: impl FnMut(OnDisk)) {
        let mut release = |e: &Entry| {
            if e.loc != NO_LOC {
                released(OnDisk {
                    loc: e.loc,
                    key_len: e.key.len(),
                    value_len: e.value.len(),
                })
            }
        };
        match effect {
            Effect::Set {
                key,
                value,
                expire_at_ms,
            } => {
                let at = expire_at_ms.unwrap_or(NEVER);
                if let Some(i) = self.find(key) {
                    let e = self.slots[i].as_mut().expect("indexed slot is live");
                    release(e);
                    self.expires =
                        self.expires + (at != NEVER) as usize - (e.expire_at != NEVER) as usize;
                    if let Value::Mem(v) = &e.value {
                        self.resident -= v.len();
                    }
                    match &mut e.value {
                        Value::Mem(v) => {
                            v.clear();
                            v.extend_from_slice(value);
                        }
                        Value::Disk(_) => e.value = Value::Mem(value.clone()),
                    }
                    self.resident += value.len();
                    e.expire_at = at;
                    e.loc = loc;
                } else {
                    self.resident += value.len();
                    self.insert(Entry {
                        key: key.as_slice().into(),
                        value: Value::Mem(value.clone()),
                        expire_at: at,
                        loc,
                    });
                }
            }
            Effect::Del { key } => {
                if let Some(e) = self.remove(key) {
                    release(&e);
                }
            }
            Effect::Expire { key, at } => self.set_expiry(key, *at),
            Effect::Persist { key } => self.set_expiry(key, NEVER),
            Effect::Flush => {
                for e in self.slots.iter().flatten() {
                    release(e);
                }
                *self = Store {
                    hasher: self.hasher,
                    ..Store::default()
                };
            }
        }
    }

    fn set_expiry(&mut self, key: &[u8], at: u64) {
        if let Some(i) = self.find(key) {
            let e = self.slots[i].as_mut().expect("indexed slot is live");
            self.expires = self.expires + (at != NEVER) as usize - (e.expire_at != NEVER) as usize;
            e.expire_at = at;
        }
    }

    fn insert(&mut self, entry: Entry) {
        let hash = self.hasher.hash_one(&*entry.key);
        self.expires += (entry.expire_at != NEVER) as usize;
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(entry);
                i
            }
            None => {
                self.slots.push(Some(entry));
                (self.slots.len() - 1) as u32
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.insert_unique(hash, i, |&j| {
            hasher.hash_one(
                &*slots[j as usize]
                    .as_ref()
                    .expect("indexed slot is live")
                    .key,
            )
        });
        self.len += 1;
    }

    fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let hash = self.hasher.hash_one(key);
        let slots = &self.slots;
        let Ok(found) = self.index.find_entry(hash, |&i| {
            slots[i as usize].as_ref().is_some_and(|e| &*e.key == key)
        }) else {
            return None;
        };
        let (i, _) = found.remove();
        let e = self.slots[i as usize].take().expect("indexed slot is live");
        self.expires -= (e.expire_at != NEVER) as usize;
        if let Value::Mem(v) = &e.value {
            self.resident -= v.len();
        }
        self.len -= 1;
        // Trailing free slots are dropped so the slab shrinks; a live key never moves.
        if i as usize + 1 == self.slots.len() {
            while let Some(None) = self.slots.last() {
                self.slots.pop();
            }
            let n = self.slots.len() as u32;
            self.free.retain(|&f| f < n);
        } else {
            self.free.push(i);
        }
        Some(e)
    }

    /// Visits up to `budget` slots from where the last sweep stopped and deletes the keys
    /// expired at `now`, appending a `Del` for each to `effects` (for the log). Returns how many
    /// keys were removed.
    pub fn expire_some(&mut self, now: u64, budget: usize, effects: &mut Vec<Effect>) -> usize {
        let mut removed = 0;
        for _ in 0..budget.min(self.slots.len()) {
            if self.sweep >= self.slots.len() {
                self.sweep = 0;
            }
            let expired = self.slots[self.sweep]
                .as_ref()
                .filter(|e| e.expire_at != NEVER && e.expire_at <= now)
                .map(|e| e.key.to_vec());
            if let Some(key) = expired {
                let eff = Effect::Del { key };
                self.apply(&eff);
                effects.push(eff);
                removed += 1;
            }
            self.sweep += 1;
        }
        removed
    }

    /// One step of a cursor scan: visits slots from `cursor` on, calling `f` with each live
    /// (unexpired at `now`) key, until `count` slots held a key. Returns the next cursor, 0 when
    /// the scan is complete. Start with 0. A key present for the whole scan is visited exactly
    /// once: slots never move while their key lives.
    pub fn scan(&self, cursor: u64, count: usize, now: u64, mut f: impl FnMut(&[u8])) -> u64 {
        let mut i = cursor as usize;
        let mut seen = 0;
        while i < self.slots.len() && seen < count.max(1) {
            if let Some(e) = &self.slots[i] {
                seen += 1;
                if e.expire_at == NEVER || e.expire_at > now {
                    f(&e.key);
                }
            }
            i += 1;
        }
        if i >= self.slots.len() {
            0
        } else {
            i as u64
        }
    }

    /// Every live key at `now` with its value and expiry, sorted: what two stores (one replayed
    /// from the other's effects, say) are compared by.
    pub fn snapshot(&self, now: u64) -> Vec<(Vec<u8>, Vec<u8>, Option<u64>)> {
        let mut v: Vec<_> = self
            .keys(now)
            .map(|(k, v)| (k.to_vec(), v.value.to_vec(), v.expire_at_ms))
            .collect();
        v.sort();
        v
    }

    /// Every key with where its value record is (for consistency checks).
    pub fn locs(&self) -> impl Iterator<Item = (&[u8], u64)> {
        self.slots.iter().flatten().map(|e| (&*e.key, e.loc))
    }

    /// Every live key at `now`, in slot order.
    pub fn keys(&self, now: u64) -> impl Iterator<Item = (&[u8], View<'_>)> {
        self.slots
            .iter()
            .flatten()
            .filter(move |e| e.expire_at == NEVER || e.expire_at > now)
            .map(|e| (&*e.key, view(e)))
    }
}

fn view(e: &Entry) -> View<'_> {
    View {
        value: match &e.value {
            Value::Mem(v) => v,
            Value::Disk(_) => &[],
        },
        len: e.value.len(),
        resident: matches!(e.value, Value::Mem(_)),
        expire_at_ms: (e.expire_at != NEVER).then_some(e.expire_at),
    }
}

/// True if a key with this expiry is gone at `now`.
pub fn is_expired(expire_at_ms: Option<u64>, now: u64) -> bool {
    expire_at_ms.is_some_and(|at| at <= now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn set(k: &str, v: &str, at: Option<u64>) -> Effect {
        Effect::Set {
            key: k.into(),
            value: v.into(),
            expire_at_ms: at,
        }
    }

    #[test]
    fn set_get_del_expire_flush() {
        let mut s = Store::new();
        s.apply(&set("a", "1", None));
        s.apply(&set("b", "2", Some(100)));
        assert_eq!((s.len(), s.expires()), (2, 1));
        assert_eq!(s.get(b"b", 99).unwrap().value, b"2");
        assert_eq!(s.get(b"b", 100), None);
        assert!(s.is_expired(b"b", 100));
        s.apply(&Effect::Persist { key: b"b".to_vec() });
        assert_eq!(
            (s.get(b"b", 1000).unwrap().expire_at_ms, s.expires()),
            (None, 0)
        );
        s.apply(&Effect::Expire {
            key: b"a".to_vec(),
            at: 5,
        });
        s.apply(&Effect::Expire {
            key: b"zz".to_vec(),
            at: 5,
        });
        assert_eq!((s.len(), s.expires()), (2, 1));
        let mut effects = vec![];
        assert_eq!(s.expire_some(5, 10, &mut effects), 1);
        assert_eq!(effects, vec![Effect::Del { key: b"a".to_vec() }]);
        assert_eq!((s.len(), s.expires()), (1, 0));
        s.apply(&Effect::Del { key: b"b".to_vec() });
        s.apply(&Effect::Del { key: b"b".to_vec() });
        assert!(s.is_empty());
        s.apply(&set("c", "3", Some(9)));
        s.apply(&Effect::Flush);
        assert_eq!((s.len(), s.expires(), s.get(b"c", 0)), (0, 0, None));
    }

    #[test]
    fn any_hash_key_finds_its_keys() {
        for key in [HashKey(0, 0), HashKey(1, 2), HashKey(u64::MAX, 7)] {
            let mut s = Store::with_hash_key(key);
            for i in 0..300 {
                s.apply(&set(&alloc::format!("k{i}"), "v", None));
            }
            for i in (0..300).step_by(2) {
                s.apply(&Effect::Del {
                    key: alloc::format!("k{i}").into_bytes(),
                });
            }
            assert_eq!(s.len(), 150);
            for i in 0..300 {
                assert_eq!(
                    s.get(alloc::format!("k{i}").as_bytes(), 0).is_some(),
                    i % 2 == 1
                );
            }
            s.apply(&Effect::Flush);
            s.apply(&set("after", "flush", None));
            assert_eq!(s.get(b"after", 0).unwrap().value, b"flush");
        }
    }

    #[test]
    fn scan_returns_every_key_present_throughout_despite_churn() {
        let mut s = Store::new();
        for i in 0..500 {
            s.apply(&set(&alloc::format!("stable{i}"), "v", None));
        }
        let mut seen = hashbrown::HashSet::new();
        let mut cursor = 0;
        let mut round = 0;
        loop {
            cursor = s.scan(cursor, 7, 0, |k| {
                seen.insert(k.to_vec());
            });
            // Churn between steps: add and remove other keys.
            for j in 0..5 {
                s.apply(&set(&alloc::format!("tmp{round}-{j}"), "x", None));
            }
            if round > 0 {
                s.apply(&Effect::Del {
                    key: alloc::format!("tmp{}-2", round - 1).into_bytes(),
                });
            }
            round += 1;
            if cursor == 0 {
                break;
            }
        }
        for i in 0..500 {
            assert!(
                seen.contains(alloc::format!("stable{i}").as_bytes()),
                "stable{i}"
            );
        }
    }
}
