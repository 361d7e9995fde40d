//! Session windows (`SESSION(TABLE t PARTITION BY k, DESCRIPTOR(ts), gap)`):
//! per key, a row opens `[ts, ts + gap)`; windows that touch merge (as Flink's
//! `TimeWindow.intersects`), their accumulators merged. A session is emitted
//! and freed when the watermark passes its end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use datafusion::logical_expr::Accumulator;
use sluice_core::{ChangeBatch, Message, Result};
use sluice_sql::plan::WindowAggregate;

use crate::operators::{df, Operator};
use crate::window::{build_output, require_inserts, EvaluatedInput, WindowRow};

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
    sessions: HashMap<Vec<u8>, Vec<Session>>,
    watermark: i64,
    late_records: Arc<AtomicU64>,
}

impl SessionAggregateOperator {
    /// An operator for `spec` with inactivity `gap` (ms).
    pub fn new(
        spec: Arc<WindowAggregate>,
        gap: i64,
        input_schema: &SchemaRef,
        late_records: Arc<AtomicU64>,
    ) -> Result<Self> {
        let fields = spec
            .keys
            .iter()
            .map(|key| key.data_type(input_schema).map(SortField::new).map_err(df))
            .collect::<Result<Vec<_>>>()?;
        Ok(SessionAggregateOperator {
            converter: RowConverter::new(fields)?,
            spec,
            gap,
            sessions: HashMap::new(),
            watermark: i64::MIN,
            late_records,
        })
    }

    fn new_accumulators(&self) -> Result<Vec<Box<dyn Accumulator>>> {
        self.spec
            .aggregates
            .iter()
            .map(|call| call.function.create_accumulator().map_err(df))
            .collect()
    }

    /// The session that `[start, end)` joins, merging every session it touches.
    fn session_for(&mut self, key: &[u8], start: i64, end: i64) -> Result<&mut Session> {
        let fresh = self.new_accumulators()?;
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
                let state = from.state().map_err(df)?;
                let arrays = state
                    .iter()
                    .map(|v| v.to_array_of_size(1))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(df)?;
                into.merge_batch(&arrays).map_err(df)?;
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
        let mut late = 0;
        for row in 0..batch.num_rows() {
            if input.times.is_null(row) {
                late += 1;
                continue;
            }
            let start = input.times.value(row);
            let end = start + self.gap;
            if end - 1 <= self.watermark {
                late += 1;
                continue;
            }
            let key = input.key(row).to_vec();
            let session = self.session_for(&key, start, end)?;
            for (index, accumulator) in session.accumulators.iter_mut().enumerate() {
                if let Some(mask) = &input.filters[index] {
                    if !(mask.is_valid(row) && mask.value(row)) {
                        continue;
                    }
                }
                let values: Vec<ArrayRef> = input.arguments[index]
                    .iter()
                    .map(|a| a.slice(row, 1))
                    .collect();
                accumulator.update_batch(&values).map_err(df)?;
            }
        }
        if late > 0 {
            self.late_records.fetch_add(late, Ordering::Relaxed);
        }
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
