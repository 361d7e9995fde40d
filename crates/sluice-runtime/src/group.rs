//! Non-windowed `GROUP BY`: an updating aggregation. Each key keeps its
//! accumulators and the row it last emitted; a batch that changes a key emits
//! `+I` for a new key, or `-U` (old row) and `+U` (new row) for a changed one,
//! as Flink's group aggregation does. Unchanged results emit nothing. Over an
//! updating input, `-U`/`-D` rows are taken back out of the accumulators, and
//! a key whose rows are all taken back emits `-D`.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Int8Array, RecordBatch, RecordBatchOptions};
use arrow::row::RowConverter;
use datafusion::common::ScalarValue;
use sluice_core::{ChangeBatch, Message, Result, RowKind};
use sluice_sql::plan::GroupAggregate;

use crate::aggregate::{key_converter, AggregateInputs, RetractingAccumulator};
use crate::operators::Operator;
use crate::rows::{scalar_column, take_results};
use crate::state::{bad_state, KeyOwner, KeyedState, StateConfig, SubtaskChunks, ValueCodec};
use sluice_state::{StateReader, StateWriter};

struct GroupState {
    accumulators: Vec<RetractingAccumulator>,
    emitted: Option<Vec<ScalarValue>>,
    /// Input rows currently aggregated (additions minus retractions).
    rows: i64,
}

/// The group aggregation of one subtask.
pub struct GroupAggregateOperator {
    spec: Arc<GroupAggregate>,
    converter: RowConverter,
    groups: KeyedState<GroupState>,
}

impl GroupAggregateOperator {
    /// An operator for `spec`; keys idle for the state TTL are forgotten (a
    /// later row of such a key starts from scratch, as in Flink).
    pub fn new(spec: Arc<GroupAggregate>, state: &StateConfig) -> Result<Self> {
        Ok(GroupAggregateOperator {
            converter: key_converter(&spec.keys, &spec.input_schema)?,
            groups: KeyedState::new(state, GroupCodec { spec: spec.clone() }),
            spec,
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
        // Expired keys are gone before this batch can see them.
        let now = Instant::now();
        self.groups.expire_idle(now)?;
        let rows = batch.num_rows();
        let inputs = AggregateInputs::evaluate(
            &self.spec.keys,
            &self.spec.aggregates,
            &self.converter,
            &batch,
        )?;

        // Added and retracted rows per key, keys in order of first appearance.
        let mut order: Vec<&[u8]> = Vec::new();
        let mut indices: crate::FastHashMap<&[u8], [Vec<u32>; 2]> = Default::default();
        for row in 0..rows {
            let key = inputs.key(row);
            let retract = usize::from(!batch.kind(row).is_addition());
            indices.entry(key).or_insert_with(|| {
                order.push(key);
                [Vec::new(), Vec::new()]
            })[retract]
                .push(row as u32);
        }

        let lists: Vec<&[Vec<u32>; 2]> = order.iter().map(|key| &indices[key]).collect();
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

        let mut changes = Vec::new();
        for (group, (key, lists)) in order.into_iter().zip(lists).enumerate() {
            let [added_rows, retracted_rows] = lists;
            if added_rows.is_empty() && !self.groups.load(key)? {
                // Retractions of a key this operator does not hold (expired).
                continue;
            }
            let spec = &self.spec;
            let state = self.groups.try_write(key, now, || new_group_state(spec))?;
            added.apply(&mut state.accumulators, group, false)?;
            if let Some(retracted) = &retracted {
                retracted.apply(&mut state.accumulators, group, true)?;
            }
            state.rows += added_rows.len() as i64 - retracted_rows.len() as i64;
            if state.rows <= 0 {
                if let Some(previous) = state.emitted.take() {
                    changes.push((RowKind::Delete, key.to_vec(), previous));
                }
                self.groups.remove(key)?;
                continue;
            }
            let values = state
                .accumulators
                .iter_mut()
                .map(RetractingAccumulator::evaluate)
                .collect::<Result<Vec<_>>>()?;
            if state.emitted.as_ref() == Some(&values) {
                continue;
            }
            match state.emitted.replace(values.clone()) {
                None => changes.push((RowKind::Insert, key.to_vec(), values)),
                Some(previous) => {
                    changes.push((RowKind::UpdateBefore, key.to_vec(), previous));
                    changes.push((RowKind::UpdateAfter, key.to_vec(), values));
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

/// Encodes a key's accumulators, last emitted row and row count.
struct GroupCodec {
    spec: Arc<GroupAggregate>,
}

impl ValueCodec<GroupState> for GroupCodec {
    fn encode(&self, state: &mut GroupState, out: &mut StateWriter) -> Result<()> {
        encode_group(&self.spec, state, out)
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

fn encode_group(
    spec: &GroupAggregate,
    state: &mut GroupState,
    out: &mut StateWriter,
) -> Result<()> {
    let fresh = new_group_state(spec)?.accumulators;
    out.u64(state.accumulators.len() as u64);
    for (accumulator, fresh) in state.accumulators.iter_mut().zip(fresh) {
        accumulator.snapshot(fresh, out)?;
    }
    match &state.emitted {
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
    state.emitted = if input.bool()? {
        Some(input.scalars()?)
    } else {
        None
    };
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
