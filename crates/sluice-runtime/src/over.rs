//! OVER aggregations: every row gets the aggregates of its frame (the rows
//! before it in its partition, in `ORDER BY` order, up to `n` rows or an
//! interval back).
//!
//! Event-time mode (append-only input ordered by an event-time attribute, as
//! Flink requires): rows wait until the watermark passes them, are taken in
//! time order, and each is emitted once; only the rows later frames can still
//! need are kept. Updating mode (any other input, e.g. an updating one): each
//! partition is kept in order, and a row that arrives or is retracted
//! re-evaluates the rows whose frames contain it, emitting `-U`/`+U` for
//! changed results.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray, Int8Array, RecordBatch, RecordBatchOptions};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use sluice_core::{ChangeBatch, Message, Result, RowKind};
use sluice_sql::plan::{AggregateCall, OverAggregate, OverFrame};

use crate::aggregate::{
    key_converter, read_states, restore_accumulators, snapshot_accumulators, write_states,
};
use crate::late::LateRecords;
use crate::operators::{df, evaluate_array, Operator};
use crate::row_codec::{header_row_format, restoring, RowCodec, COMPACT_ROWS};
use crate::rows::{scalar_column, take_results};
use crate::state::{
    bad_state, header_chunk, restore_subtasks, KeyOwner, KeyedState, StateConfig, SubtaskChunks,
    ValueCodec,
};
use crate::watermark::epoch_millis;
use sluice_state::{StateReader, StateWriter};

/// One input row of a partition.
struct OverRow {
    /// `ORDER BY` value, encoded so that byte order is the query's order.
    order: Box<[u8]>,
    /// The `ORDER BY` value as a number (ms for timestamps), for RANGE frames.
    time: i64,
    /// Arrival number, for ties.
    arrival: u64,
    /// The whole row.
    row: Box<[u8]>,
    /// Per aggregate call: its argument values (`None` when its FILTER rejects the row).
    arguments: Vec<Option<Vec<ScalarValue>>>,
    /// The aggregate values last emitted for this row.
    emitted: Option<Vec<ScalarValue>>,
}

#[derive(Default)]
struct Partition {
    /// Rows in frame order (event-time mode: only those later frames need).
    rows: Vec<OverRow>,
    /// Event-time mode: rows waiting for the watermark.
    pending: Vec<OverRow>,
    /// Event-time mode with an unbounded frame: the running aggregates.
    running: Option<Vec<Box<dyn Accumulator>>>,
}

fn encode_optional_scalars(values: &Option<Vec<ScalarValue>>, out: &mut StateWriter) {
    match values {
        None => out.bool(false),
        Some(values) => {
            out.bool(true);
            out.scalars(values);
        }
    }
}

fn decode_optional_scalars(input: &mut StateReader) -> Result<Option<Vec<ScalarValue>>> {
    Ok(if input.bool()? {
        Some(input.scalars()?)
    } else {
        None
    })
}

fn encode_over_row(row: &OverRow, out: &mut StateWriter) {
    out.bytes(&row.order);
    out.i64(row.time);
    out.u64(row.arrival);
    out.bytes(&row.row);
    out.u64(row.arguments.len() as u64);
    for arguments in &row.arguments {
        encode_optional_scalars(arguments, out);
    }
    encode_optional_scalars(&row.emitted, out);
}

fn decode_over_row(input: &mut StateReader, rows: &RowCodec) -> Result<OverRow> {
    let order = input.bytes()?.into();
    let time = input.i64()?;
    let arrival = input.u64()?;
    let row = rows.restored(input.bytes()?)?.into();
    let arguments = (0..input.usize()?)
        .map(|_| decode_optional_scalars(input))
        .collect::<Result<Vec<_>>>()?;
    Ok(OverRow {
        order,
        time,
        arrival,
        row,
        arguments,
        emitted: decode_optional_scalars(input)?,
    })
}

/// Encodes a partition's rows, pending rows and running aggregates.
struct PartitionCodec {
    calls: Vec<AggregateCall>,
    rows: Arc<RowCodec>,
}

impl ValueCodec<Partition> for PartitionCodec {
    fn encode(&self, partition: &mut Partition, out: &mut StateWriter) -> Result<()> {
        for rows in [&partition.rows, &partition.pending] {
            out.u64(rows.len() as u64);
            for row in rows.iter() {
                encode_over_row(row, out);
            }
        }
        match partition.running.as_mut() {
            None => out.bool(false),
            Some(running) => {
                out.bool(true);
                write_states(out, &snapshot_accumulators(running, &self.calls)?);
            }
        }
        Ok(())
    }

    fn decode(&self, input: &mut StateReader) -> Result<Partition> {
        let read_rows = |input: &mut StateReader| -> Result<Vec<OverRow>> {
            (0..input.usize()?)
                .map(|_| decode_over_row(input, &self.rows))
                .collect()
        };
        let rows = read_rows(input)?;
        let pending = read_rows(input)?;
        let running = if input.bool()? {
            Some(restore_accumulators(&self.calls, &read_states(input)?)?)
        } else {
            None
        };
        Ok(Partition {
            rows,
            pending,
            running,
        })
    }

    fn heap_size(&self, partition: &Partition) -> usize {
        let row_size = |row: &OverRow| {
            std::mem::size_of::<OverRow>()
                + row.order.len()
                + row.row.len()
                + row
                    .arguments
                    .iter()
                    .flatten()
                    .chain(row.emitted.iter())
                    .flatten()
                    .map(ScalarValue::size)
                    .sum::<usize>()
        };
        partition
            .rows
            .iter()
            .chain(&partition.pending)
            .map(row_size)
            .sum::<usize>()
            + partition
                .running
                .iter()
                .flatten()
                .map(|accumulator| accumulator.size())
                .sum::<usize>()
    }
}

/// A change to emit: the row, its aggregate values, and the kind.
type Change = (Box<[u8]>, Vec<ScalarValue>, RowKind);

/// The OVER aggregate of one subtask.
pub struct OverAggregateOperator {
    spec: Arc<OverAggregate>,
    partition_converter: RowConverter,
    order_converter: RowConverter,
    rows: Arc<RowCodec>,
    partitions: KeyedState<Partition>,
    arrivals: u64,
    watermark: i64,
    late: LateRecords,
}

impl OverAggregateOperator {
    /// An operator for `spec`; idle partitions expire after `ttl`, late rows
    /// (event-time mode) go to `late`.
    pub fn new(spec: Arc<OverAggregate>, state: &StateConfig, late: LateRecords) -> Result<Self> {
        let schema = &spec.input_schema;
        let (order, options) = &spec.order;
        let order_field =
            SortField::new_with_options(order.data_type(schema).map_err(df)?, *options);
        let rows = RowCodec::new(schema, "OVER aggregate")?;
        Ok(OverAggregateOperator {
            partition_converter: key_converter(&spec.partition_keys, schema)?,
            order_converter: RowConverter::new(vec![order_field])?,
            partitions: KeyedState::new(
                state,
                PartitionCodec {
                    calls: spec.aggregates.clone(),
                    rows: rows.clone(),
                },
            ),
            rows,
            arrivals: 0,
            watermark: i64::MIN,
            late,
            spec,
        })
    }

    /// Positions of the rows in `rows[position]`'s frame.
    fn frame(&self, rows: &[OverRow], position: usize) -> std::ops::Range<usize> {
        let time = rows[position].time;
        let last_peer =
            |from: usize| from + rows[from..].iter().take_while(|r| r.time == time).count();
        match self.spec.frame {
            OverFrame::Rows(n) => position.saturating_sub(as_usize(n))..position + 1,
            OverFrame::Range(d) => {
                let first = rows.partition_point(|r| r.time < time.saturating_sub(d));
                first..last_peer(position)
            }
        }
    }

    /// The aggregate values over `frame`.
    fn evaluate(
        &self,
        rows: &[OverRow],
        frame: std::ops::Range<usize>,
    ) -> Result<Vec<ScalarValue>> {
        self.spec
            .aggregates
            .iter()
            .enumerate()
            .map(|(call, aggregate)| {
                let mut accumulator = aggregate.function.create_accumulator().map_err(df)?;
                let selected: Vec<&Vec<ScalarValue>> = rows[frame.clone()]
                    .iter()
                    .filter_map(|r| r.arguments[call].as_ref())
                    .collect();
                if !selected.is_empty() {
                    let width = selected[0].len();
                    let arrays = (0..width)
                        .map(|i| ScalarValue::iter_to_array(selected.iter().map(|a| a[i].clone())))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(df)?;
                    accumulator.update_batch(&arrays).map_err(df)?;
                }
                accumulator.evaluate().map_err(df)
            })
            .collect()
    }

    /// Updating mode: re-evaluates `positions` and records their changes.
    fn refresh(
        &self,
        rows: &mut [OverRow],
        positions: std::ops::Range<usize>,
        out: &mut Vec<Change>,
    ) -> Result<()> {
        for position in positions {
            let values = self.evaluate(rows, self.frame(rows, position))?;
            let row = &mut rows[position];
            match row.emitted.replace(values.clone()) {
                None => out.push((row.row.clone(), values, RowKind::Insert)),
                Some(old) if old == values => {}
                Some(old) => {
                    out.push((row.row.clone(), old, RowKind::UpdateBefore));
                    out.push((row.row.clone(), values, RowKind::UpdateAfter));
                }
            }
        }
        Ok(())
    }

    /// Updating mode: the rows whose frames contain a row at `position` with `time`.
    fn influenced(&self, rows: &[OverRow], position: usize, time: i64) -> std::ops::Range<usize> {
        let first_peer = rows.partition_point(|r| r.time < time);
        match self.spec.frame {
            OverFrame::Rows(n) => {
                let end = position.saturating_add(as_usize(n)).saturating_add(1);
                position..end.min(rows.len())
            }
            OverFrame::Range(d) => {
                first_peer.min(position)..rows.partition_point(|r| r.time <= time.saturating_add(d))
            }
        }
    }

    fn add_updating(
        &mut self,
        key: &[u8],
        new: OverRow,
        now: Instant,
        out: &mut Vec<Change>,
    ) -> Result<()> {
        let Some(mut partition) = self.partitions.remove(key)? else {
            let mut partition = Partition::default();
            partition.rows.push(new);
            self.refresh(&mut partition.rows, 0..1, out)?;
            self.partitions.write(key, now, || partition)?;
            return Ok(());
        };
        let rows = &mut partition.rows;
        let position = rows.partition_point(|r| (&r.order, r.arrival) <= (&new.order, new.arrival));
        let time = new.time;
        rows.insert(position, new);
        let influenced = self.influenced(rows, position, time);
        self.refresh(rows, influenced, out)?;
        self.partitions.write(key, now, || partition)?;
        Ok(())
    }

    fn retract_updating(
        &mut self,
        key: &[u8],
        row: &[u8],
        now: Instant,
        out: &mut Vec<Change>,
    ) -> Result<()> {
        let Some(mut partition) = self.partitions.remove(key)? else {
            return Ok(());
        };
        let rows = &mut partition.rows;
        if let Some(position) = rows.iter().position(|r| &*r.row == row) {
            let removed = rows.remove(position);
            if let Some(values) = removed.emitted {
                out.push((removed.row, values, RowKind::Delete));
            }
            let influenced = self.influenced(rows, position, removed.time);
            self.refresh(rows, influenced, out)?;
        }
        if !partition.rows.is_empty() {
            self.partitions.write(key, now, || partition)?;
        }
        Ok(())
    }

    /// Event-time mode: takes the partition's rows up to `watermark` in time
    /// order and emits each one's result.
    fn emit_ready(&mut self, key: &[u8], watermark: i64, out: &mut Vec<Change>) -> Result<()> {
        let Some(mut partition) = self.partitions.remove(key)? else {
            return Ok(());
        };
        let (mut ready, waiting): (Vec<OverRow>, Vec<OverRow>) =
            std::mem::take(&mut partition.pending)
                .into_iter()
                .partition(|r| r.time <= watermark);
        partition.pending = waiting;
        ready.sort_by(|a, b| (&a.order, a.arrival).cmp(&(&b.order, b.arrival)));
        let mut ready = ready.into_iter().peekable();
        while let Some(first) = ready.next() {
            // Rows with equal time are peers: a RANGE frame covers all of them.
            let time = first.time;
            let mut peers = vec![first];
            while let Some(next) = ready.next_if(|r| r.time == time) {
                peers.push(next);
            }
            match self.spec.frame {
                frame if frame.is_unbounded() => self.emit_running(&mut partition, peers, out)?,
                frame => {
                    let start = partition.rows.len();
                    partition.rows.extend(peers);
                    for position in start..partition.rows.len() {
                        let values =
                            self.evaluate(&partition.rows, self.frame(&partition.rows, position))?;
                        out.push((
                            partition.rows[position].row.clone(),
                            values,
                            RowKind::Insert,
                        ));
                    }
                    // Keep only what later frames can reach.
                    let keep_from = match frame {
                        OverFrame::Rows(n) => partition.rows.len().saturating_sub(as_usize(n)),
                        OverFrame::Range(d) => partition
                            .rows
                            .partition_point(|r| r.time < time.saturating_sub(d)),
                    };
                    partition.rows.drain(..keep_from);
                }
            }
        }
        if !partition.pending.is_empty()
            || !partition.rows.is_empty()
            || partition.running.is_some()
        {
            self.partitions.write(key, Instant::now(), || partition)?;
        }
        Ok(())
    }

    /// Event-time mode, unbounded frame: running aggregates (RANGE frames
    /// see all peers, ROWS frames the rows up to each one).
    fn emit_running(
        &self,
        partition: &mut Partition,
        peers: Vec<OverRow>,
        out: &mut Vec<Change>,
    ) -> Result<()> {
        if partition.running.is_none() {
            partition.running = Some(
                self.spec
                    .aggregates
                    .iter()
                    .map(|a| a.function.create_accumulator().map_err(df))
                    .collect::<Result<Vec<_>>>()?,
            );
        }
        let Some(running) = partition.running.as_mut() else {
            return Ok(());
        };
        let feed = |running: &mut Vec<Box<dyn Accumulator>>, row: &OverRow| -> Result<()> {
            for (accumulator, arguments) in running.iter_mut().zip(&row.arguments) {
                if let Some(arguments) = arguments {
                    let arrays = arguments
                        .iter()
                        .map(|v| v.to_array_of_size(1))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(df)?;
                    accumulator.update_batch(&arrays).map_err(df)?;
                }
            }
            Ok(())
        };
        let results = |running: &mut Vec<Box<dyn Accumulator>>| -> Result<Vec<ScalarValue>> {
            running
                .iter_mut()
                .map(|a| a.evaluate().map_err(df))
                .collect()
        };
        if matches!(self.spec.frame, OverFrame::Range(_)) {
            // RANGE: peers are in each other's frames.
            for row in &peers {
                feed(running, row)?;
            }
            let values = results(running)?;
            for row in peers {
                out.push((row.row, values.clone(), RowKind::Insert));
            }
        } else {
            for row in peers {
                feed(running, &row)?;
                out.push((row.row, results(running)?, RowKind::Insert));
            }
        }
        Ok(())
    }

    fn output(&self, mut changes: Vec<Change>) -> Result<ChangeBatch> {
        let mut columns = self.rows.decode(changes.iter().map(|(row, _, _)| &**row))?;
        let width = columns.len();
        let results = take_results(
            changes.iter_mut().map(|(_, values, _)| values),
            self.spec.aggregates.len(),
        );
        for (index, values) in results.into_iter().enumerate() {
            columns.push(scalar_column(
                values.into_iter(),
                self.spec.schema.field(width + index).data_type(),
            )?);
        }
        let data = RecordBatch::try_new_with_options(
            self.spec.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(changes.len())),
        )?;
        Ok(if self.spec.event_time.is_some() {
            ChangeBatch::inserts(data)
        } else {
            ChangeBatch {
                data,
                kinds: Some(Int8Array::from_iter_values(
                    changes.iter().map(|(_, _, k)| *k as i8),
                )),
            }
        })
    }
}

fn as_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The `ORDER BY` values as numbers: epoch milliseconds for timestamps.
fn order_numbers(values: &ArrayRef) -> Result<arrow::array::PrimitiveArray<Int64Type>> {
    Ok(match values.data_type() {
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
            let millis = epoch_millis(values.as_ref())?;
            cast(&millis, &DataType::Int64)?
                .as_primitive::<Int64Type>()
                .clone()
        }
        _ => cast(values, &DataType::Int64)?
            .as_primitive::<Int64Type>()
            .clone(),
    })
}

impl Operator for OverAggregateOperator {
    fn process(&mut self, batch: ChangeBatch, out: &mut Vec<Message>) -> Result<()> {
        let now = Instant::now();
        self.partitions.expire_idle(now)?;
        let data = &batch.data;
        let rows = data.num_rows();
        let evaluate = |expr: &Arc<dyn PhysicalExpr>| evaluate_array(expr.as_ref(), data);
        let keys = self
            .spec
            .partition_keys
            .iter()
            .map(evaluate)
            .collect::<Result<Vec<_>>>()?;
        let keys = (!keys.is_empty())
            .then(|| self.partition_converter.convert_columns(&keys))
            .transpose()?;
        let order_values = evaluate(&self.spec.order.0)?;
        let orders = self
            .order_converter
            .convert_columns(std::slice::from_ref(&order_values))?;
        let numbers = order_numbers(&order_values)?;
        let whole = self.rows.encode(data.columns())?;
        let mut arguments = Vec::with_capacity(self.spec.aggregates.len());
        for call in &self.spec.aggregates {
            let values = call
                .function
                .expressions()
                .iter()
                .map(evaluate)
                .collect::<Result<Vec<_>>>()?;
            let filter = match &call.filter {
                Some(filter) => Some(evaluate(filter)?.as_boolean().clone()),
                None => None,
            };
            arguments.push((values, filter));
        }
        let mut changes = Vec::new();
        let mut late_rows = Vec::new();
        for row in 0..rows {
            let key = keys.as_ref().map_or(&[][..], |k| k.row(row).data());
            let time = if numbers.is_valid(row) {
                numbers.value(row)
            } else {
                i64::MIN
            };
            let row_arguments = arguments
                .iter()
                .map(|(values, filter)| {
                    let passes = filter
                        .as_ref()
                        .is_none_or(|f| f.is_valid(row) && f.value(row));
                    passes
                        .then(|| {
                            values
                                .iter()
                                .map(|v| ScalarValue::try_from_array(v, row))
                                .collect()
                        })
                        .transpose()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(df)?;
            self.arrivals += 1;
            let over_row = OverRow {
                order: orders.row(row).data().into(),
                time,
                arrival: self.arrivals,
                row: whole.row(row).into(),
                arguments: row_arguments,
                emitted: None,
            };
            if self.spec.event_time.is_some() {
                if time <= self.watermark {
                    late_rows.push(row as u32);
                    continue;
                }
                self.partitions
                    .write(key, now, Partition::default)?
                    .pending
                    .push(over_row);
                self.partitions.register_timer(key, time);
            } else if batch.kind(row).is_addition() {
                self.add_updating(key, over_row, now, &mut changes)?;
            } else {
                self.retract_updating(key, whole.row(row), now, &mut changes)?;
            }
        }
        if self.spec.event_time.is_some() && !late_rows.is_empty() {
            let times = epoch_millis(order_values.as_ref())?;
            self.late
                .reject("OVER aggregate", data, &late_rows, &times, self.watermark)?;
        }
        self.partitions.enforce_budget()?;
        if !changes.is_empty() {
            out.push(Message::Data(self.output(changes)?));
        }
        Ok(())
    }

    /// Header (watermark, arrival counter, row format), then the partitions.
    fn snapshot(&mut self) -> Result<Vec<Vec<u8>>> {
        let mut chunks = vec![header_chunk(&[
            self.watermark,
            self.arrivals as i64,
            COMPACT_ROWS,
        ])?];
        chunks.extend(self.partitions.snapshot()?);
        Ok(chunks)
    }

    fn restore(&mut self, subtasks: &SubtaskChunks, owner: &KeyOwner) -> Result<()> {
        self.watermark = restore_subtasks(subtasks, |header, rest| {
            let Some((&[_, arrivals], arrow_rows)) = header_row_format(header, 2) else {
                return Err(bad_state("OVER header"));
            };
            self.arrivals = self.arrivals.max(arrivals as u64);
            restoring(&[&self.rows], arrow_rows, || {
                self.partitions
                    .restore(rest, owner, &self.partition_converter, Instant::now())
            })
        })?;
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<Message>) -> Result<()> {
        if watermark > self.watermark && self.spec.event_time.is_some() {
            let mut changes = Vec::new();
            let mut keys: Vec<Vec<u8>> = self
                .partitions
                .due_timers(watermark)
                .into_iter()
                .map(|(_, key)| key)
                .collect();
            keys.sort_unstable();
            keys.dedup();
            for key in keys {
                self.emit_ready(&key, watermark, &mut changes)?;
            }
            if !changes.is_empty() {
                out.push(Message::Data(self.output(changes)?));
            }
        }
        self.watermark = self.watermark.max(watermark);
        out.push(Message::Watermark(watermark));
        Ok(())
    }
}
