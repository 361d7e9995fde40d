//! Top-N and deduplication (`ROW_NUMBER() ... WHERE rownum <= N`). Each
//! partition keeps its rows sorted by the `ORDER BY` key (ties in arrival
//! order). Over an append-only input only the first N rows can ever rank, so
//! only they are kept; over an updating input every row is kept, because a
//! retraction lets the next one in. After each batch, the first N of every
//! partition the batch touched are compared with what they were before it,
//! and the difference is emitted: `-D`/`+I` for rows that left or entered
//! (plus `-U`/`+U` for rows whose row number moved, when the row number is
//! part of the result), retractions first. A row that entered and left
//! within one batch is never emitted. A window Top-N instead emits each
//! window's ranking once, when the watermark passes the window's end.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Int8Array, RecordBatch, UInt64Array};
use arrow::compute::cast;
use arrow::row::{RowConverter, SortField};
use sluice_core::{ChangeBatch, Message, Result, RowKind, SluiceError};
use sluice_sql::plan::TopN;

use crate::keyed_state::allocated;
use crate::late::LateRecords;
use crate::operators::{df, evaluate_array, Operator};
use crate::row_codec::{header_row_format, restoring, RowCodec, COMPACT_ROWS};
use crate::state::{
    bad_state, header_chunk, restore_subtasks, KeyOwner, KeyedState, StateConfig, SubtaskChunks,
    ValueCodec,
};
use crate::watermark::epoch_millis;
use crate::{FastHashMap, FastHashSet};
use sluice_state::{StateReader, StateWriter};
use smallvec::SmallVec;

/// One row of a partition.
struct RankedRow {
    /// The `ORDER BY` key (encoded so that byte order is rank order)
    /// followed by the whole row, in one allocation.
    bytes: Box<[u8]>,
    /// Length of the `ORDER BY` key at the start of `bytes`.
    order_length: u32,
    /// Arrival number, for ties.
    arrival: u64,
}

impl RankedRow {
    fn new(order: &[u8], arrival: u64, row: &[u8]) -> Result<Self> {
        let order_length = u32::try_from(order.len())
            .map_err(|_| SluiceError::Runtime("Top-N: ORDER BY key over 4 GB".into()))?;
        let mut bytes = Vec::with_capacity(order.len() + row.len());
        bytes.extend_from_slice(order);
        bytes.extend_from_slice(row);
        Ok(RankedRow {
            bytes: bytes.into_boxed_slice(),
            order_length,
            arrival,
        })
    }

    fn order(&self) -> &[u8] {
        &self.bytes[..self.order_length as usize]
    }

    fn row(&self) -> &[u8] {
        &self.bytes[self.order_length as usize..]
    }
}

/// A partition's rows in rank order; most partitions of a deduplication
/// (`rn <= 1`) hold one row, which then needs no allocation of its own.
type Ranking = SmallVec<[RankedRow; 1]>;

/// Encodes a partition's ranked rows.
struct RankedRowsCodec {
    rows: Arc<RowCodec>,
}

impl ValueCodec<Ranking> for RankedRowsCodec {
    fn encode(&self, rows: &mut Ranking, out: &mut StateWriter) -> Result<()> {
        out.u64(rows.len() as u64);
        for ranked in rows.iter() {
            out.bytes(ranked.order());
            out.u64(ranked.arrival);
            out.bytes(ranked.row());
        }
        Ok(())
    }

    fn decode(&self, input: &mut StateReader) -> Result<Ranking> {
        (0..input.usize()?)
            .map(|_| {
                let order = input.bytes()?;
                let arrival = input.u64()?;
                RankedRow::new(order, arrival, &self.rows.restored(input.bytes()?)?)
            })
            .collect()
    }

    fn heap_size(&self, rows: &Ranking) -> usize {
        let spilled = if rows.spilled() { rows.capacity() } else { 0 };
        allocated(spilled * std::mem::size_of::<RankedRow>())
            + rows.iter().map(|r| allocated(r.bytes.len())).sum::<usize>()
    }
}

/// A change to emit: the row, its row number, and the kind.
type Change<'r> = (&'r [u8], u64, RowKind);

/// A partition a batch touched, with the arrival numbers of its first N rows
/// (in rank order) from before the batch.
struct Touched<'b> {
    partition: &'b [u8],
    before: Vec<u64>,
}

/// Where an arrival number sits in a ranking: a linear scan for short
/// rankings, a hash map for long ones.
struct Ranks<'a> {
    arrivals: &'a [u64],
    index: Option<FastHashMap<u64, usize>>,
}

impl<'a> Ranks<'a> {
    fn new(arrivals: &'a [u64]) -> Self {
        let index = (arrivals.len() > 16)
            .then(|| arrivals.iter().enumerate().map(|(i, a)| (*a, i)).collect());
        Ranks { arrivals, index }
    }

    /// The 0-based position of `arrival`, if it is in the ranking.
    fn position(&self, arrival: u64) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(&arrival).copied(),
            None => self.arrivals.iter().position(|a| *a == arrival),
        }
    }
}

/// The Top-N operator of one subtask.
pub struct TopNOperator {
    spec: Arc<TopN>,
    partition_converter: RowConverter,
    order_converter: RowConverter,
    rows: Arc<RowCodec>,
    partitions: KeyedState<Ranking>,
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
        let rows = RowCodec::new(schema, "Top-N")?;
        Ok(TopNOperator {
            partition_converter,
            order_converter: RowConverter::new(order_fields)?,
            partitions: KeyedState::new(state, RankedRowsCodec { rows: rows.clone() }),
            rows,
            arrivals: 0,
            watermark: i64::MIN,
            late,
            spec,
        })
    }

    /// Adds a row (its `ORDER BY` key and whole row) to its partition. Rows
    /// pushed out of an append-only partition's first N go to `removed`
    /// (their last emitted copy may need retracting). With `before`, first
    /// records the arrival numbers of the partition's first N (in the same
    /// lookup).
    fn insert(
        &mut self,
        partition: &[u8],
        (order, row): (&[u8], &[u8]),
        now: Instant,
        removed: &mut FastHashMap<u64, RankedRow>,
        before: Option<&mut Vec<u64>>,
    ) -> Result<()> {
        let limit = self.spec.limit;
        let keep_all = self.spec.updating_input;
        let rows = self.partitions.write(partition, now, Ranking::new)?;
        if let Some(before) = before {
            before.extend(rows.iter().take(limit).map(|r| r.arrival));
        }
        let arrival = self.arrivals;
        let position = rows.partition_point(|r| (r.order(), r.arrival) <= (order, arrival));
        if position >= limit && !keep_all {
            return Ok(());
        }
        rows.insert(position, RankedRow::new(order, arrival, row)?);
        if !keep_all {
            for dropped in rows.drain(limit.min(rows.len())..) {
                removed.insert(dropped.arrival, dropped);
            }
        }
        Ok(())
    }

    /// Takes a row back out of its partition (into `removed`); `before` as
    /// for [`TopNOperator::insert`].
    fn retract(
        &mut self,
        partition: &[u8],
        row: &[u8],
        removed: &mut FastHashMap<u64, RankedRow>,
        before: Option<&mut Vec<u64>>,
    ) -> Result<()> {
        let limit = self.spec.limit;
        let Some(rows) = self.partitions.get_mut(partition)? else {
            return Ok(());
        };
        if let Some(before) = before {
            before.extend(rows.iter().take(limit).map(|r| r.arrival));
        }
        let Some(position) = rows.iter().position(|r| r.row() == row) else {
            return Ok(());
        };
        let gone = rows.remove(position);
        removed.insert(gone.arrival, gone);
        if rows.is_empty() {
            self.partitions.remove(partition)?;
        }
        Ok(())
    }

    /// The difference between each touched partition's first N before the
    /// batch and now: retractions first, then additions.
    fn changes<'r>(
        &'r self,
        touched: &[Touched<'_>],
        removed: &'r FastHashMap<u64, RankedRow>,
    ) -> Result<Vec<Change<'r>>> {
        let limit = self.spec.limit;
        let with_rank = self.spec.rank_output;
        let mut retractions = Vec::new();
        let mut additions = Vec::new();
        for Touched { partition, before } in touched {
            let rows = self.partitions.get(partition).map_or(&[][..], |r| &r[..]);
            let after: Vec<u64> = rows.iter().take(limit).map(|r| r.arrival).collect();
            let (before_ranks, after_ranks) = (Ranks::new(before), Ranks::new(&after));
            for (old, &arrival) in before.iter().enumerate() {
                let kind = match after_ranks.position(arrival) {
                    None => RowKind::Delete,
                    Some(new) if with_rank && new != old => RowKind::UpdateBefore,
                    Some(_) => continue,
                };
                // A row that left is in `removed`, or (over an updating
                // input) still kept behind the first N.
                let row = match removed.get(&arrival) {
                    Some(gone) => gone.row(),
                    None => rows
                        .iter()
                        .find(|r| r.arrival == arrival)
                        .map(RankedRow::row)
                        .ok_or_else(|| bad_state("Top-N row vanished"))?,
                };
                retractions.push((row, old as u64 + 1, kind));
            }
            for (new, ranked) in rows.iter().take(limit).enumerate() {
                let kind = match before_ranks.position(ranked.arrival) {
                    None => RowKind::Insert,
                    Some(old) if with_rank && old != new => RowKind::UpdateAfter,
                    Some(_) => continue,
                };
                additions.push((ranked.row(), new as u64 + 1, kind));
            }
        }
        retractions.append(&mut additions);
        Ok(retractions)
    }

    fn output(&self, changes: &[Change<'_>]) -> Result<ChangeBatch> {
        let mut columns = self.rows.decode(changes.iter().map(|(row, _, _)| *row))?;
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
            evaluate_array(expr.as_ref(), data)
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
        let whole = self.rows.encode(data.columns())?;
        let window_ends = match self.spec.window_end {
            Some(column) => Some(epoch_millis(data.column(column).as_ref())?),
            None => None,
        };
        let mut late_rows = Vec::new();
        // Partitions in order of first touch, with their first N before.
        let mut touched: Vec<Touched> = Vec::new();
        let mut seen: FastHashSet<&[u8]> = FastHashSet::default();
        let mut removed: FastHashMap<u64, RankedRow> = FastHashMap::default();
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
            let first_touch = window_ends.is_none() && seen.insert(partition);
            let mut before = Vec::new();
            let record = first_touch.then_some(&mut before);
            if batch.kind(row).is_addition() {
                self.arrivals += 1;
                let ranked = (orders.row(row).data(), whole.row(row));
                self.insert(partition, ranked, now, &mut removed, record)?;
            } else {
                self.retract(partition, whole.row(row), &mut removed, record)?;
            }
            if first_touch {
                touched.push(Touched { partition, before });
            }
        }
        if let Some(ends) = &window_ends {
            // A row is late when its window closed already.
            self.late
                .reject("window Top-N", data, &late_rows, ends, self.watermark)?;
        }
        let changes = self.changes(&touched, &removed)?;
        if !changes.is_empty() {
            out.push(Message::Data(self.output(&changes)?));
        }
        drop(changes);
        self.partitions.enforce_budget()?;
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
                return Err(bad_state("Top-N header"));
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
        if watermark > self.watermark {
            self.watermark = watermark;
            let mut rankings = Vec::new();
            for (_, partition) in self.partitions.due_timers(watermark) {
                if let Some(rows) = self.partitions.remove(&partition)? {
                    rankings.push(rows);
                }
            }
            let changes: Vec<Change<'_>> = rankings
                .iter()
                .flat_map(|rows| {
                    rows.iter()
                        .enumerate()
                        .map(|(rank, r)| (r.row(), rank as u64 + 1, RowKind::Insert))
                })
                .collect();
            if !changes.is_empty() {
                out.push(Message::Data(self.output(&changes)?));
            }
        }
        out.push(Message::Watermark(watermark));
        Ok(())
    }
}
