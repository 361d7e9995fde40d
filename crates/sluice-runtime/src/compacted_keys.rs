//! [`CompactedKeys`]: the idle keys of a [`KeyedState`](crate::state::KeyedState),
//! kept in memory in their encoded form.
//!
//! A key's live value is built for updating: DataFusion accumulators boxed
//! one by one, rows in their own allocations, a hash-map slot sized for the
//! largest value kind. Most keys of a large state are idle: an auction that
//! closed, a bidder who left. Encoded with the state's codec (the bytes a
//! checkpoint or a spill writes), one allocation holds the key and its value,
//! at a third to a sixth of the memory. A compacted key is decoded back when
//! the operator touches it again.
//!
//! How long a key must be idle adapts: when many compacted keys come back
//! (the work of encoding them was wasted), keys must stay idle longer before
//! they are compacted; when few do, shorter.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::keyed_state::allocated;

/// States with fewer keys in their live form are not compacted: too small
/// to matter.
const MIN_LIVE_KEYS: usize = 4096;
/// Batches a key must go untouched before it is compacted, at first.
const FIRST_IDLE_BATCHES: u32 = 16;
/// The least and most batches a key must go untouched.
const IDLE_BATCHES: (u32, u32) = (2, 1 << 16);
/// Compactions between two adjustments of the idle time.
const ADJUST_EVERY: u64 = 4096;

/// Idle keys, encoded. Each entry is one allocation: the key's length (four
/// bytes), the key, then the stored value (write time and encoded value, as
/// spilled to disk).
pub(crate) struct CompactedKeys {
    entries: HashTable<Box<[u8]>>,
    hasher: foldhash::fast::RandomState,
    /// Bytes the entries' allocations take.
    entry_bytes: usize,
    /// Batches a key must go untouched before it is compacted.
    idle_batches: u32,
    /// The batch clock at the last sweep.
    last_sweep: u32,
    /// Keys compacted and keys decoded back since the last adjustment.
    compacted: u64,
    revived: u64,
}

/// A key taken out of [`CompactedKeys`].
pub(crate) struct CompactedEntry(Box<[u8]>);

impl CompactedEntry {
    /// The stored value: write time and encoded value.
    pub(crate) fn value(&self) -> &[u8] {
        entry_value(&self.0)
    }
}

/// The key of an entry.
fn entry_key(entry: &[u8]) -> &[u8] {
    let length = u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]) as usize;
    &entry[4..4 + length]
}

/// The stored value of an entry.
fn entry_value(entry: &[u8]) -> &[u8] {
    &entry[4 + entry_key(entry).len()..]
}

impl CompactedKeys {
    pub(crate) fn new() -> Self {
        CompactedKeys {
            entries: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            entry_bytes: 0,
            idle_batches: FIRST_IDLE_BATCHES,
            last_sweep: 0,
            compacted: 0,
            revived: 0,
        }
    }

    /// Keys held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Memory the entries and the table take.
    pub(crate) fn memory(&self) -> usize {
        self.entry_bytes + self.entries.capacity() * (std::mem::size_of::<Box<[u8]>>() + 1)
    }

    /// Keeps `key`, which must not be held already, with its write time and
    /// encoded value (stored as a spill stores them).
    pub(crate) fn insert(&mut self, key: &[u8], write_time: u64, encoded: &[u8]) {
        let length = u32::try_from(key.len()).unwrap_or(u32::MAX);
        let mut entry = Vec::with_capacity(4 + key.len() + 8 + encoded.len());
        entry.extend_from_slice(&length.to_le_bytes());
        entry.extend_from_slice(key);
        entry.extend_from_slice(&write_time.to_le_bytes());
        entry.extend_from_slice(encoded);
        self.entry_bytes += allocated(entry.len());
        let hash = self.hasher.hash_one(key);
        let hasher = &self.hasher;
        self.entries
            .insert_unique(hash, entry.into_boxed_slice(), |entry| {
                hasher.hash_one(entry_key(entry))
            });
        self.compacted += 1;
    }

    /// Removes `key`, returning its entry (see [`CompactedKeys::insert`]).
    pub(crate) fn take(&mut self, key: &[u8]) -> Option<CompactedEntry> {
        let hash = self.hasher.hash_one(key);
        let entry = self
            .entries
            .find_entry(hash, |entry| entry_key(entry) == key)
            .ok()?
            .remove()
            .0;
        self.entry_bytes -= allocated(entry.len());
        self.revived += 1;
        Some(CompactedEntry(entry))
    }

    /// Whether `key` is held.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        let hash = self.hasher.hash_one(key);
        self.entries
            .find(hash, |entry| entry_key(entry) == key)
            .is_some()
    }

    /// The stored value of `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let hash = self.hasher.hash_one(key);
        self.entries
            .find(hash, |entry| entry_key(entry) == key)
            .map(|entry| entry_value(entry))
    }

    /// Keys held.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.entries.iter().map(|entry| entry_key(entry))
    }

    /// Keeps the keys whose stored value `keep` accepts; returns how many
    /// were dropped.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&[u8]) -> bool) -> usize {
        let before = self.entries.len();
        let mut freed = 0;
        self.entries.retain(|entry| {
            let kept = keep(entry_value(entry));
            if !kept {
                freed += allocated(entry.len());
            }
            kept
        });
        self.entry_bytes -= freed;
        self.shrink();
        before - self.entries.len()
    }

    /// Removes up to `bytes` worth of keys, as (key, stored value) pairs.
    pub(crate) fn take_some(&mut self, bytes: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut taken = Vec::new();
        let mut freed = 0;
        self.entries.retain(|entry| {
            if freed >= bytes {
                return true;
            }
            freed += allocated(entry.len());
            taken.push((entry_key(entry).to_vec(), entry_value(entry).to_vec()));
            false
        });
        self.entry_bytes -= freed;
        self.shrink();
        taken
    }

    fn shrink(&mut self) {
        if self.entries.len() < self.entries.capacity() / 2 {
            let hasher = &self.hasher;
            self.entries.shrink_to(self.entries.len() * 5 / 4, |entry| {
                hasher.hash_one(entry_key(entry))
            });
        }
    }

    /// Whether a sweep for idle keys is due at batch `clock` for a state
    /// with `live_keys` keys in their live form; if so, how many batches a
    /// key must have gone untouched to be compacted.
    pub(crate) fn sweep_due(&mut self, clock: u32, live_keys: usize) -> Option<u32> {
        if live_keys < MIN_LIVE_KEYS
            || clock.wrapping_sub(self.last_sweep) < (self.idle_batches / 4).max(1)
        {
            return None;
        }
        self.last_sweep = clock;
        if self.compacted >= ADJUST_EVERY {
            // Over a quarter came back: wait longer. Under a sixteenth: shorter.
            if self.revived * 4 > self.compacted {
                self.idle_batches = (self.idle_batches * 2).min(IDLE_BATCHES.1);
            } else if self.revived * 16 < self.compacted {
                self.idle_batches = (self.idle_batches / 2).max(IDLE_BATCHES.0);
            }
            self.compacted = 0;
            self.revived = 0;
        }
        Some(self.idle_batches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored value: write time, then the encoded value.
    fn stored(write_time: u64, encoded: &[u8]) -> Vec<u8> {
        [&write_time.to_le_bytes()[..], encoded].concat()
    }

    #[test]
    fn entries_keep_keys_and_values_apart() {
        let mut keys = CompactedKeys::new();
        keys.insert(b"a", 1, b"value of a");
        keys.insert(b"", 2, b"value of the empty key");
        keys.insert(b"bb", 3, b"");
        assert_eq!(keys.len(), 3);
        assert!(keys.contains(b"a") && keys.contains(b"") && !keys.contains(b"b"));
        assert_eq!(keys.get(b"bb"), Some(&stored(3, b"")[..]));
        assert_eq!(
            keys.take(b"a").map(|e| e.value().to_vec()),
            Some(stored(1, b"value of a"))
        );
        assert!(keys.take(b"a").is_none());
        let mut held: Vec<&[u8]> = keys.keys().collect();
        held.sort();
        assert_eq!(held, [&b""[..], &b"bb"[..]]);
        assert_eq!(keys.retain(|value| value.len() > 8), 1);
        assert_eq!(
            keys.get(b""),
            Some(&stored(2, b"value of the empty key")[..])
        );
        let taken = keys.take_some(usize::MAX);
        assert_eq!(
            taken,
            [(b"".to_vec(), stored(2, b"value of the empty key"))]
        );
        assert!(keys.is_empty());
        assert_eq!(keys.entry_bytes, 0);
    }

    #[test]
    fn the_idle_time_grows_when_keys_come_back_and_shrinks_when_they_do_not() {
        let mut keys = CompactedKeys::new();
        assert_eq!(keys.sweep_due(100, MIN_LIVE_KEYS - 1), None);
        assert_eq!(keys.sweep_due(100, MIN_LIVE_KEYS), Some(FIRST_IDLE_BATCHES));
        // Not again until a quarter of the idle time has passed.
        assert_eq!(keys.sweep_due(101, MIN_LIVE_KEYS), None);
        // Half of the compacted keys came back.
        keys.compacted = ADJUST_EVERY;
        keys.revived = ADJUST_EVERY / 2;
        assert_eq!(
            keys.sweep_due(104, MIN_LIVE_KEYS),
            Some(2 * FIRST_IDLE_BATCHES)
        );
        // Next to none came back.
        keys.compacted = ADJUST_EVERY;
        keys.revived = 1;
        assert_eq!(keys.sweep_due(112, MIN_LIVE_KEYS), Some(FIRST_IDLE_BATCHES));
        // The clock may wrap.
        keys.compacted = ADJUST_EVERY;
        keys.last_sweep = u32::MAX - 1;
        assert_eq!(keys.sweep_due(1, MIN_LIVE_KEYS), None);
        assert_eq!(
            keys.sweep_due(6, MIN_LIVE_KEYS),
            Some(FIRST_IDLE_BATCHES / 2)
        );
    }
}
