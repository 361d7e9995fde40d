//! Equi-joins over changelog inputs: regular, interval, window and lookup joins.
//!
//! Each side keeps its rows in [`KeyedState`] by join key, encoded as Arrow
//! rows. A new row is matched against the other side's rows of its key (and
//! the join's extra condition); a retraction (`-U`/`-D`) removes its stored
//! copy and retracts the results it produced. Outer sides emit NULL-padded rows
//! for unmatched rows: at once (and retracted when a partner arrives) for a
//! regular join, or when the row expires for interval/window joins, whose
//! result stays append-only. Rows are freed once the watermark passes their
//! expiry (the condition then rules out every future partner).

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, Int8Array, RecordBatch, RecordBatchOptions,
    UInt32Array,
};
use arrow::compute::take;
use arrow::datatypes::TimestampMillisecondType;
use arrow::row::RowConverter;
use datafusion::physical_expr::PhysicalExpr;
use sluice_core::{ChangeBatch, Message, Result, RowKind, SluiceError};
use sluice_sql::plan::Join;

use crate::aggregate::key_converter;
use crate::keyed_state::allocated;
use crate::late::LateRecords;
use crate::operators::{evaluate_array, Operator};
use crate::row_codec::{restoring, RowCodec};
use crate::state::{
    bad_state, decode_batches, encode_batches, header_chunk, restore_subtasks, KeyOwner,
    KeyedState, StateConfig, SubtaskChunks, ValueCodec,
};
use crate::watermark::{EpochMillis, EpochMillisExpr};
use sluice_state::{StateReader, StateWriter};
use smallvec::SmallVec;

/// One stored row of a side.
struct StoredRow {
    /// The whole row, [`RowCodec`] encoded.
    row: Box<[u8]>,
    /// Partners it currently has (for outer sides).
    matches: u32,
    /// Event time after which no partner can arrive (`i64::MAX`: never).
    expires: i64,
}

/// A key's stored rows of one side; most keys of an interval join have
/// one (q7's bids keyed by price), which then needs no allocation of its own.
type StoredRows = SmallVec<[StoredRow; 1]>;

/// Encodes a key's stored rows of one side.
struct StoredRowsCodec {
    rows: Arc<RowCodec>,
}

impl ValueCodec<StoredRows> for StoredRowsCodec {
    fn encode(&self, rows: &mut StoredRows, out: &mut StateWriter) -> Result<()> {
        out.u64(rows.len() as u64);
        for row in rows.iter() {
            out.bytes(&row.row);
            out.u64(u64::from(row.matches));
            out.i64(row.expires);
        }
        Ok(())
    }

    fn decode(&self, input: &mut StateReader) -> Result<StoredRows> {
        (0..input.usize()?)
            .map(|_| {
                Ok(StoredRow {
                    row: self.rows.restored(input.bytes()?)?.into(),
                    matches: u32::try_from(input.u64()?)
                        .map_err(|_| bad_state("join match count"))?,
                    expires: input.i64()?,
                })
            })
            .collect()
    }

    fn heap_size(&self, rows: &StoredRows) -> usize {
        let spilled = if rows.spilled() { rows.capacity() } else { 0 };
        allocated(spilled * std::mem::size_of::<StoredRow>())
            + rows
                .iter()
                .map(|row| allocated(row.row.len()))
                .sum::<usize>()
    }
}

/// Format of join snapshots (the fifth header value): sides are
/// [`KeyedState`] snapshots of [`RowCodec`] rows. Version 2 stored Arrow
/// rows instead; version 1 (four header values) also stored one entry per
/// row, which [`restore_side_v1`] reads.
const JOIN_STATE_FORMAT: i64 = 3;

/// Loads one side of a version 1 join snapshot (an entry per row), keeping
/// the keys `owner` owns; every row that expires gets its timer back.
fn restore_side_v1(
    side: &mut KeyedState<StoredRows>,
    chunks: &[&[u8]],
    owner: &KeyOwner,
    converter: &RowConverter,
    rows: &RowCodec,
    now: Instant,
) -> Result<()> {
    for chunk in chunks {
        let mut input = StateReader::new(chunk)?;
        let count = input.usize()?;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let key = input.bytes()?;
            let row = StoredRow {
                row: rows.restored(input.bytes()?)?.into(),
                matches: u32::try_from(input.u64()?).map_err(|_| bad_state("join match count"))?,
                expires: input.i64()?,
            };
            entries.push((key, row));
        }
        let keys: Vec<&[u8]> = entries.iter().map(|(key, _)| *key).collect();
        let owned = owner.owns(converter, &keys)?;
        for ((key, row), owned) in entries.into_iter().zip(owned) {
            if !owned {
                continue;
            }
            if row.expires != i64::MAX {
                side.register_timer(key, row.expires.saturating_add(1));
            }
            side.write(key, now, StoredRows::new)?.push(row);
        }
        side.enforce_budget()?;
    }
    Ok(())
}

/// Where one side of an output row comes from.
#[derive(Clone, Copy)]
enum Part {
    /// Row of the batch being processed.
    Batch(u32),
    /// The n-th partner candidate of this batch (or the n-th expiring row).
    Stored(u32),
    /// NULLs (the unmatched side of an outer join).
    Null,
}

/// Consecutive added rows of one key, waiting to be stored with one lookup.
#[derive(Default)]
struct StoreRun {
    /// A batch row with the run's key.
    key: Option<usize>,
    rows: Vec<StoredRow>,
}

impl StoreRun {
    /// Stores the run's rows under its key, with a timer per distinct expiry.
    fn store(
        &mut self,
        side: &mut KeyedState<StoredRows>,
        key_rows: &arrow::row::Rows,
        now: Instant,
    ) -> Result<()> {
        let Some(row) = self.key.take() else {
            return Ok(());
        };
        let key = key_rows.row(row).data();
        let mut timer = i64::MAX;
        for stored in &self.rows {
            if stored.expires != i64::MAX && stored.expires != timer {
                timer = stored.expires;
                side.register_timer(key, timer.saturating_add(1));
            }
        }
        side.write(key, now, StoredRows::new)?
            .extend(self.rows.drain(..));
        Ok(())
    }
}

/// Output rows being assembled: both sides' parts and the row kind.
#[derive(Default)]
struct Assembly {
    parts: [Vec<Part>; 2],
    kinds: Vec<i8>,
}

impl Assembly {
    fn push(&mut self, left: Part, right: Part, kind: RowKind) {
        self.parts[0].push(left);
        self.parts[1].push(right);
        self.kinds.push(kind as i8);
    }
}

/// The join operator of one subtask.
pub struct JoinOperator {
    spec: Arc<Join>,
    key_converter: RowConverter,
    /// Whole-row encoders of the left and right inputs.
    row_codecs: [Arc<RowCodec>; 2],
    sides: [KeyedState<StoredRows>; 2],
    watermark: i64,
    /// Lookup joins: whether the table side has been fully read.
    table_loaded: bool,
    /// Lookup joins: probe batches waiting for the table to load.
    waiting: Vec<ChangeBatch>,
    /// Where rows that arrive after their expiry go.
    late: LateRecords,
    /// Per side, the time after which a row can have no new partner.
    expiries: [Option<EpochMillisExpr>; 2],
}

impl JoinOperator {
    /// An operator for `spec`; keys idle for the state TTL are forgotten;
    /// rows that arrive after the watermark passed their expiry are late
    /// (dropped).
    pub fn new(spec: Arc<Join>, state: &StateConfig, late: LateRecords) -> Result<Self> {
        let row_codecs = [
            RowCodec::new(&spec.input_schemas[0], "join")?,
            RowCodec::new(&spec.input_schemas[1], "join")?,
        ];
        Ok(JoinOperator {
            key_converter: key_converter(&spec.left_keys, &spec.input_schemas[0])?,
            sides: row_codecs
                .clone()
                .map(|rows| KeyedState::new(state, StoredRowsCodec { rows })),
            row_codecs,
            watermark: i64::MIN,
            table_loaded: spec.lookup.is_none_or(|lookup| !lookup.wait_for_table),
            waiting: Vec::new(),
            late,
            expiries: spec
                .expiry
                .clone()
                .map(|expiry| expiry.map(EpochMillisExpr::new)),
            spec,
        })
    }

    /// Whether rows of `side` are stored, and whether they probe the other side.
    fn roles(&self, side: usize) -> (bool, bool) {
        match (self.spec.lookup.is_some(), side) {
            // The probe side of a lookup join is matched once and forgotten.
            (true, 0) => (false, true),
            // The table side is only stored.
            (true, _) => (true, false),
            _ => (true, true),
        }
    }

    fn process_side(
        &mut self,
        side: usize,
        batch: ChangeBatch,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        let now = Instant::now();
        for state in &mut self.sides {
            state.expire_idle(now)?;
        }
        let (batch, expiries) = self.drop_late(side, batch)?;
        let data = &batch.data;
        let rows = data.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let evaluate = |expr: &Arc<dyn PhysicalExpr>| evaluate_array(expr.as_ref(), data);
        let key_arrays = self
            .spec
            .keys(side)
            .iter()
            .map(evaluate)
            .collect::<Result<Vec<_>>>()?;
        let key_rows = self.key_converter.convert_columns(&key_arrays)?;
        let whole_rows = self.row_codecs[side].encode(data.columns())?;
        let (stores, probes) = self.roles(side);
        let other = 1 - side;

        // Candidate partners of every row: (row, position among the key's stored rows).
        let mut candidates: Vec<(u32, u32)> = Vec::new();
        let has_key: Vec<bool> = (0..rows)
            .map(|row| key_arrays.iter().all(|a| a.is_valid(row)))
            .collect();
        if probes {
            // Consecutive rows often share their key: look it up once for them.
            let mut previous: Option<(&[u8], u32)> = None;
            for (row, _) in has_key.iter().enumerate().filter(|(_, k)| **k) {
                let key = key_rows.row(row).data();
                let partners = match previous {
                    Some((last, partners)) if last == key => partners,
                    _ => {
                        // Spilled partners come back into memory for this batch.
                        let partners = self.sides[other]
                            .get_mut(key)?
                            .map_or(0, |stored| stored.len() as u32);
                        previous = Some((key, partners));
                        partners
                    }
                };
                candidates.extend((0..partners).map(|p| (row as u32, p)));
            }
        }
        // The partners' columns, decoded once (straight from state) for both
        // the join condition and the output. Consecutive probe rows often
        // share their key (a window's rows): its stored rows are looked up
        // and decoded once for all of them, then repeated per candidate.
        let mut looked_up: Option<&[u8]> = None;
        let mut distinct: Vec<&[u8]> = Vec::new();
        let mut partner_of: Vec<u32> = Vec::with_capacity(candidates.len());
        let mut key_start = 0;
        for &(row, position) in &candidates {
            let key = key_rows.row(row as usize).data();
            if looked_up != Some(key) {
                looked_up = Some(key);
                key_start = distinct.len();
                if let Some(stored) = self.sides[other].get(key) {
                    distinct.extend(stored.iter().map(|partner| &*partner.row));
                }
            }
            let index = key_start + position as usize;
            if index >= distinct.len() {
                return Err(bad_state("join candidate without a stored row"));
            }
            partner_of.push(index as u32);
        }
        let mut partners = self.decode(other, distinct.iter().copied())?;
        if distinct.len() != candidates.len() {
            let repeat = UInt32Array::from(partner_of);
            partners = partners
                .iter()
                .map(|column| take(column.as_ref(), &repeat, None))
                .collect::<Result<_, _>>()?;
        }
        let mask = self.candidate_mask(side, data, &candidates, &partners)?;

        let mut assembly = Assembly::default();
        // Parts for (this side, other side) in (left, right) order.
        let pair = |this: Part, that: Part| {
            if side == 0 {
                (this, that)
            } else {
                (that, this)
            }
        };
        let pads_this = self.spec.pads_immediately(side);
        let pads_other = self.spec.pads_immediately(other);
        let mut candidate = 0;
        // Added rows of one key, stored together when the key changes.
        let mut run = StoreRun::default();
        for (row, &row_has_key) in has_key.iter().enumerate() {
            let kind = batch.kind(row);
            let adds = kind.is_addition();
            let key = key_rows.row(row).data();
            let mut matched = 0u32;
            while candidate < candidates.len() && candidates[candidate].0 as usize == row {
                let (_, position) = candidates[candidate];
                let this_candidate = candidate;
                candidate += 1;
                if !mask.value(this_candidate) {
                    continue;
                }
                matched += 1;
                let Some(partner) = self.sides[other]
                    .get_mut(key)?
                    .and_then(|stored| stored.get_mut(position as usize))
                else {
                    continue;
                };
                let stored = Part::Stored(this_candidate as u32);
                if adds {
                    if pads_other && partner.matches == 0 {
                        let (l, r) = pair(Part::Null, stored);
                        assembly.push(l, r, RowKind::Delete);
                    }
                    partner.matches += 1;
                } else {
                    partner.matches = partner.matches.saturating_sub(1);
                }
                let (l, r) = pair(Part::Batch(row as u32), stored);
                assembly.push(l, r, kind);
                if !adds && pads_other && partner.matches == 0 {
                    let (l, r) = pair(Part::Null, stored);
                    assembly.push(l, r, RowKind::Insert);
                }
            }
            // A row without a key can never match, so an outer side emits it at once.
            let unmatchable = !row_has_key && self.spec.kind.keeps_unmatched(side);
            if matched == 0 && (pads_this || unmatchable) {
                let (l, r) = pair(Part::Batch(row as u32), Part::Null);
                assembly.push(
                    l,
                    r,
                    if adds {
                        RowKind::Insert
                    } else {
                        RowKind::Delete
                    },
                );
            }
            if !stores || !row_has_key {
                continue;
            }
            let bytes = whole_rows.row(row);
            if adds {
                let expires = match &expiries {
                    Some(values) if values.is_valid(row) => values.value(row),
                    _ => i64::MAX,
                };
                if run
                    .key
                    .is_some_and(|run_row| key_rows.row(run_row).data() != key)
                {
                    run.store(&mut self.sides[side], &key_rows, now)?;
                }
                run.key = Some(row);
                run.rows.push(StoredRow {
                    row: bytes.into(),
                    matches: matched,
                    expires,
                });
                continue;
            }
            run.store(&mut self.sides[side], &key_rows, now)?;
            if let Some(stored) = self.sides[side].get_mut(key)? {
                if let Some(found) = stored.iter().position(|s| &*s.row == bytes) {
                    stored.remove(found);
                }
                if stored.is_empty() {
                    self.sides[side].remove(key)?;
                }
            }
        }
        run.store(&mut self.sides[side], &key_rows, now)?;
        tracing::debug!(
            side,
            rows,
            candidates = candidates.len(),
            micros = now.elapsed().as_micros() as u64,
            "join batch matched and stored"
        );
        if assembly.kinds.is_empty() {
            return Ok(());
        }
        let batch_columns = data.columns().to_vec();
        let sources = if side == 0 {
            [batch_columns, partners]
        } else {
            [partners, batch_columns]
        };
        let output = self.assemble(&assembly, &sources)?;
        out.push(Message::Data(with_kinds(output, assembly.kinds)));
        Ok(())
    }

    /// Drops rows whose expiry the watermark already passed: partners they
    /// should have met may be gone (as Flink's interval and window joins do).
    /// Returns the kept rows and their expiries (for a side that has them).
    fn drop_late(
        &self,
        side: usize,
        batch: ChangeBatch,
    ) -> Result<(ChangeBatch, Option<EpochMillis>)> {
        let Some(expiry) = &self.expiries[side] else {
            return Ok((batch, None));
        };
        let expiries = expiry.evaluate(&batch.data)?;
        let rows = batch.num_rows();
        let late: Vec<u32> = (0..rows as u32)
            .filter(|&row| {
                expiries.is_valid(row as usize) && expiries.value(row as usize) < self.watermark
            })
            .collect();
        if late.is_empty() {
            return Ok((batch, Some(expiries)));
        }
        self.late
            .reject("join", &batch.data, &late, &expiries, self.watermark)?;
        let keep = UInt32Array::from(
            (0..rows as u32)
                .filter(|row| late.binary_search(row).is_err())
                .collect::<Vec<_>>(),
        );
        let kept = take(&expiries, &keep, None)?;
        Ok((
            batch.take(&keep)?,
            Some(kept.as_primitive::<TimestampMillisecondType>().clone()),
        ))
    }

    /// Whether each candidate pair passes the join's extra condition.
    fn candidate_mask(
        &self,
        side: usize,
        data: &RecordBatch,
        candidates: &[(u32, u32)],
        partners: &[ArrayRef],
    ) -> Result<arrow::array::BooleanArray> {
        let Some(filter) = &self.spec.filter else {
            return Ok(arrow::array::BooleanArray::from(vec![
                true;
                candidates.len()
            ]));
        };
        let probe = UInt32Array::from_iter_values(candidates.iter().map(|(row, _)| *row));
        let this_columns = data
            .columns()
            .iter()
            .map(|c| take(c.as_ref(), &probe, None))
            .collect::<Result<Vec<_>, _>>()?;
        let other_columns = partners.iter().cloned();
        let columns: Vec<ArrayRef> = if side == 0 {
            this_columns.into_iter().chain(other_columns).collect()
        } else {
            other_columns.chain(this_columns).collect()
        };
        let joined = RecordBatch::try_new_with_options(
            self.spec.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(candidates.len())),
        )?;
        let values = evaluate_array(filter.as_ref(), &joined)?;
        // NULL counts as false.
        let values = values.as_boolean();
        Ok(arrow::array::BooleanArray::from_iter(
            (0..values.len()).map(|i| Some(values.is_valid(i) && values.value(i))),
        ))
    }

    /// Decodes encoded rows of `side` into its columns.
    fn decode<'r>(
        &self,
        side: usize,
        rows: impl Iterator<Item = &'r [u8]>,
    ) -> Result<Vec<ArrayRef>> {
        self.row_codecs[side].decode(rows)
    }

    /// Builds output rows from parts: each side's columns taken from its
    /// source, NULL where the part is [`Part::Null`].
    fn assemble(&self, assembly: &Assembly, sources: &[Vec<ArrayRef>; 2]) -> Result<RecordBatch> {
        let rows = assembly.kinds.len();
        let mut columns = Vec::with_capacity(self.spec.schema.fields().len());
        for ((parts, source), schema) in assembly
            .parts
            .iter()
            .zip(sources)
            .zip(&self.spec.input_schemas)
        {
            let indices = UInt32Array::from_iter(parts.iter().map(|part| match part {
                Part::Batch(i) | Part::Stored(i) => Some(*i),
                Part::Null => None,
            }));
            for (index, field) in schema.fields().iter().enumerate() {
                columns.push(match source.get(index) {
                    Some(source) if indices.null_count() < rows => {
                        take(source.as_ref(), &indices, None)?
                    }
                    _ => new_null_array(field.data_type(), rows),
                });
            }
        }
        Ok(RecordBatch::try_new_with_options(
            self.spec.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }

    /// Keeps both sides within the job's memory budget.
    fn enforce_budget(&mut self) -> Result<()> {
        for side in &mut self.sides {
            side.enforce_budget()?;
        }
        Ok(())
    }

    /// Frees rows whose expiry the watermark passed; outer sides emit their
    /// still-unmatched rows padded with NULLs.
    fn expire(&mut self, watermark: i64, out: &mut Vec<Message>) -> Result<()> {
        for side in 0..2 {
            let pads = self.spec.kind.keeps_unmatched(side) && !self.spec.pads_immediately(side);
            let mut unmatched: Vec<Box<[u8]>> = Vec::new();
            // A key with several due timers (rows with different expiries)
            // is swept once: the sweep frees every row the watermark passed.
            // Only keys that keep rows need remembering: a later timer of a
            // removed key finds nothing.
            let mut swept: crate::FastHashSet<Vec<u8>> = crate::FastHashSet::default();
            for (_, key) in self.sides[side].due_timers(watermark) {
                if !swept.is_empty() && swept.contains(&key) {
                    continue;
                }
                let kept = self.sides[side].change_or_remove(&key, |stored| {
                    stored.retain_mut(|row| {
                        if row.expires >= watermark {
                            return true;
                        }
                        if pads && row.matches == 0 {
                            unmatched.push(std::mem::take(&mut row.row));
                        }
                        false
                    });
                    !stored.is_empty()
                })?;
                if kept == Some(true) {
                    swept.insert(key);
                }
            }
            self.sides[side].enforce_budget()?;
            if unmatched.is_empty() {
                continue;
            }
            let decoded = self.decode(side, unmatched.iter().map(|r| &**r))?;
            let mut assembly = Assembly::default();
            for index in 0..unmatched.len() as u32 {
                let (l, r) = if side == 0 {
                    (Part::Stored(index), Part::Null)
                } else {
                    (Part::Null, Part::Stored(index))
                };
                assembly.push(l, r, RowKind::Insert);
            }
            let mut sources = [Vec::new(), Vec::new()];
            sources[side] = decoded;
            let output = self.assemble(&assembly, &sources)?;
            out.push(Message::Data(ChangeBatch::inserts(output)));
        }
        Ok(())
    }
}

/// Fails for an input other than a join's left (0) or right (1).
pub(crate) fn check_join_side(side: usize) -> Result<()> {
    if side > 1 {
        return Err(SluiceError::Runtime(format!("join has no input {side}")));
    }
    Ok(())
}

/// A change batch with the given row kinds (append-only when all are inserts).
fn with_kinds(data: RecordBatch, kinds: Vec<i8>) -> ChangeBatch {
    if kinds.iter().all(|k| *k == RowKind::Insert as i8) {
        ChangeBatch::inserts(data)
    } else {
        ChangeBatch {
            data,
            kinds: Some(Int8Array::from(kinds)),
        }
    }
}

impl Operator for JoinOperator {
    fn process(&mut self, batch: ChangeBatch, out: &mut Vec<Message>) -> Result<()> {
        self.process_input(0, batch, out)
    }

    fn process_input(
        &mut self,
        side: usize,
        batch: ChangeBatch,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        check_join_side(side)?;
        if side == 0 && !self.table_loaded {
            self.waiting.push(batch);
            return Ok(());
        }
        self.process_side(side, batch, out)?;
        self.enforce_budget()
    }

    fn on_input_end(&mut self, side: usize, out: &mut Vec<Message>) -> Result<()> {
        if side == 1 && !self.table_loaded {
            self.table_loaded = true;
            for batch in std::mem::take(&mut self.waiting) {
                self.process_side(0, batch, out)?;
                self.enforce_budget()?;
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<Message>) -> Result<()> {
        if watermark > self.watermark {
            self.watermark = watermark;
            self.expire(watermark, out)?;
        }
        out.push(Message::Watermark(watermark));
        Ok(())
    }

    /// Header (watermark, table loaded, left and right chunk counts, format),
    /// the left side's chunks, the right side's, then lookup probes waiting
    /// for the table.
    fn snapshot(&mut self) -> Result<Vec<Vec<u8>>> {
        let left = self.sides[0].snapshot()?;
        let right = self.sides[1].snapshot()?;
        let mut chunks = vec![header_chunk(&[
            self.watermark,
            self.table_loaded as i64,
            left.len() as i64,
            right.len() as i64,
            JOIN_STATE_FORMAT,
        ])?];
        chunks.extend(left);
        chunks.extend(right);
        chunks.push(encode_batches(&self.waiting)?);
        Ok(chunks)
    }

    fn restore(&mut self, subtasks: &SubtaskChunks, owner: &KeyOwner) -> Result<()> {
        let now = Instant::now();
        self.watermark = restore_subtasks(subtasks, |header, rest| {
            let (loaded, left, right, format) = match header[..] {
                [_, loaded, left, right] => (loaded, left, right, 1),
                [_, loaded, left, right, format] => (loaded, left, right, format),
                _ => return Err(bad_state("join header")),
            };
            let (left, right) = (left as usize, right as usize);
            if rest.len() != left + right + 1 {
                return Err(bad_state("join chunk count"));
            }
            self.table_loaded = loaded != 0;
            let [left_state, right_state] = &mut self.sides;
            let converter = &self.key_converter;
            let (left_chunks, right_chunks) = (&rest[..left], &rest[left..left + right]);
            if format > JOIN_STATE_FORMAT {
                return Err(SluiceError::State(format!(
                    "join state format {format} is newer than this Sluice reads"
                )));
            }
            let [left_rows, right_rows] = &self.row_codecs;
            restoring(&[left_rows, right_rows], format < 3, || {
                if format == 1 {
                    restore_side_v1(left_state, left_chunks, owner, converter, left_rows, now)?;
                    restore_side_v1(right_state, right_chunks, owner, converter, right_rows, now)
                } else {
                    left_state.restore(left_chunks, owner, converter, now)?;
                    right_state.restore(right_chunks, owner, converter, now)
                }
            })?;
            for batch in decode_batches(rest[left + right])? {
                if let Some(mine) = owner.filter_batch(&batch, &self.spec.left_keys)? {
                    self.waiting.push(mine);
                }
            }
            Ok(())
        })?;
        Ok(())
    }
}
