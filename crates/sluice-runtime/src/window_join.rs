//! Window joins (Flink's): both inputs are windowed and the condition equates
//! their `window_start` and `window_end`. A window's rows of both sides are
//! kept as the Arrow batches they arrived in and joined with one hash join
//! when the watermark closes the window; then they are dropped. The result is
//! append-only: matched pairs, then the unmatched rows of outer sides padded
//! with NULLs. Rows of a window that already closed are late.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::make_comparator;
use arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BooleanArray, RecordBatch, RecordBatchOptions,
    UInt32Array,
};
use arrow::buffer::NullBuffer;
use arrow::compute::SortOptions;
use arrow::compute::{concat_batches, filter, take};
use arrow::datatypes::UInt32Type;
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::physical_expr::expressions::Column as ColumnExpr;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr::PhysicalExpr;
use hashbrown::hash_map::Entry;
use sluice_core::{ChangeBatch, Message, Result, SluiceError};
use sluice_sql::plan::Join;

use crate::join::check_join_side;
use crate::late::LateRecords;
use crate::operators::{df, evaluate_array, Operator};
use crate::state::{
    bad_state, column_hashes, decode_batches, encode_batches, header_chunk, restore_subtasks,
    KeyOwner, StateConfig, SubtaskChunks,
};
use crate::watermark::EpochMillisExpr;
use crate::FastHashMap;
use sluice_state::{SpillArea, SpillTable};

/// Format of window join snapshots (the header's second value).
const WINDOW_JOIN_STATE_FORMAT: i64 = 1;

/// Marks the end of a build row's chain of rows with the same key.
const NO_ROW: u32 = u32::MAX;

/// The window join operator of one subtask.
pub struct WindowJoinOperator {
    spec: Arc<Join>,
    /// `window_end` of each side's rows, as epoch milliseconds.
    window_ends: [EpochMillisExpr; 2],
    /// Rows of windows not closed yet, by window end: the left and right batches.
    pending: BTreeMap<i64, [Vec<RecordBatch>; 2]>,
    watermark: i64,
    /// Where rows of closed windows go.
    late: LateRecords,
    /// The join's extra condition, over the columns it reads.
    condition: Option<PairCondition>,
    /// Open windows' rows moved to disk to keep within `state.memory-budget`.
    spill: Option<SpilledWindows>,
}

/// Batches of open windows written to the job's spill area; the windows
/// that close last go first.
struct SpilledWindows {
    area: Arc<SpillArea>,
    /// Created on the first spill.
    table: Option<SpillTable>,
    /// Per window end, the spilled batches: (side, key in the table).
    keys: BTreeMap<i64, Vec<(usize, Vec<u8>)>>,
    /// The next key's sequence number.
    next: u64,
    /// Bytes of pending batches this operator counts in the area.
    accounted: i64,
}

impl SpilledWindows {
    fn account(&mut self, bytes: i64) {
        self.accounted += bytes;
        self.area.account(bytes);
    }

    /// Writes a window's batches to disk.
    fn write(&mut self, end: i64, sides: [Vec<RecordBatch>; 2]) -> Result<()> {
        let mut entries = Vec::new();
        for (side, batches) in sides.into_iter().enumerate() {
            for batch in batches {
                let mut key = end.to_be_bytes().to_vec();
                key.extend_from_slice(&self.next.to_be_bytes());
                self.next += 1;
                self.account(-(batch.get_array_memory_size() as i64));
                entries.push((key.clone(), encode_batches(&[ChangeBatch::inserts(batch)])?));
                self.keys.entry(end).or_default().push((side, key));
            }
        }
        let table = match &mut self.table {
            Some(table) => table,
            empty => empty.insert(self.area.table()?),
        };
        table.put_all(entries)
    }

    /// A window's spilled batches per side; `forget` removes them from disk.
    fn read(&mut self, end: i64, forget: bool) -> Result<[Vec<RecordBatch>; 2]> {
        let mut sides = [Vec::new(), Vec::new()];
        let keys = if forget {
            self.keys.remove(&end).unwrap_or_default()
        } else {
            self.keys.get(&end).cloned().unwrap_or_default()
        };
        let Some(table) = &self.table else {
            return Ok(sides);
        };
        for (side, key) in keys {
            let value = table
                .get(&key)?
                .ok_or_else(|| bad_state("spilled window join rows are missing"))?;
            for batch in decode_batches(&value)? {
                sides[side].push(batch.data);
            }
            if forget {
                table.remove(&key)?;
            }
        }
        Ok(sides)
    }
}

impl Drop for WindowJoinOperator {
    fn drop(&mut self) {
        if let Some(spill) = &self.spill {
            spill.area.account(-spill.accounted);
        }
    }
}

impl WindowJoinOperator {
    /// An operator for `spec`, which must be a window join.
    pub fn new(spec: Arc<Join>, state: &StateConfig, late: LateRecords) -> Result<Self> {
        let Some(window) = &spec.window else {
            return Err(SluiceError::Runtime(
                "a window join operator was planned for a join without windows".into(),
            ));
        };
        let window_ends = window.window_end.clone().map(EpochMillisExpr::new);
        let condition = match &spec.filter {
            Some(filter) => Some(PairCondition::new(filter, &spec)?),
            None => None,
        };
        Ok(WindowJoinOperator {
            spill: state.spill.clone().map(|area| SpilledWindows {
                area,
                table: None,
                keys: BTreeMap::new(),
                next: 0,
                accounted: 0,
            }),
            condition,
            window_ends,
            pending: BTreeMap::new(),
            watermark: i64::MIN,
            late,
            spec,
        })
    }

    /// Keeps `batch`'s rows of `side` with their windows; rows of closed
    /// windows are late, rows without a window are joined at once (they can
    /// only be padded).
    fn buffer(
        &mut self,
        side: usize,
        batch: RecordBatch,
        check_late: bool,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let ends = self.window_ends[side].evaluate(&batch)?;
        // Fast path: the whole batch is one open window (a window aggregation's output).
        if ends.null_count() == 0 {
            if let (Some(min), Some(max)) = (arrow::compute::min(&ends), arrow::compute::max(&ends))
            {
                if min == max && (!check_late || self.is_open(min)) {
                    self.keep(min, side, batch);
                    return Ok(());
                }
            }
        }
        let mut by_window: BTreeMap<Option<i64>, Vec<u32>> = BTreeMap::new();
        for row in 0..rows {
            let end = ends.is_valid(row).then(|| ends.value(row));
            by_window.entry(end).or_default().push(row as u32);
        }
        let mut late: Vec<u32> = Vec::new();
        for (end, indices) in by_window {
            match end {
                Some(end) if check_late && !self.is_open(end) => late.extend(indices),
                Some(end) => {
                    let rows =
                        arrow::compute::take_record_batch(&batch, &UInt32Array::from(indices))?;
                    self.keep(end, side, rows);
                }
                None => {
                    let rows =
                        arrow::compute::take_record_batch(&batch, &UInt32Array::from(indices))?;
                    let mut sides = [Vec::new(), Vec::new()];
                    sides[side].push(rows);
                    self.emit_window(sides, out)?;
                }
            }
        }
        late.sort_unstable();
        self.late
            .reject("window join", &batch, &late, &ends, self.watermark)
    }

    /// Keeps rows of an open window.
    fn keep(&mut self, end: i64, side: usize, batch: RecordBatch) {
        if let Some(spill) = &mut self.spill {
            spill.account(batch.get_array_memory_size() as i64);
        }
        self.pending.entry(end).or_default()[side].push(batch);
    }

    /// Moves the open windows that close last to disk while the job's state
    /// is over its memory budget.
    fn enforce_budget(&mut self) -> Result<()> {
        let Some(spill) = &mut self.spill else {
            return Ok(());
        };
        while spill.area.excess() > 0 {
            let Some((end, sides)) = self.pending.pop_last() else {
                break;
            };
            spill.write(end, sides)?;
        }
        Ok(())
    }

    /// Takes a window's rows out of memory and off disk.
    fn take_window(&mut self, end: i64) -> Result<[Vec<RecordBatch>; 2]> {
        let mut sides = self.pending.remove(&end).unwrap_or_default();
        if let Some(spill) = &mut self.spill {
            let released: usize = sides
                .iter()
                .flatten()
                .map(RecordBatch::get_array_memory_size)
                .sum();
            spill.account(-(released as i64));
            let [left, right] = spill.read(end, true)?;
            sides[0].extend(left);
            sides[1].extend(right);
        }
        Ok(sides)
    }

    /// Ends of the open windows, in memory or on disk.
    fn open_windows(&self) -> Vec<i64> {
        let mut ends: Vec<i64> = self.pending.keys().copied().collect();
        if let Some(spill) = &self.spill {
            ends.extend(spill.keys.keys().copied());
        }
        ends.sort_unstable();
        ends.dedup();
        ends
    }

    /// Whether the window ending at `end` has not fired yet: it fires once
    /// the watermark reaches its last millisecond.
    fn is_open(&self, end: i64) -> bool {
        end.saturating_sub(1) > self.watermark
    }

    /// Joins one window's rows and pushes the result.
    fn emit_window(&self, sides: [Vec<RecordBatch>; 2], out: &mut Vec<Message>) -> Result<()> {
        let began = std::time::Instant::now();
        let [left, right] = sides;
        let inputs = [self.concat(0, left)?, self.concat(1, right)?];
        let result = self.join(&inputs)?;
        tracing::debug!(
            left = inputs[0].num_rows(),
            right = inputs[1].num_rows(),
            output = result.as_ref().map_or(0, RecordBatch::num_rows),
            micros = began.elapsed().as_micros() as u64,
            "window joined"
        );
        if let Some(result) = result {
            out.push(Message::Data(ChangeBatch::inserts(result)));
        }
        Ok(())
    }

    /// One side's batches of a window as one batch.
    fn concat(&self, side: usize, mut batches: Vec<RecordBatch>) -> Result<RecordBatch> {
        match batches.len() {
            0 => Ok(RecordBatch::new_empty(
                self.spec.input_schemas[side].clone(),
            )),
            1 => Ok(batches.remove(0)),
            _ => Ok(concat_batches(&batches[0].schema(), &batches)?),
        }
    }

    /// Hash-joins one window's left and right rows (the smaller side is the
    /// build side); `None` when nothing comes out.
    fn join(&self, inputs: &[RecordBatch; 2]) -> Result<Option<RecordBatch>> {
        let keys = [
            self.key_columns(0, &inputs[0])?,
            self.key_columns(1, &inputs[1])?,
        ];
        let [left_pairs, right_pairs] = candidate_pairs(&keys)?;
        // The condition is evaluated over the columns it reads, and only the
        // pairs that pass it are assembled whole.
        let (left_pairs, right_pairs) = match &self.condition {
            None => (left_pairs, right_pairs),
            Some(condition) => {
                let columns = condition
                    .columns
                    .iter()
                    .map(|&(side, column)| {
                        let pairs = if side == 0 { &left_pairs } else { &right_pairs };
                        take_rows(inputs[side].column(column), pairs)
                    })
                    .collect::<Result<Vec<_>>>()?;
                let candidates = RecordBatch::try_new_with_options(
                    condition.schema.clone(),
                    columns,
                    &RecordBatchOptions::new().with_row_count(Some(left_pairs.len())),
                )?;
                let mask = evaluate_array(condition.expr.as_ref(), &candidates)?;
                let mask = mask.as_boolean();
                (
                    filter_indices(&left_pairs, mask)?,
                    filter_indices(&right_pairs, mask)?,
                )
            }
        };
        let mut has_partner = [
            vec![false; inputs[0].num_rows()],
            vec![false; inputs[1].num_rows()],
        ];
        for (side, indices) in [&left_pairs, &right_pairs].into_iter().enumerate() {
            for &row in indices.values() {
                has_partner[side][row as usize] = true;
            }
        }
        let mut parts = vec![self.assemble(inputs, [&left_pairs, &right_pairs])?];
        for (side, partnered) in has_partner.iter().enumerate() {
            if !self.spec.kind.keeps_unmatched(side) {
                continue;
            }
            let unmatched = UInt32Array::from_iter(
                partnered
                    .iter()
                    .enumerate()
                    .filter(|(_, partnered)| !**partnered)
                    .map(|(row, _)| Some(row as u32)),
            );
            if unmatched.is_empty() {
                continue;
            }
            let nulls = UInt32Array::new_null(unmatched.len());
            let indices = if side == 0 {
                [&unmatched, &nulls]
            } else {
                [&nulls, &unmatched]
            };
            parts.push(self.assemble(inputs, indices)?);
        }
        parts.retain(|part| part.num_rows() > 0);
        match parts.len() {
            0 => Ok(None),
            1 => Ok(parts.pop()),
            _ => Ok(Some(concat_batches(&self.spec.schema, &parts)?)),
        }
    }

    /// The join key columns of `side`'s rows.
    fn key_columns(&self, side: usize, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        self.spec
            .keys(side)
            .iter()
            .map(|expr| evaluate_array(expr.as_ref(), batch))
            .collect()
    }

    /// Output rows: each side's columns taken at its indices (NULL where
    /// an index is NULL).
    fn assemble(
        &self,
        inputs: &[RecordBatch; 2],
        indices: [&UInt32Array; 2],
    ) -> Result<RecordBatch> {
        let rows = indices[0].len();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.spec.schema.fields().len());
        for (input, indices) in inputs.iter().zip(indices) {
            for column in input.columns() {
                columns.push(if indices.null_count() == rows && rows > 0 {
                    new_null_array(column.data_type(), rows)
                } else {
                    take_rows(column, indices)?
                });
            }
        }
        Ok(RecordBatch::try_new_with_options(
            self.spec.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }
}

/// A join's extra condition, rewritten over only the columns it reads.
struct PairCondition {
    expr: Arc<dyn PhysicalExpr>,
    /// The columns it reads, as (side, column of that side's input).
    columns: Vec<(usize, usize)>,
    /// Their fields.
    schema: SchemaRef,
}

impl PairCondition {
    /// `filter` (over the joined row of `spec`) over the columns it reads.
    fn new(filter: &Arc<dyn PhysicalExpr>, spec: &Join) -> Result<Self> {
        let mut read: Vec<usize> = collect_columns(filter)
            .iter()
            .map(ColumnExpr::index)
            .collect();
        read.sort_unstable();
        read.dedup();
        let expr = Arc::clone(filter)
            .transform(|expr| {
                let Some(column) = expr.downcast_ref::<ColumnExpr>() else {
                    return Ok(Transformed::no(expr));
                };
                let position = read.binary_search(&column.index()).unwrap_or_default();
                Ok(Transformed::yes(
                    Arc::new(ColumnExpr::new(column.name(), position)) as Arc<dyn PhysicalExpr>,
                ))
            })
            .map_err(df)?
            .data;
        let left_width = spec.input_schemas[0].fields().len();
        Ok(PairCondition {
            expr,
            columns: read
                .iter()
                .map(|&index| {
                    if index < left_width {
                        (0, index)
                    } else {
                        (1, index - left_width)
                    }
                })
                .collect(),
            schema: Arc::new(Schema::new(
                read.iter()
                    .map(|&index| spec.schema.field(index).clone())
                    .collect::<Vec<_>>(),
            )),
        })
    }
}

/// Pairs of (left row, right row) whose join keys hash alike and are equal;
/// rows with a NULL key pair with nothing. The smaller side is hashed into a
/// table, the other probes it; pairs come in probe-row order.
fn candidate_pairs(keys: &[Vec<ArrayRef>; 2]) -> Result<[UInt32Array; 2]> {
    let rows = [key_rows(&keys[0]), key_rows(&keys[1])];
    let build = usize::from(rows[1] <= rows[0]);
    let probe = 1 - build;
    let hashes = [
        column_hashes(&keys[0], rows[0])?,
        column_hashes(&keys[1], rows[1])?,
    ];
    let valid = [key_validity(&keys[0]), key_validity(&keys[1])];
    let has_key = |side: usize, row: usize| valid[side].as_ref().is_none_or(|v| v.is_valid(row));

    // Each hash's first build row, and each build row's next one with that hash.
    let mut first: FastHashMap<u64, u32> = FastHashMap::default();
    first.reserve(rows[build]);
    let mut next = vec![NO_ROW; rows[build]];
    for row in (0..rows[build]).rev() {
        if !has_key(build, row) {
            continue;
        }
        match first.entry(hashes[build][row]) {
            Entry::Occupied(mut head) => {
                next[row] = *head.get();
                *head.get_mut() = row as u32;
            }
            Entry::Vacant(slot) => {
                slot.insert(row as u32);
            }
        }
    }
    let mut pairs: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
    for (row, hash) in hashes[probe].iter().enumerate() {
        if !has_key(probe, row) {
            continue;
        }
        let mut partner = first.get(hash).copied().unwrap_or(NO_ROW);
        while partner != NO_ROW {
            pairs[probe].push(row as u32);
            pairs[build].push(partner);
            partner = next[partner as usize];
        }
    }
    // Equal hashes are not yet equal keys.
    let pairs = pairs.map(UInt32Array::from);
    let mut equal: Option<BooleanArray> = None;
    for (left, right) in keys[0].iter().zip(&keys[1]) {
        let same = keys_equal(&take_rows(left, &pairs[0])?, &take_rows(right, &pairs[1])?)?;
        equal = Some(match equal {
            None => same,
            Some(earlier) => arrow::compute::and(&earlier, &same)?,
        });
    }
    match equal {
        Some(mask) if mask.true_count() < mask.len() => Ok([
            filter_indices(&pairs[0], &mask)?,
            filter_indices(&pairs[1], &mask)?,
        ]),
        _ => Ok(pairs),
    }
}

/// Which rows have no NULL in any key column (`None`: every row).
fn key_validity(keys: &[ArrayRef]) -> Option<NullBuffer> {
    keys.iter().fold(None, |valid, key| {
        NullBuffer::union(valid.as_ref(), key.logical_nulls().as_ref())
    })
}

/// Rows of a side (key columns all have its row count; no key column: none).
fn key_rows(keys: &[ArrayRef]) -> usize {
    keys.first().map_or(0, |key| key.len())
}

/// Row by row, whether two key columns of the same type hold equal values
/// (neither is NULL here): Arrow's `eq` kernel, or a comparator for the
/// types it does not compare (nested ones).
fn keys_equal(left: &ArrayRef, right: &ArrayRef) -> Result<BooleanArray> {
    if let Ok(equal) = arrow::compute::kernels::cmp::eq(left, right) {
        return Ok(equal);
    }
    let compare = make_comparator(left.as_ref(), right.as_ref(), SortOptions::default())?;
    Ok((0..left.len())
        .map(|row| Some(compare(row, row).is_eq()))
        .collect())
}

/// `column`'s rows at `indices`; the column itself when the indices are
/// every row in order (a probe side whose rows each have one partner).
fn take_rows(column: &ArrayRef, indices: &UInt32Array) -> Result<ArrayRef> {
    let whole = indices.len() == column.len()
        && indices.null_count() == 0
        && indices
            .values()
            .iter()
            .enumerate()
            .all(|(i, &row)| row as usize == i);
    if whole {
        return Ok(column.clone());
    }
    Ok(take(column.as_ref(), indices, None)?)
}

/// The pair indices whose condition `mask` is true (NULL counts as false).
fn filter_indices(indices: &UInt32Array, mask: &BooleanArray) -> Result<UInt32Array> {
    Ok(filter(indices, mask)?.as_primitive::<UInt32Type>().clone())
}

impl Operator for WindowJoinOperator {
    fn process(&mut self, batch: ChangeBatch, out: &mut Vec<Message>) -> Result<()> {
        self.process_input(0, batch, out)
    }

    fn process_input(
        &mut self,
        side: usize,
        batch: ChangeBatch,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        check_join_side(side)?;
        if let Some(kinds) = &batch.kinds {
            if (0..kinds.len()).any(|row| !batch.kind(row).is_addition()) {
                return Err(SluiceError::Runtime(format!(
                    "window join input {side} retracts rows; window joins take append-only inputs"
                )));
            }
        }
        self.buffer(side, batch.data, true, out)?;
        self.enforce_budget()
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<Message>) -> Result<()> {
        if watermark > self.watermark {
            self.watermark = watermark;
            // Windows whose last millisecond the watermark reached: end <= watermark + 1.
            let closing = self
                .open_windows()
                .into_iter()
                .take_while(|end| end.saturating_sub(1) <= watermark);
            for end in closing.collect::<Vec<_>>() {
                let sides = self.take_window(end)?;
                self.emit_window(sides, out)?;
            }
        }
        out.push(Message::Watermark(watermark));
        Ok(())
    }

    /// Header (watermark, format, window count), then per open window its
    /// left and its right batches.
    fn snapshot(&mut self) -> Result<Vec<Vec<u8>>> {
        let windows = self.open_windows();
        let mut chunks = vec![header_chunk(&[
            self.watermark,
            WINDOW_JOIN_STATE_FORMAT,
            windows.len() as i64,
        ])?];
        for end in windows {
            let mut sides = self.pending.get(&end).cloned().unwrap_or_default();
            if let Some(spill) = &mut self.spill {
                let [left, right] = spill.read(end, false)?;
                sides[0].extend(left);
                sides[1].extend(right);
            }
            for batches in sides {
                let batches: Vec<ChangeBatch> =
                    batches.into_iter().map(ChangeBatch::inserts).collect();
                chunks.push(encode_batches(&batches)?);
            }
        }
        Ok(chunks)
    }

    fn restore(&mut self, subtasks: &SubtaskChunks, owner: &KeyOwner) -> Result<()> {
        let mut restored: Vec<(usize, ChangeBatch)> = Vec::new();
        self.watermark = restore_subtasks(subtasks, |header, rest| {
            let [_, WINDOW_JOIN_STATE_FORMAT, windows] = header[..] else {
                return Err(bad_state("window join header"));
            };
            if rest.len() as i64 != windows.saturating_mul(2) {
                return Err(bad_state("window join chunk count"));
            }
            for (index, chunk) in rest.iter().enumerate() {
                let side = index % 2;
                let keys = self.spec.keys(side);
                for batch in decode_batches(chunk)? {
                    if let Some(mine) = owner.filter_batch(&batch, keys)? {
                        restored.push((side, mine));
                    }
                }
            }
            Ok(())
        })?;
        let mut unused = Vec::new();
        for (side, batch) in restored {
            self.buffer(side, batch.data, false, &mut unused)?;
        }
        if !unused.is_empty() {
            return Err(bad_state("window join rows without a window"));
        }
        self.enforce_budget()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray, StructArray};
    use arrow::datatypes::{DataType, Field};

    fn pairs_of(keys: [Vec<ArrayRef>; 2]) -> Vec<(u32, u32)> {
        let [left, right] = candidate_pairs(&keys).expect("pairs");
        let mut pairs: Vec<(u32, u32)> = left
            .values()
            .iter()
            .copied()
            .zip(right.values().iter().copied())
            .collect();
        pairs.sort_unstable();
        pairs
    }

    #[test]
    fn pairs_match_equal_keys_and_never_nulls() {
        let left: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![
                Some(1),
                Some(1),
                None,
                Some(2),
                Some(3),
            ])),
            Arc::new(StringArray::from(vec![
                Some("a"),
                Some("b"),
                Some("a"),
                Some("a"),
                None,
            ])),
        ];
        let right: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![
                Some(1),
                Some(2),
                Some(1),
                None,
                Some(3),
            ])),
            Arc::new(StringArray::from(vec![
                Some("a"),
                Some("a"),
                Some("a"),
                Some("a"),
                None,
            ])),
        ];
        // Left 0 (1, a) meets right 0 and 2; left 3 (2, a) meets right 1;
        // NULL in either key column matches nothing.
        assert_eq!(
            pairs_of([left.clone(), right.clone()]),
            vec![(0, 0), (0, 2), (3, 1)]
        );
        // The other side as the build side gives the same pairs.
        let fewer: Vec<ArrayRef> = right.iter().map(|column| column.slice(0, 3)).collect();
        assert_eq!(pairs_of([left, fewer]), vec![(0, 0), (0, 2), (3, 1)]);
    }

    #[test]
    fn nested_keys_compare_whole_values() {
        let point = |x: Vec<i64>, y: Vec<i64>| -> ArrayRef {
            Arc::new(StructArray::from(vec![
                (
                    Arc::new(Field::new("x", DataType::Int64, false)),
                    Arc::new(Int64Array::from(x)) as ArrayRef,
                ),
                (
                    Arc::new(Field::new("y", DataType::Int64, false)),
                    Arc::new(Int64Array::from(y)) as ArrayRef,
                ),
            ]))
        };
        let left = vec![point(vec![1, 1, 2], vec![1, 2, 2])];
        let right = vec![point(vec![1, 2, 1], vec![2, 2, 1])];
        assert_eq!(pairs_of([left, right]), vec![(0, 2), (1, 0), (2, 1)]);
    }
}
