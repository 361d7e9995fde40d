//! [`KeyedState`]: an operator's values by key, with event-time timers, the
//! idle-key TTL of `table.exec.state.ttl`, checkpoint snapshots, compaction
//! of idle keys, and spilling to local disk when the job's keyed state
//! outgrows `state.memory-budget`.
//!
//! Values live in a hash map. Keys untouched for a while are encoded in
//! memory ([`CompactedKeys`]) unless `state.compact-idle-keys` is off. Every state reports its estimated size to the
//! job's [`SpillArea`]; once the total exceeds the budget, the state that
//! grows encodes its least recently used keys (with its [`ValueCodec`], the
//! same encoding checkpoints use) into a [`SpillTable`] on disk and drops
//! them from memory. A spilled key is read back the next time the operator
//! touches it. Timers and the set of spilled key hashes stay in memory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::row::RowConverter;
use hashbrown::hash_map::EntryRef;
use sluice_core::Result;
use sluice_state::{SpillArea, SpillTable, StateReader, StateWriter};

use crate::aggregate::StateExpiry;
use crate::compacted_keys::CompactedKeys;
use crate::state::{bad_state, time_bucket_width, KeyOwner};

/// Keys per checkpoint chunk of a [`KeyedState`]: a chunk whose keys did not
/// change encodes to the same bytes and is not stored again.
pub(crate) const KEYS_PER_CHUNK_GROUP: usize = 4096;

/// How a [`KeyedState`]'s values become bytes, for checkpoints and for
/// spilling, and how much memory they take.
pub trait ValueCodec<V>: Send {
    /// Writes `value` (which stays usable: `&mut` because some DataFusion
    /// accumulators hand out their state only mutably).
    fn encode(&self, value: &mut V, out: &mut StateWriter) -> Result<()>;
    /// Reads a value written by [`ValueCodec::encode`].
    fn decode(&self, input: &mut StateReader) -> Result<V>;
    /// Approximate heap bytes `value` owns, for the memory budget.
    fn heap_size(&self, value: &V) -> usize;
    /// Writes `value`, which is dropped afterwards (compacting or spilling
    /// it): may skip work that only keeps a value usable. Reads back with
    /// [`ValueCodec::decode`].
    fn encode_dropped(&self, mut value: V, out: &mut StateWriter) -> Result<()> {
        self.encode(&mut value, out)
    }
}

/// What every keyed state of a job shares.
#[derive(Clone, Default)]
pub struct StateConfig {
    /// Keys not written for this long are dropped (`table.exec.state.ttl`).
    pub ttl: Option<Duration>,
    /// The memory budget and where state beyond it spills (`None`: no budget).
    pub spill: Option<Arc<SpillArea>>,
    /// Keep idle keys encoded in memory (`state.compact-idle-keys`).
    pub compact_idle_keys: bool,
    /// Compress the values of compacted keys (`state.compress-idle-keys`).
    pub compress_idle_keys: bool,
    /// Keys compacted so far, by every state of the job.
    pub compacted_keys: Arc<AtomicU64>,
    /// Of those, keys whose value was compressed.
    pub compressed_keys: Arc<AtomicU64>,
}

/// A key's value. Kept small: a state may hold millions of keys.
struct Slot<V> {
    value: V,
    /// When the key was last written (for the TTL), in milliseconds after
    /// the state's epoch.
    last_write: u64,
    /// The batch of the last access (least recently used keys spill first);
    /// compared by age, so it may wrap.
    touched: u32,
}

/// Spilled keys of one state.
struct Spilled {
    area: Arc<SpillArea>,
    /// Created on the first spill.
    table: Option<SpillTable>,
    /// Hashes of the keys on disk (with multiplicity), so a miss costs no I/O.
    hashes: HashMap<u64, u32>,
    /// Keys on disk.
    count: usize,
    /// Bytes this state last reported to the area.
    accounted: i64,
    /// Estimated bytes per key in memory.
    entry_size: usize,
    /// Budget checks since the entry size was last estimated.
    checks_since_estimate: u32,
}

impl Spilled {
    /// The spill table, created on the first spill.
    fn table_or_create(&mut self) -> Result<&SpillTable> {
        if self.table.is_none() {
            self.table = Some(self.area.table()?);
        }
        self.table
            .as_ref()
            .ok_or_else(|| bad_state("spill table missing"))
    }
}

/// A key of a checkpoint chunk, and whether it has a value (or only timers).
type ChunkKey = (Vec<u8>, bool);

/// Most bytes of compacted keys copied out at once to be spilled.
const SPILL_PIECE_BYTES: u64 = 16 << 20;

/// Budget checks between two estimates of the size per key.
const CHECKS_PER_ESTIMATE: u32 = 16;
/// Keys sampled per estimate: enough that the few large keys of a skewed
/// key distribution (a join's hot auctions) show up in the sample.
const ESTIMATE_SAMPLE: usize = 512;

/// Bytes the allocator takes for a `bytes`-byte allocation: sizes round up
/// to classes about an eighth of a power of two apart (as mimalloc's).
pub(crate) fn allocated(bytes: usize) -> usize {
    if bytes == 0 {
        return 0;
    }
    let step = (bytes.next_power_of_two() / 8).max(16);
    bytes.next_multiple_of(step)
}

fn key_hash(key: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot(key)
}

/// Values per key, with event-time timers, an idle-key TTL and spilling.
pub struct KeyedState<V> {
    slots: crate::FastHashMap<Vec<u8>, Slot<V>>,
    /// Event time → keys with a timer at that time (a key may repeat).
    timers: BTreeMap<i64, Vec<Vec<u8>>>,
    expiry: StateExpiry,
    codec: Box<dyn ValueCodec<V>>,
    /// Batches seen (advanced by [`KeyedState::enforce_budget`]), for
    /// least-recently-used order.
    clock: u32,
    /// Write times (in memory and spilled) are milliseconds after this.
    epoch: Instant,
    /// Idle keys, encoded (`None`: compaction is off).
    compacted: Option<CompactedKeys>,
    spill: Option<Spilled>,
}

impl<V> KeyedState<V> {
    /// Empty state whose values `codec` encodes.
    pub fn new(config: &StateConfig, codec: impl ValueCodec<V> + 'static) -> Self {
        KeyedState {
            slots: crate::FastHashMap::default(),
            timers: BTreeMap::new(),
            expiry: StateExpiry::new(config.ttl),
            codec: Box::new(codec),
            clock: 0,
            epoch: Instant::now(),
            compacted: config.compact_idle_keys.then(|| {
                CompactedKeys::new(
                    config.compacted_keys.clone(),
                    config
                        .compress_idle_keys
                        .then(|| config.compressed_keys.clone()),
                )
            }),
            spill: config.spill.clone().map(|area| Spilled {
                area,
                table: None,
                hashes: HashMap::new(),
                count: 0,
                accounted: 0,
                entry_size: 0,
                checks_since_estimate: 0,
            }),
        }
    }

    /// `time` as milliseconds after the state's epoch.
    fn millis(&self, time: Instant) -> u64 {
        time.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Brings `key` back to its live form if it was compacted or spilled;
    /// whether it has a value. [`KeyedState::get`] sees only live keys, so
    /// call this first.
    pub fn load(&mut self, key: &[u8]) -> Result<bool> {
        let touched = self.clock;
        match self.slots.entry_ref(key) {
            EntryRef::Occupied(mut slot) => {
                slot.get_mut().touched = touched;
                Ok(true)
            }
            EntryRef::Vacant(vacant) => {
                match take_evicted(&mut self.compacted, &mut self.spill, &*self.codec, key)? {
                    Some((last_write, value)) => {
                        vacant.insert(Slot {
                            value,
                            last_write,
                            touched,
                        });
                        Ok(true)
                    }
                    None => Ok(false),
                }
            }
        }
    }

    /// The value of `key` if it is live (see [`KeyedState::load`]).
    pub fn get(&self, key: &[u8]) -> Option<&V> {
        self.slots.get(key).map(|slot| &slot.value)
    }

    /// The value of `key` for reading and changing, without refreshing its
    /// TTL (brought back if compacted or spilled).
    pub fn get_mut(&mut self, key: &[u8]) -> Result<Option<&mut V>> {
        let touched = self.clock;
        // One lookup, on a hit and on a miss alike.
        let slot = match self.slots.entry_ref(key) {
            EntryRef::Occupied(slot) => slot.into_mut(),
            EntryRef::Vacant(vacant) => {
                match take_evicted(&mut self.compacted, &mut self.spill, &*self.codec, key)? {
                    Some((last_write, value)) => vacant.insert(Slot {
                        value,
                        last_write,
                        touched,
                    }),
                    None => return Ok(None),
                }
            }
        };
        slot.touched = touched;
        Ok(Some(&mut slot.value))
    }

    /// The value of `key` for writing (created with `default` when absent);
    /// refreshes the key's TTL.
    pub fn write(
        &mut self,
        key: &[u8],
        now: Instant,
        default: impl FnOnce() -> V,
    ) -> Result<&mut V> {
        self.try_write(key, now, || Ok(default()))
    }

    /// Like [`KeyedState::write`], with a fallible `default`.
    pub fn try_write(
        &mut self,
        key: &[u8],
        now: Instant,
        default: impl FnOnce() -> Result<V>,
    ) -> Result<&mut V> {
        let (touched, now) = (self.clock, self.millis(now));
        // One lookup; the owned key is allocated only for a key not live.
        let slot = match self.slots.entry_ref(key) {
            EntryRef::Occupied(slot) => slot.into_mut(),
            EntryRef::Vacant(vacant) => {
                let slot =
                    match take_evicted(&mut self.compacted, &mut self.spill, &*self.codec, key)? {
                        Some((last_write, value)) => Slot {
                            value,
                            last_write,
                            touched,
                        },
                        None => Slot {
                            value: default()?,
                            last_write: now,
                            touched,
                        },
                    };
                vacant.insert(slot)
            }
        };
        slot.last_write = now;
        slot.touched = touched;
        Ok(&mut slot.value)
    }

    /// Changes `key`'s value with `change` and removes the key when
    /// `change` returns false, in one lookup; `None` when the key has no
    /// value, else whether it kept one.
    pub fn change_or_remove(
        &mut self,
        key: &[u8],
        change: impl FnOnce(&mut V) -> bool,
    ) -> Result<Option<bool>> {
        let touched = self.clock;
        match self.slots.entry_ref(key) {
            EntryRef::Occupied(mut entry) => {
                let slot = entry.get_mut();
                slot.touched = touched;
                let keep = change(&mut slot.value);
                if !keep {
                    entry.remove();
                }
                Ok(Some(keep))
            }
            EntryRef::Vacant(vacant) => {
                let Some((last_write, mut value)) =
                    take_evicted(&mut self.compacted, &mut self.spill, &*self.codec, key)?
                else {
                    return Ok(None);
                };
                let keep = change(&mut value);
                if keep {
                    vacant.insert(Slot {
                        value,
                        last_write,
                        touched,
                    });
                }
                Ok(Some(keep))
            }
        }
    }

    /// Removes `key`'s value.
    pub fn remove(&mut self, key: &[u8]) -> Result<Option<V>> {
        if let Some(slot) = self.slots.remove(key) {
            return Ok(Some(slot.value));
        }
        let evicted = take_evicted(&mut self.compacted, &mut self.spill, &*self.codec, key)?;
        Ok(evicted.map(|(_, value)| value))
    }

    /// Asks for `key` to be returned by [`KeyedState::due_timers`] once the
    /// watermark reaches `time`.
    pub fn register_timer(&mut self, key: &[u8], time: i64) {
        let keys = self.timers.entry(time).or_default();
        // Rows of one key often come together with the same time (a window's
        // rows in a join): one timer serves them all.
        if keys.last().is_none_or(|last| last.as_slice() != key) {
            keys.push(key.to_vec());
        }
    }

    /// Removes and returns the timers at or before `watermark`, earliest first.
    pub fn due_timers(&mut self, watermark: i64) -> Vec<(i64, Vec<u8>)> {
        let mut due = Vec::new();
        while let Some(entry) = self.timers.first_entry() {
            if *entry.key() > watermark {
                break;
            }
            let (time, keys) = entry.remove_entry();
            due.extend(keys.into_iter().map(|key| (time, key)));
        }
        due
    }

    /// Removes the keys (live, compacted and spilled) not written for the TTL,
    /// when a sweep is due at `now`; returns how many.
    pub fn expire_idle(&mut self, now: Instant) -> Result<usize> {
        let Some(ttl) = self.expiry.due(now) else {
            return Ok(0);
        };
        let before = self.slots.len();
        let (now_millis, ttl_millis) = (self.millis(now), ttl.as_millis() as u64);
        self.slots
            .retain(|_, slot| now_millis.saturating_sub(slot.last_write) < ttl_millis);
        let mut expired = before - self.slots.len();
        if let Some(compacted) = &mut self.compacted {
            expired += compacted.retain(|written| now_millis.saturating_sub(written) < ttl_millis);
        }
        if let Some(spill) = &mut self.spill {
            if let (Some(table), true) = (&spill.table, spill.count > 0) {
                let mut idle = Vec::new();
                for entry in table.entries()? {
                    let (key, stored) = entry?;
                    let written = spilled_write_millis(&stored)?;
                    if now_millis.saturating_sub(written) >= ttl_millis {
                        idle.push(key);
                    }
                }
                for key in idle {
                    table.remove(&key)?;
                    let hash = key_hash(&key);
                    if let Some(copies) = spill.hashes.get_mut(&hash) {
                        *copies -= 1;
                        if *copies == 0 {
                            spill.hashes.remove(&hash);
                        }
                    }
                    spill.count -= 1;
                    expired += 1;
                }
            }
        }
        Ok(expired)
    }

    /// Number of keys: live, compacted and spilled.
    pub fn len(&self) -> usize {
        self.slots.len() + self.compacted() + self.spilled()
    }

    /// Whether no key has a value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys spilled to disk.
    pub fn spilled(&self) -> usize {
        self.spill.as_ref().map_or(0, |s| s.count)
    }

    /// Idle keys kept encoded in memory.
    pub fn compacted(&self) -> usize {
        self.compacted.as_ref().map_or(0, CompactedKeys::len)
    }

    /// Advances the batch clock, compacts keys idle long enough, reports
    /// this state's memory to the job's budget and, when the job is over
    /// it, spills this state's least recently used keys (compacted ones
    /// first). Operators call this between batches: a key loaded while a
    /// batch is processed stays live until the batch is done.
    pub fn enforce_budget(&mut self) -> Result<()> {
        self.clock = self.clock.wrapping_add(1);
        self.compact_idle()?;
        let Some(spill) = &mut self.spill else {
            return Ok(());
        };
        spill.checks_since_estimate += 1;
        if spill.entry_size == 0 || spill.checks_since_estimate >= CHECKS_PER_ESTIMATE {
            spill.checks_since_estimate = 0;
            let sample: Vec<usize> = self
                .slots
                .iter()
                .take(ESTIMATE_SAMPLE)
                .map(|(key, slot)| allocated(key.len()) + self.codec.heap_size(&slot.value))
                .collect();
            if !sample.is_empty() {
                // The hash table's buckets (7/8 full at most, one control
                // byte each) are shared out over its keys.
                let buckets = self.slots.capacity() * 8 / 7;
                let table = buckets * (std::mem::size_of::<(Vec<u8>, Slot<V>)>() + 1);
                spill.entry_size = (sample.iter().sum::<usize>() / sample.len()
                    + table / self.slots.len().max(1))
                .max(1);
            }
        }
        let estimate = self.account_memory();
        let Some(spill) = &self.spill else {
            return Ok(());
        };
        let excess = spill.area.excess();
        if excess == 0 || self.slots.len() + self.compacted() == 0 {
            return Ok(());
        }
        // Free the excess plus a twentieth of the budget, so spills come in
        // batches rather than a few keys per call, yet the encoded batch
        // (held next to the values until written) stays small.
        let to_free = (excess + spill.area.budget() / 20).min(estimate);
        let freed = self.spill_compacted(to_free)?;
        if freed < to_free && !self.slots.is_empty() {
            let entry_size = self.spill.as_ref().map_or(1, |s| s.entry_size) as u64;
            let victims = (to_free - freed)
                .div_ceil(entry_size)
                .clamp(1, self.slots.len() as u64);
            self.spill_coldest(victims as usize)?;
        }
        Ok(())
    }

    /// Reports this state's estimated memory (live and compacted keys) to
    /// the job's budget; returns it.
    fn account_memory(&mut self) -> u64 {
        let compacted = self.compacted.as_ref().map_or(0, CompactedKeys::memory);
        let Some(spill) = &mut self.spill else {
            return 0;
        };
        let estimate = self.slots.len() * spill.entry_size + compacted;
        spill.area.account(estimate as i64 - spill.accounted);
        spill.accounted = estimate as i64;
        estimate as u64
    }

    /// Encodes the live keys untouched for long enough into the compacted
    /// keys, when a sweep is due.
    fn compact_idle(&mut self) -> Result<()> {
        let Some(compacted) = &mut self.compacted else {
            return Ok(());
        };
        let clock = self.clock;
        let Some(idle) = compacted.sweep_due(clock, self.slots.len()) else {
            return Ok(());
        };
        let idle_keys = self
            .slots
            .extract_if(|_, slot| clock.wrapping_sub(slot.touched) >= idle);
        for (key, slot) in idle_keys {
            let encoded = encode_evicted(&*self.codec, slot.value)?;
            compacted.insert(&key, slot.last_write, &encoded);
        }
        self.shrink_slots();
        Ok(())
    }

    /// Gives back the hash table's memory after many keys left it: its
    /// empty buckets would keep the memory the keys freed.
    fn shrink_slots(&mut self) {
        if self.slots.len() < self.slots.capacity() / 2 {
            self.slots.shrink_to(self.slots.len() * 5 / 4);
        }
    }

    /// Moves compacted keys worth about `bytes` of memory to disk; returns
    /// the memory freed.
    fn spill_compacted(&mut self, bytes: u64) -> Result<u64> {
        let (Some(compacted), Some(spill)) = (&mut self.compacted, &mut self.spill) else {
            return Ok(0);
        };
        let mut freed = 0;
        while freed < bytes && !compacted.is_empty() {
            // A piece at a time: the entries are copied until written.
            let piece = (bytes - freed).min(SPILL_PIECE_BYTES) as usize;
            let (entries, taken) = compacted.take_some(piece)?;
            for (key, _) in &entries {
                *spill.hashes.entry(key_hash(key)).or_default() += 1;
            }
            freed += taken as u64;
            spill.count += entries.len();
            spill.table_or_create()?.put_all(entries)?;
        }
        self.account_memory();
        Ok(freed)
    }

    /// Moves the `count` least recently used live keys to disk.
    fn spill_coldest(&mut self, count: usize) -> Result<()> {
        let Some(spill) = &mut self.spill else {
            return Ok(());
        };
        let clock = self.clock;
        let age = |slot: &Slot<V>| clock.wrapping_sub(slot.touched);
        let mut ages: Vec<u32> = self.slots.values().map(age).collect();
        let cutoff = *ages.select_nth_unstable_by(count - 1, |a, b| b.cmp(a)).1;
        let victims: Vec<Vec<u8>> = self
            .slots
            .iter()
            .filter(|(_, slot)| age(slot) >= cutoff)
            .map(|(key, _)| key.clone())
            .take(count)
            .collect();
        let mut entries = Vec::with_capacity(victims.len());
        for key in victims {
            let Some(slot) = self.slots.remove(&key) else {
                continue;
            };
            let mut stored = slot.last_write.to_le_bytes().to_vec();
            stored.extend_from_slice(&encode_evicted(&*self.codec, slot.value)?);
            *spill.hashes.entry(key_hash(&key)).or_default() += 1;
            entries.push((key, stored));
        }
        spill.count += entries.len();
        spill.table_or_create()?.put_all(entries)?;
        self.shrink_slots();
        self.account_memory();
        Ok(())
    }

    /// Encodes the values and timers into checkpoint chunks. Keys are grouped
    /// by their latest timer (keys of one window or expiry time together) or,
    /// without timers, by hash, so unchanged groups give unchanged chunks.
    /// Compacted and spilled keys stay where they are; their encoded bytes
    /// are copied (decoded and encoded again only if they pool values).
    pub fn snapshot(&mut self) -> Result<Vec<Vec<u8>>> {
        // Each key goes with all its timers into the chunk of its latest
        // timer's time bucket; keys without timers into hash groups.
        let mut timers_of: HashMap<&[u8], Vec<i64>> = HashMap::new();
        for (time, keys) in &self.timers {
            for key in keys {
                timers_of.entry(key.as_slice()).or_default().push(*time);
            }
        }
        let on_disk: HashSet<Vec<u8>> = match self.spill.as_ref().and_then(|s| s.table.as_ref()) {
            Some(table) => table.keys()?.collect::<Result<_>>()?,
            None => HashSet::new(),
        };
        let bucket_width = time_bucket_width(timers_of.values().filter_map(|t| t.last().copied()));
        let groups = (self.len() / KEYS_PER_CHUNK_GROUP).max(1) as u64;
        let compacted = self.compacted.as_ref();
        let is_compacted = |key: &[u8]| compacted.is_some_and(|c| c.contains(key));
        // Keys with a value, then keys with only timers.
        let keys = self
            .slots
            .keys()
            .map(Vec::as_slice)
            .chain(compacted.into_iter().flat_map(CompactedKeys::keys))
            .chain(on_disk.iter().map(Vec::as_slice))
            .map(|key| (key, true))
            .chain(
                timers_of
                    .keys()
                    .copied()
                    .filter(|k| {
                        !self.slots.contains_key(*k) && !is_compacted(k) && !on_disk.contains(*k)
                    })
                    .map(|key| (key, false)),
            );
        // Chunk group → keys, each with whether it has a value.
        let mut by_group: BTreeMap<(bool, i64), Vec<ChunkKey>> = BTreeMap::new();
        for (key, has_value) in keys {
            let group = match timers_of.get(key).and_then(|t| t.last()) {
                Some(time) => (true, time.div_euclid(bucket_width)),
                None => (false, (key_hash(key) % groups) as i64),
            };
            by_group
                .entry(group)
                .or_default()
                .push((key.to_vec(), has_value));
        }
        let mut chunks = Vec::with_capacity(by_group.len());
        for (_, mut keys) in by_group {
            keys.sort_unstable();
            let mut out = StateWriter::new();
            let with_values: Vec<&Vec<u8>> = keys
                .iter()
                .filter(|(_, has_value)| *has_value)
                .map(|(key, _)| key)
                .collect();
            out.u64(with_values.len() as u64);
            for key in with_values {
                out.bytes(key);
                if let Some(stored) = compacted.map(|c| c.get(key)).transpose()?.flatten() {
                    write_stored(&*self.codec, &stored, &mut out)?;
                    continue;
                }
                match self.slots.get_mut(key) {
                    Some(slot) => self.codec.encode(&mut slot.value, &mut out)?,
                    None => {
                        let table = self
                            .spill
                            .as_ref()
                            .and_then(|s| s.table.as_ref())
                            .ok_or_else(|| bad_state("key vanished while snapshotting"))?;
                        let stored = table
                            .get(key)?
                            .ok_or_else(|| bad_state("spilled key vanished while snapshotting"))?;
                        write_stored(&*self.codec, &stored, &mut out)?;
                    }
                }
            }
            let timers: Vec<(i64, &[u8])> = keys
                .iter()
                .flat_map(|(key, _)| {
                    timers_of
                        .get(key.as_slice())
                        .into_iter()
                        .flatten()
                        .map(move |time| (*time, key.as_slice()))
                })
                .collect();
            out.u64(timers.len() as u64);
            for (time, key) in timers {
                out.i64(time);
                out.bytes(key);
            }
            chunks.push(out.finish()?);
        }
        Ok(chunks)
    }

    /// Loads chunks written by [`KeyedState::snapshot`], keeping the keys
    /// `owner` owns (`converter` encoded them); state beyond the memory
    /// budget spills as it loads.
    pub fn restore(
        &mut self,
        chunks: &[&[u8]],
        owner: &KeyOwner,
        converter: &RowConverter,
        now: Instant,
    ) -> Result<()> {
        for chunk in chunks {
            let mut input = StateReader::new(chunk)?;
            let values = input.usize()?;
            let mut entries = Vec::with_capacity(values);
            for _ in 0..values {
                let key = input.bytes()?.to_vec();
                entries.push((key, self.codec.decode(&mut input)?));
            }
            let timers = input.usize()?;
            let mut due = Vec::with_capacity(timers);
            for _ in 0..timers {
                let time = input.i64()?;
                due.push((time, input.bytes()?.to_vec()));
            }
            let keys: Vec<&[u8]> = entries.iter().map(|(k, _)| k.as_slice()).collect();
            let owned = owner.owns(converter, &keys)?;
            let last_write = self.millis(now);
            for ((key, value), owned) in entries.into_iter().zip(owned) {
                if owned {
                    self.slots.insert(
                        key,
                        Slot {
                            value,
                            last_write,
                            touched: self.clock,
                        },
                    );
                }
            }
            let keys: Vec<&[u8]> = due.iter().map(|(_, k)| k.as_slice()).collect();
            let owned = owner.owns(converter, &keys)?;
            for ((time, key), owned) in due.into_iter().zip(owned) {
                if owned {
                    self.timers.entry(time).or_default().push(key);
                }
            }
            self.enforce_budget()?;
        }
        Ok(())
    }
}

impl<V> Drop for KeyedState<V> {
    fn drop(&mut self) {
        if let Some(spill) = &self.spill {
            spill.area.account(-spill.accounted);
        }
    }
}

/// The write time (ms after the state's epoch) of a spilled value.
fn spilled_write_millis(stored: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = stored
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad_state("truncated spilled value"))?;
    Ok(u64::from_le_bytes(bytes))
}

/// Encodes a value leaving memory (compacted or spilled) as a chunk of its own.
fn encode_evicted<V>(codec: &dyn ValueCodec<V>, value: V) -> Result<Vec<u8>> {
    let mut out = StateWriter::new();
    codec.encode_dropped(value, &mut out)?;
    out.finish()
}

/// Takes `key` out of the compacted keys or the spill table: its write time
/// and decoded value (`None`: neither holds it).
fn take_evicted<V>(
    compacted: &mut Option<CompactedKeys>,
    spill: &mut Option<Spilled>,
    codec: &dyn ValueCodec<V>,
    key: &[u8],
) -> Result<Option<(u64, V)>> {
    if let Some(compacted) = compacted.as_mut().filter(|c| !c.is_empty()) {
        if let Some(entry) = compacted.take(key)? {
            return decode_spilled(codec, entry.value()).map(Some);
        }
    }
    let Some(spill) = spill.as_mut().filter(|s| s.count > 0) else {
        return Ok(None);
    };
    let hash = key_hash(key);
    let Some(copies) = spill.hashes.get_mut(&hash) else {
        return Ok(None);
    };
    let Some(table) = &spill.table else {
        return Ok(None);
    };
    let Some(stored) = table.get(key)? else {
        return Ok(None);
    };
    let taken = decode_spilled(codec, &stored)?;
    table.remove(key)?;
    *copies -= 1;
    if *copies == 0 {
        spill.hashes.remove(&hash);
    }
    spill.count -= 1;
    Ok(Some(taken))
}

/// Writes a compacted or spilled value into a checkpoint chunk: its bytes
/// as they are where they allow it, else decoded and encoded again.
fn write_stored<V>(codec: &dyn ValueCodec<V>, stored: &[u8], out: &mut StateWriter) -> Result<()> {
    let encoded = stored
        .get(8..)
        .ok_or_else(|| bad_state("truncated spilled value"))?;
    if !out.append_encoded(encoded)? {
        let (_, mut value) = decode_spilled(codec, stored)?;
        codec.encode(&mut value, out)?;
    }
    Ok(())
}

/// A spilled value and its write time (ms after the state's epoch).
fn decode_spilled<V>(codec: &dyn ValueCodec<V>, stored: &[u8]) -> Result<(u64, V)> {
    let written = spilled_write_millis(stored)?;
    let mut input = StateReader::new(&stored[8..])?;
    Ok((written, codec.decode(&mut input)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::row::SortField;

    /// Values are plain numbers of 100 heap bytes each.
    struct Numbers;

    /// Values are numbers whose heap size is their value.
    struct Sizes;

    impl ValueCodec<u64> for Numbers {
        fn encode(&self, value: &mut u64, out: &mut StateWriter) -> Result<()> {
            out.u64(*value);
            Ok(())
        }

        fn decode(&self, input: &mut StateReader) -> Result<u64> {
            input.u64()
        }

        fn heap_size(&self, _: &u64) -> usize {
            100
        }
    }

    impl ValueCodec<u64> for Sizes {
        fn encode(&self, value: &mut u64, out: &mut StateWriter) -> Result<()> {
            Numbers.encode(value, out)
        }

        fn decode(&self, input: &mut StateReader) -> Result<u64> {
            Numbers.decode(input)
        }

        fn heap_size(&self, value: &u64) -> usize {
            *value as usize
        }
    }

    /// Values are numbers encoded with 600 bytes of text that compress.
    struct Padded;

    impl Padded {
        fn text(value: u64) -> Vec<u8> {
            format!("https://www.nexmark.com/item.htm?query={value}|")
                .repeat(12)
                .into_bytes()
        }
    }

    impl ValueCodec<u64> for Padded {
        fn encode(&self, value: &mut u64, out: &mut StateWriter) -> Result<()> {
            out.u64(*value);
            out.bytes(&Padded::text(*value));
            Ok(())
        }

        fn decode(&self, input: &mut StateReader) -> Result<u64> {
            let value = input.u64()?;
            match input.bytes()? == Padded::text(value) {
                true => Ok(value),
                false => Err(bad_state("padding differs")),
            }
        }

        fn heap_size(&self, _: &u64) -> usize {
            600
        }
    }

    fn int_keys(values: Vec<i64>) -> (RowConverter, arrow::row::Rows) {
        let converter =
            RowConverter::new(vec![SortField::new(arrow::datatypes::DataType::Int64)]).unwrap();
        let rows = converter
            .convert_columns(&[Arc::new(arrow::array::Int64Array::from(values)) as _])
            .unwrap();
        (converter, rows)
    }

    fn spilling(dir: &std::path::Path, budget: u64) -> StateConfig {
        StateConfig {
            spill: Some(SpillArea::new(dir.join("spill"), budget)),
            ..StateConfig::default()
        }
    }

    fn compacting() -> StateConfig {
        StateConfig {
            compact_idle_keys: true,
            ..StateConfig::default()
        }
    }

    /// Calls [`KeyedState::enforce_budget`] `batches` times, writing the
    /// first `busy` keys before each call.
    fn run_batches(
        state: &mut KeyedState<u64>,
        keys: &arrow::row::Rows,
        busy: usize,
        batches: u32,
    ) {
        for _ in 0..batches {
            for key in keys.iter().take(busy) {
                state.get_mut(key.data()).unwrap();
            }
            state.enforce_budget().unwrap();
        }
    }

    #[test]
    fn timers_fire_in_time_order_up_to_the_watermark() {
        let mut state = KeyedState::new(&StateConfig::default(), Numbers);
        let now = Instant::now();
        *state.write(b"a", now, || 0).unwrap() += 1;
        *state.write(b"a", now, || 0).unwrap() += 1;
        assert_eq!(state.get(b"a"), Some(&2));
        state.register_timer(b"a", 20);
        state.register_timer(b"b", 10);
        state.register_timer(b"c", 30);
        assert_eq!(
            state.due_timers(20),
            vec![(10, b"b".to_vec()), (20, b"a".to_vec())]
        );
        assert!(state.due_timers(25).is_empty());
        assert_eq!(state.due_timers(i64::MAX), vec![(30, b"c".to_vec())]);
    }

    #[test]
    fn snapshot_and_restore_keep_values_and_timers() {
        let (converter, keys) = int_keys(vec![1, 2, 3]);
        let mut state = KeyedState::new(&StateConfig::default(), Numbers);
        let now = Instant::now();
        for (i, key) in keys.iter().enumerate() {
            state.write(key.data(), now, || i as u64 * 10).unwrap();
            state.register_timer(key.data(), 1000 * i as i64);
        }
        let first = state.snapshot().unwrap();
        // Unchanged state encodes to the same chunks.
        assert_eq!(state.snapshot().unwrap(), first);
        let chunks: Vec<&[u8]> = first.iter().map(Vec::as_slice).collect();
        let mut restored = KeyedState::new(&StateConfig::default(), Numbers);
        restored
            .restore(&chunks, &KeyOwner::single(), &converter, now)
            .unwrap();
        assert_eq!(restored.len(), 3);
        assert_eq!(restored.get(keys.row(2).data()), Some(&20));
        let due: Vec<i64> = restored
            .due_timers(i64::MAX)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(due, vec![0, 1000, 2000]);
    }

    #[test]
    fn change_or_remove_changes_keeps_or_drops_a_key() {
        let mut state = KeyedState::new(&StateConfig::default(), Numbers);
        let now = Instant::now();
        state.write(b"a", now, || 1).unwrap();
        state.write(b"b", now, || 2).unwrap();
        let keep = |value: &mut u64| {
            *value += 10;
            true
        };
        assert_eq!(state.change_or_remove(b"a", keep).unwrap(), Some(true));
        assert_eq!(state.get(b"a"), Some(&11));
        assert_eq!(
            state.change_or_remove(b"b", |_| false).unwrap(),
            Some(false)
        );
        assert_eq!(state.get(b"b"), None);
        assert_eq!(state.change_or_remove(b"c", |_| true).unwrap(), None);
        assert_eq!(state.len(), 1);
    }

    #[test]
    fn idle_keys_expire_after_the_ttl() {
        let ttl = Duration::from_millis(40);
        let config = StateConfig {
            ttl: Some(ttl),
            ..StateConfig::default()
        };
        let mut state = KeyedState::new(&config, Numbers);
        let start = Instant::now();
        state.write(b"old", start, || 1).unwrap();
        state.write(b"new", start + ttl, || 2).unwrap();
        let expired = state
            .expire_idle(start + ttl + Duration::from_millis(1))
            .unwrap();
        assert_eq!(expired, 1);
        assert_eq!(state.len(), 1);
        assert!(state.get(b"old").is_none());
    }

    #[test]
    fn state_beyond_the_budget_spills_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let config = spilling(dir.path(), 20_000);
        let (converter, keys) = int_keys((0..1000).collect());
        let mut state = KeyedState::new(&config, Numbers);
        let mut unspilled = KeyedState::new(&StateConfig::default(), Numbers);
        let now = Instant::now();
        for (i, key) in keys.iter().enumerate() {
            for target in [&mut state, &mut unspilled] {
                *target.write(key.data(), now, || 0).unwrap() += i as u64;
                target.register_timer(key.data(), (i as i64 % 7) * 1000);
            }
            if i % 50 == 49 {
                state.enforce_budget().unwrap();
            }
        }
        assert!(state.spilled() > 500, "spilled {}", state.spilled());
        assert_eq!(state.len(), 1000);
        let area = config.spill.as_ref().unwrap();
        assert!(area.in_memory() <= area.budget(), "{}", area.in_memory());
        // The most recently written keys stayed in memory.
        assert!(state.get(keys.row(999).data()).is_some());
        assert!(state.get(keys.row(0).data()).is_none());
        // Snapshots do not depend on what spilled.
        assert_eq!(state.snapshot().unwrap(), unspilled.snapshot().unwrap());
        // Spilled keys read back, change, and go away.
        assert_eq!(state.get_mut(keys.row(3).data()).unwrap(), Some(&mut 3));
        assert_eq!(state.remove(keys.row(4).data()).unwrap(), Some(4));
        assert_eq!(state.remove(keys.row(4).data()).unwrap(), None);
        assert!(!state.load(keys.row(4).data()).unwrap());
        *state.write(keys.row(5).data(), now, || 0).unwrap() += 1;
        assert_eq!(state.get(keys.row(5).data()), Some(&6));
        assert_eq!(state.len(), 999);
        // A restore beyond the budget spills as it loads.
        let snapshot = state.snapshot().unwrap();
        let chunks: Vec<&[u8]> = snapshot.iter().map(Vec::as_slice).collect();
        let restore_config = spilling(&dir.path().join("restore"), 20_000);
        let mut restored = KeyedState::new(&restore_config, Numbers);
        restored
            .restore(&chunks, &KeyOwner::single(), &converter, now)
            .unwrap();
        assert_eq!(restored.len(), 999);
        assert!(restored.spilled() > 0);
        assert_eq!(restored.snapshot().unwrap(), snapshot);
        for (i, key) in keys.iter().enumerate().filter(|(i, _)| *i != 4) {
            let expected = if i == 5 { 6 } else { i as u64 };
            assert_eq!(
                restored.get_mut(key.data()).unwrap(),
                Some(&mut { expected })
            );
        }
    }

    #[test]
    fn the_size_estimate_sees_the_few_large_keys_of_a_skewed_state() {
        let dir = tempfile::tempdir().unwrap();
        let config = spilling(dir.path(), 1 << 30);
        let mut state = KeyedState::new(&config, Sizes);
        let now = Instant::now();
        // 3 keys of 100 kB among 400 of 16 bytes: 300 kB in all.
        for key in 0..400u32 {
            let size = if key % 150 == 0 { 100_000 } else { 16 };
            state.write(&key.to_be_bytes(), now, || size).unwrap();
        }
        state.enforce_budget().unwrap();
        let estimate = config.spill.as_ref().unwrap().in_memory();
        assert!(
            (300_000..400_000).contains(&estimate),
            "estimate {estimate}"
        );
    }

    #[test]
    fn spilled_keys_expire_after_the_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let ttl = Duration::from_secs(60);
        let config = StateConfig {
            ttl: Some(ttl),
            ..spilling(dir.path(), 1000)
        };
        let mut state = KeyedState::new(&config, Numbers);
        let start = Instant::now();
        for key in 0..100u32 {
            state.write(&key.to_be_bytes(), start, || 1).unwrap();
        }
        state.enforce_budget().unwrap();
        assert!(state.spilled() > 0);
        state.write(&7u32.to_be_bytes(), start + ttl, || 1).unwrap();
        let expired = state
            .expire_idle(start + ttl + Duration::from_secs(1))
            .unwrap();
        assert_eq!(expired, 99);
        assert_eq!(state.len(), 1);
        assert_eq!(state.spilled(), 0);
    }

    #[test]
    fn idle_keys_are_compacted_and_come_back_when_touched() {
        check_compaction(&compacting(), || Numbers);
    }

    #[test]
    fn compressed_idle_keys_come_back_the_same() {
        let config = StateConfig {
            compress_idle_keys: true,
            ..compacting()
        };
        check_compaction(&config, || Padded);
        // All but the values the dictionary is made of.
        let compressed = config
            .compressed_keys
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(compressed > 9_800, "{compressed}");
    }

    /// Compacts 9,900 of 10,000 keys, touches some, and checks snapshots
    /// against a state that compacts nothing.
    fn check_compaction<C: ValueCodec<u64> + 'static>(config: &StateConfig, codec: impl Fn() -> C) {
        let (converter, keys) = int_keys((0..10_000).collect());
        let mut state = KeyedState::new(config, codec());
        let mut live = KeyedState::new(&StateConfig::default(), codec());
        let now = Instant::now();
        for (i, key) in keys.iter().enumerate() {
            for target in [&mut state, &mut live] {
                target.write(key.data(), now, || i as u64).unwrap();
                target.register_timer(key.data(), (i as i64 % 7) * 1000);
            }
        }
        // The first 100 keys stay busy; the others go idle.
        run_batches(&mut state, &keys, 100, 20);
        assert_eq!(state.compacted(), 9_900);
        assert_eq!(state.len(), 10_000);
        assert!(state.get(keys.row(5000).data()).is_none());
        // Snapshots do not depend on what was compacted.
        assert_eq!(state.snapshot().unwrap(), live.snapshot().unwrap());
        // Compacted keys come back, change and go away.
        assert_eq!(
            state.get_mut(keys.row(5000).data()).unwrap(),
            Some(&mut 5000)
        );
        *state.write(keys.row(6000).data(), now, || 0).unwrap() += 1;
        assert_eq!(state.get(keys.row(6000).data()), Some(&6001));
        assert_eq!(state.remove(keys.row(7000).data()).unwrap(), Some(7000));
        assert_eq!(state.remove(keys.row(7000).data()).unwrap(), None);
        assert!(!state.load(keys.row(7000).data()).unwrap());
        assert!(state.load(keys.row(8000).data()).unwrap());
        assert_eq!(state.get(keys.row(8000).data()), Some(&8000));
        assert_eq!(state.len(), 9_999);
        assert_eq!(state.compacted(), 9_896);
        // A restore gets every value back.
        let snapshot = state.snapshot().unwrap();
        let chunks: Vec<&[u8]> = snapshot.iter().map(Vec::as_slice).collect();
        let mut restored = KeyedState::new(config, codec());
        restored
            .restore(&chunks, &KeyOwner::single(), &converter, now)
            .unwrap();
        assert_eq!(restored.snapshot().unwrap(), snapshot);
        assert_eq!(restored.get(keys.row(6000).data()), Some(&6001));
        assert_eq!(restored.due_timers(i64::MAX).len(), 10_000);
    }

    #[test]
    fn compacted_keys_expire_after_the_ttl_and_spill_before_live_keys() {
        let dir = tempfile::tempdir().unwrap();
        let ttl = Duration::from_secs(60);
        let config = StateConfig {
            ttl: Some(ttl),
            compact_idle_keys: true,
            ..spilling(dir.path(), 4 << 20)
        };
        let (_, keys) = int_keys((0..10_000).collect());
        let mut state = KeyedState::new(&config, Numbers);
        let start = Instant::now();
        for key in keys.iter() {
            state.write(key.data(), start, || 1).unwrap();
        }
        run_batches(&mut state, &keys, 10, 20);
        assert_eq!(state.compacted(), 9_990);
        // Keys 0..10 are live but not written since; 20..30 come back and
        // are written again.
        for key in keys.iter().skip(20).take(10) {
            state.write(key.data(), start + ttl, || 1).unwrap();
        }
        let expired = state
            .expire_idle(start + ttl + Duration::from_secs(1))
            .unwrap();
        assert_eq!(expired, 9_990);
        assert_eq!((state.len(), state.compacted()), (10, 0));

        // Over the budget, compacted keys go to disk before live ones.
        let mut state = KeyedState::new(&config, Numbers);
        for key in keys.iter() {
            state.write(key.data(), start, || 1).unwrap();
        }
        run_batches(&mut state, &keys, 10, 20);
        // Another state takes the rest of the budget, and one byte more.
        let area = config.spill.as_ref().unwrap();
        let others = (area.budget() - area.in_memory() + 1) as i64;
        area.account(others);
        state.enforce_budget().unwrap();
        area.account(-others);
        assert!(state.spilled() > 0 && state.compacted() > 0);
        assert_eq!(state.spilled() + state.compacted(), 9_990);
        for key in keys.iter().take(10) {
            assert_eq!(state.get(key.data()), Some(&1));
        }
        assert_eq!(state.get_mut(keys.row(9_999).data()).unwrap(), Some(&mut 1));
    }
}
