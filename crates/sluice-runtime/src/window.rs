//! Event-time window aggregation (window TVF + `GROUP BY window_start,
//! window_end, ...`). Rows are pre-aggregated per key into panes (the greatest
//! common divisor of a window's size and slide), so a sliding window costs one
//! accumulator update per row, not one per window. A pane holds all its keys
//! in DataFusion groups accumulators ([`crate::groups`]): one vectorized
//! update per aggregate and batch. When the watermark passes a pane's end it
//! is frozen into intermediate states; when it passes a window's end, the
//! window's panes are merged and the result emitted. The complete panes of the
//! next window to close are merged into it ahead of time, so its close merges
//! only its last pane. Panes are freed as soon as no open window needs them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions, TimestampMillisecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::RowConverter;
use datafusion::common::ScalarValue;
use sluice_core::{ChangeBatch, Message, Result, RowKind, SluiceError};
use sluice_sql::plan::{WindowAggregate, WindowKind, WindowOutput};

use crate::aggregate::{key_converter, read_states, write_states, AggregateInputs};
use crate::groups::{GroupStates, Groups, KeyIndex};
use crate::late::LateRecords;
use crate::operators::{df, evaluate_array, Operator};
use crate::rows::{scalar_column, take_results};
use crate::state::{bad_state, header_chunk, restore_subtasks, KeyOwner, SubtaskChunks};
use crate::watermark::epoch_millis;
use crate::FastHashMap;
use sluice_state::{StateReader, StateWriter};

/// The window aggregation operator of one subtask.
pub struct WindowAggregateOperator {
    spec: Arc<WindowAggregate>,
    converter: RowConverter,
    /// Pane start → aggregation state, for panes that may still get rows.
    panes: BTreeMap<i64, Groups>,
    /// Pane start → intermediate states, for complete panes that later
    /// windows still need.
    frozen: BTreeMap<i64, GroupStates>,
    /// Windows yet to close, by (end, start), with the complete panes merged
    /// into them so far: closing a window then only merges its last pane.
    premerged: BTreeMap<(i64, i64), PremergedWindow>,
    /// A window closed since the next one was last pre-merged.
    premerge_due: bool,
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

/// A window's state merged from some of its complete panes.
struct PremergedWindow {
    groups: Groups,
    /// The panes merged in.
    panes: BTreeSet<i64>,
}

/// One window's results: its bounds, its keys, and per aggregate a column of
/// results (one per key).
struct WindowResult {
    start: i64,
    end: i64,
    keys: KeyIndex,
    values: Vec<ArrayRef>,
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
            premerged: BTreeMap::new(),
            premerge_due: false,
            watermark: i64::MIN,
            late,
            windows: Vec::new(),
            spec,
            refire: BTreeSet::new(),
            emitted: BTreeMap::new(),
        })
    }

    /// The starts of all panes, live or frozen.
    fn pane_starts(&self) -> BTreeSet<i64> {
        self.panes
            .keys()
            .chain(self.frozen.keys())
            .copied()
            .collect()
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
        let began = std::time::Instant::now();
        let mut closing: BTreeSet<(i64, i64)> = std::mem::take(&mut self.refire);
        let pane_starts = self.pane_starts();
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
        let cascaded = matches!(self.spec.kind, WindowKind::Cascaded { .. });
        let mut results = Vec::new();
        for (end, start) in closing {
            // A cascaded window is exactly the pane of its start (its rows carry
            // the window); other kinds span every pane inside the window.
            let in_window: Vec<i64> = if cascaded {
                pane_starts.get(&start).copied().into_iter().collect()
            } else {
                pane_starts.range(start..end).copied().collect()
            };
            if self.lateness == 0
                && in_window == [start]
                && (cascaded || start + pane_width == end)
                && !self.frozen.contains_key(&start)
                && self.pane_last_window_end(start) == end - 1
            {
                // One pane is the whole window, and no later window needs it.
                if let Some(groups) = self.panes.remove(&start) {
                    let (keys, values) = groups.evaluate()?;
                    results.push(WindowResult {
                        start,
                        end,
                        keys,
                        values,
                    });
                }
                continue;
            }
            for pane in &in_window {
                self.freeze(*pane)?;
            }
            let mut window = match self.premerged.remove(&(end, start)) {
                Some(window) => window,
                None => PremergedWindow {
                    groups: Groups::new(&self.spec.aggregates)?,
                    panes: BTreeSet::new(),
                },
            };
            for pane in in_window {
                if let Some(states) = self.frozen.get(&pane) {
                    if window.panes.insert(pane) {
                        window.groups.merge(states)?;
                    }
                }
            }
            let (keys, values) = window.groups.evaluate()?;
            results.push(WindowResult {
                start,
                end,
                keys,
                values,
            });
        }
        // Free panes no open (or still late-accepting) window needs any more.
        for pane in self.pane_starts() {
            if self
                .pane_last_window_end(pane)
                .saturating_add(self.lateness)
                <= watermark
            {
                self.panes.remove(&pane);
                self.frozen.remove(&pane);
            }
        }
        self.premerged.retain(|(end, _), _| end - 1 > watermark);
        self.premerge_due = true;
        results.retain(|result| result.keys.len() > 0);
        if let Some(last) = results.last() {
            tracing::debug!(
                windows = results.len(),
                keys = last.keys.len(),
                window_end = last.end,
                micros = began.elapsed().as_micros() as u64,
                "windows closed"
            );
        }
        if results.is_empty() {
            return Ok(());
        }
        if self.lateness == 0 {
            for result in results {
                out.push(Message::Data(ChangeBatch::inserts(
                    self.window_batch(result)?,
                )));
            }
            return Ok(());
        }
        // With allowed lateness, a window fires again when late rows change
        // it: changed results are retracted and re-emitted.
        let mut changes = Vec::new();
        let mut kinds = Vec::new();
        for result in results {
            let WindowResult {
                start,
                end,
                keys,
                values,
            } = result;
            let emitted = self.emitted.entry((end, start)).or_default();
            for (index, key) in keys.iter().enumerate() {
                let values = values
                    .iter()
                    .map(|column| ScalarValue::try_from_array(column, index).map_err(df))
                    .collect::<Result<Vec<_>>>()?;
                match emitted.insert(key.to_vec(), values.clone()) {
                    None => {
                        changes.push((start, end, key.to_vec(), values));
                        kinds.push(RowKind::Insert as i8);
                    }
                    Some(old) if old == values => {}
                    Some(old) => {
                        changes.push((start, end, key.to_vec(), old));
                        kinds.push(RowKind::UpdateBefore as i8);
                        changes.push((start, end, key.to_vec(), values));
                        kinds.push(RowKind::UpdateAfter as i8);
                    }
                }
            }
        }
        let lateness = self.lateness;
        self.emitted
            .retain(|(end, _), _| (end - 1).saturating_add(lateness) > watermark);
        if !changes.is_empty() {
            out.push(Message::Data(ChangeBatch {
                data: build_output(&self.spec, &self.converter, changes)?,
                kinds: Some(arrow::array::Int8Array::from(kinds)),
            }));
        }
        Ok(())
    }

    /// Turns a pane's live state into intermediate states, merged into any
    /// frozen before.
    fn freeze(&mut self, pane: i64) -> Result<()> {
        let Some(live) = self.panes.remove(&pane) else {
            return Ok(());
        };
        let states = live.into_states()?;
        let frozen = match self.frozen.remove(&pane) {
            None => states,
            Some(earlier) => {
                // Rows that arrived after the pane was frozen join its state;
                // windows that merged the earlier state merge it again.
                self.premerged
                    .retain(|&(end, start), _| !(start <= pane && pane < end));
                let mut groups = Groups::from_states(&self.spec.aggregates, earlier)?;
                groups.merge(&states)?;
                groups.into_states()?
            }
        };
        self.frozen.insert(pane, frozen);
        Ok(())
    }

    /// After a window closed: merges the complete panes of the next window to
    /// close into it, so that its close (whose latency counts) merges only
    /// its last pane. The work happens here, with the next batch, not at the
    /// close that made it due.
    fn premerge(&mut self) -> Result<()> {
        if !std::mem::take(&mut self.premerge_due) || self.frozen.is_empty() {
            return Ok(());
        }
        let mut next: Option<(i64, i64)> = None;
        for pane in self.pane_starts() {
            self.spec
                .kind
                .windows_of_pane(pane, self.spec.offset, &mut self.windows);
            for &(start, end) in &self.windows {
                if end - 1 > self.watermark && next.is_none_or(|(first, _)| end < first) {
                    next = Some((end, start));
                }
            }
        }
        let Some((end, start)) = next else {
            return Ok(());
        };
        let window = match self.premerged.entry((end, start)) {
            std::collections::btree_map::Entry::Occupied(window) => window.into_mut(),
            std::collections::btree_map::Entry::Vacant(slot) => slot.insert(PremergedWindow {
                groups: Groups::new(&self.spec.aggregates)?,
                panes: BTreeSet::new(),
            }),
        };
        for (pane, states) in self.frozen.range(start..end) {
            if window.panes.insert(*pane) {
                window.groups.merge(states)?;
            }
        }
        Ok(())
    }

    /// One window's results in the output schema.
    fn window_batch(&self, result: WindowResult) -> Result<RecordBatch> {
        let (start, end, values) = (result.start, result.end, result.values);
        let count = result.keys.len();
        let key_columns = key_columns(&self.spec, &self.converter, result.keys.iter())?;
        let timestamp = |value: i64| -> ArrayRef {
            Arc::new(TimestampMillisecondArray::from_value(value, count))
        };
        output_batch(&self.spec, count, |output, _| {
            Ok(match output {
                WindowOutput::Key(i) => key_columns[*i].clone(),
                WindowOutput::WindowStart => timestamp(start),
                WindowOutput::WindowEnd => timestamp(end),
                WindowOutput::WindowTime => timestamp(end - 1),
                WindowOutput::Aggregate(i) => values.get(*i).cloned().ok_or_else(|| {
                    SluiceError::Runtime(format!(
                        "window results hold {} aggregates, not aggregate {i}",
                        values.len()
                    ))
                })?,
            })
        })
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
            epoch_millis(evaluate_array(spec.time.as_ref(), &batch.data)?.as_ref())?
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
    let count = rows.len();
    let width = rows.first().map_or(0, |row| row.3.len());
    let mut results = take_results(rows.iter_mut().map(|row| &mut row.3), width);
    let keys = key_columns(spec, converter, rows.iter().map(|(_, _, key, _)| &key[..]))?;
    let timestamps = |value: fn(&WindowRow) -> i64| -> ArrayRef {
        Arc::new(TimestampMillisecondArray::from_iter_values(
            rows.iter().map(value),
        ))
    };
    output_batch(spec, count, |output, target| {
        Ok(match output {
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
        })
    })
}

/// The grouping key columns of result keys (none without grouping keys).
fn key_columns<'k>(
    spec: &WindowAggregate,
    converter: &RowConverter,
    keys: impl Iterator<Item = &'k [u8]>,
) -> Result<Vec<ArrayRef>> {
    if spec.keys.is_empty() {
        return Ok(Vec::new());
    }
    let parser = converter.parser();
    Ok(converter.convert_rows(keys.map(|key| parser.parse(key)))?)
}

/// A batch of `count` results in the output schema: `column` gives each
/// output's column (given the schema's type for it), cast here to that type
/// where it differs.
fn output_batch(
    spec: &WindowAggregate,
    count: usize,
    mut column: impl FnMut(&WindowOutput, &DataType) -> Result<ArrayRef>,
) -> Result<RecordBatch> {
    let mut columns = Vec::with_capacity(spec.outputs.len());
    for (index, output) in spec.outputs.iter().enumerate() {
        let target = spec.schema.field(index).data_type();
        let array = column(output, target)?;
        columns.push(if array.data_type() == target {
            array
        } else {
            cast(&array, target)?
        });
    }
    Ok(RecordBatch::try_new_with_options(
        spec.schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(count)),
    )?)
}

impl Operator for WindowAggregateOperator {
    fn process(&mut self, batch: ChangeBatch, out: &mut Vec<Message>) -> Result<()> {
        self.premerge()?;
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
    /// allowed lateness. Pre-merged windows are not stored: they are rebuilt
    /// from the panes.
    fn snapshot(&mut self) -> Result<Vec<Vec<u8>>> {
        let mut chunks = vec![header_chunk(&[self.watermark])?];
        for (pane, groups) in self.panes.iter_mut() {
            let states = groups.snapshot(&self.spec.aggregates)?;
            chunks.push(pane_chunk(PANE_LIVE, *pane, groups.keys(), states)?);
        }
        for (pane, frozen) in &self.frozen {
            chunks.push(pane_chunk(
                PANE_FROZEN,
                *pane,
                &frozen.keys,
                frozen.per_key()?,
            )?);
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
        self.premerged.clear();
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

/// A pane's snapshot chunk: its keys in byte order, each with its states.
fn pane_chunk(
    tag: u64,
    pane: i64,
    keys: &KeyIndex,
    states: Vec<Vec<Vec<ScalarValue>>>,
) -> Result<Vec<u8>> {
    let mut entries: Vec<_> = keys.iter().zip(states).collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut out = StateWriter::new();
    out.u64(tag);
    out.i64(pane);
    out.u64(entries.len() as u64);
    for (key, states) in entries {
        out.bytes(key);
        write_states(&mut out, &states);
    }
    out.finish()
}

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
        if tag != PANE_LIVE && tag != PANE_FROZEN {
            return Err(bad_state("window chunk tag"));
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
        let entries: Vec<_> = entries
            .into_iter()
            .zip(owned)
            .filter_map(|(entry, owned)| owned.then_some(entry))
            .collect();
        let states = GroupStates::from_per_key(entries)?;
        let calls = &self.spec.aggregates;
        // Chunks of several subtasks (after rescaling) may hold the same pane.
        if tag == PANE_LIVE {
            match self.panes.get_mut(&pane) {
                Some(groups) => groups.merge(&states)?,
                None => {
                    self.panes.insert(pane, Groups::from_states(calls, states)?);
                }
            }
        } else {
            let states = match self.frozen.remove(&pane) {
                Some(earlier) => {
                    let mut groups = Groups::from_states(calls, earlier)?;
                    groups.merge(&states)?;
                    groups.into_states()?
                }
                None => states,
            };
            self.frozen.insert(pane, states);
        }
        Ok(())
    }

    /// Adds a batch's rows to their panes (late rows are rejected).
    fn aggregate(&mut self, batch: ChangeBatch) -> Result<()> {
        require_inserts(&batch)?;
        let rows = batch.num_rows();
        let EvaluatedInput { times, inputs } =
            EvaluatedInput::new(&self.spec, &self.converter, &batch)?;

        // Rows by pane (a batch usually falls into one or two); rows whose
        // windows all closed are late.
        let pane_width = self.spec.kind.pane();
        let offset = self.spec.offset;
        let mut by_pane: Vec<(i64, bool, Vec<u32>)> = Vec::new();
        // Each pane's slot in `by_pane`; rows mostly come in time order, so
        // the last row's pane is checked first.
        let mut slots: FastHashMap<i64, usize> = FastHashMap::default();
        let mut last: Option<(i64, usize)> = None;
        let mut late: Vec<u32> = Vec::new();
        for row in 0..rows {
            if times.is_null(row) {
                late.push(row as u32);
                continue;
            }
            let pane = (times.value(row) - offset).div_euclid(pane_width) * pane_width + offset;
            let known = match last {
                Some((last_pane, slot)) if last_pane == pane => Some(slot),
                _ => slots.get(&pane).copied(),
            };
            let slot = match known {
                Some(slot) => slot,
                None => {
                    let is_late = self
                        .pane_last_window_end(pane)
                        .saturating_add(self.lateness)
                        <= self.watermark;
                    if !is_late && self.lateness > 0 {
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
                    by_pane.push((pane, is_late, Vec::new()));
                    slots.insert(pane, by_pane.len() - 1);
                    by_pane.len() - 1
                }
            };
            last = Some((pane, slot));
            let (_, is_late, pane_rows) = &mut by_pane[slot];
            if *is_late {
                late.push(row as u32);
            } else {
                pane_rows.push(row as u32);
            }
        }
        self.late.reject(
            "window aggregate",
            &batch.data,
            &late,
            &times,
            self.watermark,
        )?;
        let whole_batch = late.is_empty() && by_pane.len() == 1;
        for (pane, is_late, pane_rows) in by_pane {
            if is_late {
                continue;
            }
            let groups = match self.panes.entry(pane) {
                std::collections::btree_map::Entry::Occupied(groups) => groups.into_mut(),
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(Groups::new(&self.spec.aggregates)?)
                }
            };
            groups.update(&inputs, (!whole_batch).then_some(&pane_rows[..]))?;
        }
        Ok(())
    }
}
