//! Session windows (`SESSION(TABLE t PARTITION BY k, DESCRIPTOR(ts), gap)`):
//! per key, a row opens `[ts, ts + gap)`; windows that touch merge (as Flink's
//! `TimeWindow.intersects`), their accumulators merged. A session is emitted
//! and freed when the watermark passes its end.

use std::sync::Arc;

use arrow::array::Array;
use arrow::datatypes::SchemaRef;
use arrow::row::RowConverter;
use datafusion::logical_expr::Accumulator;
use sluice_core::{ChangeBatch, Message, Result};
use sluice_sql::plan::WindowAggregate;

use crate::aggregate::{
    key_converter, merge_state, new_accumulators, read_states, restore_accumulators,
    snapshot_accumulators, write_states,
};
use crate::late::LateRecords;
use crate::operators::{df, Operator};
use crate::state::{chunk_groups, header_chunk, restore_subtasks, KeyOwner, SubtaskChunks};
use crate::window::{build_output, require_inserts, EvaluatedInput, WindowRow};
use crate::FastHashMap;
use sluice_state::{StateReader, StateWriter};

struct Session {
    start: i64,
    end: i64,
    accumulators: Vec<Box<dyn Accumulator>>,
}

/// The session window aggregation of one subtask.
pub struct SessionAggregateOperator {
    spec: Arc<WindowAggregate>,
    gap: i64,
    converter: RowConverter,
    /// Key bytes → open sessions of that key, not overlapping.
    sessions: FastHashMap<Vec<u8>, Vec<Session>>,
    watermark: i64,
    late: LateRecords,
}

impl SessionAggregateOperator {
    /// An operator for `spec` with inactivity `gap` (ms).
    pub fn new(
        spec: Arc<WindowAggregate>,
        gap: i64,
        input_schema: &SchemaRef,
        late: LateRecords,
    ) -> Result<Self> {
        Ok(SessionAggregateOperator {
            converter: key_converter(&spec.keys, input_schema)?,
            spec,
            gap,
            sessions: FastHashMap::default(),
            watermark: i64::MIN,
            late,
        })
    }

    /// The session that `[start, end)` joins, merging every session it touches.
    fn session_for(&mut self, key: &[u8], start: i64, end: i64) -> Result<&mut Session> {
        let fresh = new_accumulators(&self.spec.aggregates)?;
        let sessions = self.sessions.entry(key.to_vec()).or_default();
        let (touching, mut others): (Vec<Session>, Vec<Session>) = sessions
            .drain(..)
            .partition(|s| s.start <= end && s.end >= start);
        let mut merged = Session {
            start,
            end,
            accumulators: fresh,
        };
        for mut session in touching {
            merged.start = merged.start.min(session.start);
            merged.end = merged.end.max(session.end);
            for (into, from) in merged
                .accumulators
                .iter_mut()
                .zip(session.accumulators.iter_mut())
            {
                merge_state(into.as_mut(), &from.state().map_err(df)?)?;
            }
        }
        others.push(merged);
        *sessions = others;
        sessions
            .last_mut()
            .ok_or_else(|| sluice_core::SluiceError::Runtime("session vanished".into()))
    }
}

impl Operator for SessionAggregateOperator {
    fn process(&mut self, batch: ChangeBatch, _out: &mut Vec<Message>) -> Result<()> {
        require_inserts(&batch)?;
        let input = EvaluatedInput::new(&self.spec, &self.converter, &batch)?;
        // Rows whose session closed already are late; each other row is a
        // group of its own, since it may extend or merge sessions.
        let (on_time, late): (Vec<u32>, Vec<u32>) =
            (0..batch.num_rows() as u32).partition(|&row| {
                let row = row as usize;
                input.times.is_valid(row) && input.times.value(row) + self.gap - 1 > self.watermark
            });
        let singles: Vec<&[u32]> = on_time.iter().map(std::slice::from_ref).collect();
        let arguments = input.inputs.grouped(&singles)?;
        for (group, &row) in on_time.iter().enumerate() {
            let start = input.times.value(row as usize);
            let key = input.inputs.key(row as usize).to_vec();
            let session = self.session_for(&key, start, start + self.gap)?;
            arguments.update(&mut session.accumulators, group)?;
        }
        self.late.reject(
            "session window aggregate",
            &batch.data,
            &late,
            &input.times,
            self.watermark,
        )?;
        Ok(())
    }

    /// Header (watermark), then the open sessions in key groups.
    fn snapshot(&mut self) -> Result<Vec<Vec<u8>>> {
        let mut chunks = vec![header_chunk(&[self.watermark])?];
        let calls = self.spec.aggregates.clone();
        let keys: Vec<Vec<u8>> = self.sessions.keys().cloned().collect();
        for group in chunk_groups(keys.iter().map(Vec::as_slice)) {
            let mut out = StateWriter::new();
            out.u64(group.len() as u64);
            for key in group {
                out.bytes(key);
                let sessions = self
                    .sessions
                    .get_mut(key)
                    .map(Vec::as_mut_slice)
                    .unwrap_or(&mut []);
                out.u64(sessions.len() as u64);
                for session in sessions {
                    out.i64(session.start);
                    out.i64(session.end);
                    write_states(
                        &mut out,
                        &snapshot_accumulators(&mut session.accumulators, &calls)?,
                    );
                }
            }
            chunks.push(out.finish()?);
        }
        Ok(chunks)
    }

    fn restore(&mut self, subtasks: &SubtaskChunks, owner: &KeyOwner) -> Result<()> {
        self.watermark = restore_subtasks(subtasks, |_, rest| {
            for chunk in rest {
                let mut input = StateReader::new(chunk)?;
                let count = input.usize()?;
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    let key = input.bytes()?.to_vec();
                    let mut sessions = Vec::new();
                    for _ in 0..input.usize()? {
                        let start = input.i64()?;
                        let end = input.i64()?;
                        let states = read_states(&mut input)?;
                        sessions.push(Session {
                            start,
                            end,
                            accumulators: restore_accumulators(&self.spec.aggregates, &states)?,
                        });
                    }
                    entries.push((key, sessions));
                }
                let keys: Vec<&[u8]> = entries.iter().map(|(k, _)| k.as_slice()).collect();
                let owned = owner.owns(&self.converter, &keys)?;
                for ((key, sessions), owned) in entries.into_iter().zip(owned) {
                    if owned {
                        self.sessions.insert(key, sessions);
                    }
                }
            }
            Ok(())
        })?;
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<Message>) -> Result<()> {
        if watermark <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark;
        let mut rows: Vec<WindowRow> = Vec::new();
        for (key, sessions) in self.sessions.iter_mut() {
            let (closed, open): (Vec<Session>, Vec<Session>) =
                sessions.drain(..).partition(|s| s.end - 1 <= watermark);
            *sessions = open;
            for mut session in closed {
                let values = session
                    .accumulators
                    .iter_mut()
                    .map(|a| a.evaluate().map_err(df))
                    .collect::<Result<Vec<_>>>()?;
                rows.push((session.start, session.end, key.clone(), values));
            }
        }
        self.sessions.retain(|_, sessions| !sessions.is_empty());
        if !rows.is_empty() {
            rows.sort_by_key(|row| (row.1, row.0));
            out.push(Message::Data(ChangeBatch::inserts(build_output(
                &self.spec,
                &self.converter,
                rows,
            )?)));
        }
        out.push(Message::Watermark(watermark));
        Ok(())
    }
}
