//! Regular (unbounded) inner equi-joins of append-only inputs. Every row is kept
//! in its side's state, indexed by join key; a new row is matched against the
//! other side's stored rows and each match is emitted at once. Inner joins of
//! append-only inputs produce an append-only result, as in Flink.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions, UInt32Array};
use arrow::compute::{interleave, take};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;
use sluice_core::{ChangeBatch, Message, Result, SluiceError};

use crate::aggregate::StateExpiry;
use crate::operators::{df, Operator};
use crate::window::require_inserts;

/// One side's stored rows.
#[derive(Default)]
struct SideState {
    batches: Vec<RecordBatch>,
    /// Key bytes → (batch index, row index) of every stored row with that key.
    index: HashMap<Vec<u8>, Vec<(usize, usize)>>,
    /// Key bytes → when a row of that key was last stored (for the state TTL).
    written: HashMap<Vec<u8>, Instant>,
    /// Rows in `batches`, including those of expired keys.
    stored_rows: usize,
}

impl SideState {
    /// Forgets keys not written for `ttl`; rewrites the stored batches once
    /// most of their rows belong to forgotten keys.
    fn expire(&mut self, now: Instant, ttl: Duration) -> Result<()> {
        let expired: Vec<Vec<u8>> = self
            .written
            .iter()
            .filter(|(_, written)| now.duration_since(**written) >= ttl)
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            self.written.remove(&key);
            self.index.remove(&key);
        }
        let live: usize = self.index.values().map(Vec::len).sum();
        if live * 2 >= self.stored_rows {
            return Ok(());
        }
        // Keep only live rows: one new batch per old batch that still has any.
        let mut live_rows: Vec<Vec<usize>> = vec![Vec::new(); self.batches.len()];
        for locations in self.index.values() {
            for &(batch, row) in locations {
                live_rows[batch].push(row);
            }
        }
        let mut remap: HashMap<(usize, usize), (usize, usize)> = HashMap::with_capacity(live);
        let mut batches = Vec::new();
        for (old, mut rows) in live_rows.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            rows.sort_unstable();
            let indices = UInt32Array::from(rows.iter().map(|&r| r as u32).collect::<Vec<_>>());
            for (new_row, &old_row) in rows.iter().enumerate() {
                remap.insert((old, old_row), (batches.len(), new_row));
            }
            batches.push(arrow::compute::take_record_batch(
                &self.batches[old],
                &indices,
            )?);
        }
        for locations in self.index.values_mut() {
            for location in locations.iter_mut() {
                if let Some(moved) = remap.get(location) {
                    *location = *moved;
                }
            }
        }
        self.batches = batches;
        self.stored_rows = live;
        Ok(())
    }
}

/// The inner join of one subtask.
pub struct InnerJoinOperator {
    keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    filter: Option<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
    converter: RowConverter,
    sides: [SideState; 2],
    expiry: StateExpiry,
}

impl InnerJoinOperator {
    /// A join on `left_keys = right_keys` (with an optional extra condition over
    /// the joined row), producing `schema` (left columns, then right columns).
    pub fn new(
        left_keys: Vec<Arc<dyn PhysicalExpr>>,
        right_keys: Vec<Arc<dyn PhysicalExpr>>,
        left_schema: &SchemaRef,
        filter: Option<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
        ttl: Option<Duration>,
    ) -> Result<Self> {
        let fields = left_keys
            .iter()
            .map(|key| key.data_type(left_schema).map(SortField::new).map_err(df))
            .collect::<Result<Vec<_>>>()?;
        Ok(InnerJoinOperator {
            keys: [left_keys, right_keys],
            filter,
            schema,
            converter: RowConverter::new(fields)?,
            sides: [SideState::default(), SideState::default()],
            expiry: StateExpiry::new(ttl),
        })
    }
}

impl Operator for InnerJoinOperator {
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
        require_inserts(&batch).map_err(|_| {
            SluiceError::Unsupported("a join over an updating (changelog) input".into())
        })?;
        // Expired keys are gone before this batch can match them.
        let now = Instant::now();
        if let Some(ttl) = self.expiry.due(now) {
            for side in &mut self.sides {
                side.expire(now, ttl)?;
            }
        }
        let data = batch.data;
        let rows = data.num_rows();
        let key_arrays = self.keys[side]
            .iter()
            .map(|key| {
                key.evaluate(&data)
                    .and_then(|v| v.into_array(rows))
                    .map_err(df)
            })
            .collect::<Result<Vec<_>>>()?;
        let key_rows = self.converter.convert_columns(&key_arrays)?;
        let other = 1 - side;

        // Match against the other side's stored rows.
        let mut probe_rows: Vec<u32> = Vec::new();
        let mut matches: Vec<(usize, usize)> = Vec::new();
        let mut keyed: Vec<Option<&[u8]>> = Vec::with_capacity(rows);
        for row in 0..rows {
            // NULL keys never match (SQL equality).
            if key_arrays.iter().any(|a| a.is_null(row)) {
                keyed.push(None);
                continue;
            }
            let key = key_rows.row(row).data();
            if let Some(stored) = self.sides[other].index.get(key) {
                for &location in stored {
                    probe_rows.push(row as u32);
                    matches.push(location);
                }
            }
            keyed.push(Some(key));
        }
        if !matches.is_empty() {
            let probe_indices = UInt32Array::from(probe_rows);
            let probe_columns = data
                .columns()
                .iter()
                .map(|column| take(column.as_ref(), &probe_indices, None))
                .collect::<Result<Vec<_>, _>>()?;
            let stored = &self.sides[other].batches;
            let width = stored.first().map(|b| b.num_columns()).unwrap_or(0);
            let mut stored_columns = Vec::with_capacity(width);
            for column in 0..width {
                let arrays: Vec<&dyn Array> =
                    stored.iter().map(|b| b.column(column).as_ref()).collect();
                stored_columns.push(interleave(&arrays, &matches)?);
            }
            let columns: Vec<ArrayRef> = if side == 0 {
                probe_columns.into_iter().chain(stored_columns).collect()
            } else {
                stored_columns.into_iter().chain(probe_columns).collect()
            };
            let joined = RecordBatch::try_new_with_options(
                self.schema.clone(),
                columns,
                &RecordBatchOptions::new().with_row_count(Some(matches.len())),
            )?;
            let joined = match &self.filter {
                None => joined,
                Some(filter) => {
                    let mask = filter
                        .evaluate(&joined)
                        .and_then(|v| v.into_array(joined.num_rows()))
                        .map_err(df)?;
                    arrow::compute::filter_record_batch(&joined, mask.as_boolean())?
                }
            };
            if joined.num_rows() > 0 {
                out.push(Message::Data(ChangeBatch::inserts(joined)));
            }
        }

        // Remember this batch's rows for later rows of the other side.
        let state = &mut self.sides[side];
        let batch_index = state.batches.len();
        let mut stored_any = false;
        for (row, key) in keyed.into_iter().enumerate() {
            if let Some(key) = key {
                // Allocate the owned key only for a key this side has not seen.
                match state.index.get_mut(key) {
                    Some(locations) => locations.push((batch_index, row)),
                    None => {
                        state.index.insert(key.to_vec(), vec![(batch_index, row)]);
                    }
                }
                match state.written.get_mut(key) {
                    Some(written) => *written = now,
                    None => {
                        state.written.insert(key.to_vec(), now);
                    }
                }
                stored_any = true;
            }
        }
        if stored_any {
            state.stored_rows += rows;
            state.batches.push(data);
        }
        Ok(())
    }
}
