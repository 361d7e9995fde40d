//! Non-windowed `GROUP BY`: an updating aggregation. Each key keeps its
//! accumulators and the row it last emitted; a batch that changes a key emits
//! `+I` for a new key, or `-U` (old row) and `+U` (new row) for a changed one,
//! as Flink's group aggregation does. Unchanged results emit nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{new_null_array, Array, ArrayRef, Int8Array, RecordBatch, RecordBatchOptions};
use arrow::compute::cast;
use arrow::row::RowConverter;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use sluice_core::{ChangeBatch, Message, Result, RowKind};
use sluice_sql::plan::GroupAggregate;

use crate::aggregate::{key_converter, new_accumulators, AggregateInputs, StateExpiry};
use crate::operators::{df, Operator};
use crate::window::require_inserts;

struct GroupState {
    accumulators: Vec<Box<dyn Accumulator>>,
    emitted: Option<Vec<ScalarValue>>,
    /// When a row last updated this key (for `table.exec.state.ttl`).
    last_write: Instant,
}

/// The group aggregation of one subtask.
pub struct GroupAggregateOperator {
    spec: Arc<GroupAggregate>,
    converter: RowConverter,
    groups: HashMap<Vec<u8>, GroupState>,
    expiry: StateExpiry,
}

impl GroupAggregateOperator {
    /// An operator for `spec`; keys idle for `ttl` are forgotten (a later row
    /// of such a key starts from scratch, as in Flink).
    pub fn new(spec: Arc<GroupAggregate>, ttl: Option<Duration>) -> Result<Self> {
        Ok(GroupAggregateOperator {
            converter: key_converter(&spec.keys, &spec.input_schema)?,
            spec,
            groups: HashMap::new(),
            expiry: StateExpiry::new(ttl),
        })
    }

    fn output(&self, changes: Vec<(RowKind, Vec<u8>, Vec<ScalarValue>)>) -> Result<ChangeBatch> {
        let schema = &self.spec.schema;
        let count = changes.len();
        let mut columns: Vec<ArrayRef> = if self.spec.keys.is_empty() {
            Vec::new()
        } else {
            let parser = self.converter.parser();
            self.converter
                .convert_rows(changes.iter().map(|(_, key, _)| parser.parse(key)))?
        };
        for index in 0..self.spec.aggregates.len() {
            let target = schema.field(columns.len()).data_type();
            let array = if count == 0 {
                new_null_array(target, 0)
            } else {
                ScalarValue::iter_to_array(
                    changes.iter().map(|(_, _, values)| values[index].clone()),
                )
                .map_err(df)?
            };
            columns.push(if array.data_type() == target {
                array
            } else {
                cast(&array, target)?
            });
        }
        let data = RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(count)),
        )?;
        let kinds = Int8Array::from(
            changes
                .iter()
                .map(|(kind, _, _)| *kind as i8)
                .collect::<Vec<_>>(),
        );
        Ok(ChangeBatch {
            data,
            kinds: Some(kinds),
        })
    }
}

impl Operator for GroupAggregateOperator {
    fn process(&mut self, batch: ChangeBatch, out: &mut Vec<Message>) -> Result<()> {
        require_inserts(&batch)?;
        // Expired keys are gone before this batch can see them.
        let now = Instant::now();
        if let Some(ttl) = self.expiry.due(now) {
            self.groups
                .retain(|_, state| now.duration_since(state.last_write) < ttl);
        }
        let rows = batch.num_rows();
        let inputs = AggregateInputs::evaluate(
            &self.spec.keys,
            &self.spec.aggregates,
            &self.converter,
            &batch,
        )?;

        // Rows per key, keys in order of first appearance.
        let mut order: Vec<&[u8]> = Vec::new();
        let mut indices: HashMap<&[u8], Vec<u32>> = HashMap::new();
        for row in 0..rows {
            let key = inputs.key(row);
            indices
                .entry(key)
                .or_insert_with(|| {
                    order.push(key);
                    Vec::new()
                })
                .push(row as u32);
        }

        let mut changes = Vec::new();
        for key in order {
            let selected_rows = &indices[key];
            if !self.groups.contains_key(key) {
                let accumulators = new_accumulators(&self.spec.aggregates)?;
                self.groups.insert(
                    key.to_vec(),
                    GroupState {
                        accumulators,
                        emitted: None,
                        last_write: now,
                    },
                );
            }
            let Some(state) = self.groups.get_mut(key) else {
                continue;
            };
            state.last_write = now;
            inputs.update(&mut state.accumulators, selected_rows)?;
            let values = state
                .accumulators
                .iter_mut()
                .map(|a| a.evaluate().map_err(df))
                .collect::<Result<Vec<_>>>()?;
            match state.emitted.replace(values.clone()) {
                None => changes.push((RowKind::Insert, key.to_vec(), values)),
                Some(previous) if previous == values => {}
                Some(previous) => {
                    changes.push((RowKind::UpdateBefore, key.to_vec(), previous));
                    changes.push((RowKind::UpdateAfter, key.to_vec(), values));
                }
            }
        }
        if !changes.is_empty() {
            out.push(Message::Data(self.output(changes)?));
        }
        Ok(())
    }
}
