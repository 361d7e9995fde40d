//! Rows that reach a window operator behind the watermark: counted, and with
//! `SET 'table.exec.late-data' = 'dlq'` written to a dead letter file with the
//! reason `late` and the watermark they missed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, TimestampMillisecondArray, UInt32Array};
use sluice_core::dlq::{DeadLetter, DeadLetterQueue};
use sluice_core::{Result, SluiceError};

/// Where late rows go; shared by every event-time operator of a job.
#[derive(Debug, Clone, Default)]
pub struct LateRecords {
    counter: Arc<AtomicU64>,
    /// Late rows per operator kind (`window aggregate`, `join`, ...).
    per_operator: Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>,
    dead_letters: Option<Arc<DeadLetterQueue>>,
}

fn format_millis(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|dt| dt.naive_utc().format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| millis.to_string())
}

impl LateRecords {
    /// Late rows are counted, and written to `dead_letters` when given.
    pub fn new(dead_letters: Option<Arc<DeadLetterQueue>>) -> Self {
        LateRecords {
            counter: Arc::default(),
            per_operator: Arc::default(),
            dead_letters,
        }
    }

    /// How many late rows were dropped.
    pub fn count(&self) -> u64 {
        self.counter.load(Ordering::Relaxed)
    }

    /// Late rows dropped per operator kind.
    pub fn per_operator(&self) -> Vec<(String, u64)> {
        self.per_operator
            .lock()
            .map(|counts| counts.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }

    /// Drops `rows` of `batch`, whose event times are `times`, as late for the
    /// operator `operator` at `watermark`.
    pub fn reject(
        &self,
        operator: &str,
        batch: &RecordBatch,
        rows: &[u32],
        times: &TimestampMillisecondArray,
        watermark: i64,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.counter.fetch_add(rows.len() as u64, Ordering::Relaxed);
        if let Ok(mut counts) = self.per_operator.lock() {
            *counts.entry(operator.to_string()).or_default() += rows.len() as u64;
        }
        let Some(dead_letters) = &self.dead_letters else {
            return Ok(());
        };
        let late = arrow::compute::take_record_batch(batch, &UInt32Array::from(rows.to_vec()))?;
        let mut writer = arrow::json::LineDelimitedWriter::new(Vec::new());
        writer.write(&late)?;
        writer.finish()?;
        let text = String::from_utf8(writer.into_inner())
            .map_err(|e| SluiceError::Runtime(format!("late row is not UTF-8: {e}")))?;
        for (line, &row) in text.lines().zip(rows) {
            let event_time = if times.is_null(row as usize) {
                "NULL".to_string()
            } else {
                format_millis(times.value(row as usize))
            };
            dead_letters.write(&DeadLetter {
                time: chrono::Utc::now().to_rfc3339(),
                table: operator,
                source: "window operator",
                position: None,
                reason: &format!(
                    "late: event time {event_time} is behind the watermark {}",
                    format_millis(watermark)
                ),
                raw: line.to_string(),
            })?;
        }
        Ok(())
    }
}
