//! Pieces shared by the aggregating operators (window, session, group): key
//! encoding, accumulator creation, evaluating a batch's aggregate inputs, and
//! feeding rows to accumulators.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use sluice_core::{ChangeBatch, Result};
use sluice_sql::plan::AggregateCall;

use crate::operators::{df, evaluate_array};

/// A row encoder for grouping keys of `schema`'s rows.
pub(crate) fn key_converter(
    keys: &[Arc<dyn PhysicalExpr>],
    schema: &SchemaRef,
) -> Result<RowConverter> {
    let fields = keys
        .iter()
        .map(|key| key.data_type(schema).map(SortField::new).map_err(df))
        .collect::<Result<Vec<_>>>()?;
    Ok(RowConverter::new(fields)?)
}

/// Fresh accumulators, one per aggregate call.
pub(crate) fn new_accumulators(calls: &[AggregateCall]) -> Result<Vec<Box<dyn Accumulator>>> {
    calls
        .iter()
        .map(|call| call.function.create_accumulator().map_err(df))
        .collect()
}

/// Merges an accumulator state (from `Accumulator::state`) into `into`.
pub(crate) fn merge_state(into: &mut dyn Accumulator, state: &[ScalarValue]) -> Result<()> {
    let arrays = state
        .iter()
        .map(|value| value.to_array_of_size(1))
        .collect::<Result<Vec<_>, _>>()
        .map_err(df)?;
    into.merge_batch(&arrays).map_err(df)
}

/// The states of live accumulators for a checkpoint. `state()` may drain an
/// accumulator, so the accumulators are rebuilt from the states taken.
pub(crate) fn snapshot_accumulators(
    accumulators: &mut Vec<Box<dyn Accumulator>>,
    calls: &[AggregateCall],
) -> Result<Vec<Vec<ScalarValue>>> {
    let states = accumulators
        .iter_mut()
        .map(|a| a.state().map_err(df))
        .collect::<Result<Vec<_>>>()?;
    *accumulators = restore_accumulators(calls, &states)?;
    Ok(states)
}

/// Accumulators holding the given states.
pub(crate) fn restore_accumulators(
    calls: &[AggregateCall],
    states: &[Vec<ScalarValue>],
) -> Result<Vec<Box<dyn Accumulator>>> {
    let mut accumulators = new_accumulators(calls)?;
    if states.len() != accumulators.len() {
        return Err(crate::state::bad_state("accumulator count"));
    }
    for (accumulator, state) in accumulators.iter_mut().zip(states) {
        merge_state(accumulator.as_mut(), state)?;
    }
    Ok(accumulators)
}

/// Writes accumulator states (one list of values per accumulator).
pub(crate) fn write_states(out: &mut sluice_state::StateWriter, states: &[Vec<ScalarValue>]) {
    out.u64(states.len() as u64);
    for state in states {
        out.scalars(state);
    }
}

/// Reads states written by [`write_states`].
pub(crate) fn read_states(input: &mut sluice_state::StateReader) -> Result<Vec<Vec<ScalarValue>>> {
    let count = input.usize()?;
    (0..count).map(|_| input.scalars()).collect()
}

/// A batch's grouping keys and aggregate arguments, evaluated once.
pub(crate) struct AggregateInputs {
    /// The number of rows.
    rows: usize,
    /// Grouping keys per row as row bytes (`None` without keys).
    key_rows: Option<Rows>,
    /// Argument arrays per aggregate call.
    arguments: Vec<Vec<ArrayRef>>,
    /// `FILTER (WHERE ...)` masks per aggregate call.
    filters: Vec<Option<BooleanArray>>,
}

impl AggregateInputs {
    /// Evaluates `keys` and the calls' arguments and filters over `batch`.
    pub(crate) fn evaluate(
        keys: &[Arc<dyn PhysicalExpr>],
        calls: &[AggregateCall],
        converter: &RowConverter,
        batch: &ChangeBatch,
    ) -> Result<Self> {
        let rows = batch.num_rows();
        let evaluate = |expr: &Arc<dyn PhysicalExpr>| evaluate_array(expr.as_ref(), &batch.data);
        let key_arrays = keys.iter().map(evaluate).collect::<Result<Vec<_>>>()?;
        // Without grouping keys every row has the same (empty) key.
        let key_rows = if key_arrays.is_empty() {
            None
        } else {
            Some(converter.convert_columns(&key_arrays)?)
        };
        let mut arguments = Vec::with_capacity(calls.len());
        let mut filters = Vec::with_capacity(calls.len());
        for call in calls {
            arguments.push(
                call.function
                    .expressions()
                    .iter()
                    .map(evaluate)
                    .collect::<Result<Vec<_>>>()?,
            );
            filters.push(match &call.filter {
                Some(filter) => Some(evaluate(filter)?.as_boolean().clone()),
                None => None,
            });
        }
        Ok(AggregateInputs {
            rows,
            key_rows,
            arguments,
            filters,
        })
    }

    /// The number of rows.
    pub(crate) fn num_rows(&self) -> usize {
        self.rows
    }

    /// Call `call`'s argument arrays.
    pub(crate) fn arguments(&self, call: usize) -> &[ArrayRef] {
        &self.arguments[call]
    }

    /// Call `call`'s `FILTER (WHERE ...)` mask, if it has one.
    pub(crate) fn filter(&self, call: usize) -> Option<&BooleanArray> {
        self.filters[call].as_ref()
    }

    /// Whether there are grouping keys (without, every row's key is empty).
    pub(crate) fn has_keys(&self) -> bool {
        self.key_rows.is_some()
    }

    /// The key bytes of `row`.
    pub(crate) fn key(&self, row: usize) -> &[u8] {
        match &self.key_rows {
            Some(rows) => rows.row(row).data(),
            None => &[],
        }
    }

    /// Regroups the calls' arguments so that each of `groups` (row indices
    /// into the batch) has its rows, after each call's filter, next to each
    /// other: one `take` per argument array for the whole batch, then a
    /// zero-copy slice per group, instead of a `take` per group and call.
    pub(crate) fn grouped(&self, groups: &[&[u32]]) -> Result<GroupedArguments> {
        let total: usize = groups.iter().map(|group| group.len()).sum();
        let mut calls = Vec::with_capacity(self.arguments.len());
        for (arguments, filter) in self.arguments.iter().zip(&self.filters) {
            let mut selected: Vec<u32> = Vec::with_capacity(total);
            let mut starts = Vec::with_capacity(groups.len() + 1);
            starts.push(0u32);
            for group in groups {
                match filter {
                    None => selected.extend_from_slice(group),
                    Some(mask) => selected.extend(
                        group
                            .iter()
                            .copied()
                            .filter(|&i| mask.is_valid(i as usize) && mask.value(i as usize)),
                    ),
                }
                starts.push(selected.len() as u32);
            }
            let rows = arguments.first().map_or(0, |array| array.len());
            let in_batch_order = selected.len() == rows
                && selected.iter().enumerate().all(|(i, &r)| i == r as usize);
            let arrays = if in_batch_order {
                arguments.clone()
            } else if selected.is_empty() {
                Vec::new()
            } else {
                let indices = UInt32Array::from(selected);
                arguments
                    .iter()
                    .map(|array| take(array.as_ref(), &indices, None))
                    .collect::<Result<Vec<_>, _>>()?
            };
            calls.push(GroupedCall { arrays, starts });
        }
        Ok(GroupedArguments { calls })
    }
}

/// One call's arguments regrouped by [`AggregateInputs::grouped`].
struct GroupedCall {
    /// The argument arrays, holding the rows of group after group.
    arrays: Vec<ArrayRef>,
    /// Group `g`'s rows are `starts[g]..starts[g + 1]` of `arrays`.
    starts: Vec<u32>,
}

/// A batch's aggregate arguments, regrouped so that each group's rows are
/// contiguous (see [`AggregateInputs::grouped`]).
pub(crate) struct GroupedArguments {
    calls: Vec<GroupedCall>,
}

impl GroupedArguments {
    /// Call `call`'s arguments for group `group`; `None` when its filter
    /// lets no row of the group through.
    fn arguments(&self, call: usize, group: usize) -> Option<Vec<ArrayRef>> {
        let grouped = &self.calls[call];
        let start = grouped.starts[group] as usize;
        let end = grouped.starts[group + 1] as usize;
        (end > start).then(|| {
            grouped
                .arrays
                .iter()
                .map(|array| array.slice(start, end - start))
                .collect()
        })
    }

    /// Feeds group `group`'s rows to `accumulators`.
    pub(crate) fn update(
        &self,
        accumulators: &mut [Box<dyn Accumulator>],
        group: usize,
    ) -> Result<()> {
        for (call, accumulator) in accumulators.iter_mut().enumerate() {
            if let Some(values) = self.arguments(call, group) {
                accumulator.update_batch(&values).map_err(df)?;
            }
        }
        Ok(())
    }

    /// Adds (`retract == false`) or takes back group `group`'s rows.
    pub(crate) fn apply(
        &self,
        accumulators: &mut [RetractingAccumulator],
        group: usize,
        retract: bool,
    ) -> Result<()> {
        for (call, accumulator) in accumulators.iter_mut().enumerate() {
            if let Some(values) = self.arguments(call, group) {
                accumulator.apply(&values, retract)?;
            }
        }
        Ok(())
    }
}

/// Aggregates whose DataFusion accumulators take rows back exactly, whatever
/// the order (MIN/MAX's sliding accumulators assume first-in first-out).
const NATIVELY_RETRACTING: &[&str] = &[
    "count",
    "sum",
    "avg",
    "mean",
    "var",
    "var_samp",
    "var_pop",
    "stddev",
    "stddev_samp",
    "stddev_pop",
];

/// An aggregate over an updating input: rows are added and taken back.
pub(crate) enum RetractingAccumulator {
    /// DataFusion's accumulator retracts by itself (COUNT, SUM, AVG, ...).
    Native(Box<dyn Accumulator>),
    /// Keeps the multiset of argument values and recomputes the result from
    /// them (MIN, MAX, DISTINCT aggregates, ...). Boxed, so that a key's
    /// list of accumulators takes 16 bytes per call, whichever the kind.
    Recomputed {
        call: Arc<datafusion::physical_expr::aggregate::AggregateFunctionExpr>,
        // The box keeps the enum (and so every key's accumulator list) small.
        #[allow(clippy::box_collection)]
        values: Box<std::collections::HashMap<Vec<ScalarValue>, usize>>,
    },
}

impl RetractingAccumulator {
    /// One accumulator per call for an append-only input (never retracted).
    pub(crate) fn append_only(calls: &[AggregateCall]) -> Result<Vec<Self>> {
        Ok(new_accumulators(calls)?
            .into_iter()
            .map(RetractingAccumulator::Native)
            .collect())
    }

    /// One accumulator per call, native where DataFusion's retraction is exact.
    pub(crate) fn for_calls(calls: &[AggregateCall]) -> Result<Vec<Self>> {
        calls
            .iter()
            .map(|call| {
                let function = &call.function;
                if !function.is_distinct() && NATIVELY_RETRACTING.contains(&function.fun().name()) {
                    if let Ok(accumulator) = function.create_sliding_accumulator() {
                        if accumulator.supports_retract_batch() {
                            return Ok(RetractingAccumulator::Native(accumulator));
                        }
                    }
                }
                Ok(RetractingAccumulator::Recomputed {
                    call: function.clone(),
                    values: Box::default(),
                })
            })
            .collect()
    }

    /// Approximate bytes the accumulator holds.
    pub(crate) fn size(&self) -> usize {
        match self {
            RetractingAccumulator::Native(accumulator) => accumulator.size(),
            RetractingAccumulator::Recomputed { values, .. } => values
                .keys()
                .map(|value| value.iter().map(ScalarValue::size).sum::<usize>() + 16)
                .sum(),
        }
    }

    fn apply(&mut self, arguments: &[ArrayRef], retract: bool) -> Result<()> {
        match self {
            RetractingAccumulator::Native(accumulator) if retract => {
                accumulator.retract_batch(arguments).map_err(df)
            }
            RetractingAccumulator::Native(accumulator) => {
                accumulator.update_batch(arguments).map_err(df)
            }
            RetractingAccumulator::Recomputed { values, .. } => {
                let rows = arguments.first().map(|a| a.len()).unwrap_or(0);
                for row in 0..rows {
                    let value = arguments
                        .iter()
                        .map(|array| ScalarValue::try_from_array(array, row))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(df)?;
                    if retract {
                        if let Some(count) = values.get_mut(&value) {
                            *count -= 1;
                            if *count == 0 {
                                values.remove(&value);
                            }
                        }
                    } else {
                        *values.entry(value).or_default() += 1;
                    }
                }
                Ok(())
            }
        }
    }

    /// Writes the accumulator's state for a checkpoint; `fresh` is a new
    /// accumulator of the same kind, which takes over (a native
    /// accumulator's `state()` may drain it). Without `fresh`, a native
    /// accumulator may be left drained: only for one about to be dropped.
    pub(crate) fn snapshot(
        &mut self,
        fresh: Option<RetractingAccumulator>,
        out: &mut sluice_state::StateWriter,
    ) -> Result<()> {
        match self {
            RetractingAccumulator::Native(accumulator) => {
                let state = accumulator.state().map_err(df)?;
                out.u64(0);
                out.scalars(&state);
                if let Some(mut fresh) = fresh {
                    fresh.restore_native(&state)?;
                    *self = fresh;
                }
            }
            RetractingAccumulator::Recomputed { values, .. } => {
                out.u64(1);
                out.u64(values.len() as u64);
                for (value, count) in values.iter() {
                    out.scalars(value);
                    out.u64(*count as u64);
                }
            }
        }
        Ok(())
    }

    fn restore_native(&mut self, state: &[ScalarValue]) -> Result<()> {
        match self {
            RetractingAccumulator::Native(accumulator) => merge_state(accumulator.as_mut(), state),
            RetractingAccumulator::Recomputed { .. } => {
                Err(crate::state::bad_state("accumulator kind changed"))
            }
        }
    }

    /// Loads state written by [`RetractingAccumulator::snapshot`] into this
    /// new accumulator.
    pub(crate) fn restore(&mut self, input: &mut sluice_state::StateReader) -> Result<()> {
        match input.u64()? {
            0 => {
                let state = input.scalars()?;
                self.restore_native(&state)
            }
            1 => {
                let RetractingAccumulator::Recomputed { values, .. } = self else {
                    return Err(crate::state::bad_state("accumulator kind changed"));
                };
                for _ in 0..input.usize()? {
                    let value = input.scalars()?;
                    values.insert(value, input.usize()?);
                }
                Ok(())
            }
            _ => Err(crate::state::bad_state("accumulator tag")),
        }
    }

    /// The aggregate's current result.
    pub(crate) fn evaluate(&mut self) -> Result<ScalarValue> {
        match self {
            RetractingAccumulator::Native(accumulator) => accumulator.evaluate().map_err(df),
            RetractingAccumulator::Recomputed { call, values } => {
                let mut accumulator = call.create_accumulator().map_err(df)?;
                if !values.is_empty() {
                    let width = call.expressions().len();
                    let arguments = (0..width)
                        .map(|column| {
                            ScalarValue::iter_to_array(values.iter().flat_map(|(value, count)| {
                                std::iter::repeat_n(value[column].clone(), *count)
                            }))
                        })
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(df)?;
                    accumulator.update_batch(&arguments).map_err(df)?;
                }
                accumulator.evaluate().map_err(df)
            }
        }
    }
}

/// Decides when an operator sweeps state idle for longer than
/// `table.exec.state.ttl` (processing time): at most every quarter of the TTL.
#[derive(Debug)]
pub(crate) struct StateExpiry {
    ttl: Option<Duration>,
    last_sweep: Instant,
}

impl StateExpiry {
    /// Expiry after `ttl`; `None` keeps state forever.
    pub(crate) fn new(ttl: Option<Duration>) -> Self {
        StateExpiry {
            ttl,
            last_sweep: Instant::now(),
        }
    }

    /// The TTL, when a sweep is due at `now`.
    pub(crate) fn due(&mut self, now: Instant) -> Option<Duration> {
        let ttl = self.ttl?;
        if now.duration_since(self.last_sweep) < ttl / 4 {
            return None;
        }
        self.last_sweep = now;
        Some(ttl)
    }
}
