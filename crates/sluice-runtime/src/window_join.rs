//! Window joins (Flink's): both inputs are windowed and the condition equates
//! their `window_start` and `window_end`. A window's rows of both sides are
//! kept as the Arrow batches they arrived in and joined with one hash join
//! when the watermark closes the window; then they are dropped. The result is
//! append-only: matched pairs, then the unmatched rows of outer sides padded
//! with NULLs. Rows of a window that already closed are late.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions, UInt32Array,
};
use arrow::compute::{concat_batches, filter_record_batch, take};
use arrow::row::{RowConverter, Rows};
use hashbrown::hash_map::Entry;
use sluice_core::{ChangeBatch, Message, Result, SluiceError};
use sluice_sql::plan::Join;

use crate::aggregate::key_converter;
use crate::late::LateRecords;
use crate::operators::{evaluate_array, Operator};
use crate::state::{
    bad_state, decode_batches, encode_batches, header_chunk, restore_subtasks, KeyOwner,
    SubtaskChunks,
};
use crate::watermark::EpochMillisExpr;
use crate::FastHashMap;

/// Format of window join snapshots (the header's second value).
const WINDOW_JOIN_STATE_FORMAT: i64 = 1;

/// Marks the end of a build row's chain of rows with the same key.
const NO_ROW: u32 = u32::MAX;

/// The window join operator of one subtask.
pub struct WindowJoinOperator {
    spec: Arc<Join>,
    key_converter: RowConverter,
    /// `window_end` of each side's rows, as epoch milliseconds.
    window_ends: [EpochMillisExpr; 2],
    /// Rows of windows not closed yet, by window end: the left and right batches.
    pending: BTreeMap<i64, [Vec<RecordBatch>; 2]>,
    watermark: i64,
    /// Where rows of closed windows go.
    late: LateRecords,
}

impl WindowJoinOperator {
    /// An operator for `spec`, which must be a window join.
    pub fn new(spec: Arc<Join>, late: LateRecords) -> Result<Self> {
        let Some(window) = &spec.window else {
            return Err(SluiceError::Runtime(
                "a window join operator was planned for a join without windows".into(),
            ));
        };
        let window_ends = window.window_end.clone().map(EpochMillisExpr::new);
        Ok(WindowJoinOperator {
            key_converter: key_converter(&spec.left_keys, &spec.input_schemas[0])?,
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
                    self.pending.entry(min).or_default()[side].push(batch);
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
                    self.pending.entry(end).or_default()[side].push(rows);
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

    /// Whether the window ending at `end` has not fired yet: it fires once
    /// the watermark reaches its last millisecond.
    fn is_open(&self, end: i64) -> bool {
        end.saturating_sub(1) > self.watermark
    }

    /// Joins one window's rows and pushes the result.
    fn emit_window(&self, sides: [Vec<RecordBatch>; 2], out: &mut Vec<Message>) -> Result<()> {
        let [left, right] = sides;
        let inputs = [self.concat(0, left)?, self.concat(1, right)?];
        if let Some(result) = self.join(&inputs)? {
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
        let keys = [self.key_rows(0, &inputs[0])?, self.key_rows(1, &inputs[1])?];
        let build = usize::from(inputs[1].num_rows() <= inputs[0].num_rows());
        let probe = 1 - build;

        // Each key's first build row, and each build row's next one of the same key.
        let build_rows = inputs[build].num_rows();
        let mut first: FastHashMap<&[u8], u32> = FastHashMap::default();
        first.reserve(build_rows);
        let mut next = vec![NO_ROW; build_rows];
        for row in (0..build_rows).rev() {
            let Some(key) = keys[build].1[row].then(|| keys[build].0.row(row).data()) else {
                continue;
            };
            match first.entry(key) {
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
        for row in 0..inputs[probe].num_rows() {
            if !keys[probe].1[row] {
                continue;
            }
            let mut partner = first
                .get(keys[probe].0.row(row).data())
                .copied()
                .unwrap_or(NO_ROW);
            while partner != NO_ROW {
                pairs[probe].push(row as u32);
                pairs[build].push(partner);
                partner = next[partner as usize];
            }
        }

        let [left_pairs, right_pairs] = pairs;
        let (left_pairs, right_pairs) = (
            UInt32Array::from(left_pairs),
            UInt32Array::from(right_pairs),
        );
        let mut matched = self.assemble(inputs, [&left_pairs, &right_pairs])?;
        let mut has_partner = [
            vec![false; inputs[0].num_rows()],
            vec![false; inputs[1].num_rows()],
        ];
        if let Some(filter) = &self.spec.filter {
            let mask = evaluate_array(filter.as_ref(), &matched)?;
            let mask = mask.as_boolean();
            for (pair, (l, r)) in left_pairs
                .values()
                .iter()
                .zip(right_pairs.values())
                .enumerate()
            {
                if mask.is_valid(pair) && mask.value(pair) {
                    has_partner[0][*l as usize] = true;
                    has_partner[1][*r as usize] = true;
                }
            }
            matched = filter_record_batch(&matched, mask)?;
        } else {
            for (side, indices) in [&left_pairs, &right_pairs].into_iter().enumerate() {
                for &row in indices.values() {
                    has_partner[side][row as usize] = true;
                }
            }
        }

        let mut parts = vec![matched];
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

    /// The encoded join keys of `side`'s rows, and whether each row has a
    /// key (NULL keys never match).
    fn key_rows(&self, side: usize, batch: &RecordBatch) -> Result<(Rows, Vec<bool>)> {
        let exprs = if side == 0 {
            &self.spec.left_keys
        } else {
            &self.spec.right_keys
        };
        let columns = exprs
            .iter()
            .map(|expr| evaluate_array(expr.as_ref(), batch))
            .collect::<Result<Vec<_>>>()?;
        let valid = (0..batch.num_rows())
            .map(|row| columns.iter().all(|column| column.is_valid(row)))
            .collect();
        Ok((self.key_converter.convert_columns(&columns)?, valid))
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
                    take(column.as_ref(), indices, None)?
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
        if side > 1 {
            return Err(SluiceError::Runtime(format!("join has no input {side}")));
        }
        if let Some(kinds) = &batch.kinds {
            if (0..kinds.len()).any(|row| !batch.kind(row).is_addition()) {
                return Err(SluiceError::Runtime(format!(
                    "window join input {side} retracts rows; window joins take append-only inputs"
                )));
            }
        }
        self.buffer(side, batch.data, true, out)
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<Message>) -> Result<()> {
        if watermark > self.watermark {
            self.watermark = watermark;
            // Windows whose last millisecond the watermark reached: end <= watermark + 1.
            let open = self.pending.split_off(&watermark.saturating_add(2));
            let closed = std::mem::replace(&mut self.pending, open);
            for (_, sides) in closed {
                self.emit_window(sides, out)?;
            }
        }
        out.push(Message::Watermark(watermark));
        Ok(())
    }

    /// Header (watermark, format, window count), then per open window its
    /// left and its right batches.
    fn snapshot(&mut self) -> Result<Vec<Vec<u8>>> {
        let mut chunks = vec![header_chunk(&[
            self.watermark,
            WINDOW_JOIN_STATE_FORMAT,
            self.pending.len() as i64,
        ])?];
        for sides in self.pending.values() {
            for batches in sides {
                let batches: Vec<ChangeBatch> =
                    batches.iter().cloned().map(ChangeBatch::inserts).collect();
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
                let keys = if side == 0 {
                    &self.spec.left_keys
                } else {
                    &self.spec.right_keys
                };
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
        if unused.is_empty() {
            Ok(())
        } else {
            Err(bad_state("window join rows without a window"))
        }
    }
}
