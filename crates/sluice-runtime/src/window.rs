//! Event-time window aggregation (window TVF + `GROUP BY window_start,
//! window_end, ...`). Rows are pre-aggregated per key into panes (the greatest
//! common divisor of a window's size and slide), so a sliding window costs one
//! accumulator update per row, not one per window; when the watermark passes a
//! window's end, the window's panes are merged and the result emitted. Panes are
//! freed as soon as no open window needs them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions, TimestampMillisecondArray};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use arrow::row::RowConverter;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use sluice_core::{ChangeBatch, Message, Result, RowKind, SluiceError};
use sluice_sql::plan::{WindowAggregate, WindowKind, WindowOutput};

use crate::aggregate::{
    key_converter, merge_state, new_accumulators, read_states, restore_accumulators,
    snapshot_accumulators, write_states, AggregateInputs,
};
use crate::late::LateRecords;
use crate::operators::{df, Operator};
use crate::rows::{scalar_column, take_results};
use crate::state::{bad_state, header_chunk, restore_subtasks, KeyOwner, SubtaskChunks};
use crate::watermark::epoch_millis;
use crate::FastHashMap;
use sluice_state::{StateReader, StateWriter};

type Accumulators = Vec<Box<dyn Accumulator>>;

/// The window aggregation operator of one subtask.
pub struct WindowAggregateOperator {
    spec: Arc<WindowAggregate>,
    converter: RowConverter,
    /// Pane start → key → accumulators, for panes that may still get rows.
    panes: BTreeMap<i64, FastHashMap<Vec<u8>, Accumulators>>,
    /// Pane start → key → accumulator states, for complete panes that later
    /// windows still need (accumulator `state()` may drain, so it is taken once).
    frozen: BTreeMap<i64, FastHashMap<Vec<u8>, Vec<Vec<ScalarValue>>>>,
    watermark: i64,
    late: LateRecords,
    windows: Vec<(i64, i64)>,
    /// `table.exec.emit.allow-lateness` (ms): how long fired windows keep
    /// their state and accept late rows.
    lateness: i64,
    /// Fired windows that late rows changed since they last fired: (end, start).
    refire: BTreeSet<(i64, i64)>,
    /// With lateness: the results each fired window emitted, per key.
    emitted: BTreeMap<(i64, i64), FastHashMap<Vec<u8>, Vec<ScalarValue>>>,
}

impl WindowAggregateOperator {
    /// An operator for `spec`; late rows go to `late`.
    pub fn new(
        spec: Arc<WindowAggregate>,
        input_schema: &SchemaRef,
        late: LateRecords,
    ) -> Result<Self> {
        Ok(WindowAggregateOperator {
            converter: key_converter(&spec.keys, input_schema)?,
            lateness: spec.allowed_lateness,
            panes: BTreeMap::new(),
            frozen: BTreeMap::new(),
            watermark: i64::MIN,
            late,
            windows: Vec::new(),
            spec,
            refire: BTreeSet::new(),
            emitted: BTreeMap::new(),
        })
    }

    /// The last millisecond of the last window containing `pane`.
    fn pane_last_window_end(&mut self, pane: i64) -> i64 {
        self.spec
            .kind
            .windows_of_pane(pane, self.spec.offset, &mut self.windows);
        self.windows
            .iter()
            .map(|(_, end)| *end)
            .max()
            .unwrap_or(pane)
            - 1
    }

    fn fire(&mut self, watermark: i64, out: &mut Vec<Message>) -> Result<()> {
        // Windows that close at this watermark: every window of a live pane
        // whose last millisecond is now at or behind the watermark; plus
        // fired windows that late rows changed.
        let mut closing: BTreeSet<(i64, i64)> = std::mem::take(&mut self.refire);
        let pane_starts: BTreeSet<i64> = self
            .panes
            .keys()
            .chain(self.frozen.keys())
            .copied()
            .collect();
        for pane in &pane_starts {
            self.spec
                .kind
                .windows_of_pane(*pane, self.spec.offset, &mut self.windows);
            for &(start, end) in &self.windows {
                if end - 1 <= watermark && end - 1 > self.watermark {
                    closing.insert((end, start));
                }
            }
        }
        let pane_width = self.spec.kind.pane();
        let mut rows: Vec<WindowRow> = Vec::new();
        for (end, start) in closing {
            // A cascaded window is exactly the pane of its start (its rows carry
            // the window); other kinds span every pane inside the window.
            let cascaded = matches!(self.spec.kind, WindowKind::Cascaded { .. });
            let in_window: Vec<i64> = if cascaded {
                pane_starts.get(&start).copied().into_iter().collect()
            } else {
                pane_starts.range(start..end).copied().collect()
            };
            if in_window.len() == 1
                && in_window[0] == start
                && (cascaded || start + pane_width == end)
                && !self.frozen.contains_key(&start)
            {
                // One pane is the whole window: evaluate it directly.
                if let Some(keys) = self.panes.get_mut(&start) {
                    for (key, accumulators) in keys.iter_mut() {
                        let values = accumulators
                            .iter_mut()
                            .map(|a| a.evaluate().map_err(df))
                            .collect::<Result<Vec<_>>>()?;
                        rows.push((start, end, key.clone(), values));
                    }
                }
                continue;
            }
            let mut merged: FastHashMap<Vec<u8>, Accumulators> = FastHashMap::default();
            for pane in in_window {
                self.freeze(pane)?;
                let Some(keys) = self.frozen.get(&pane) else {
                    continue;
                };
                for (key, states) in keys {
                    if !merged.contains_key(key) {
                        merged.insert(key.clone(), new_accumulators(&self.spec.aggregates)?);
                    }
                    let target = merged
                        .get_mut(key)
                        .ok_or_else(|| SluiceError::Runtime("merge target vanished".into()))?;
                    for (into, state) in target.iter_mut().zip(states) {
                        merge_state(into.as_mut(), state)?;
                    }
                }
            }
            for (key, mut accumulators) in merged {
                let values = accumulators
                    .iter_mut()
                    .map(|a| a.evaluate().map_err(df))
                    .collect::<Result<Vec<_>>>()?;
                rows.push((start, end, key, values));
            }
        }
        // Free panes no open (or still late-accepting) window needs any more.
        let live: Vec<i64> = self
            .panes
            .keys()
            .chain(self.frozen.keys())
            .copied()
            .collect();
        for pane in live {
            if self
                .pane_last_window_end(pane)
                .saturating_add(self.lateness)
                <= watermark
            {
                self.panes.remove(&pane);
                self.frozen.remove(&pane);
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        if self.lateness == 0 {
            out.push(Message::Data(ChangeBatch::inserts(
                self.build_output(rows)?,
            )));
            return Ok(());
        }
        // With allowed lateness, a window fires again when late rows change
        // it: changed results are retracted and re-emitted.
        let mut changes = Vec::new();
        let mut kinds = Vec::new();
        for (start, end, key, values) in rows {
            let emitted = self.emitted.entry((end, start)).or_default();
            match emitted.insert(key.clone(), values.clone()) {
                None => {
                    changes.push((start, end, key, values));
                    kinds.push(RowKind::Insert as i8);
                }
                Some(old) if old == values => {}
                Some(old) => {
                    changes.push((start, end, key.clone(), old));
                    kinds.push(RowKind::UpdateBefore as i8);
                    changes.push((start, end, key, values));
                    kinds.push(RowKind::UpdateAfter as i8);
                }
            }
        }
        let lateness = self.lateness;
        self.emitted
            .retain(|(end, _), _| (end - 1).saturating_add(lateness) > watermark);
        if !changes.is_empty() {
            out.push(Message::Data(ChangeBatch {
                data: self.build_output(changes)?,
                kinds: Some(arrow::array::Int8Array::from(kinds)),
            }));
        }
        Ok(())
    }

    /// Turns a pane's accumulators into their states (accumulator `state()`
    /// may drain, so it is taken once), merged into any frozen before.
    fn freeze(&mut self, pane: i64) -> Result<()> {
        let Some(keys) = self.panes.remove(&pane) else {
            return Ok(());
        };
        let frozen = self.frozen.entry(pane).or_default();
        for (key, mut accumulators) in keys {
            if let Some(previous) = frozen.get(&key) {
                // Rows that arrived after the pane was frozen join its state.
                for (accumulator, state) in accumulators.iter_mut().zip(previous) {
                    merge_state(accumulator.as_mut(), state)?;
                }
            }
            let state = accumulators
                .iter_mut()
                .map(|a| a.state().map_err(df))
                .collect::<Result<Vec<_>>>()?;
            frozen.insert(key, state);
        }
        Ok(())
    }

    fn build_output(&self, rows: Vec<WindowRow>) -> Result<RecordBatch> {
        build_output(&self.spec, &self.converter, rows)
    }
}

/// One result: window start, window end, key bytes, aggregate values.
pub(crate) type WindowRow = (i64, i64, Vec<u8>, Vec<ScalarValue>);

/// A batch's inputs to a window aggregation, evaluated once.
pub(crate) struct EvaluatedInput {
    /// Event time per row (epoch ms).
    pub times: arrow::array::PrimitiveArray<arrow::datatypes::TimestampMillisecondType>,
    /// Keys, arguments and filters.
    pub inputs: AggregateInputs,
}

impl EvaluatedInput {
    pub(crate) fn new(
        spec: &WindowAggregate,
        converter: &RowConverter,
        batch: &ChangeBatch,
    ) -> Result<Self> {
        let times = if spec.processing_time {
            // Processing-time windows take the operator's clock, as Flink's do.
            let now = chrono::Utc::now().timestamp_millis();
            TimestampMillisecondArray::from_value(now, batch.num_rows())
        } else {
            let times = spec
                .time
                .evaluate(&batch.data)
                .and_then(|v| v.into_array(batch.num_rows()))
                .map_err(df)?;
            epoch_millis(times.as_ref())?
        };
        Ok(EvaluatedInput {
            times,
            inputs: AggregateInputs::evaluate(&spec.keys, &spec.aggregates, converter, batch)?,
        })
    }
}

/// Fails on updating input, which window aggregation cannot take yet.
pub(crate) fn require_inserts(batch: &ChangeBatch) -> Result<()> {
    if batch.kinds.is_some()
        && (0..batch.num_rows()).any(|row| batch.kind(row) != sluice_core::RowKind::Insert)
    {
        return Err(SluiceError::Unsupported(
            "window aggregation over an updating (changelog) input".into(),
        ));
    }
    Ok(())
}

/// Assembles result rows into the window aggregate's output schema.
pub(crate) fn build_output(
    spec: &WindowAggregate,
    converter: &RowConverter,
    mut rows: Vec<WindowRow>,
) -> Result<RecordBatch> {
    let schema = &spec.schema;
    let count = rows.len();
    let width = rows.first().map_or(0, |row| row.3.len());
    let mut results = take_results(rows.iter_mut().map(|row| &mut row.3), width);
    let keys = if spec.keys.is_empty() {
        Vec::new()
    } else {
        let parser = converter.parser();
        converter.convert_rows(rows.iter().map(|(_, _, key, _)| parser.parse(key)))?
    };
    let timestamps = |value: fn(&WindowRow) -> i64| -> ArrayRef {
        Arc::new(TimestampMillisecondArray::from_iter_values(
            rows.iter().map(value),
        ))
    };
    let mut columns = Vec::with_capacity(spec.outputs.len());
    for (index, output) in spec.outputs.iter().enumerate() {
        let target = schema.field(index).data_type();
        let array: ArrayRef = match output {
            WindowOutput::Key(i) => keys[*i].clone(),
            WindowOutput::WindowStart => timestamps(|r| r.0),
            WindowOutput::WindowEnd => timestamps(|r| r.1),
            WindowOutput::WindowTime => timestamps(|r| r.1 - 1),
            WindowOutput::Aggregate(i) => match results.get_mut(*i) {
                Some(values) => scalar_column(std::mem::take(values).into_iter(), target)?,
                None if count == 0 => scalar_column(std::iter::empty(), target)?,
                None => {
                    return Err(SluiceError::Runtime(format!(
                        "window rows hold {width} results, not aggregate {i}"
                    )))
                }
            },
        };
        columns.push(if array.data_type() == target {
            array
        } else {
            cast(&array, target)?
        });
    }
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(count)),
    )?)
}

impl Operator for WindowAggregateOperator {
    fn process(&mut self, batch: ChangeBatch, out: &mut Vec<Message>) -> Result<()> {
        self.aggregate(batch)?;
        if self.spec.processing_time {
            // Windows whose end the wall clock passed are complete.
            let now = chrono::Utc::now().timestamp_millis();
            if now - 1 > self.watermark {
                self.fire(now - 1, out)?;
                self.watermark = now - 1;
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<Message>) -> Result<()> {
        // Processing-time windows follow the clock; only the end of input fires them all.
        let fires = !self.spec.processing_time || watermark == i64::MAX;
        if fires && watermark > self.watermark {
            self.fire(watermark, out)?;
            self.watermark = watermark;
        }
        out.push(Message::Watermark(watermark));
        Ok(())
    }

    /// Header (watermark), one chunk per pane (complete panes do not change,
    /// so they are stored once), and one for the fired-window bookkeeping of
    /// allowed lateness.
    fn snapshot(&mut self) -> Result<Vec<Vec<u8>>> {
        let mut chunks = vec![header_chunk(&[self.watermark])?];
        let calls = self.spec.aggregates.clone();
        for (pane, keys) in self.panes.iter_mut() {
            let mut entries: Vec<_> = keys.iter_mut().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            let mut out = StateWriter::new();
            out.u64(PANE_LIVE);
            out.i64(*pane);
            out.u64(entries.len() as u64);
            for (key, accumulators) in entries {
                out.bytes(key);
                write_states(&mut out, &snapshot_accumulators(accumulators, &calls)?);
            }
            chunks.push(out.finish()?);
        }
        for (pane, keys) in &self.frozen {
            let mut entries: Vec<_> = keys.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            let mut out = StateWriter::new();
            out.u64(PANE_FROZEN);
            out.i64(*pane);
            out.u64(entries.len() as u64);
            for (key, states) in entries {
                out.bytes(key);
                write_states(&mut out, states);
            }
            chunks.push(out.finish()?);
        }
        if self.lateness > 0 {
            let mut out = StateWriter::new();
            out.u64(LATENESS);
            out.u64(self.refire.len() as u64);
            for (end, start) in &self.refire {
                out.i64(*end);
                out.i64(*start);
            }
            out.u64(self.emitted.len() as u64);
            for ((end, start), keys) in &self.emitted {
                out.i64(*end);
                out.i64(*start);
                let mut entries: Vec<_> = keys.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                out.u64(entries.len() as u64);
                for (key, values) in entries {
                    out.bytes(key);
                    out.scalars(values);
                }
            }
            chunks.push(out.finish()?);
        }
        Ok(chunks)
    }

    fn restore(&mut self, subtasks: &SubtaskChunks, owner: &KeyOwner) -> Result<()> {
        self.watermark = restore_subtasks(subtasks, |_, rest| {
            rest.iter()
                .try_for_each(|chunk| self.restore_chunk(chunk, owner))
        })?;
        Ok(())
    }
}

/// Chunk tags of a window aggregation's snapshot.
const PANE_LIVE: u64 = 0;
const PANE_FROZEN: u64 = 1;
const LATENESS: u64 = 2;

impl WindowAggregateOperator {
    fn restore_chunk(&mut self, chunk: &[u8], owner: &KeyOwner) -> Result<()> {
        let mut input = StateReader::new(chunk)?;
        let tag = input.u64()?;
        if tag == LATENESS {
            for _ in 0..input.usize()? {
                let end = input.i64()?;
                self.refire.insert((end, input.i64()?));
            }
            for _ in 0..input.usize()? {
                let end = input.i64()?;
                let start = input.i64()?;
                let count = input.usize()?;
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    let key = input.bytes()?.to_vec();
                    entries.push((key, input.scalars()?));
                }
                let keys: Vec<&[u8]> = entries.iter().map(|(k, _)| k.as_slice()).collect();
                let owned = owner.owns(&self.converter, &keys)?;
                let emitted = self.emitted.entry((end, start)).or_default();
                for ((key, values), owned) in entries.into_iter().zip(owned) {
                    if owned {
                        emitted.insert(key, values);
                    }
                }
            }
            return Ok(());
        }
        let pane = input.i64()?;
        let count = input.usize()?;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let key = input.bytes()?.to_vec();
            entries.push((key, read_states(&mut input)?));
        }
        let keys: Vec<&[u8]> = entries.iter().map(|(k, _)| k.as_slice()).collect();
        let owned = owner.owns(&self.converter, &keys)?;
        let entries = entries.into_iter().zip(owned).filter(|(_, o)| *o);
        match tag {
            PANE_LIVE => {
                let keys = self.panes.entry(pane).or_default();
                for ((key, states), _) in entries {
                    keys.insert(key, restore_accumulators(&self.spec.aggregates, &states)?);
                }
            }
            PANE_FROZEN => {
                let keys = self.frozen.entry(pane).or_default();
                for ((key, states), _) in entries {
                    keys.insert(key, states);
                }
            }
            _ => return Err(bad_state("window chunk tag")),
        }
        Ok(())
    }

    /// Adds a batch's rows to their panes (late rows are rejected).
    fn aggregate(&mut self, batch: ChangeBatch) -> Result<()> {
        require_inserts(&batch)?;
        let rows = batch.num_rows();
        let EvaluatedInput { times, inputs } =
            EvaluatedInput::new(&self.spec, &self.converter, &batch)?;

        // Group row indices by (pane, key); drop rows whose windows all closed.
        let pane_width = self.spec.kind.pane();
        let offset = self.spec.offset;
        let mut groups: FastHashMap<(i64, &[u8]), Vec<u32>> = FastHashMap::default();
        let mut late_by_pane: FastHashMap<i64, bool> = FastHashMap::default();
        let mut late: Vec<u32> = Vec::new();
        for row in 0..rows {
            if times.is_null(row) {
                late.push(row as u32);
                continue;
            }
            let pane = (times.value(row) - offset).div_euclid(pane_width) * pane_width + offset;
            let is_late = match late_by_pane.get(&pane) {
                Some(known) => *known,
                None => {
                    let known = self
                        .pane_last_window_end(pane)
                        .saturating_add(self.lateness)
                        <= self.watermark;
                    late_by_pane.insert(pane, known);
                    if !known && self.lateness > 0 {
                        // Windows of this pane that fired already fire again.
                        self.spec
                            .kind
                            .windows_of_pane(pane, offset, &mut self.windows);
                        for &(start, end) in &self.windows {
                            if end - 1 <= self.watermark {
                                self.refire.insert((end, start));
                            }
                        }
                    }
                    known
                }
            };
            if is_late {
                late.push(row as u32);
                continue;
            }
            groups
                .entry((pane, inputs.key(row)))
                .or_default()
                .push(row as u32);
        }
        self.late.reject(
            "window aggregate",
            &batch.data,
            &late,
            &times,
            self.watermark,
        )?;
        let groups: Vec<_> = groups.into_iter().collect();
        let rows_of_groups: Vec<&[u32]> = groups.iter().map(|(_, rows)| &rows[..]).collect();
        let arguments = inputs.grouped(&rows_of_groups)?;
        for (group, ((pane, key), _)) in groups.iter().enumerate() {
            let (pane, key) = (*pane, *key);
            let accumulators = match self.panes.entry(pane).or_default().entry_ref(key) {
                hashbrown::hash_map::EntryRef::Occupied(slot) => slot.into_mut(),
                hashbrown::hash_map::EntryRef::Vacant(vacant) => {
                    vacant.insert(new_accumulators(&self.spec.aggregates)?)
                }
            };
            arguments.update(accumulators, group)?;
        }
        Ok(())
    }
}
