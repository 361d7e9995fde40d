//! [`CompactedKeys`]: the idle keys of a [`KeyedState`](crate::state::KeyedState),
//! kept in memory in their encoded form.
//!
//! A key's live value is built for updating: DataFusion accumulators boxed
//! one by one, rows in their own allocations, a hash-map slot sized for the
//! largest value kind. Most keys of a large state are idle: an auction that
//! closed, a bidder who left. Encoded with the state's codec (the bytes a
//! checkpoint or a spill writes) and packed into pages with no allocation
//! per key, an idle key takes a third of the memory (aggregate accumulators)
//! to 0.7 of it (stored rows, already compact). A compacted key is decoded
//! back when the operator touches it again.
//!
//! Values of 512 bytes or more are compressed with LZ4 against a dictionary
//! of the state's first values ([`ValueCompressor`]) unless `state.compress-idle-keys` is off.
//!
//! How long a key must be idle adapts: when many compacted keys come back
//! (the work of encoding them was wasted), keys must stay idle longer before
//! they are compacted; when few do, shorter.

use std::borrow::Cow;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hashbrown::HashTable;
use sluice_core::Result;

use crate::value_compression::ValueCompressor;

/// States with fewer keys in their live form are not compacted: too small
/// to matter.
const MIN_LIVE_KEYS: usize = 4096;
/// Batches a key must go untouched before it is compacted, at first.
const FIRST_IDLE_BATCHES: u32 = 16;
/// The least and most batches a key must go untouched.
const IDLE_BATCHES: (u32, u32) = (2, 1 << 16);
/// Compactions between two adjustments of the idle time.
const ADJUST_EVERY: u64 = 4096;
/// Bytes of a page of entries (a larger entry gets a page of its own).
const PAGE_BYTES: usize = 1 << 20;

/// Where an entry starts: its page (high 32 bits) and offset in the page.
type Location = u64;

/// Entries packed one after the other: no allocation, rounding or pointer
/// per key.
#[derive(Default)]
struct Page {
    data: Vec<u8>,
    /// Bytes of entries taken out.
    dead: usize,
    /// Entries still held.
    live: u32,
}

/// Idle keys, encoded, packed into pages. An entry is the key's length
/// (LEB128), the key, the in-page value's length (times two, plus one if it
/// is compressed) and the in-page value: write time (eight bytes), then the
/// encoded value as spilled to disk, or its length (LEB128) and its LZ4
/// block.
pub(crate) struct CompactedKeys {
    locations: HashTable<Location>,
    pages: Vec<Page>,
    /// Pages emptied, for reuse.
    free_pages: Vec<u32>,
    /// The page new entries go to.
    open_page: Option<u32>,
    hasher: foldhash::fast::RandomState,
    compressor: ValueCompressor,
    /// Batches a key must go untouched before it is compacted.
    idle_batches: u32,
    /// The batch clock at the last sweep.
    last_sweep: u32,
    /// Keys compacted and keys decoded back since the last adjustment.
    compacted: u64,
    revived: u64,
    /// Keys compacted by every state of the job.
    compacted_in_job: Arc<AtomicU64>,
    /// Keys whose value was compressed, in every state of the job.
    compressed_in_job: Arc<AtomicU64>,
}

/// A key and its stored value (write time and encoded value).
pub(crate) type KeyAndValue = (Vec<u8>, Vec<u8>);

/// A key's stored value, taken out of [`CompactedKeys`].
pub(crate) struct CompactedEntry(Vec<u8>);

impl CompactedEntry {
    /// The stored value: write time and encoded value.
    pub(crate) fn value(&self) -> &[u8] {
        &self.0
    }
}

fn write_length(out: &mut Vec<u8>, mut value: usize) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn length_size(value: usize) -> usize {
    (usize::BITS - (value | 1).leading_zeros()).div_ceil(7) as usize
}

/// A length written by [`write_length`] at the start of `bytes`, and the
/// bytes after it.
fn read_length(bytes: &[u8]) -> (usize, &[u8]) {
    let mut value = 0;
    for (i, byte) in bytes.iter().enumerate() {
        value |= ((byte & 0x7f) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            return (value, &bytes[i + 1..]);
        }
    }
    (value, &[])
}

/// An entry in a page.
struct Entry<'a> {
    key: &'a [u8],
    /// Write time, then the encoded value or (`compressed`) its length and
    /// frame.
    value: &'a [u8],
    compressed: bool,
    /// Bytes the entry takes in its page.
    size: usize,
}

impl Entry<'_> {
    /// The write time.
    fn write_time(&self) -> u64 {
        let mut time = [0; 8];
        time.copy_from_slice(&self.value[..8]);
        u64::from_le_bytes(time)
    }
}

/// The entry starting `bytes`.
fn parse_entry(bytes: &[u8]) -> Entry<'_> {
    let (key_length, rest) = read_length(bytes);
    let (key, rest) = rest.split_at(key_length);
    let (header, rest) = read_length(rest);
    let value_length = header >> 1;
    Entry {
        key,
        value: &rest[..value_length],
        compressed: header & 1 == 1,
        size: bytes.len() - rest.len() + value_length,
    }
}

fn location(page: u32, offset: usize) -> Location {
    (u64::from(page) << 32) | offset as u64
}

fn page_of(location: Location) -> usize {
    (location >> 32) as usize
}

/// The entry at `location`.
fn entry_at(pages: &[Page], location: Location) -> Entry<'_> {
    parse_entry(&pages[page_of(location)].data[location as u32 as usize..])
}

/// The stored value of `entry` (write time and encoded value), decompressed
/// if need be.
fn stored_value<'a>(compressor: &ValueCompressor, entry: &Entry<'a>) -> Result<Cow<'a, [u8]>> {
    if !entry.compressed {
        return Ok(Cow::Borrowed(entry.value));
    }
    let (length, frame) = read_length(&entry.value[8..]);
    let mut stored = vec![0; 8 + length];
    stored[..8].copy_from_slice(&entry.value[..8]);
    compressor.decompress(frame, &mut stored[8..])?;
    Ok(Cow::Owned(stored))
}

impl CompactedKeys {
    /// No keys; `compacted_in_job` counts the keys compacted. With
    /// `compressed_in_job`, values are compressed, and it counts them.
    pub(crate) fn new(
        compacted_in_job: Arc<AtomicU64>,
        compressed_in_job: Option<Arc<AtomicU64>>,
    ) -> Self {
        CompactedKeys {
            compacted_in_job,
            compressor: ValueCompressor::new(compressed_in_job.is_some()),
            compressed_in_job: compressed_in_job.unwrap_or_default(),
            locations: HashTable::new(),
            pages: Vec::new(),
            free_pages: Vec::new(),
            open_page: None,
            hasher: foldhash::fast::RandomState::default(),
            idle_batches: FIRST_IDLE_BATCHES,
            last_sweep: 0,
            compacted: 0,
            revived: 0,
        }
    }

    /// Keys held.
    pub(crate) fn len(&self) -> usize {
        self.locations.len()
    }

    /// Whether no key is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.locations.is_empty()
    }

    /// Memory the pages, the table and the compression dictionary take.
    pub(crate) fn memory(&self) -> usize {
        self.pages.iter().map(|p| p.data.capacity()).sum::<usize>()
            + self.locations.capacity() * (std::mem::size_of::<Location>() + 1)
            + self.compressor.memory()
    }

    /// The page with room for `size` more bytes, opened if need be.
    fn page_with_room(&mut self, size: usize) -> u32 {
        if let Some(open) = self.open_page {
            let data = &self.pages[open as usize].data;
            if data.capacity() - data.len() >= size {
                return open;
            }
        }
        let page = Page {
            data: Vec::with_capacity(size.max(PAGE_BYTES)),
            ..Page::default()
        };
        let index = match self.free_pages.pop() {
            Some(index) => {
                self.pages[index as usize] = page;
                index
            }
            None => {
                self.pages.push(page);
                (self.pages.len() - 1) as u32
            }
        };
        self.open_page = Some(index);
        index
    }

    /// Keeps `key`, which must not be held already, with its write time and
    /// encoded value (stored as a spill stores them).
    pub(crate) fn insert(&mut self, key: &[u8], write_time: u64, encoded: &[u8]) {
        let frame_length = self.compressor.compress(encoded);
        let value_length =
            8 + frame_length.map_or(encoded.len(), |frame| length_size(encoded.len()) + frame);
        let header = value_length << 1 | usize::from(frame_length.is_some());
        let size = length_size(key.len()) + key.len() + length_size(header) + value_length;
        let page = self.page_with_room(size);
        let data = &mut self.pages[page as usize].data;
        let offset = data.len();
        write_length(data, key.len());
        data.extend_from_slice(key);
        write_length(data, header);
        data.extend_from_slice(&write_time.to_le_bytes());
        match frame_length {
            Some(frame) => {
                write_length(data, encoded.len());
                data.extend_from_slice(self.compressor.frame(frame));
                self.compressed_in_job.fetch_add(1, Ordering::Relaxed);
            }
            None => data.extend_from_slice(encoded),
        }
        self.pages[page as usize].live += 1;
        let hash = self.hasher.hash_one(key);
        let (pages, hasher) = (&self.pages, &self.hasher);
        self.locations
            .insert_unique(hash, location(page, offset), |&at| {
                hasher.hash_one(entry_at(pages, at).key)
            });
        self.compacted += 1;
        self.compacted_in_job.fetch_add(1, Ordering::Relaxed);
    }

    /// Where `key` is held.
    fn find(&self, key: &[u8]) -> Option<Location> {
        let hash = self.hasher.hash_one(key);
        self.locations
            .find(hash, |&at| entry_at(&self.pages, at).key == key)
            .copied()
    }

    /// Counts the entry at `location`, of `size` bytes, as taken out; frees
    /// its page once the page holds no entry.
    fn release(&mut self, location: Location, size: usize) {
        let index = page_of(location);
        let page = &mut self.pages[index];
        page.dead += size;
        page.live -= 1;
        if page.live == 0 && self.open_page != Some(index as u32) {
            *page = Page::default();
            self.free_pages.push(index as u32);
        }
    }

    /// Removes `key`, returning its stored value.
    pub(crate) fn take(&mut self, key: &[u8]) -> Result<Option<CompactedEntry>> {
        let hash = self.hasher.hash_one(key);
        let pages = &self.pages;
        let Ok(found) = self
            .locations
            .find_entry(hash, |&at| entry_at(pages, at).key == key)
        else {
            return Ok(None);
        };
        let at = found.remove().0;
        let entry = entry_at(&self.pages, at);
        let (value, size) = (
            stored_value(&self.compressor, &entry)?.into_owned(),
            entry.size,
        );
        self.release(at, size);
        self.revived += 1;
        Ok(Some(CompactedEntry(value)))
    }

    /// Whether `key` is held.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.find(key).is_some()
    }

    /// The stored value of `key` (write time and encoded value).
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>> {
        self.find(key)
            .map(|at| stored_value(&self.compressor, &entry_at(&self.pages, at)))
            .transpose()
    }

    /// Keys held.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.locations
            .iter()
            .map(|&at| entry_at(&self.pages, at).key)
    }

    /// Removes the entries `remove` picks (it gets the compressor, to read
    /// their values); returns how many were removed.
    fn remove_where(
        &mut self,
        mut remove: impl FnMut(&ValueCompressor, &Entry<'_>) -> bool,
    ) -> usize {
        let mut removed = Vec::new();
        let (pages, compressor) = (&self.pages, &self.compressor);
        self.locations.retain(|&mut at| {
            let entry = entry_at(pages, at);
            let take = remove(compressor, &entry);
            if take {
                removed.push((at, entry.size));
            }
            !take
        });
        for &(at, size) in &removed {
            self.release(at, size);
        }
        self.collect_garbage();
        removed.len()
    }

    /// Keeps the keys whose write time `keep` accepts; returns how many
    /// were dropped.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) -> usize {
        self.remove_where(|_, entry| !keep(entry.write_time()))
    }

    /// Removes keys taking about `bytes` of memory: (key, stored value)
    /// pairs, and the memory they took.
    pub(crate) fn take_some(&mut self, bytes: usize) -> Result<(Vec<KeyAndValue>, usize)> {
        let mut taken = Vec::new();
        let mut freed = 0;
        let mut failure = None;
        self.remove_where(|compressor, entry| {
            if freed >= bytes || failure.is_some() {
                return false;
            }
            match stored_value(compressor, entry) {
                Ok(value) => {
                    freed += entry.size;
                    taken.push((entry.key.to_vec(), value.into_owned()));
                    true
                }
                Err(error) => {
                    failure = Some(error);
                    false
                }
            }
        });
        match failure {
            Some(error) => Err(error),
            None => Ok((taken, freed)),
        }
    }

    /// Moves the entries of pages that are mostly taken out to the open
    /// page, freeing those pages, and gives back spare table memory.
    fn collect_garbage(&mut self) {
        for index in 0..self.pages.len() {
            let page = &self.pages[index];
            if self.open_page == Some(index as u32)
                || page.live == 0
                || page.dead * 2 <= page.data.len()
            {
                continue;
            }
            let data = std::mem::take(&mut self.pages[index].data);
            let mut offset = 0;
            while offset < data.len() {
                let Entry { key, size, .. } = parse_entry(&data[offset..]);
                let old = location(index as u32, offset);
                let hash = self.hasher.hash_one(key);
                if self.locations.find(hash, |&at| at == old).is_some() {
                    let page = self.page_with_room(size);
                    let target = &mut self.pages[page as usize];
                    let new = location(page, target.data.len());
                    target.data.extend_from_slice(&data[offset..offset + size]);
                    target.live += 1;
                    if let Some(at) = self.locations.find_mut(hash, |&at| at == old) {
                        *at = new;
                    }
                }
                offset += size;
            }
            self.pages[index] = Page::default();
            self.free_pages.push(index as u32);
        }
        if self.locations.len() < self.locations.capacity() / 2 {
            let (pages, hasher) = (&self.pages, &self.hasher);
            self.locations
                .shrink_to(self.locations.len() * 5 / 4, |&at| {
                    hasher.hash_one(entry_at(pages, at).key)
                });
        }
    }

    /// Whether a sweep for idle keys is due at batch `clock` for a state
    /// with `live_keys` keys in their live form; if so, how many batches a
    /// key must have gone untouched to be compacted.
    /// (Pages mostly taken out are collected then too.)
    pub(crate) fn sweep_due(&mut self, clock: u32, live_keys: usize) -> Option<u32> {
        if clock.wrapping_sub(self.last_sweep) < (self.idle_batches / 4).max(1) {
            return None;
        }
        self.last_sweep = clock;
        self.collect_garbage();
        if live_keys < MIN_LIVE_KEYS {
            return None;
        }
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

    fn value_of(keys: &CompactedKeys, key: &[u8]) -> Option<Vec<u8>> {
        keys.get(key).unwrap().map(Cow::into_owned)
    }

    /// An encoded value that compresses: repeated text around numbers.
    fn row(i: u32) -> Vec<u8> {
        (0..8)
            .map(|j| {
                format!(
                    "{:08}|https://www.nexmark.com/item.htm?query=1|channel-{}|{}",
                    i * 8 + j,
                    i % 7,
                    "x".repeat((i % 50) as usize)
                )
            })
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn compressed_values_come_back_through_every_way_out() {
        let mut keys = CompactedKeys::new(Arc::default(), Some(Arc::default()));
        let mut plain = CompactedKeys::new(Arc::default(), None);
        for key in 0..20_000u32 {
            keys.insert(&key.to_be_bytes(), u64::from(key), &row(key));
            plain.insert(&key.to_be_bytes(), u64::from(key), &row(key));
        }
        assert!(
            keys.memory() * 3 < plain.memory() * 2,
            "{} of {}",
            keys.memory(),
            plain.memory()
        );
        for key in (0..20_000u32).step_by(97) {
            let expected = stored(u64::from(key), &row(key));
            assert_eq!(value_of(&keys, &key.to_be_bytes()), Some(expected.clone()));
            let taken = keys.take(&key.to_be_bytes()).unwrap().expect("held");
            assert_eq!(taken.value(), expected);
        }
        // Expiry reads write times without decompressing; the garbage
        // collection that follows moves compressed entries as they are.
        let before = keys.len();
        assert_eq!(keys.retain(|written| written % 3 == 0), before - keys.len());
        for key in (0..20_000u32).filter(|key| key % 3 == 0 && key % 97 != 0) {
            let expected = stored(u64::from(key), &row(key));
            assert_eq!(value_of(&keys, &key.to_be_bytes()), Some(expected));
        }
        let held = keys.len();
        let (taken, _) = keys.take_some(usize::MAX).unwrap();
        assert_eq!(taken.len(), held);
        for (key, value) in taken {
            let key = u32::from_be_bytes(key.try_into().unwrap());
            assert_eq!(value, stored(u64::from(key), &row(key)));
        }
        assert!(keys.is_empty());
    }

    #[test]
    fn entries_keep_keys_and_values_apart() {
        let mut keys = CompactedKeys::new(Arc::default(), None);
        keys.insert(b"a", 1, b"value of a");
        keys.insert(b"", 2, b"value of the empty key");
        keys.insert(b"bb", 3, b"");
        assert_eq!(keys.len(), 3);
        assert!(keys.contains(b"a") && keys.contains(b"") && !keys.contains(b"b"));
        assert_eq!(value_of(&keys, b"bb"), Some(stored(3, b"")));
        assert_eq!(
            keys.take(b"a").unwrap().map(|e| e.value().to_vec()),
            Some(stored(1, b"value of a"))
        );
        assert!(keys.take(b"a").unwrap().is_none());
        let mut held: Vec<&[u8]> = keys.keys().collect();
        held.sort();
        assert_eq!(held, [&b""[..], &b"bb"[..]]);
        assert_eq!(keys.retain(|written| written < 3), 1);
        assert_eq!(
            value_of(&keys, b""),
            Some(stored(2, b"value of the empty key"))
        );
        let (taken, freed) = keys.take_some(usize::MAX).unwrap();
        assert_eq!(
            taken,
            [(b"".to_vec(), stored(2, b"value of the empty key"))]
        );
        assert!(freed > taken[0].1.len());
        assert!(keys.is_empty());
    }

    #[test]
    fn the_idle_time_grows_when_keys_come_back_and_shrinks_when_they_do_not() {
        let mut keys = CompactedKeys::new(Arc::default(), None);
        assert_eq!(keys.sweep_due(100, MIN_LIVE_KEYS - 1), None);
        assert_eq!(keys.sweep_due(104, MIN_LIVE_KEYS), Some(FIRST_IDLE_BATCHES));
        // Not again until a quarter of the idle time has passed.
        assert_eq!(keys.sweep_due(105, MIN_LIVE_KEYS), None);
        // Half of the compacted keys came back.
        keys.compacted = ADJUST_EVERY;
        keys.revived = ADJUST_EVERY / 2;
        assert_eq!(
            keys.sweep_due(108, MIN_LIVE_KEYS),
            Some(2 * FIRST_IDLE_BATCHES)
        );
        // Next to none came back.
        keys.compacted = ADJUST_EVERY;
        keys.revived = 1;
        assert_eq!(keys.sweep_due(116, MIN_LIVE_KEYS), Some(FIRST_IDLE_BATCHES));
        // The clock may wrap.
        keys.compacted = ADJUST_EVERY;
        keys.last_sweep = u32::MAX - 1;
        assert_eq!(keys.sweep_due(1, MIN_LIVE_KEYS), None);
        assert_eq!(
            keys.sweep_due(6, MIN_LIVE_KEYS),
            Some(FIRST_IDLE_BATCHES / 2)
        );
    }

    #[test]
    fn pages_mostly_taken_out_are_freed_and_their_entries_moved() {
        let mut keys = CompactedKeys::new(Arc::default(), None);
        let value = [7u8; 100];
        for key in 0..30_000u32 {
            keys.insert(&key.to_be_bytes(), u64::from(key), &value);
        }
        assert!(keys.pages.len() >= 3);
        let full = keys.memory();
        // Three keys in four go; what is left packs into fewer pages.
        assert_eq!(keys.retain(|written| written % 4 == 0), 22_500);
        assert!(keys.memory() < full / 2, "{} of {full}", keys.memory());
        assert_eq!(keys.len(), 7_500);
        for key in (0..30_000u32).step_by(4) {
            let stored = value_of(&keys, &key.to_be_bytes()).expect("a kept key");
            assert_eq!(stored[..8], u64::from(key).to_le_bytes());
            assert_eq!(stored[8..], value);
        }
        assert!(!keys.contains(&1u32.to_be_bytes()));
        // Freed pages are used again.
        for key in 30_000..60_000u32 {
            keys.insert(&key.to_be_bytes(), 0, &value);
        }
        assert_eq!(keys.len(), 37_500);
        assert!(keys.memory() < full * 3 / 2);
    }

    #[test]
    fn lengths_round_trip() {
        for value in [0, 1, 127, 128, 300, 16_383, 16_384, usize::MAX] {
            let mut out = Vec::new();
            write_length(&mut out, value);
            assert_eq!(out.len(), length_size(value));
            out.push(42);
            assert_eq!(read_length(&out), (value, &[42u8][..]));
        }
    }
}
