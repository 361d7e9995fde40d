//! Keyed operator state. Every stateful operator that keeps values per key
//! (joins, Top-N, updating aggregates, OVER windows) keeps them in a
//! [`KeyedState`]: values by key bytes, event-time timers that tell the
//! operator when a key's state may be freed, and the processing-time TTL of
//! `table.exec.state.ttl`. Checkpoints snapshot this one structure.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use std::sync::Arc;

use arrow::array::{Int8Array, UInt32Array};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::row::RowConverter;
use datafusion::common::hash_utils::{create_hashes, RandomState};
use datafusion::physical_expr::PhysicalExpr;
use sluice_core::ChangeBatch;
use sluice_core::{Result, SluiceError};
use sluice_state::{StateReader, StateWriter};

use crate::aggregate::StateExpiry;
use crate::operators::df;

/// Which keys belong to one subtask: the same hash partitioning the shuffle
/// in front of keyed operators uses, so state restored at another
/// parallelism lands where its keys' rows will arrive.
#[derive(Debug, Clone, Copy)]
pub struct KeyOwner {
    /// This subtask.
    pub subtask: usize,
    /// Subtasks of the operator.
    pub parallelism: usize,
}

impl KeyOwner {
    /// The owner of every key (one subtask).
    pub fn single() -> Self {
        KeyOwner {
            subtask: 0,
            parallelism: 1,
        }
    }

    /// The subtask rows with these key hashes go to.
    pub fn target(hash: u64, parallelism: usize) -> usize {
        (hash % parallelism as u64) as usize
    }

    /// The rows of `batch` whose `keys` this subtask owns (`None`: no row).
    pub fn filter_batch(
        &self,
        batch: &ChangeBatch,
        keys: &[Arc<dyn PhysicalExpr>],
    ) -> Result<Option<ChangeBatch>> {
        if self.parallelism <= 1 {
            return Ok(Some(batch.clone()));
        }
        let hashes = key_hashes(batch, keys)?;
        let indices: Vec<u32> = hashes
            .iter()
            .enumerate()
            .filter(|(_, hash)| Self::target(**hash, self.parallelism) == self.subtask)
            .map(|(row, _)| row as u32)
            .collect();
        if indices.is_empty() {
            return Ok(None);
        }
        batch.take(&UInt32Array::from(indices)).map(Some)
    }

    /// For each row-encoded key (encoded by `converter`), whether this
    /// subtask owns it.
    pub fn owns(&self, converter: &RowConverter, keys: &[&[u8]]) -> Result<Vec<bool>> {
        if self.parallelism <= 1 || keys.is_empty() {
            return Ok(vec![true; keys.len()]);
        }
        let parser = converter.parser();
        let rows: Vec<_> = keys.iter().map(|key| parser.parse(key)).collect();
        let columns = converter.convert_rows(rows)?;
        let mut hashes = vec![0u64; keys.len()];
        if !columns.is_empty() {
            create_hashes(&columns, &RandomState::default(), &mut hashes).map_err(df)?;
        }
        Ok(hashes
            .into_iter()
            .map(|hash| Self::target(hash, self.parallelism) == self.subtask)
            .collect())
    }
}

/// The partitioning hash of each row's `keys` (see [`KeyOwner::target`]).
pub fn key_hashes(batch: &ChangeBatch, keys: &[Arc<dyn PhysicalExpr>]) -> Result<Vec<u64>> {
    let rows = batch.num_rows();
    let columns = keys
        .iter()
        .map(|key| {
            key.evaluate(&batch.data)
                .and_then(|v| v.into_array(rows))
                .map_err(df)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut hashes = vec![0u64; rows];
    if !columns.is_empty() {
        create_hashes(&columns, &RandomState::default(), &mut hashes).map_err(df)?;
    }
    Ok(hashes)
}

/// Encodes change batches (Arrow IPC, row kinds as an extra column) as one chunk.
pub fn encode_batches(batches: &[ChangeBatch]) -> Result<Vec<u8>> {
    let mut out = StateWriter::new();
    out.u64(batches.len() as u64);
    for batch in batches {
        let mut ipc = Vec::new();
        {
            let schema = batch.data.schema();
            let mut writer = StreamWriter::try_new(&mut ipc, &schema)?;
            writer.write(&batch.data)?;
            writer.finish()?;
        }
        out.bytes(&ipc);
        match &batch.kinds {
            None => out.bool(false),
            Some(kinds) => {
                out.bool(true);
                let bytes: Vec<u8> = kinds.values().iter().map(|k| *k as u8).collect();
                out.bytes(&bytes);
            }
        }
    }
    out.finish()
}

/// Decodes a chunk written by [`encode_batches`].
pub fn decode_batches(chunk: &[u8]) -> Result<Vec<ChangeBatch>> {
    let mut input = StateReader::new(chunk)?;
    let count = input.usize()?;
    let mut batches = Vec::with_capacity(count);
    for _ in 0..count {
        let ipc = input.bytes()?;
        let mut reader = StreamReader::try_new(std::io::Cursor::new(ipc), None)?;
        let data = reader.next().ok_or_else(|| bad_state("empty batch"))??;
        let kinds = if input.bool()? {
            let bytes = input.bytes()?;
            Some(Int8Array::from(
                bytes.iter().map(|b| *b as i8).collect::<Vec<_>>(),
            ))
        } else {
            None
        };
        batches.push(ChangeBatch { data, kinds });
    }
    Ok(batches)
}

/// Keys per checkpoint chunk of a [`KeyedState`]: a chunk whose keys did not
/// change encodes to the same bytes and is not stored again.
const KEYS_PER_CHUNK_GROUP: usize = 4096;

struct Slot<V> {
    value: V,
    /// When the key was last written (for the TTL).
    last_write: Instant,
}

/// Values per key, with event-time timers and an idle-key TTL.
pub struct KeyedState<V> {
    slots: HashMap<Vec<u8>, Slot<V>>,
    /// Event time → keys with a timer at that time (a key may repeat).
    timers: BTreeMap<i64, Vec<Vec<u8>>>,
    expiry: StateExpiry,
}

impl<V> KeyedState<V> {
    /// Empty state; keys not written for `ttl` are expired by [`KeyedState::expire_idle`].
    pub fn new(ttl: Option<Duration>) -> Self {
        KeyedState {
            slots: HashMap::new(),
            timers: BTreeMap::new(),
            expiry: StateExpiry::new(ttl),
        }
    }

    /// The value of `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<&V> {
        self.slots.get(key).map(|slot| &slot.value)
    }

    /// The value of `key` for reading and changing, without refreshing its TTL.
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        self.slots.get_mut(key).map(|slot| &mut slot.value)
    }

    /// The value of `key` for writing (created with `default` when absent);
    /// refreshes the key's TTL.
    pub fn write(&mut self, key: &[u8], now: Instant, default: impl FnOnce() -> V) -> &mut V {
        match self.try_write(key, now, || Ok::<V, std::convert::Infallible>(default())) {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }

    /// Like [`KeyedState::write`], with a fallible `default`.
    pub fn try_write<E>(
        &mut self,
        key: &[u8],
        now: Instant,
        default: impl FnOnce() -> Result<V, E>,
    ) -> Result<&mut V, E> {
        // Allocate the owned key only for a key not seen before.
        if !self.slots.contains_key(key) {
            let value = default()?;
            self.slots.insert(
                key.to_vec(),
                Slot {
                    value,
                    last_write: now,
                },
            );
        }
        let Some(slot) = self.slots.get_mut(key) else {
            unreachable!("the slot exists or was inserted above")
        };
        slot.last_write = now;
        Ok(&mut slot.value)
    }

    /// Removes `key`'s value.
    pub fn remove(&mut self, key: &[u8]) -> Option<V> {
        self.slots.remove(key).map(|slot| slot.value)
    }

    /// Asks for `key` to be returned by [`KeyedState::due_timers`] once the
    /// watermark reaches `time`.
    pub fn register_timer(&mut self, key: &[u8], time: i64) {
        self.timers.entry(time).or_default().push(key.to_vec());
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

    /// Removes the keys not written for the TTL, when a sweep is due at `now`;
    /// returns them so the operator can account for them.
    pub fn expire_idle(&mut self, now: Instant) -> Vec<(Vec<u8>, V)> {
        let Some(ttl) = self.expiry.due(now) else {
            return Vec::new();
        };
        let idle: Vec<Vec<u8>> = self
            .slots
            .iter()
            .filter(|(_, slot)| now.duration_since(slot.last_write) >= ttl)
            .map(|(key, _)| key.clone())
            .collect();
        idle.into_iter()
            .filter_map(|key| self.slots.remove(&key).map(|slot| (key, slot.value)))
            .collect()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no key has a value.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every key and value.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &V)> {
        self.slots
            .iter()
            .map(|(key, slot)| (key.as_slice(), &slot.value))
    }
}

impl<V> KeyedState<V> {
    /// Encodes the values and timers into checkpoint chunks. Keys are grouped
    /// by their latest timer (keys of one window or expiry time together) or,
    /// without timers, by hash, so unchanged groups give unchanged chunks.
    pub fn snapshot(
        &mut self,
        mut encode: impl FnMut(&mut V, &mut StateWriter) -> Result<()>,
    ) -> Result<Vec<Vec<u8>>> {
        // Each key goes with all its timers into the chunk of its latest
        // timer's time bucket; keys without timers into hash groups.
        let mut timers_of: HashMap<&[u8], Vec<i64>> = HashMap::new();
        for (time, keys) in &self.timers {
            for key in keys {
                timers_of.entry(key.as_slice()).or_default().push(*time);
            }
        }
        let bucket_width = time_bucket_width(timers_of.values().filter_map(|t| t.last().copied()));
        let groups = (self.slots.len() / KEYS_PER_CHUNK_GROUP).max(1) as u64;
        let mut by_group: BTreeMap<(bool, i64), Vec<Vec<u8>>> = BTreeMap::new();
        let keys = self.slots.keys().map(Vec::as_slice).chain(
            timers_of
                .keys()
                .copied()
                .filter(|k| !self.slots.contains_key(*k)),
        );
        for key in keys {
            let group = match timers_of.get(key).and_then(|t| t.last()) {
                Some(time) => (true, time.div_euclid(bucket_width)),
                None => (false, (twox_hash::XxHash3_64::oneshot(key) % groups) as i64),
            };
            by_group.entry(group).or_default().push(key.to_vec());
        }
        let mut chunks = Vec::with_capacity(by_group.len());
        for (_, mut keys) in by_group {
            keys.sort_unstable();
            let mut out = StateWriter::new();
            let with_values: Vec<&Vec<u8>> = keys
                .iter()
                .filter(|k| self.slots.contains_key(*k))
                .collect();
            out.u64(with_values.len() as u64);
            for key in with_values {
                out.bytes(key);
                match self.slots.get_mut(key) {
                    Some(slot) => encode(&mut slot.value, &mut out)?,
                    None => return Err(bad_state("key vanished while snapshotting")),
                }
            }
            let timers: Vec<(i64, &Vec<u8>)> = keys
                .iter()
                .flat_map(|key| {
                    timers_of
                        .get(key.as_slice())
                        .into_iter()
                        .flatten()
                        .map(move |time| (*time, key))
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
    /// `owner` owns (`converter` encoded them).
    pub fn restore(
        &mut self,
        chunks: &[&[u8]],
        owner: &KeyOwner,
        converter: &RowConverter,
        now: Instant,
        mut decode: impl FnMut(&mut StateReader) -> Result<V>,
    ) -> Result<()> {
        for chunk in chunks {
            let mut input = StateReader::new(chunk)?;
            let values = input.usize()?;
            let mut entries = Vec::with_capacity(values);
            for _ in 0..values {
                let key = input.bytes()?.to_vec();
                entries.push((key, decode(&mut input)?));
            }
            let timers = input.usize()?;
            let mut due = Vec::with_capacity(timers);
            for _ in 0..timers {
                let time = input.i64()?;
                due.push((time, input.bytes()?.to_vec()));
            }
            let keys: Vec<&[u8]> = entries.iter().map(|(k, _)| k.as_slice()).collect();
            let owned = owner.owns(converter, &keys)?;
            for ((key, value), owned) in entries.into_iter().zip(owned) {
                if owned {
                    self.slots.insert(
                        key,
                        Slot {
                            value,
                            last_write: now,
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
        }
        Ok(())
    }
}

/// A small chunk of numbers an operator keeps besides its keyed state (its
/// watermark, how many chunks each part of its state has): by convention the
/// first chunk of every operator snapshot.
pub fn header_chunk(values: &[i64]) -> Result<Vec<u8>> {
    let mut out = StateWriter::new();
    out.u64(values.len() as u64);
    for value in values {
        out.i64(*value);
    }
    out.finish()
}

/// Width of the timer-time buckets keyed state is chunked by: 1 s, widened
/// tenfold until there are at most [`MAX_TIME_BUCKETS`] buckets.
pub(crate) fn time_bucket_width(times: impl Iterator<Item = i64>) -> i64 {
    let times: Vec<i64> = times.collect();
    let mut width = 1000i64;
    loop {
        let buckets: std::collections::BTreeSet<i64> =
            times.iter().map(|t| t.div_euclid(width)).collect();
        if buckets.len() <= MAX_TIME_BUCKETS || width > i64::MAX / 10 {
            return width;
        }
        width *= 10;
    }
}

/// Most time buckets (chunks with timers) per keyed state snapshot.
const MAX_TIME_BUCKETS: usize = 64;

/// Splits keys into groups of about [`KEYS_PER_CHUNK_GROUP`] by hash, each
/// sorted: one checkpoint chunk per group, so unchanged groups give
/// unchanged chunks.
pub fn chunk_groups<'a>(keys: impl ExactSizeIterator<Item = &'a [u8]>) -> Vec<Vec<&'a [u8]>> {
    let groups = (keys.len() / KEYS_PER_CHUNK_GROUP).max(1) as u64;
    let mut by_group: BTreeMap<u64, Vec<&[u8]>> = BTreeMap::new();
    for key in keys {
        by_group
            .entry(twox_hash::XxHash3_64::oneshot(key) % groups)
            .or_default()
            .push(key);
    }
    by_group
        .into_values()
        .map(|mut keys| {
            keys.sort_unstable();
            keys
        })
        .collect()
}

/// Reads a [`header_chunk`].
pub fn read_header(chunk: &[u8]) -> Result<Vec<i64>> {
    let mut input = StateReader::new(chunk)?;
    let count = input.usize()?;
    (0..count).map(|_| input.i64()).collect()
}

/// The chunks of each subtask of a checkpointed run, in the order its
/// snapshot returned them.
pub type SubtaskChunks<'a> = [Vec<&'a [u8]>];

/// Restores every old subtask's snapshot: `restore` gets its header values
/// (the first is the watermark) and its state chunks. Returns the least
/// restored watermark, which the operator resumes from (`i64::MIN` when no
/// subtask left state).
pub fn restore_subtasks(
    subtasks: &SubtaskChunks,
    mut restore: impl FnMut(&[i64], &[&[u8]]) -> Result<()>,
) -> Result<i64> {
    let mut watermark: Option<i64> = None;
    // A subtask that had finished (end of input) left no state.
    for chunks in subtasks.iter().filter(|chunks| !chunks.is_empty()) {
        let (header, rest) = split_header(chunks)?;
        let first = *header.first().ok_or_else(|| bad_state("empty header"))?;
        watermark = Some(watermark.map_or(first, |w| w.min(first)));
        restore(&header, rest)?;
    }
    Ok(watermark.unwrap_or(i64::MIN))
}

/// Splits one subtask's snapshot into its header values and the rest.
fn split_header<'a>(chunks: &'a [&'a [u8]]) -> Result<(Vec<i64>, &'a [&'a [u8]])> {
    match chunks.split_first() {
        Some((header, rest)) => Ok((read_header(header)?, rest)),
        None => Err(bad_state("missing header chunk")),
    }
}

/// Fails restoring when an encoded value is malformed.
pub fn bad_state(what: &str) -> SluiceError {
    SluiceError::State(format!("corrupt operator state: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_time_order_up_to_the_watermark() {
        let mut state: KeyedState<u32> = KeyedState::new(None);
        let now = Instant::now();
        *state.write(b"a", now, || 0) += 1;
        *state.write(b"a", now, || 0) += 1;
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
    fn restored_keys_go_where_the_shuffle_sends_their_rows() {
        use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
        use arrow::row::SortField;
        use datafusion::physical_expr::expressions::Column;
        let data = RecordBatch::try_from_iter([
            (
                "k",
                Arc::new(Int64Array::from((0..200).collect::<Vec<i64>>())) as ArrayRef,
            ),
            (
                "s",
                Arc::new(StringArray::from_iter_values(
                    (0..200).map(|i| format!("v{i}")),
                )) as _,
            ),
        ])
        .unwrap();
        let batch = ChangeBatch::inserts(data.clone());
        let keys: Vec<Arc<dyn PhysicalExpr>> =
            vec![Arc::new(Column::new("k", 0)), Arc::new(Column::new("s", 1))];
        let hashes = key_hashes(&batch, &keys).unwrap();
        let converter = RowConverter::new(vec![
            SortField::new(arrow::datatypes::DataType::Int64),
            SortField::new(arrow::datatypes::DataType::Utf8),
        ])
        .unwrap();
        let rows = converter
            .convert_columns(&[data.column(0).clone(), data.column(1).clone()])
            .unwrap();
        let encoded: Vec<&[u8]> = (0..200).map(|i| rows.row(i).data()).collect();
        for parallelism in [2, 3] {
            let owned: Vec<Vec<bool>> = (0..parallelism)
                .map(|subtask| {
                    KeyOwner {
                        subtask,
                        parallelism,
                    }
                    .owns(&converter, &encoded)
                    .unwrap()
                })
                .collect();
            for (row, hash) in hashes.iter().enumerate() {
                let target = KeyOwner::target(*hash, parallelism);
                for (subtask, owned) in owned.iter().enumerate() {
                    assert_eq!(owned[row], subtask == target, "row {row} at p{parallelism}");
                }
            }
        }
    }

    #[test]
    fn snapshot_and_restore_keep_values_and_timers() {
        use arrow::row::SortField;
        let converter =
            RowConverter::new(vec![SortField::new(arrow::datatypes::DataType::Int64)]).unwrap();
        let keys = converter
            .convert_columns(&[Arc::new(arrow::array::Int64Array::from(vec![1, 2, 3])) as _])
            .unwrap();
        let mut state: KeyedState<u64> = KeyedState::new(None);
        let now = Instant::now();
        for (i, key) in keys.iter().enumerate() {
            state.write(key.data(), now, || i as u64 * 10);
            state.register_timer(key.data(), 1000 * i as i64);
        }
        let encode = |v: &mut u64, out: &mut StateWriter| {
            out.u64(*v);
            Ok(())
        };
        let first = state.snapshot(encode).unwrap();
        // Unchanged state encodes to the same chunks.
        assert_eq!(state.snapshot(encode).unwrap(), first);
        let chunks: Vec<&[u8]> = first.iter().map(Vec::as_slice).collect();
        let mut restored: KeyedState<u64> = KeyedState::new(None);
        restored
            .restore(&chunks, &KeyOwner::single(), &converter, now, |input| {
                input.u64()
            })
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
    fn idle_keys_expire_after_the_ttl() {
        let ttl = Duration::from_millis(40);
        let mut state: KeyedState<u32> = KeyedState::new(Some(ttl));
        let start = Instant::now();
        state.write(b"old", start, || 1);
        state.write(b"new", start + ttl, || 2);
        let expired = state.expire_idle(start + ttl + Duration::from_millis(1));
        assert_eq!(expired, vec![(b"old".to_vec(), 1)]);
        assert_eq!(state.len(), 1);
    }
}
