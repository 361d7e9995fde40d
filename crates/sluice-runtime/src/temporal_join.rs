//! Event-time temporal joins (`JOIN versioned FOR SYSTEM_TIME AS OF l.ts`).
//! The right side is a versioned table: per key, its rows over time (an
//! insert or update starts a version, a delete ends the key). A left row
//! waits until the watermark passes its time, then joins the version valid
//! at that time: the latest one not after it. Versions no future left row
//! can see are dropped as the watermark advances. The result is append-only.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{new_null_array, Array, AsArray, RecordBatch, RecordBatchOptions, UInt32Array};
use arrow::compute::take;
use arrow::row::RowConverter;
use datafusion::physical_expr::PhysicalExpr;
use sluice_core::{ChangeBatch, Message, Result, RowKind, SluiceError};
use sluice_sql::plan::{Join, JoinKind, VersionedJoin};

use crate::aggregate::key_converter;
use crate::keyed_state::allocated;
use crate::late::LateRecords;
use crate::operators::{evaluate_array, Operator};
use crate::row_codec::{header_row_format, restoring, EncodedRows, RowCodec, COMPACT_ROWS};
use crate::state::{
    bad_state, header_chunk, restore_subtasks, KeyOwner, KeyedState, StateConfig, SubtaskChunks,
    ValueCodec,
};
use crate::watermark::epoch_millis;
use sluice_state::{StateReader, StateWriter};

/// A key's versions: start time → row (`None`: deleted from then on).
type Versions = BTreeMap<i64, Option<Box<[u8]>>>;

/// Encodes a key's versions (rows of the right side).
struct VersionsCodec {
    rows: Arc<RowCodec>,
}

impl ValueCodec<Versions> for VersionsCodec {
    fn encode(&self, versions: &mut Versions, out: &mut StateWriter) -> Result<()> {
        out.u64(versions.len() as u64);
        for (start, row) in versions.iter() {
            out.i64(*start);
            match row {
                None => out.bool(false),
                Some(row) => {
                    out.bool(true);
                    out.bytes(row);
                }
            }
        }
        Ok(())
    }

    fn decode(&self, input: &mut StateReader) -> Result<Versions> {
        let mut versions = Versions::new();
        for _ in 0..input.usize()? {
            let start = input.i64()?;
            let row = if input.bool()? {
                Some(self.rows.restored(input.bytes()?)?.into())
            } else {
                None
            };
            versions.insert(start, row);
        }
        Ok(versions)
    }

    fn heap_size(&self, versions: &Versions) -> usize {
        versions
            .values()
            .map(|row| 48 + row.as_ref().map_or(0, |r| allocated(r.len())))
            .sum()
    }
}

/// Encodes a key's left rows waiting for the watermark.
struct WaitingCodec {
    rows: Arc<RowCodec>,
}

impl ValueCodec<Vec<(i64, Box<[u8]>)>> for WaitingCodec {
    fn encode(&self, rows: &mut Vec<(i64, Box<[u8]>)>, out: &mut StateWriter) -> Result<()> {
        out.u64(rows.len() as u64);
        for (time, row) in rows.iter() {
            out.i64(*time);
            out.bytes(row);
        }
        Ok(())
    }

    fn decode(&self, input: &mut StateReader) -> Result<Vec<(i64, Box<[u8]>)>> {
        (0..input.usize()?)
            .map(|_| Ok((input.i64()?, self.rows.restored(input.bytes()?)?.into())))
            .collect()
    }

    fn heap_size(&self, rows: &Vec<(i64, Box<[u8]>)>) -> usize {
        allocated(rows.capacity() * 24)
            + rows
                .iter()
                .map(|(_, row)| allocated(row.len()))
                .sum::<usize>()
    }
}

/// The temporal join of one subtask.
pub struct TemporalJoinOperator {
    spec: Arc<Join>,
    times: VersionedJoin,
    key_converter: RowConverter,
    row_codecs: [Arc<RowCodec>; 2],
    versions: KeyedState<Versions>,
    /// Left rows waiting for the watermark: (time, row) per key.
    waiting: KeyedState<Vec<(i64, Box<[u8]>)>>,
    /// Keys whose versions changed since the last cleanup.
    changed: HashSet<Vec<u8>>,
    watermark: i64,
    late: LateRecords,
}

impl TemporalJoinOperator {
    /// An operator for `spec` (whose `versioned` is set); late left rows go to `late`.
    pub fn new(spec: Arc<Join>, state: &StateConfig, late: LateRecords) -> Result<Self> {
        let times = spec
            .versioned
            .clone()
            .ok_or_else(|| SluiceError::Runtime("not a temporal join".into()))?;
        let row_codecs = [
            RowCodec::new(&spec.input_schemas[0], "temporal join")?,
            RowCodec::new(&spec.input_schemas[1], "temporal join")?,
        ];
        Ok(TemporalJoinOperator {
            times,
            key_converter: key_converter(&spec.left_keys, &spec.input_schemas[0])?,
            versions: KeyedState::new(
                state,
                VersionsCodec {
                    rows: row_codecs[1].clone(),
                },
            ),
            waiting: KeyedState::new(
                state,
                WaitingCodec {
                    rows: row_codecs[0].clone(),
                },
            ),
            row_codecs,
            changed: HashSet::new(),
            watermark: i64::MIN,
            late,
            spec,
        })
    }

    /// Keys, whole rows and times of a batch of side `side`.
    fn evaluate(
        &self,
        side: usize,
        batch: &ChangeBatch,
        time: &Arc<dyn PhysicalExpr>,
    ) -> Result<(
        arrow::row::Rows,
        EncodedRows,
        arrow::array::TimestampMillisecondArray,
        Vec<bool>,
    )> {
        let data = &batch.data;
        let rows = data.num_rows();
        let evaluate = |expr: &Arc<dyn PhysicalExpr>| evaluate_array(expr.as_ref(), data);
        let keys = self.spec.keys(side);
        let key_arrays = keys.iter().map(evaluate).collect::<Result<Vec<_>>>()?;
        let has_key = (0..rows)
            .map(|row| key_arrays.iter().all(|a| a.is_valid(row)))
            .collect();
        let key_rows = self.key_converter.convert_columns(&key_arrays)?;
        let whole = self.row_codecs[side].encode(data.columns())?;
        let times = epoch_millis(evaluate(time)?.as_ref())?;
        Ok((key_rows, whole, times, has_key))
    }

    fn add_versions(&mut self, batch: &ChangeBatch) -> Result<()> {
        let now = Instant::now();
        let (keys, whole, times, has_key) =
            self.evaluate(1, batch, &self.times.right_time.clone())?;
        for (row, &row_has_key) in has_key.iter().enumerate() {
            if !row_has_key || times.is_null(row) {
                continue;
            }
            let version = match batch.kind(row) {
                RowKind::Insert | RowKind::UpdateAfter => Some(whole.row(row).into()),
                RowKind::Delete => None,
                // The update's new row follows as `+U`.
                RowKind::UpdateBefore => continue,
            };
            let key = keys.row(row).data();
            self.versions
                .write(key, now, BTreeMap::new)?
                .insert(times.value(row), version);
            self.changed.insert(key.to_vec());
        }
        Ok(())
    }

    fn add_probes(&mut self, batch: &ChangeBatch) -> Result<()> {
        let now = Instant::now();
        let (keys, whole, times, _) = self.evaluate(0, batch, &self.times.left_time.clone())?;
        let mut late = Vec::new();
        for row in 0..batch.num_rows() {
            if !batch.kind(row).is_addition() {
                return Err(SluiceError::Unsupported(
                    "a temporal join whose left (probe) input is updating".into(),
                ));
            }
            if times.is_null(row) || times.value(row) <= self.watermark {
                late.push(row as u32);
                continue;
            }
            let key = keys.row(row).data();
            let time = times.value(row);
            self.waiting
                .write(key, now, Vec::new)?
                .push((time, whole.row(row).into()));
            self.waiting.register_timer(key, time);
        }
        self.late
            .reject("temporal join", &batch.data, &late, &times, self.watermark)
    }

    /// Joins the left rows the watermark passed with their versions.
    fn emit(&mut self, watermark: i64, out: &mut Vec<Message>) -> Result<()> {
        let mut keys: Vec<Vec<u8>> = self
            .waiting
            .due_timers(watermark)
            .into_iter()
            .map(|(_, k)| k)
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut probes: Vec<Box<[u8]>> = Vec::new();
        let mut partners: Vec<Option<Box<[u8]>>> = Vec::new();
        for key in &keys {
            let Some(rows) = self.waiting.get_mut(key)? else {
                continue;
            };
            let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(rows)
                .into_iter()
                .partition(|(t, _)| *t <= watermark);
            *rows = later;
            if rows.is_empty() {
                self.waiting.remove(key)?;
            }
            self.versions.load(key)?;
            let versions = self.versions.get(key);
            for (time, row) in ready {
                let version = versions
                    .and_then(|v| v.range(..=time).next_back())
                    .and_then(|(_, row)| row.clone());
                probes.push(row);
                partners.push(version);
            }
            self.changed.insert(key.clone());
        }
        self.clean_versions(watermark)?;
        self.versions.enforce_budget()?;
        self.waiting.enforce_budget()?;
        if probes.is_empty() {
            return Ok(());
        }
        let left = self.row_codecs[0].decode(probes.iter().map(|r| &**r))?;
        let right_rows = self.row_codecs[1].decode(partners.iter().flatten().map(|r| &**r))?;
        let mut next = 0u32;
        let indices = UInt32Array::from_iter(partners.iter().map(|p| {
            p.as_ref().map(|_| {
                next += 1;
                next - 1
            })
        }));
        let count = probes.len();
        let mut columns = left;
        for (index, field) in self.spec.input_schemas[1].fields().iter().enumerate() {
            columns.push(match right_rows.get(index) {
                Some(array) if indices.null_count() < count => {
                    take(array.as_ref(), &indices, None)?
                }
                _ => new_null_array(field.data_type(), count),
            });
        }
        let joined = RecordBatch::try_new_with_options(
            self.spec.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(count)),
        )?;
        let has_version =
            arrow::array::BooleanArray::from_iter(partners.iter().map(|p| Some(p.is_some())));
        let mut keep =
            match &self.spec.filter {
                Some(filter) => {
                    let values = evaluate_array(filter.as_ref(), &joined)?;
                    let values = values.as_boolean();
                    arrow::array::BooleanArray::from_iter((0..count).map(|i| {
                        Some(has_version.value(i) && values.is_valid(i) && values.value(i))
                    }))
                }
                None => has_version,
            };
        if self.spec.kind == JoinKind::Left {
            // Unmatched left rows stay, with NULLs for the right side.
            let right_width = self.spec.input_schemas[1].fields().len();
            let left_width = joined.num_columns() - right_width;
            let unmatched = arrow::compute::not(&keep)?;
            let mut columns = joined.columns().to_vec();
            for column in columns.iter_mut().skip(left_width) {
                *column = arrow::compute::nullif(column, &unmatched)?;
            }
            let padded = RecordBatch::try_new(self.spec.schema.clone(), columns)?;
            out.push(Message::Data(ChangeBatch::inserts(padded)));
            return Ok(());
        }
        keep = arrow::array::BooleanArray::from_iter(keep.iter().map(|v| Some(v.unwrap_or(false))));
        let kept = arrow::compute::filter_record_batch(&joined, &keep)?;
        if kept.num_rows() > 0 {
            out.push(Message::Data(ChangeBatch::inserts(kept)));
        }
        Ok(())
    }

    /// Drops versions that no left row after `watermark` can see.
    fn clean_versions(&mut self, watermark: i64) -> Result<()> {
        for key in std::mem::take(&mut self.changed) {
            let Some(versions) = self.versions.get_mut(&key)? else {
                continue;
            };
            if let Some((&current, _)) = versions.range(..=watermark).next_back() {
                *versions = versions.split_off(&current);
            }
            let deleted_for_good = versions.len() == 1 && versions.values().all(Option::is_none);
            if versions.is_empty() || deleted_for_good {
                self.versions.remove(&key)?;
            }
        }
        Ok(())
    }
}

impl Operator for TemporalJoinOperator {
    fn process(&mut self, batch: ChangeBatch, out: &mut Vec<Message>) -> Result<()> {
        self.process_input(0, batch, out)
    }

    fn process_input(
        &mut self,
        side: usize,
        batch: ChangeBatch,
        _out: &mut Vec<Message>,
    ) -> Result<()> {
        let now = Instant::now();
        self.versions.expire_idle(now)?;
        self.waiting.expire_idle(now)?;
        match side {
            0 => self.add_probes(&batch)?,
            1 => self.add_versions(&batch)?,
            other => {
                return Err(SluiceError::Runtime(format!(
                    "temporal join has no input {other}"
                )))
            }
        }
        self.versions.enforce_budget()?;
        self.waiting.enforce_budget()
    }

    /// Header (watermark, version chunk count), the versions, the waiting
    /// rows, then the keys changed since the last cleanup.
    fn snapshot(&mut self) -> Result<Vec<Vec<u8>>> {
        let versions = self.versions.snapshot()?;
        let waiting = self.waiting.snapshot()?;
        let mut chunks = vec![header_chunk(&[
            self.watermark,
            versions.len() as i64,
            COMPACT_ROWS,
        ])?];
        chunks.extend(versions);
        chunks.extend(waiting);
        let mut changed = StateWriter::new();
        let mut keys: Vec<&Vec<u8>> = self.changed.iter().collect();
        keys.sort_unstable();
        changed.u64(keys.len() as u64);
        for key in keys {
            changed.bytes(key);
        }
        chunks.push(changed.finish()?);
        Ok(chunks)
    }

    fn restore(&mut self, subtasks: &SubtaskChunks, owner: &KeyOwner) -> Result<()> {
        let now = Instant::now();
        self.watermark = restore_subtasks(subtasks, |header, rest| {
            let Some((&[_, versions], arrow_rows)) = header_row_format(header, 2) else {
                return Err(bad_state("temporal join header"));
            };
            let versions = versions as usize;
            let Some((changed, rest)) = rest.split_last() else {
                return Err(bad_state("temporal join chunks"));
            };
            if rest.len() < versions {
                return Err(bad_state("temporal join chunk count"));
            }
            let [left_rows, right_rows] = &self.row_codecs;
            restoring(&[left_rows, right_rows], arrow_rows, || {
                self.versions
                    .restore(&rest[..versions], owner, &self.key_converter, now)?;
                self.waiting
                    .restore(&rest[versions..], owner, &self.key_converter, now)
            })?;
            let mut input = StateReader::new(changed)?;
            let keys: Vec<Vec<u8>> = (0..input.usize()?)
                .map(|_| input.bytes().map(<[u8]>::to_vec))
                .collect::<Result<_>>()?;
            let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            let owned = owner.owns(&self.key_converter, &refs)?;
            self.changed.extend(
                keys.into_iter()
                    .zip(owned)
                    .filter(|(_, owned)| *owned)
                    .map(|(key, _)| key),
            );
            Ok(())
        })?;
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<Message>) -> Result<()> {
        if watermark > self.watermark {
            self.watermark = watermark;
            self.emit(watermark, out)?;
        }
        out.push(Message::Watermark(watermark));
        Ok(())
    }
}
