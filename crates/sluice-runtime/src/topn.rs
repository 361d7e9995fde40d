//! Top-N and deduplication (`ROW_NUMBER() ... WHERE rownum <= N`). Each
//! partition keeps its rows sorted by the `ORDER BY` key (ties in arrival
//! order). Over an append-only input only the first N rows can ever rank, so
//! only they are kept; over an updating input every row is kept, because a
//! retraction lets the next one in. Changes to the first N are emitted as
//! `+I`/`-D` (plus `-U`/`+U` for rows whose row number moves, when the row
//! number is part of the result). A window Top-N instead emits each window's
//! ranking once, when the watermark passes the window's end.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Int8Array, RecordBatch, UInt64Array};
use arrow::compute::cast;
use arrow::row::{RowConverter, SortField};
use sluice_core::{ChangeBatch, Message, Result, RowKind};
use sluice_sql::plan::TopN;

use crate::late::LateRecords;
use crate::operators::{df, Operator};
use crate::rows::{decode_rows, whole_row_converter};
use crate::state::{
    bad_state, header_chunk, restore_subtasks, KeyOwner, KeyedState, StateConfig, SubtaskChunks,
    ValueCodec,
};
use crate::watermark::epoch_millis;
use sluice_state::{StateReader, StateWriter};

/// One row of a partition.
struct RankedRow {
    /// `ORDER BY` key, encoded so that byte order is rank order.
    order: Box<[u8]>,
    /// Arrival number, for ties.
    arrival: u64,
    /// The whole row.
    row: Box<[u8]>,
}

/// Encodes a partition's ranked rows.
struct RankedRowsCodec;

impl ValueCodec<Vec<RankedRow>> for RankedRowsCodec {
    fn encode(&self, rows: &mut Vec<RankedRow>, out: &mut StateWriter) -> Result<()> {
        out.u64(rows.len() as u64);
        for ranked in rows.iter() {
            out.bytes(&ranked.order);
            out.u64(ranked.arrival);
            out.bytes(&ranked.row);
        }
        Ok(())
    }

    fn decode(&self, input: &mut StateReader) -> Result<Vec<RankedRow>> {
        (0..input.usize()?)
            .map(|_| {
                Ok(RankedRow {
                    order: input.bytes()?.into(),
                    arrival: input.u64()?,
                    row: input.bytes()?.into(),
                })
            })
            .collect()
    }

    fn heap_size(&self, rows: &Vec<RankedRow>) -> usize {
        rows.iter()
            .map(|r| std::mem::size_of::<RankedRow>() + r.order.len() + r.row.len())
            .sum()
    }
}

/// A change to emit: the row, its row number, and the kind.
type Change = (Box<[u8]>, u64, RowKind);

/// The Top-N operator of one subtask.
pub struct TopNOperator {
    spec: Arc<TopN>,
    partition_converter: RowConverter,
    order_converter: RowConverter,
    row_converter: RowConverter,
    partitions: KeyedState<Vec<RankedRow>>,
    arrivals: u64,
    watermark: i64,
    late: LateRecords,
}

impl TopNOperator {
    /// An operator for `spec`; partitions idle for `ttl` are forgotten, late
    /// rows of a window Top-N go to `late`.
    pub fn new(spec: Arc<TopN>, state: &StateConfig, late: LateRecords) -> Result<Self> {
        let schema = &spec.input_schema;
        let partition_converter = crate::aggregate::key_converter(&spec.partition_keys, schema)?;
        let order_fields = spec
            .order
            .iter()
            .map(|(expr, options)| {
                expr.data_type(schema)
                    .map(|t| SortField::new_with_options(t, *options))
                    .map_err(df)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TopNOperator {
            partition_converter,
            order_converter: RowConverter::new(order_fields)?,
            row_converter: whole_row_converter(schema, "Top-N")?,
            partitions: KeyedState::new(state, RankedRowsCodec),
            arrivals: 0,
            watermark: i64::MIN,
            late,
            spec,
        })
    }

    /// Adds a row to its partition; returns the changes to the first N.
    fn insert(
        &mut self,
        partition: &[u8],
        ranked: RankedRow,
        now: Instant,
        out: &mut Vec<Change>,
    ) -> Result<()> {
        let limit = self.spec.limit;
        let keep_all = self.spec.updating_input;
        let windowed = self.spec.window_end.is_some();
        let with_rank = self.spec.rank_output;
        let rows = self.partitions.write(partition, now, Vec::new)?;
        let position =
            rows.partition_point(|r| (&r.order, r.arrival) <= (&ranked.order, ranked.arrival));
        if position >= limit && !keep_all {
            return Ok(());
        }
        rows.insert(position, ranked);
        if !windowed && position < limit {
            out.push((
                rows[position].row.clone(),
                position as u64 + 1,
                RowKind::Insert,
            ));
            // Rows behind it move down one place; the one at N drops out.
            let last = rows.len().min(limit + 1);
            for (moved, ranked) in rows.iter().enumerate().take(last).skip(position + 1) {
                let row = &ranked.row;
                if moved == limit {
                    out.push((row.clone(), limit as u64, RowKind::Delete));
                } else if with_rank {
                    out.push((row.clone(), moved as u64, RowKind::UpdateBefore));
                    out.push((row.clone(), moved as u64 + 1, RowKind::UpdateAfter));
                }
            }
        }
        if !keep_all {
            rows.truncate(limit);
        }
        Ok(())
    }

    /// Takes a row back out of its partition; returns the changes to the first N.
    fn retract(&mut self, partition: &[u8], row: &[u8], out: &mut Vec<Change>) -> Result<()> {
        let limit = self.spec.limit;
        let with_rank = self.spec.rank_output;
        let Some(rows) = self.partitions.get_mut(partition)? else {
            return Ok(());
        };
        let Some(position) = rows.iter().position(|r| &*r.row == row) else {
            return Ok(());
        };
        let removed = rows.remove(position);
        if position < limit {
            out.push((removed.row, position as u64 + 1, RowKind::Delete));
            // Rows behind it move up one place; the next one enters at N.
            let last = rows.len().min(limit);
            for (moved, ranked) in rows.iter().enumerate().take(last).skip(position) {
                let row = &ranked.row;
                if moved + 1 == limit {
                    out.push((row.clone(), limit as u64, RowKind::Insert));
                } else if with_rank {
                    out.push((row.clone(), moved as u64 + 2, RowKind::UpdateBefore));
                    out.push((row.clone(), moved as u64 + 1, RowKind::UpdateAfter));
                }
            }
        }
        if rows.is_empty() {
            self.partitions.remove(partition)?;
        }
        Ok(())
    }

    fn output(&self, changes: Vec<Change>) -> Result<ChangeBatch> {
        let mut columns = decode_rows(
            &self.row_converter,
            changes.iter().map(|(row, _, _)| &**row),
        )?;
        let ranks: ArrayRef = Arc::new(UInt64Array::from_iter_values(
            changes.iter().map(|(_, rank, _)| *rank),
        ));
        let rank_type = self.spec.schema.field(columns.len()).data_type();
        columns.push(cast(&ranks, rank_type)?);
        let data = RecordBatch::try_new(self.spec.schema.clone(), columns)?;
        let kinds = changes.iter().map(|(_, _, kind)| *kind as i8);
        Ok(if self.spec.window_end.is_some() {
            ChangeBatch::inserts(data)
        } else {
            ChangeBatch {
                data,
                kinds: Some(Int8Array::from_iter_values(kinds)),
            }
        })
    }
}

impl Operator for TopNOperator {
    fn process(&mut self, batch: ChangeBatch, out: &mut Vec<Message>) -> Result<()> {
        let now = Instant::now();
        self.partitions.expire_idle(now)?;
        let data = &batch.data;
        let rows = data.num_rows();
        let evaluate = |expr: &Arc<dyn datafusion::physical_expr::PhysicalExpr>| {
            expr.evaluate(data)
                .and_then(|v| v.into_array(rows))
                .map_err(df)
        };
        let partition_arrays = self
            .spec
            .partition_keys
            .iter()
            .map(evaluate)
            .collect::<Result<Vec<_>>>()?;
        let partitions = (!partition_arrays.is_empty())
            .then(|| self.partition_converter.convert_columns(&partition_arrays))
            .transpose()?;
        let order_arrays = self
            .spec
            .order
            .iter()
            .map(|(expr, _)| evaluate(expr))
            .collect::<Result<Vec<_>>>()?;
        let orders = self.order_converter.convert_columns(&order_arrays)?;
        let whole = self.row_converter.convert_columns(data.columns())?;
        let window_ends = match self.spec.window_end {
            Some(column) => Some(epoch_millis(data.column(column).as_ref())?),
            None => None,
        };
        let mut changes = Vec::new();
        let mut late_rows = Vec::new();
        for row in 0..rows {
            let partition = partitions.as_ref().map_or(&[][..], |p| p.row(row).data());
            if let Some(ends) = &window_ends {
                let end = ends.value(row);
                if end - 1 <= self.watermark {
                    late_rows.push(row as u32);
                    continue;
                }
                self.partitions.register_timer(partition, end - 1);
            }
            if batch.kind(row).is_addition() {
                self.arrivals += 1;
                let ranked = RankedRow {
                    order: orders.row(row).data().into(),
                    arrival: self.arrivals,
                    row: whole.row(row).data().into(),
                };
                self.insert(partition, ranked, now, &mut changes)?;
            } else {
                self.retract(partition, whole.row(row).data(), &mut changes)?;
            }
        }
        if let Some(ends) = &window_ends {
            // A row is late when its window closed already.
            self.late
                .reject("window Top-N", data, &late_rows, ends, self.watermark)?;
        }
        self.partitions.enforce_budget()?;
        if !changes.is_empty() {
            out.push(Message::Data(self.output(changes)?));
        }
        Ok(())
    }

    /// Header (watermark, arrival counter), then the partitions.
    fn snapshot(&mut self) -> Result<Vec<Vec<u8>>> {
        let mut chunks = vec![header_chunk(&[self.watermark, self.arrivals as i64])?];
        chunks.extend(self.partitions.snapshot()?);
        Ok(chunks)
    }

    fn restore(&mut self, subtasks: &SubtaskChunks, owner: &KeyOwner) -> Result<()> {
        self.watermark = restore_subtasks(subtasks, |header, rest| {
            let [_, arrivals] = header[..] else {
                return Err(bad_state("Top-N header"));
            };
            self.arrivals = self.arrivals.max(arrivals as u64);
            self.partitions
                .restore(rest, owner, &self.partition_converter, Instant::now())
        })?;
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<Message>) -> Result<()> {
        if watermark > self.watermark {
            self.watermark = watermark;
            let mut changes = Vec::new();
            for (_, partition) in self.partitions.due_timers(watermark) {
                if let Some(rows) = self.partitions.remove(&partition)? {
                    changes.extend(
                        rows.into_iter()
                            .enumerate()
                            .map(|(rank, r)| (r.row, rank as u64 + 1, RowKind::Insert)),
                    );
                }
            }
            if !changes.is_empty() {
                out.push(Message::Data(self.output(changes)?));
            }
        }
        out.push(Message::Watermark(watermark));
        Ok(())
    }
}
