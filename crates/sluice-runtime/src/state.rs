//! Keyed operator state. Every stateful operator that keeps values per key
//! (joins, Top-N, updating aggregates, OVER windows) keeps them in a
//! [`KeyedState`] (see `keyed_state.rs`). This module holds what snapshots
//! and restores share: which subtask owns a key, header chunks, chunk
//! grouping, and encoded change batches.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int8Array, UInt32Array};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::row::RowConverter;
use datafusion::common::hash_utils::{create_hashes, RandomState};
use datafusion::physical_expr::PhysicalExpr;
use sluice_core::ChangeBatch;
use sluice_core::{Result, SluiceError};
use sluice_state::{StateReader, StateWriter};

use crate::operators::{df, evaluate_array};

use crate::keyed_state::KEYS_PER_CHUNK_GROUP;
pub use crate::keyed_state::{KeyedState, StateConfig, ValueCodec};

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
        Ok(column_hashes(&columns, keys.len())?
            .into_iter()
            .map(|hash| Self::target(hash, self.parallelism) == self.subtask)
            .collect())
    }
}

/// The partitioning hash of each row's `keys` (see [`KeyOwner::target`]).
pub fn key_hashes(batch: &ChangeBatch, keys: &[Arc<dyn PhysicalExpr>]) -> Result<Vec<u64>> {
    let columns = keys
        .iter()
        .map(|key| evaluate_array(key.as_ref(), &batch.data))
        .collect::<Result<Vec<_>>>()?;
    column_hashes(&columns, batch.num_rows())
}

/// The partitioning hash of each of `rows` rows of `columns` (all 0 without columns).
pub(crate) fn column_hashes(columns: &[ArrayRef], rows: usize) -> Result<Vec<u64>> {
    let mut hashes = vec![0u64; rows];
    if !columns.is_empty() {
        create_hashes(columns, &RandomState::default(), &mut hashes).map_err(df)?;
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
}
