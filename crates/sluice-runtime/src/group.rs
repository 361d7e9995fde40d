//! Non-windowed `GROUP BY`: an updating aggregation. Each key keeps its
//! accumulators (and the row it last emitted, where that is costly to
//! evaluate again); a batch that changes a key emits
//! `+I` for a new key, or `-U` (old row) and `+U` (new row) for a changed one,
//! as Flink's group aggregation does. Unchanged results emit nothing. Over an
//! updating input, `-U`/`-D` rows are taken back out of the accumulators, and
//! a key whose rows are all taken back emits `-D`.
//!
//! While more input is ready, the operator holds batches back and emits each
//! changed key once for all of them (see [`HoldPolicy`]): put together and
//! aggregated at once when batches have many keys, aggregated as they come
//! (only the emission waits) when they have few.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Int8Array, RecordBatch, RecordBatchOptions};
use arrow::row::RowConverter;
use datafusion::common::ScalarValue;
use sluice_core::{ChangeBatch, Message, Result, RowKind, SluiceError};
use sluice_sql::plan::GroupAggregate;

use crate::aggregate::{key_converter, AggregateInputs, RetractingAccumulator};
use crate::operators::Operator;
use crate::rows::{scalar_column, take_results};
use crate::state::{bad_state, KeyOwner, KeyedState, StateConfig, SubtaskChunks, ValueCodec};
use sluice_state::{StateReader, StateWriter};

struct GroupState {
    accumulators: Vec<RetractingAccumulator>,
    /// The row last emitted, kept only when the accumulators are costly to
    /// evaluate (see [`GroupState::keeps_emitted`]); otherwise it is the
    /// accumulators' result before an update, evaluated again. Not keeping
    /// it saves a value per aggregate per key (Nexmark q17: a third of the
    /// state).
    emitted: Option<Vec<ScalarValue>>,
    /// Input rows currently aggregated (additions minus retractions). A key
    /// with rows has emitted its result.
    rows: i64,
}

impl GroupState {
    /// Whether the last emitted row is kept: when an accumulator recomputes
    /// its result from all its values (MIN/MAX/DISTINCT over updates).
    fn keeps_emitted(&self) -> bool {
        self.accumulators
            .iter()
            .any(|accumulator| matches!(accumulator, RetractingAccumulator::Recomputed { .. }))
    }

    /// The accumulators' current result.
    fn evaluate(&mut self) -> Result<Vec<ScalarValue>> {
        self.accumulators
            .iter_mut()
            .map(RetractingAccumulator::evaluate)
            .collect()
    }

    /// The row this key last emitted (`None` for a new key).
    fn take_emitted(&mut self) -> Result<Option<Vec<ScalarValue>>> {
        if self.rows <= 0 {
            return Ok(None);
        }
        match self.emitted.take() {
            Some(values) => Ok(Some(values)),
            None => self.evaluate().map(Some),
        }
    }
}

/// The group aggregation of one subtask.
pub struct GroupAggregateOperator {
    spec: Arc<GroupAggregate>,
    converter: RowConverter,
    groups: KeyedState<GroupState>,
    /// Keys changed since the last emission, in order of first change, each
    /// with the row it emitted before (`None`: a new key).
    pending: indexmap::IndexMap<Vec<u8>, Option<Vec<ScalarValue>>, foldhash::fast::RandomState>,
    /// Input batches held back to be put together and aggregated at once
    /// (unless aggregated as they come, see [`HoldPolicy`]).
    held: Vec<ChangeBatch>,
    /// Input batches and rows since the last emission.
    held_batches: usize,
    held_rows: usize,
    /// Keys each of those batches changed, summed (see [`HoldPolicy::record`]).
    updates_alone: usize,
    hold: HoldPolicy,
}

/// Below this gain (key updates of batches aggregated one by one, per key
/// update of the same batches aggregated together) holding rows back does
/// not pay: bigger batches cost cache misses and copying.
const HOLD_GAIN: f64 = 1.5;

/// Aggregations one by one between two trials of holding, once it did not pay.
const PROBE_EVERY: u32 = 64;

/// Input rows per key update of a batch from which held batches are
/// aggregated as they come rather than put together (see
/// [`HoldPolicy::aggregate_as_they_come`]).
const ROWS_PER_UPDATE_TO_AGGREGATE_AS_THEY_COME: f64 = 256.0;

/// Whether an updating `GROUP BY` holds rows back. Holding pays when keys
/// recur across batches: gathered, each is updated and emitted once instead
/// of once per batch (Nexmark q16: 5.5 times fewer updates). It does not
/// when each batch already repeats its keys, or when keys never recur. So
/// every aggregation of gathered batches measures its gain; below
/// [`HOLD_GAIN`] the operator aggregates batch by batch, and tries holding
/// again every [`PROBE_EVERY`] aggregations.
#[derive(Debug)]
struct HoldPolicy {
    /// The most rows held back (0: never hold).
    max_rows: usize,
    /// Moving average of the gain of aggregations of gathered batches.
    gain: Option<f64>,
    /// Aggregations one by one since holding was last tried.
    since_trial: u32,
    /// The next aggregation gathers batches to measure the gain again.
    trial: bool,
    /// Moving average of input rows per key update of a batch alone.
    rows_per_update: Option<f64>,
}

impl HoldPolicy {
    fn new(max_rows: usize) -> Self {
        HoldPolicy {
            max_rows,
            gain: None,
            since_trial: 0,
            trial: false,
            rows_per_update: None,
        }
    }

    /// Whether batches are better aggregated as they come than put together
    /// first: when a key update covers many rows (a few keys per batch),
    /// updating per batch costs next to nothing, and putting the batches
    /// together (a copy of all held rows, and argument arrays over all of
    /// them) costs memory.
    fn aggregate_as_they_come(&self) -> bool {
        self.rows_per_update
            .is_some_and(|rows| rows >= ROWS_PER_UPDATE_TO_AGGREGATE_AS_THEY_COME)
    }

    /// Whether to go on holding with `held_rows` rows held.
    fn keep_holding(&self, held_rows: usize) -> bool {
        held_rows < self.max_rows && (self.trial || self.gain.is_none_or(|g| g >= HOLD_GAIN))
    }

    /// Records an aggregation of `batches` input batches of `rows` rows
    /// whose keys, counted once per batch, were `updates_alone`, and once in
    /// all, `updates`.
    fn record(&mut self, batches: usize, rows: usize, updates_alone: usize, updates: usize) {
        if updates_alone > 0 {
            let per_update = rows as f64 / updates_alone as f64;
            self.rows_per_update = Some(
                self.rows_per_update
                    .map_or(per_update, |r| 0.75 * r + 0.25 * per_update),
            );
        }
        if batches > 1 && updates > 0 {
            let gain = updates_alone as f64 / updates as f64;
            self.gain = Some(self.gain.map_or(gain, |g| 0.75 * g + 0.25 * gain));
            self.trial = false;
            self.since_trial = 0;
        } else if !self.keep_holding(0) {
            self.since_trial += 1;
            self.trial = self.since_trial >= PROBE_EVERY && self.max_rows > 0;
        }
    }
}

impl GroupAggregateOperator {
    /// An operator for `spec`; keys idle for the state TTL are forgotten (a
    /// later row of such a key starts from scratch, as in Flink). While more
    /// input is ready it holds up to `max_held_rows` rows back, so that a key
    /// is updated and emitted once for all of them.
    pub fn new(
        spec: Arc<GroupAggregate>,
        state: &StateConfig,
        max_held_rows: usize,
    ) -> Result<Self> {
        Ok(GroupAggregateOperator {
            converter: key_converter(&spec.keys, &spec.input_schema)?,
            groups: KeyedState::new(state, GroupCodec { spec: spec.clone() }),
            spec,
            pending: Default::default(),
            held: Vec::new(),
            held_batches: 0,
            held_rows: 0,
            updates_alone: 0,
            hold: HoldPolicy::new(max_held_rows),
        })
    }

    fn output(
        &self,
        mut changes: Vec<(RowKind, Vec<u8>, Vec<ScalarValue>)>,
    ) -> Result<ChangeBatch> {
        let schema = &self.spec.schema;
        let count = changes.len();
        let results = take_results(
            changes.iter_mut().map(|(_, _, values)| values),
            self.spec.aggregates.len(),
        );
        let mut columns: Vec<ArrayRef> = if self.spec.keys.is_empty() {
            Vec::new()
        } else {
            let parser = self.converter.parser();
            self.converter
                .convert_rows(changes.iter().map(|(_, key, _)| parser.parse(key)))?
        };
        for values in results {
            columns.push(scalar_column(
                values.into_iter(),
                schema.field(columns.len()).data_type(),
            )?);
        }
        let data = RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(count)),
        )?;
        let kinds = Int8Array::from_iter_values(changes.iter().map(|(kind, _, _)| *kind as i8));
        Ok(ChangeBatch {
            data,
            kinds: Some(kinds),
        })
    }
}

impl Operator for GroupAggregateOperator {
    fn process(&mut self, batch: ChangeBatch, out: &mut Vec<Message>) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.held_batches == 0 {
            // Expired keys are gone before this batch can see them.
            self.groups.expire_idle(Instant::now())?;
        }
        self.held_batches += 1;
        self.held_rows += batch.num_rows();
        if self.hold.aggregate_as_they_come() {
            self.aggregate(&batch, &[batch.num_rows()])?;
        } else {
            self.held.push(batch);
        }
        if !self.hold.keep_holding(self.held_rows) {
            self.flush(out)?;
        }
        Ok(())
    }

    fn holds_rows(&self) -> bool {
        self.held_batches > 0
    }

    fn flush(&mut self, out: &mut Vec<Message>) -> Result<()> {
        if self.held_batches == 0 {
            return Ok(());
        }
        self.aggregate_held()?;
        self.hold.record(
            self.held_batches,
            self.held_rows,
            self.updates_alone,
            self.pending.len(),
        );
        (self.held_batches, self.held_rows, self.updates_alone) = (0, 0, 0);
        let mut changes = Vec::new();
        for (key, previous) in self.pending.drain(..) {
            let Some(state) = self.groups.get_mut(&key)? else {
                continue;
            };
            if state.rows <= 0 {
                if let Some(previous) = previous {
                    changes.push((RowKind::Delete, key.clone(), previous));
                }
                self.groups.remove(&key)?;
                continue;
            }
            let values = state.evaluate()?;
            if state.keeps_emitted() {
                state.emitted = Some(values.clone());
            }
            match previous {
                Some(previous) if previous == values => {}
                None => changes.push((RowKind::Insert, key, values)),
                Some(previous) => {
                    changes.push((RowKind::UpdateBefore, key.clone(), previous));
                    changes.push((RowKind::UpdateAfter, key, values));
                }
            }
        }
        self.groups.enforce_budget()?;
        if !changes.is_empty() {
            out.push(Message::Data(self.output(changes)?));
        }
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Vec<Vec<u8>>> {
        if self.holds_rows() {
            return Err(SluiceError::State(
                "a GROUP BY was asked for a snapshot while holding rows back".into(),
            ));
        }
        self.groups.snapshot()
    }

    fn restore(&mut self, subtasks: &SubtaskChunks, owner: &KeyOwner) -> Result<()> {
        for chunks in subtasks {
            self.groups
                .restore(chunks, owner, &self.converter, Instant::now())?;
        }
        Ok(())
    }
}

impl GroupAggregateOperator {
    /// Adds a batch's rows to (and takes its retractions out of) the
    /// accumulators of their keys; `flush` emits the results, once per
    /// changed key however many batches changed it.
    /// Puts the held batches together and aggregates them.
    fn aggregate_held(&mut self) -> Result<()> {
        let held = std::mem::take(&mut self.held);
        let mut batch_ends = Vec::with_capacity(held.len());
        let mut end = 0;
        for batch in &held {
            end += batch.num_rows();
            batch_ends.push(end);
        }
        // The held batches are dropped once put together, before the
        // aggregation's own arrays take memory.
        let batch = match held.len() {
            0 => return Ok(()),
            1 => held
                .into_iter()
                .next()
                .ok_or_else(|| SluiceError::Runtime("a GROUP BY lost its held batch".into()))?,
            _ => {
                let batch = ChangeBatch::concat(&held)?;
                drop(held);
                batch
            }
        };
        self.aggregate(&batch, &batch_ends)
    }

    /// Aggregates `batch`, input batches ending at rows `batch_ends` put
    /// together (see [`GroupAggregateOperator::aggregate_held`]).
    fn aggregate(&mut self, batch: &ChangeBatch, batch_ends: &[usize]) -> Result<()> {
        let now = Instant::now();
        let inputs = AggregateInputs::evaluate(
            &self.spec.keys,
            &self.spec.aggregates,
            &self.converter,
            batch,
        )?;

        // Added and retracted rows per key, keys in order of first appearance;
        // and the key updates the input batches would have made one by one.
        let mut order: Vec<&[u8]> = Vec::new();
        let mut indices: crate::FastHashMap<&[u8], KeyRows> = Default::default();
        let mut start = 0;
        for (number, &end) in batch_ends.iter().enumerate() {
            for row in start..end.min(batch.num_rows()) {
                let key = inputs.key(row);
                let retract = usize::from(!batch.kind(row).is_addition());
                let entry = indices.entry(key).or_insert_with(|| {
                    order.push(key);
                    KeyRows::default()
                });
                if entry.last_batch != Some(number) {
                    entry.last_batch = Some(number);
                    self.updates_alone += 1;
                }
                entry.rows[retract].push(row as u32);
            }
            start = end;
        }

        let lists: Vec<&[Vec<u32>; 2]> = order.iter().map(|key| &indices[key].rows).collect();
        let regroup = |side: usize| {
            let groups: Vec<&[u32]> = lists.iter().map(|lists| &lists[side][..]).collect();
            inputs.grouped(&groups)
        };
        let added = regroup(0)?;
        let retracted = if batch.kinds.is_some() {
            Some(regroup(1)?)
        } else {
            None
        };

        for (group, (key, lists)) in order.into_iter().zip(lists).enumerate() {
            let [added_rows, retracted_rows] = lists;
            let pending = self.pending.contains_key(key);
            if added_rows.is_empty() && !pending && !self.groups.load(key)? {
                // Retractions of a key this operator does not hold (expired).
                continue;
            }
            let spec = &self.spec;
            let state = self.groups.try_write(key, now, || new_group_state(spec))?;
            if !pending {
                // A key's state stays until `flush`, even with no rows left.
                let previous = state.take_emitted()?;
                self.pending.insert(key.to_vec(), previous);
            }
            added.apply(&mut state.accumulators, group, false)?;
            if let Some(retracted) = &retracted {
                retracted.apply(&mut state.accumulators, group, true)?;
            }
            state.rows += added_rows.len() as i64 - retracted_rows.len() as i64;
        }
        Ok(())
    }
}

/// A key's rows in a batch: added and retracted, and the last input batch
/// of the held ones that had the key.
#[derive(Default)]
struct KeyRows {
    rows: [Vec<u32>; 2],
    last_batch: Option<usize>,
}

/// Encodes a key's accumulators, last emitted row and row count.
struct GroupCodec {
    spec: Arc<GroupAggregate>,
}

impl ValueCodec<GroupState> for GroupCodec {
    fn encode(&self, state: &mut GroupState, out: &mut StateWriter) -> Result<()> {
        encode_group(&self.spec, state, out, true)
    }

    fn encode_dropped(&self, mut state: GroupState, out: &mut StateWriter) -> Result<()> {
        encode_group(&self.spec, &mut state, out, false)
    }

    fn decode(&self, input: &mut StateReader) -> Result<GroupState> {
        decode_group(&self.spec, input)
    }

    fn heap_size(&self, state: &GroupState) -> usize {
        state
            .accumulators
            .iter()
            .map(RetractingAccumulator::size)
            .sum::<usize>()
            + state
                .emitted
                .iter()
                .flatten()
                .map(ScalarValue::size)
                .sum::<usize>()
    }
}

/// Writes a key's state; unless `keep_usable`, the state is about to be
/// dropped: its accumulators may be drained, and an emitted row it would
/// not keep (evaluated again when read back) is not written.
fn encode_group(
    spec: &GroupAggregate,
    state: &mut GroupState,
    out: &mut StateWriter,
    keep_usable: bool,
) -> Result<()> {
    // Checkpoints write the emitted row whether or not it is kept.
    let emitted = match state.emitted.clone() {
        Some(values) => Some(values),
        None if state.rows > 0 && (keep_usable || state.keeps_emitted()) => Some(state.evaluate()?),
        None => None,
    };
    let mut fresh = match keep_usable {
        true => Some(new_group_state(spec)?.accumulators.into_iter()),
        false => None,
    };
    out.u64(state.accumulators.len() as u64);
    for accumulator in &mut state.accumulators {
        accumulator.snapshot(fresh.as_mut().and_then(Iterator::next), out)?;
    }
    match &emitted {
        None => out.bool(false),
        Some(values) => {
            out.bool(true);
            out.scalars(values);
        }
    }
    out.i64(state.rows);
    Ok(())
}

fn decode_group(spec: &GroupAggregate, input: &mut StateReader) -> Result<GroupState> {
    let mut state = new_group_state(spec)?;
    if input.usize()? != state.accumulators.len() {
        return Err(bad_state("group accumulator count"));
    }
    for accumulator in &mut state.accumulators {
        accumulator.restore(input)?;
    }
    let emitted = if input.bool()? {
        Some(input.scalars()?)
    } else {
        None
    };
    state.emitted = emitted.filter(|_| state.keeps_emitted());
    state.rows = input.i64()?;
    Ok(state)
}

fn new_group_state(spec: &GroupAggregate) -> Result<GroupState> {
    Ok(GroupState {
        accumulators: if spec.updating_input {
            RetractingAccumulator::for_calls(&spec.aggregates)?
        } else {
            RetractingAccumulator::append_only(&spec.aggregates)?
        },
        emitted: None,
        rows: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holding_goes_on_while_gathering_pays_and_is_tried_again_after_it_did_not() {
        let mut hold = HoldPolicy::new(1000);
        // Unmeasured: hold up to the limit.
        assert!(hold.keep_holding(999));
        assert!(!hold.keep_holding(1000));
        // Gathered batches updated 5 times fewer keys: go on holding.
        hold.record(4, 4000, 500, 100);
        assert!(hold.keep_holding(10));
        // A batch alone (the input had nothing more ready) says nothing.
        hold.record(1, 1000, 50, 50);
        assert!(hold.keep_holding(10));
        // Gathering stops paying: aggregate batch by batch...
        for _ in 0..10 {
            hold.record(4, 4000, 110, 100);
        }
        assert!(!hold.keep_holding(10));
        for _ in 0..PROBE_EVERY - 1 {
            hold.record(1, 1000, 10, 10);
            assert!(!hold.keep_holding(10));
        }
        // ...and try holding again now and then.
        hold.record(1, 1000, 10, 10);
        assert!(hold.keep_holding(10));
        hold.record(4, 4000, 110, 100);
        assert!(!hold.keep_holding(10));
    }

    #[test]
    fn batches_with_few_keys_are_aggregated_as_they_come() {
        let mut hold = HoldPolicy::new(100_000);
        // Unmeasured: held batches are put together.
        assert!(!hold.aggregate_as_they_come());
        // One key per batch of 8192 rows.
        hold.record(4, 32_768, 4, 1);
        assert!(hold.aggregate_as_they_come());
        // About eight rows per key update.
        for _ in 0..20 {
            hold.record(4, 32_768, 4_000, 1_000);
        }
        assert!(!hold.aggregate_as_they_come());
    }

    #[test]
    fn no_held_rows_means_no_holding() {
        let mut hold = HoldPolicy::new(0);
        assert!(!hold.keep_holding(0));
        for _ in 0..2 * PROBE_EVERY {
            hold.record(1, 1000, 10, 10);
            assert!(!hold.keep_holding(0));
        }
    }
}
