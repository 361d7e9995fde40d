//! Aggregation state for many keys at once, as DataFusion's own hash
//! aggregation keeps it: keys are interned to dense group indices, and each
//! aggregate call has one [`GroupsAccumulator`] for all of them. A batch then
//! updates every key with one vectorized call per aggregate, merging two
//! states is one call per aggregate, and results come out as Arrow columns
//! (no per-key accumulator objects or `ScalarValue`s).

use std::hash::BuildHasher;

use arrow::array::{ArrayRef, AsArray, UInt32Array};
use arrow::compute::take;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::GroupsAccumulatorAdapter;
use hashbrown::HashTable;
use sluice_core::Result;
use sluice_sql::plan::AggregateCall;

use crate::aggregate::AggregateInputs;
use crate::operators::df;

/// Distinct key byte strings, numbered densely in the order first seen.
#[derive(Default)]
pub(crate) struct KeyIndex {
    table: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    /// All keys' bytes, back to back.
    bytes: Vec<u8>,
    /// Key `i` is `bytes[ends[i - 1]..ends[i]]` (from 0 for the first).
    ends: Vec<usize>,
}

impl KeyIndex {
    /// The number of keys.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Key `index`'s bytes.
    pub(crate) fn key(&self, index: usize) -> &[u8] {
        key_of(&self.bytes, &self.ends, index)
    }

    /// The keys in index order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|index| self.key(index))
    }

    /// Makes room for `keys` more keys of `bytes` bytes in all, so that
    /// interning them grows nothing step by step.
    pub(crate) fn reserve(&mut self, keys: usize, bytes: usize) {
        let KeyIndex {
            table,
            hasher,
            bytes: all_bytes,
            ends,
        } = self;
        table.reserve(keys, |&i| {
            hasher.hash_one(key_of(all_bytes, ends, i as usize))
        });
        all_bytes.reserve(bytes);
        ends.reserve(keys);
    }

    /// The index of `key`, numbering it if it is new.
    pub(crate) fn intern(&mut self, key: &[u8]) -> u32 {
        let KeyIndex {
            table,
            hasher,
            bytes,
            ends,
        } = self;
        let hash = hasher.hash_one(key);
        if let Some(&index) = table.find(hash, |&i| key_of(bytes, ends, i as usize) == key) {
            return index;
        }
        let index = ends.len() as u32;
        bytes.extend_from_slice(key);
        ends.push(bytes.len());
        table.insert_unique(hash, index, |&i| {
            hasher.hash_one(key_of(bytes, ends, i as usize))
        });
        index
    }
}

fn key_of<'a>(bytes: &'a [u8], ends: &[usize], index: usize) -> &'a [u8] {
    let start = if index == 0 { 0 } else { ends[index - 1] };
    &bytes[start..ends[index]]
}

/// One accumulator for all groups of `call`: DataFusion's vectorized one where
/// the aggregate has it, otherwise its per-group accumulators behind
/// DataFusion's adapter.
fn groups_accumulator(call: &AggregateCall) -> Result<Box<dyn GroupsAccumulator>> {
    if call.function.groups_accumulator_supported() {
        return call.function.create_groups_accumulator().map_err(df);
    }
    let function = call.function.clone();
    Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
        function.create_accumulator()
    })))
}

/// Live aggregation state: keys and one groups accumulator per call.
pub(crate) struct Groups {
    keys: KeyIndex,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
}

/// Complete aggregation state, as the accumulators' intermediate states: per
/// call, its state columns with one row per key of `keys`.
pub(crate) struct GroupStates {
    pub(crate) keys: KeyIndex,
    pub(crate) states: Vec<Vec<ArrayRef>>,
}

impl Groups {
    /// Empty state for `calls`.
    pub(crate) fn new(calls: &[AggregateCall]) -> Result<Self> {
        Self::from_states(
            calls,
            GroupStates {
                keys: KeyIndex::default(),
                states: Vec::new(),
            },
        )
    }

    /// State holding `states` (keys in the same order).
    pub(crate) fn from_states(calls: &[AggregateCall], states: GroupStates) -> Result<Self> {
        let mut groups = Groups {
            keys: states.keys,
            accumulators: Vec::new(),
        };
        groups.refill(calls, &states.states)?;
        Ok(groups)
    }

    /// Fresh accumulators holding `states`, one row per key in key order.
    fn refill(&mut self, calls: &[AggregateCall], states: &[Vec<ArrayRef>]) -> Result<()> {
        self.accumulators = calls
            .iter()
            .map(groups_accumulator)
            .collect::<Result<_>>()?;
        let indices: Vec<usize> = (0..self.keys.len()).collect();
        self.merge_indexed(states, &indices)
    }

    /// The keys, in group index order.
    pub(crate) fn keys(&self) -> &KeyIndex {
        &self.keys
    }

    /// Adds rows of `inputs` to their keys: all rows, or only `rows`.
    pub(crate) fn update(&mut self, inputs: &AggregateInputs, rows: Option<&[u32]>) -> Result<()> {
        let groups: Vec<usize> = match rows {
            // Without grouping keys every row has the one (empty) key.
            _ if !inputs.has_keys() => {
                let group = self.keys.intern(&[]) as usize;
                vec![group; rows.map_or(inputs.num_rows(), |rows| rows.len())]
            }
            None => (0..inputs.num_rows())
                .map(|row| self.keys.intern(inputs.key(row)) as usize)
                .collect(),
            Some(rows) => rows
                .iter()
                .map(|&row| self.keys.intern(inputs.key(row as usize)) as usize)
                .collect(),
        };
        let selection = rows.map(|rows| UInt32Array::from(rows.to_vec()));
        let total = self.keys.len();
        for (call, accumulator) in self.accumulators.iter_mut().enumerate() {
            let arguments = inputs.arguments(call);
            let filter = inputs.filter(call);
            match &selection {
                None => accumulator
                    .update_batch(arguments, &groups, filter, total)
                    .map_err(df)?,
                Some(indices) => {
                    let arguments = arguments
                        .iter()
                        .map(|array| take(array.as_ref(), indices, None))
                        .collect::<Result<Vec<_>, _>>()?;
                    let filter = filter.map(|mask| take(mask, indices, None)).transpose()?;
                    accumulator
                        .update_batch(
                            &arguments,
                            &groups,
                            filter.as_ref().map(|mask| mask.as_boolean()),
                            total,
                        )
                        .map_err(df)?
                }
            }
        }
        Ok(())
    }

    /// Merges complete state into this one, key by key.
    pub(crate) fn merge(&mut self, other: &GroupStates) -> Result<()> {
        self.keys.reserve(other.keys.len(), other.keys.bytes.len());
        let indices: Vec<usize> = other
            .keys
            .iter()
            .map(|key| self.keys.intern(key) as usize)
            .collect();
        self.merge_indexed(&other.states, &indices)
    }

    fn merge_indexed(&mut self, states: &[Vec<ArrayRef>], indices: &[usize]) -> Result<()> {
        if indices.is_empty() {
            return Ok(());
        }
        let total = self.keys.len();
        for (accumulator, state) in self.accumulators.iter_mut().zip(states) {
            accumulator.merge_batch(state, indices, total).map_err(df)?;
        }
        Ok(())
    }

    /// The complete state (taking it drains the accumulators).
    pub(crate) fn into_states(mut self) -> Result<GroupStates> {
        let states = self.take_states()?;
        Ok(GroupStates {
            keys: self.keys,
            states,
        })
    }

    fn take_states(&mut self) -> Result<Vec<Vec<ArrayRef>>> {
        self.accumulators
            .iter_mut()
            .map(|accumulator| accumulator.state(EmitTo::All).map_err(df))
            .collect()
    }

    /// The state per key, for a checkpoint, keeping this state as it is
    /// (taking the states drains the accumulators, so they are rebuilt).
    pub(crate) fn snapshot(
        &mut self,
        calls: &[AggregateCall],
    ) -> Result<Vec<Vec<Vec<ScalarValue>>>> {
        let states = self.take_states()?;
        let per_key = states_per_key(&states, self.keys.len())?;
        self.refill(calls, &states)?;
        Ok(per_key)
    }

    /// Each call's result per key, and the keys.
    pub(crate) fn evaluate(mut self) -> Result<(KeyIndex, Vec<ArrayRef>)> {
        let results = self
            .accumulators
            .iter_mut()
            .map(|accumulator| accumulator.evaluate(EmitTo::All).map_err(df))
            .collect::<Result<Vec<_>>>()?;
        Ok((self.keys, results))
    }
}

impl GroupStates {
    /// The state per key (per call, its state values), as checkpoints store it.
    pub(crate) fn per_key(&self) -> Result<Vec<Vec<Vec<ScalarValue>>>> {
        states_per_key(&self.states, self.keys.len())
    }

    /// State from per-key values (see [`GroupStates::per_key`]).
    pub(crate) fn from_per_key(entries: Vec<(Vec<u8>, Vec<Vec<ScalarValue>>)>) -> Result<Self> {
        let mut keys = KeyIndex::default();
        let Some((_, first)) = entries.first() else {
            return Ok(GroupStates {
                keys,
                states: Vec::new(),
            });
        };
        let mut columns: Vec<Vec<Vec<ScalarValue>>> = first
            .iter()
            .map(|call| vec![Vec::with_capacity(entries.len()); call.len()])
            .collect();
        for (key, states) in entries {
            keys.intern(&key);
            if states.len() != columns.len() {
                return Err(crate::state::bad_state("accumulator count"));
            }
            for (call, values) in columns.iter_mut().zip(states) {
                if values.len() != call.len() {
                    return Err(crate::state::bad_state("accumulator state width"));
                }
                for (column, value) in call.iter_mut().zip(values) {
                    column.push(value);
                }
            }
        }
        let states = columns
            .into_iter()
            .map(|call| {
                call.into_iter()
                    .map(|column| ScalarValue::iter_to_array(column).map_err(df))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(GroupStates { keys, states })
    }
}

/// Per key, per call, its state values.
fn states_per_key(states: &[Vec<ArrayRef>], keys: usize) -> Result<Vec<Vec<Vec<ScalarValue>>>> {
    (0..keys)
        .map(|key| {
            states
                .iter()
                .map(|call| {
                    call.iter()
                        .map(|column| ScalarValue::try_from_array(column, key).map_err(df))
                        .collect::<Result<Vec<_>>>()
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_numbered_in_the_order_first_seen() {
        let mut keys = KeyIndex::default();
        assert_eq!(keys.intern(b"b"), 0);
        assert_eq!(keys.intern(b""), 1);
        assert_eq!(keys.intern(b"abc"), 2);
        assert_eq!(keys.intern(b"b"), 0);
        assert_eq!(keys.intern(b""), 1);
        for i in 0..10_000u32 {
            keys.intern(&i.to_le_bytes());
        }
        assert_eq!(keys.intern(&5000u32.to_le_bytes()), 5003);
        assert_eq!(keys.key(2), b"abc");
        assert_eq!(keys.key(1), b"");
        assert_eq!(keys.len(), 10_003);
    }
}
